"""RAPL energy counters read from a fake powercap tree: units, wrap-around, DRAM, mirrors, permissions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtel.energy.rapl import open_rapl
from runtel.errors import BackendUnavailable
from runtel.testing.powercap import make_powercap_tree


def test_package_counter_in_joules(tmp_path: Path) -> None:
    """A package zone reports joules since opening (energy_uj deltas / 1e6), not since boot."""
    tree = make_powercap_tree(tmp_path, {"package-0": (5_000_000, 2**32)})
    (source,) = open_rapl(tmp_path, include_dram=False)
    assert source.domain == "cpu:package-0"
    assert source.read().joules == 0.0
    tree.advance("package-0", 2_500_000)
    reading = source.read()
    assert reading.joules == pytest.approx(2.5)
    assert (reading.estimated, reading.source) == (False, "rapl")


def test_wrap_around_is_handled(tmp_path: Path) -> None:
    """A counter that wraps at max_energy_range_uj adds max_range - old + new, never a negative delta."""
    tree = make_powercap_tree(tmp_path, {"package-0": (900, 1000)})
    (source,) = open_rapl(tmp_path)
    tree.advance("package-0", 250)  # 900 -> 1150 wraps to 149 (range 0..1000)
    assert tree.read("package-0") == 149
    assert source.read().joules == pytest.approx((1000 - 900 + 149) / 1e6)


def test_dram_subzone_and_several_packages(tmp_path: Path) -> None:
    """Each package and its DRAM sub-zone become separate domains; core sub-zones are ignored."""
    tree = make_powercap_tree(
        tmp_path, {"package-0": (0, 2**32), "package-1": (0, 2**32)}, dram={"package-0": (0, 2**32)}
    )
    sources = open_rapl(tmp_path)
    assert [s.domain for s in sources] == ["cpu:package-0", "cpu:package-0:dram", "cpu:package-1"]
    tree.advance("package-0:dram", 1_000_000)
    assert sources[1].read().joules == pytest.approx(1.0)


def test_mirrored_counters_are_deduplicated(tmp_path: Path) -> None:
    """AMD-style mirrored zones with the same name are counted once."""
    make_powercap_tree(tmp_path, {"package-0": (0, 2**32)}, mirrors=["package-0"])
    assert [s.domain for s in open_rapl(tmp_path)] == ["cpu:package-0"]


def test_no_powercap_is_unavailable(tmp_path: Path) -> None:
    """A folder without RAPL zones raises BackendUnavailable."""
    with pytest.raises(BackendUnavailable, match="no powercap RAPL zones"):
        open_rapl(tmp_path / "missing")


def test_permission_denied_is_unavailable_with_reason(tmp_path: Path) -> None:
    """An unreadable energy_uj (root-only since CVE-2020-8694) raises BackendUnavailable naming the CVE."""
    tree = make_powercap_tree(tmp_path, {"package-0": (0, 2**32)})
    tree.make_unreadable("package-0")
    if os.geteuid() != 0:
        with pytest.raises(BackendUnavailable, match="CVE-2020-8694"):
            open_rapl(tmp_path)
        return
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root without setpriv cannot lose read access")
    code = (
        "import sys; from pathlib import Path\n"
        "from runtel.energy.rapl import open_rapl\n"
        "from runtel.errors import BackendUnavailable\n"
        "try:\n    open_rapl(Path(sys.argv[1]))\n"
        "except BackendUnavailable as exc:\n    print(exc)\n"
    )
    # Root ignores file modes; drop the capabilities that let it, so the kernel refuses like for a normal user.
    out = subprocess.run(
        [setpriv, "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "CVE-2020-8694" in out.stdout, out.stderr
