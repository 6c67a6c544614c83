"""The scrubbing stage (_sdk/scrub.py) and the rules added for issue 13: argv forms, env values, free text."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link, Status, StatusCode

from runtel._sdk.scrub import NAME_MAX_LENGTH, Scrubber
from runtel.redaction import REDACTED, TRUNCATED, Redactor, bound_containers


def _ended(name: str = "step", **attributes: object) -> object:
    tracer = TracerProvider(resource=Resource.create({"service.name": "t"})).get_tracer("t")
    with tracer.start_as_current_span(name) as span:
        span.set_attributes(attributes)  # type: ignore[arg-type]
    return span


def test_clean_span_is_forwarded_as_is() -> None:
    """No copy when nothing needs redacting: the common span costs lookups only."""
    span = _ended(epoch=3, dataset="cifar10", path="/data/x")
    assert Scrubber(Redactor()).span(span) is span  # type: ignore[arg-type]


def test_every_part_of_a_span_is_scrubbed() -> None:
    """Attributes, events (exception message and stack trace), links, status and name."""
    tracer = TracerProvider(resource=Resource.create({"service.name": "t", "deploy.token": "tok-123"})).get_tracer("t")
    with tracer.start_as_current_span("outer") as outer:
        pass
    with tracer.start_as_current_span("GET /?token=abc123", links=[Link(outer.get_span_context(), {"api_key": "k1"})]) as span:
        span.set_attribute("db.password", "p1")
        span.set_attribute("url.full", "https://u:p2@h/x")
        span.add_event("e", {"note": "password=p3"})
        span.record_exception(RuntimeError("connect postgres://admin:p4@db/x"))
        span.set_status(Status(StatusCode.ERROR, "secret=p5"))
    out = Scrubber(Redactor()).span(span)
    text = repr((out.name, dict(out.attributes or {}), [(e.name, dict(e.attributes or {})) for e in out.events],
                 [dict(link.attributes or {}) for link in out.links], out.status.description,
                 dict(out.resource.attributes)))
    for secret in ("abc123", "k1", "p1", "p2", "p3", "p4", "p5", "tok-123"):
        assert secret not in text, secret
    assert out.attributes["db.password"] == REDACTED  # type: ignore[index]
    assert out.context == span.context and out.start_time == span.start_time


def test_strings_are_cut_before_scanning() -> None:
    """Cap, then scan: attribute strings at the limit, names at NAME_MAX_LENGTH, stack traces keep the tail."""
    span = _ended("n" * (NAME_MAX_LENGTH + 50), big="x" * 10_000)
    out = Scrubber(Redactor(), max_length=100).span(span)  # type: ignore[arg-type]
    assert out.attributes["big"] == "x" * 100 + TRUNCATED  # type: ignore[index]
    assert out.name == "n" * NAME_MAX_LENGTH + TRUNCATED


def test_run_id_is_never_cut() -> None:
    """The exporters route by runtel.run.id: it is left as runtel made it."""
    span = _ended(**{"runtel.run.id": "20260101T000000Z-a-very-long-run-name-" + "x" * 80})
    assert Scrubber(Redactor(), max_length=64).span(span) is span  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--pass", "P"], ["--pass", REDACTED]),
        (["--key", "K"], ["--key", REDACTED]),
        (["-p", "P"], ["-p", REDACTED]),
        (["-p", "8080"], ["-p", "8080"]),
        (["-pS3cret"], [f"-p{REDACTED}"]),
        (["-pthread"], ["-pthread"]),
        (["-u", "admin:P"], ["-u", f"admin:{REDACTED}"]),
        (["python", "-u", "train.py"], ["python", "-u", "train.py"]),
        (["--user=bob:P"], [f"--user=bob:{REDACTED}"]),
        (["NCCL_PW=x"], [f"NCCL_PW={REDACTED}"]),
    ],
)
def test_argv_forms(argv: list[str], expected: list[str]) -> None:
    """The argv forms issue 13 found leaking, and the look-alikes that must stay."""
    assert Redactor().redact_argv(argv) == expected


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('my_pw = "hunter2"', "hunter2"),
        ("connect postgres://admin:hunter2@db/x", "hunter2"),
        ("retry admin:hunter2@db.local", "hunter2"),
        ("train --password hunter2 --epochs 3", "hunter2"),
        ("https://a.blob.core.windows.net/c?sv=1&sig=abc%2Fdef&se=2", "abc%2Fdef"),
        ("db_pass=hunter2", "hunter2"),
    ],
)
def test_free_text_shapes(text: str, secret: str) -> None:
    """key=value, user:pass@ and --flag value shapes inside messages, stack traces and env values."""
    assert secret not in Redactor().redact_text(text)


def test_env_names_for_passwords() -> None:
    """HF_PASS / NCCL_PW / *_SIG are secret names; pin_memory and max_tokens stay readable."""
    r = Redactor()
    assert all(r.is_secret_key(k) for k in ("HF_PASS", "NCCL_PW", "sig", "db_pw"))
    assert not any(r.is_secret_key(k) for k in ("pin_memory", "max_tokens", "passes"))


def test_bound_containers_cuts_and_counts() -> None:
    """A huge mapping is cut before anything walks it, with the number of entries dropped."""
    out = bound_containers({f"k{i}": i for i in range(20_000)})
    assert isinstance(out, dict) and len(out) == 10_000 and out["__truncated__"] == 10_001
    small = {"a": 1}
    assert bound_containers(small) is small


def test_record_keeps_package_names() -> None:
    """environment.packages is a list of distributions: google-auth is a package, not a credential."""
    record = {"environment": {"packages": {"google-auth": "2.0", "SecretStorage": "3.3"}}, "tags": {"token": "t"}}
    out = Redactor().redact_record(record, max_str=100)
    assert out["environment"]["packages"] == {"google-auth": "2.0", "SecretStorage": "3.3"}
    assert out["tags"] == {"token": REDACTED}


def test_allow_keys_exempt_a_key_but_not_its_text() -> None:
    """redact_allow: the key rule is lifted for matching keys; credential shapes inside stay hidden."""
    r = Redactor(allow_keys=[r"^forward_pass$", r"^session_count$"])
    assert r.redact_mapping({"forward_pass": 2, "session_count": 7, "password": "x"}) == {
        "forward_pass": 2, "session_count": 7, "password": REDACTED}
    assert "ghp_" not in str(r.redact_value("forward_pass", "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2")), "text still scanned"
    assert r.patterns != Redactor().patterns  # cache keys differ


def test_redact_allow_setting_reaches_run_json(tmp_path: object) -> None:
    """configure(redact_allow=...) is used by the process-wide redactor."""
    import json
    from pathlib import Path

    import runtel
    from runtel.testing import isolated

    with isolated(Path(str(tmp_path)) / "runs", sampling=False, redact_allow=["^forward_pass$"]), \
            runtel.run_span("allow", config={"forward_pass": 3, "api_key": "k"}) as run:
        pass
    assert run.dir is not None
    config = json.loads((run.dir / "run.json").read_text())["config"]
    assert config == {"forward_pass": 3, "api_key": REDACTED}


def test_a_cached_clean_string_is_still_cut() -> None:
    """The clean-text cache never lets a string past a limit smaller than the cached length."""
    redactor = Redactor()
    redactor.redact_text("y" * 100)  # now cached as clean
    out = Scrubber(redactor, max_length=10).span(_ended(v="y" * 100))  # type: ignore[arg-type]
    assert out.attributes["v"] == "y" * 10 + TRUNCATED  # type: ignore[index]
