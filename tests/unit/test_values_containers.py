"""runtel.values.containers: config containers (dataclasses, pydantic, OmegaConf, argparse...) → plain dicts."""

from __future__ import annotations

import argparse
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
from values_cases import Point, RaisingMapping, TrainConfig

from runtel.values.containers import normalize_config


class FakePydantic2:
    def __init__(self, **data: Any) -> None:
        self._data = data

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        return dict(self._data)


class FakePydantic1:
    __fields__ = {"a": None}

    def dict(self) -> dict[str, Any]:
        return {"a": 1}


class FakeAttrib:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeAttrs:
    __attrs_attrs__ = (FakeAttrib("a"), FakeAttrib("b"))

    def __init__(self) -> None:
        self.a = 1
        self.b = {"c": 2}


class DictConfig:
    """Stands in for omegaconf.DictConfig (module set below)."""

    def __init__(self, data: dict[str, Any], resolvable: bool = True) -> None:
        self.data = data
        self.resolvable = resolvable


DictConfig.__module__ = "omegaconf.dictconfig"


@pytest.fixture
def fake_omegaconf(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Install a fake ``omegaconf`` module whose OmegaConf.to_container records the resolve flag."""
    calls: list[bool] = []

    class OmegaConf:
        @staticmethod
        def to_container(cfg: DictConfig, resolve: bool = False) -> dict[str, Any]:
            calls.append(resolve)
            if resolve and not cfg.resolvable:
                raise ValueError("interpolation")
            return {**cfg.data, "resolved": resolve}

    module = types.ModuleType("omegaconf")
    module.OmegaConf = OmegaConf  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "omegaconf", module)
    return calls

def test_normalize_dataclass_recursively() -> None:
    """Nested dataclass instances become nested plain dicts."""
    assert normalize_config(TrainConfig()) == {
        "optimizer": {"lr": 0.1, "betas": (0.9, 0.999)},
        "epochs": 3,
        "out": Path("/tmp/out"),
    }


def test_normalize_leaves_dataclass_class_and_scalars_alone() -> None:
    """A dataclass class and non-container values are returned unchanged."""
    assert normalize_config(TrainConfig) is TrainConfig
    marker = object()
    assert normalize_config(marker) is marker
    assert normalize_config(5) == 5


def test_normalize_namespaces_and_namedtuple() -> None:
    """argparse.Namespace, SimpleNamespace and NamedTuple become dicts, also inside lists."""
    ns = argparse.Namespace(lr=0.1, inner=types.SimpleNamespace(a=1))
    assert normalize_config(ns) == {"lr": 0.1, "inner": {"a": 1}}
    assert normalize_config([Point(1, 2)]) == [{"x": 1, "y": 2}]


def test_normalize_pydantic_v2_and_v1() -> None:
    """Objects with model_dump (v2) or __fields__ + dict() (v1) are dumped."""
    assert normalize_config(FakePydantic2(a=1, nested=FakePydantic2(b=2))) == {"a": 1, "nested": {"b": 2}}
    assert normalize_config(FakePydantic1()) == {"a": 1}


def test_normalize_attrs_and_mapping() -> None:
    """attrs-style classes use __attrs_attrs__; other Mappings become dicts."""
    assert normalize_config(FakeAttrs()) == {"a": 1, "b": {"c": 2}}
    assert type(normalize_config(OrderedDict(a=1))) is dict


def test_normalize_omegaconf_resolves(fake_omegaconf: list[bool]) -> None:
    """OmegaConf containers are converted via sys.modules['omegaconf'] with resolve=True."""
    assert normalize_config(DictConfig({"a": 1})) == {"a": 1, "resolved": True}
    assert fake_omegaconf == [True]


def test_normalize_omegaconf_falls_back_to_unresolved(fake_omegaconf: list[bool]) -> None:
    """When interpolation fails the container is converted with resolve=False."""
    assert normalize_config(DictConfig({"a": "${missing}"}, resolvable=False)) == {"a": "${missing}", "resolved": False}
    assert fake_omegaconf == [True, False]


def test_normalize_preserves_cycles() -> None:
    """A self-referencing config normalises to a self-referencing dict instead of recursing forever."""
    ns = argparse.Namespace(a=1)
    ns.me = ns
    out = normalize_config(ns)
    assert isinstance(out, dict)
    assert out["me"] is out


def test_normalize_raising_object_returned_unchanged() -> None:
    """A Mapping that raises while being read is returned as is."""
    bad = RaisingMapping()
    assert normalize_config(bad) is bad
