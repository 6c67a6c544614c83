"""collect_environment at each telemetry level, its probes, the secrets guarantee and ``runtel info``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtel import semconv
from runtel.cli import info as info_cli
from runtel.environment import Environment, clear_caches, cluster, collect_environment, host, packages, process
from runtel.redaction import REDACTED, Redactor
from runtel.rundir.reproduce import render_reproduce_script

HAS_GIT = shutil.which("git") is not None
SEMCONV_ARCHES = {"amd64", "arm32", "arm64", "ia64", "ppc32", "ppc64", "s390x", "x86"}


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    """Per-process caches must not leak between tests."""
    clear_caches()
    yield
    clear_caches()


def _collect(level: str, *, env: dict[str, str] | None = None, argv: list[str] | None = None, **kw: Any) -> Environment:
    args: dict[str, Any] = {
        "level": level,
        "env": env if env is not None else {"PATH": os.environ.get("PATH", "")},
        "argv": argv if argv is not None else ["train.py", "--lr", "0.1"],
        "cwd": kw.pop("cwd", os.getcwd()),
        "script_path": kw.pop("script_path", None),
        "redactor": kw.pop("redactor", Redactor()),
        "git_diff_max_bytes": kw.pop("git_diff_max_bytes", 1 << 20),
    }
    args.update(kw)
    return collect_environment(**args)


def _git(repo: Path, *args: str) -> str:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(repo.parent), "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", *args],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git repository with one committed script."""
    if not HAS_GIT:
        pytest.skip("git CLI not installed")
    repo = tmp_path / "proj"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text("print('hi')\n")
    (repo / "sub").mkdir()
    _git(repo, "add", "train.py")
    _git(repo, "commit", "-q", "-m", "first")
    return repo


# --- levels ---------------------------------------------------------------------------------------


def test_level_off_records_nothing() -> None:
    """Level off returns empty sections and no diff."""
    env = _collect("off")
    assert env == Environment(resource={}, span={}, record={}, git_diff=None)


def test_full_level_resource() -> None:
    """Level full fills the semconv Resource attributes of host, OS, process and runtime."""
    env = _collect("full", argv=["train.py", "--password", "hunter2"])
    r = env.resource
    assert r[semconv.PROCESS_PID] == os.getpid()
    assert r[semconv.PROCESS_PARENT_PID] == os.getppid()
    assert r[semconv.HOST_ARCH] in SEMCONV_ARCHES
    assert r[semconv.OS_TYPE] == "linux"
    assert r[semconv.PROCESS_RUNTIME_NAME] == sys.implementation.name
    assert r[semconv.PROCESS_RUNTIME_VERSION] == ".".join(map(str, sys.version_info[:3]))
    assert r[semconv.PROCESS_EXECUTABLE_PATH] == sys.executable
    assert r[semconv.PROCESS_WORKING_DIRECTORY] == os.getcwd()
    assert r[semconv.PROCESS_COMMAND_ARGS] == ["train.py", "--password", REDACTED]
    created = r[semconv.PROCESS_CREATION_TIME]
    assert isinstance(created, str) and "T" in created
    assert all(isinstance(v, (str, bool, int, float, list)) for v in r.values())


def test_full_level_record_sections() -> None:
    """Level full writes every documented run.json section, GPUs included as given."""
    gpu = {"index": 0, "uuid": "GPU-1", "name": "Fake"}
    env = _collect("full", gpus=[gpu])
    record = env.record
    for section in ("process", "host", "machine", "packages", "packages_summary", "env", "python"):
        assert section in record, section
    assert record["machine"]["gpus"] == [gpu]
    assert record["machine"]["cpu"]["logical_cores"] == os.cpu_count()
    assert record["machine"]["memory"]["total_bytes"] > 0
    assert "boot_time" in record["host"]
    assert record["packages_summary"]["count"] == len(record["packages"]) > 0
    assert record["packages_summary"]["hash"] == packages.inventory_hash(record["packages"])
    assert env.span[semconv.PACKAGES_HASH] == record["packages_summary"]["hash"]
    json.dumps(record)  # JSON-safe


def test_minimal_level_omits_identity(project: Path) -> None:
    """Level minimal keeps versions, git state and redacted, path-shortened argv; no user, host or env."""
    secret_home = "/home/alice/data/imagenet"
    env = _collect(
        "minimal",
        env={"PATH": os.environ.get("PATH", ""), "CUDA_VISIBLE_DEVICES": "0", "USER": "alice"},
        argv=[str(project / "train.py"), f"--data={secret_home}", str(project / "sub" / "cfg.yaml"), "--token", "t"],
        cwd=str(project / "sub"),
        script_path=str(project / "train.py"),
    )
    dumped = json.dumps([env.resource, env.span, env.record])
    hostname = os.uname().nodename
    for forbidden in ("alice", str(project), "CUDA_VISIBLE_DEVICES", *([hostname] if len(hostname) >= 4 else [])):
        assert forbidden not in dumped, forbidden
    for key in (semconv.HOST_NAME, semconv.HOST_ID, semconv.PROCESS_OWNER, semconv.PROCESS_EXECUTABLE_PATH):
        assert key not in env.resource
    assert set(env.record) <= {"process", "git", "packages_summary", "python", "cluster"}
    assert env.record["process"]["argv"] == ["train.py", "--data=imagenet", "sub/cfg.yaml", "--token", REDACTED]
    assert env.record["process"]["cwd"] == "sub"
    assert env.record["git"]["script"]["branch"] == "main"
    assert env.span[semconv.VCS_REF_HEAD_REVISION] == _git(project, "rev-parse", "HEAD")
    count = env.span[semconv.PACKAGES_COUNT]
    assert isinstance(count, int) and count > 0
    assert env.resource[semconv.PROCESS_RUNTIME_VERSION] == ".".join(map(str, sys.version_info[:3]))
    assert env.git_diff is None


def test_minimal_level_drops_cwd_outside_project(tmp_path: Path) -> None:
    """Outside any project the working directory is omitted and absolute paths shrink to basenames."""
    env = _collect("minimal", argv=["/opt/tools/run.py", "~/x/y.txt"], cwd=str(tmp_path))
    assert env.record["process"] == {"argv": ["run.py", "y.txt"]}


def test_full_level_diff_of_dirty_script_repo(project: Path) -> None:
    """Level full saves the diff of the script's dirty repository; minimal does not."""
    (project / "train.py").write_text("print('changed')\n")
    full = _collect("full", cwd=str(project), script_path="train.py")
    assert full.span[semconv.GIT_DIRTY] is True
    assert full.git_diff is not None and "+print('changed')" in full.git_diff
    assert _collect("minimal", cwd=str(project), script_path="train.py").git_diff is None


def test_unknown_level_is_treated_as_minimal() -> None:
    """An unexpected level never records more than minimal."""
    env = _collect("verbose")
    assert semconv.HOST_NAME not in env.resource and "env" not in env.record


def test_failing_probe_drops_only_its_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe that raises loses its own fields; the rest of the environment is still collected."""

    def boom() -> None:
        raise RuntimeError("probe broke")

    monkeypatch.setattr(host, "host_facts", boom)
    env = _collect("full")
    assert "host" not in env.record and semconv.HOST_NAME not in env.resource
    assert env.resource[semconv.PROCESS_PID] == os.getpid()
    assert env.record["packages_summary"]["count"] > 0


def test_warm_collect_gives_same_answer() -> None:
    """A second collection (served from caches) equals the first."""
    first = _collect("full")
    second = _collect("full")
    assert first == second


# --- environment variables ------------------------------------------------------------------------


def test_env_capture_allowlist_and_redaction() -> None:
    """Only allowlisted variables are kept, secrets by key or value are redacted, OTLP headers always."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": "/home/alice",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "SLURM_JOB_ID": "42",
        "OMP_NUM_THREADS": "4",
        "HF_TOKEN": "hf_abcdefghijklmnopqrstuvwxyz0123456789",
        "HF_HOME": "/data/hf",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-honeycomb-team=abc",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "api-key=abc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:pw@collector:4318",
        "RUNTEL_NOTE": "key AKIAIOSFODNN7EXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "shh",
    }
    captured = _collect("full", env=env).record["env"]
    assert captured == {
        "CUDA_VISIBLE_DEVICES": "0,1",
        "SLURM_JOB_ID": "42",
        "OMP_NUM_THREADS": "4",
        "HF_TOKEN": REDACTED,
        "HF_HOME": "/data/hf",
        "OTEL_EXPORTER_OTLP_HEADERS": REDACTED,
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": REDACTED,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://{REDACTED}@collector:4318",
        "RUNTEL_NOTE": f"key {REDACTED}",
    }
    assert list(captured) == sorted(captured)


# --- cluster ----------------------------------------------------------------------------------------


def test_slurm_attributes() -> None:
    """SLURM variables become runtel.slurm.* span attributes and a cluster.slurm record."""
    env = {
        "SLURM_JOB_ID": "1234",
        "SLURM_ARRAY_TASK_ID": "7",
        "SLURM_JOB_NODELIST": "gpu[01-04]",
        "SLURM_JOB_PARTITION": "gpu",
        "SLURM_NTASKS": "8",
        "SLURM_PROCID": "3",
    }
    result = _collect("full", env=env)
    assert result.span[semconv.SLURM_JOB_ID] == "1234"
    assert result.span[semconv.SLURM_ARRAY_TASK_ID] == "7"
    assert result.span[semconv.SLURM_NODE_LIST] == "gpu[01-04]"
    assert result.span[semconv.SLURM_PARTITION] == "gpu"
    assert result.span[semconv.SLURM_NTASKS] == 8
    assert result.record["cluster"]["slurm"]["proc_id"] == 3
    assert cluster.slurm_info({}) == {}
    assert cluster.slurm_info({"SLURM_JOBID": "9"}) == {"job_id": "9"}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8"},
            {"source": "torch", "rank": 3, "local_rank": 1, "world_size": 8},
        ),
        (
            {"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_SIZE": "16"},
            {"source": "ompi", "rank": 5, "local_rank": 1, "world_size": 16},
        ),
        ({"PMI_RANK": "2", "PMI_SIZE": "4"}, {"source": "pmi", "rank": 2, "world_size": 4}),
        ({"LOCAL_RANK": "0"}, {"source": "torch", "local_rank": 0}),
        ({}, {}),
    ],
)
def test_rank_info(env: dict[str, str], expected: dict[str, Any]) -> None:
    """torchrun, Open MPI and PMI rank variables are recognised, in that order of preference."""
    assert cluster.rank_info(env) == expected


def test_rank_attributes_kept_at_minimal() -> None:
    """Rank and world size are not personal and stay in minimal; SLURM node names do not."""
    env = {"RANK": "1", "WORLD_SIZE": "2", "SLURM_JOB_NODELIST": "node[1-2]"}
    result = _collect("minimal", env=env)
    assert result.span[semconv.RANK_GLOBAL] == 1 and result.span[semconv.RANK_WORLD_SIZE] == 2
    assert semconv.SLURM_NODE_LIST not in result.span


def test_kubernetes_resource() -> None:
    """Pod, namespace and node names come from the downward-API variables (pod falls back to HOSTNAME)."""
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "trainer-0", "POD_NAMESPACE": "ml", "NODE_NAME": "n1"}
    result = _collect("full", env=env)
    assert result.resource[semconv.K8S_POD_NAME] == "trainer-0"
    assert result.resource[semconv.K8S_NAMESPACE_NAME] == "ml"
    assert result.resource[semconv.K8S_NODE_NAME] == "n1"
    assert cluster.kubernetes_info({"HOSTNAME": "laptop"}) == {}


CID = "a" * 56 + "0123abcd"


@pytest.mark.parametrize(
    ("cgroup", "mountinfo", "expected"),
    [
        (f"12:memory:/docker/{CID}\n0::/\n", "", CID),
        (f"0::/system.slice/docker-{CID}.scope\n", "", CID),
        (f"0::/kubepods/besteffort/pod1/cri-containerd-{CID}\n", "", CID),
        ("0::/\n", f"1 2 0:1 /var/lib/docker/containers/{CID}/hostname /etc/hostname rw - ext4 /dev/sda rw\n", CID),
        ("0::/\n4:memory:/process_api/9201f7c5508b3497b1b61510c6d7dae5\n", "1 2 0:1 / / rw - ext4 /dev/vda rw\n", None),
    ],
)
def test_container_id_parsing(cgroup: str, mountinfo: str, expected: str | None) -> None:
    """Container ids are found in cgroup v1/v2 paths and the v2 mountinfo fallback; hosts have none."""
    assert cluster.parse_container_id(cgroup, mountinfo) == expected


# --- host -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "expected"),
    [("x86_64", "amd64"), ("AMD64", "amd64"), ("aarch64", "arm64"), ("armv7l", "arm32"), ("i686", "x86"),
     ("ppc64le", "ppc64"), ("s390x", "s390x"), ("riscv64", "riscv64")],
)  # fmt: skip
def test_arch_names(machine: str, expected: str) -> None:
    """platform.machine() values map onto the semconv host.arch enum."""
    assert host.arch_name(machine) == expected


def test_cpu_model_from_cpuinfo() -> None:
    """x86 and ARM /proc/cpuinfo layouts both give a model and vendor."""
    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6248\n\n"
    assert host.read_cpu_model(x86) == {"model": "Intel(R) Xeon(R) Gold 6248", "vendor": "GenuineIntel"}
    arm = "processor\t: 0\nCPU implementer\t: 0x41\n\nHardware\t: BCM2835\n"
    assert host.read_cpu_model(arm) == {"model": "BCM2835", "vendor": "0x41"}


def test_disk_info(tmp_path: Path) -> None:
    """disk_info reports sizes and the mount of a real path, and an error (not an exception) otherwise."""
    info = host.disk_info(tmp_path)
    assert info["total_bytes"] >= info["free_bytes"] >= 0
    assert info["mount_point"].startswith("/") and info["fs_type"]
    missing = host.disk_info(tmp_path / "missing")
    assert missing["path"] == str(tmp_path / "missing") and "error" in missing


def test_device_info_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without torch imported, device_info reports that instead of importing it."""
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert host.device_info("cuda:0") == {"error": "torch not imported"}
    assert "torch" not in sys.modules


def test_device_info_with_fake_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a (fake) torch imported, CUDA device properties are read from it."""

    class Device:
        def __init__(self, spec: str) -> None:
            self.type, _, index = spec.partition(":")
            self.index = int(index) if index else None

        def __str__(self) -> str:
            return f"{self.type}:{self.index}"

    props = types.SimpleNamespace(name="FakeGPU", total_memory=16 << 30, major=8, minor=0, multi_processor_count=108)
    cuda = types.SimpleNamespace(
        is_available=lambda: True,
        current_device=lambda: 0,
        get_device_properties=lambda i: props,
        memory_allocated=lambda i: 1,
        memory_reserved=lambda i: 2,
        max_memory_allocated=lambda i: 3,
    )
    fake = types.SimpleNamespace(device=Device, cuda=cuda, version=types.SimpleNamespace(cuda="12.4"))
    monkeypatch.setitem(sys.modules, "torch", fake)
    info = host.device_info("cuda:0")
    assert info["name"] == "FakeGPU" and info["capability"] == "8.0"
    assert info["total_memory_bytes"] == 16 << 30 and info["cuda_version"] == "12.4"


# --- process / python -------------------------------------------------------------------------------


def test_python_env_names() -> None:
    """venv names come from the prefix (generic '.venv' qualified by its parent), conda from CONDA_DEFAULT_ENV."""
    venv = process.python_env({}, prefix="/home/a/proj/.venv", base_prefix="/usr")
    assert venv == {"type": "venv", "name": "proj/.venv", "path": "/home/a/proj/.venv"}
    assert process.python_env({}, prefix="/envs/torch2", base_prefix="/usr")["name"] == "torch2"
    system = process.python_env({}, prefix="/usr", base_prefix="/usr")
    assert system["type"] == "system" and system["name"] is None


def test_conda_env_name(tmp_path: Path) -> None:
    """A conda prefix is named by CONDA_DEFAULT_ENV when CONDA_PREFIX is that prefix."""
    prefix = tmp_path / "miniconda3" / "envs" / "exp"
    (prefix / "conda-meta").mkdir(parents=True)
    env = {"CONDA_PREFIX": str(prefix), "CONDA_DEFAULT_ENV": "exp-env"}
    assert process.python_env(env, prefix=str(prefix), base_prefix=str(prefix))["name"] == "exp-env"
    other = process.python_env({"CONDA_PREFIX": "/elsewhere", "CONDA_DEFAULT_ENV": "x"}, str(prefix), str(prefix))
    assert other == {"type": "conda", "name": "exp", "path": str(prefix)}


def test_runtime_version_format() -> None:
    """process.runtime.version is dotted and drops the 'final' release level."""
    assert process.runtime_version() == ".".join(map(str, sys.version_info[:3])) or "rc" in process.runtime_version()


# --- packages ---------------------------------------------------------------------------------------


def test_package_scan(tmp_path: Path) -> None:
    """dist-info and egg-info names give name/version; the first path wins; names are normalised."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "Foo_Bar-1.2.3.dist-info").mkdir()
    (first / "legacy-0.9-py3.11.egg-info").mkdir()
    nover = first / "mypkg.egg-info"
    nover.mkdir()
    (nover / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: mypkg\nVersion: 4.5\n\nbody\n")
    (second / "foo_bar-9.9.dist-info").mkdir()
    (first / "not_a_package.txt").write_text("")
    found = packages.scan_paths([str(first), str(second), str(tmp_path / "missing")])
    assert found == {"foo-bar": "1.2.3", "legacy": "0.9", "mypkg": "4.5"}


def test_package_hash_is_stable() -> None:
    """The hash depends on the set of name==version pairs, not on order."""
    a = packages.inventory_hash({"b": "2", "a": "1"})
    assert a == packages.inventory_hash({"a": "1", "b": "2"})
    assert a != packages.inventory_hash({"a": "1", "b": "3"})
    assert len(a) == 16 and int(a, 16) >= 0


def test_inventory_matches_importlib() -> None:
    """The directory scan finds what importlib.metadata finds for this interpreter."""
    from importlib import metadata

    scanned = packages.inventory().packages
    for dist in metadata.distributions():
        name = packages.canonical_name(dist.metadata["Name"])
        assert name in scanned, name


# --- secrets end to end -----------------------------------------------------------------------------

AWS = "AKIAIOSFODNN7EXAMPLE"
GHP = "ghp_" + "Q" * 36
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"


def test_planted_secrets_never_recorded(project: Path) -> None:
    """Secrets planted in argv, env and the git remote appear nowhere in the record, attributes or reproduce.sh."""
    _git(project, "remote", "add", "origin", "https://user:SUPERSECRET@git.example.com/org/proj.git")
    (project / "train.py").write_text(f"KEY = '{AWS}'\n")  # dirty, with a secret in the diff
    secrets = [AWS, GHP, JWT, "SUPERSECRET", "hunter2", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "dbpass99", "sekrit"]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(project.parent),
        "CUDA_VISIBLE_DEVICES": "0",
        "HF_TOKEN": GHP,
        "RUNTEL_DEBUG_NOTE": f"token {JWT}",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=sekrit",
        "SLURM_JOB_COMMENT": f"key={AWS}",
        "PYTHONPATH": "https://u:dbpass99@pkgs.example.com/simple",
    }
    argv = ["train.py", "--password", "hunter2", f"--key-file={PEM}", GHP, f"API_TOKEN={JWT}", "--lr", "0.1"]
    for level in ("full", "minimal"):
        clear_caches()
        result = _collect(level, env=env, argv=argv, cwd=str(project), script_path="train.py")
        script = render_reproduce_script(
            argv=result.record["process"]["argv"],
            cwd=str(project),
            python_executable=sys.executable,
            git=result.record["git"]["script"],
            env=result.record.get("env", {}),
            run_id="r1",
        )
        haystack = json.dumps([result.resource, result.span, result.record]) + script + (result.git_diff or "")
        for secret in secrets:
            assert secret not in haystack, (level, secret)
        assert "--lr" in haystack and "CUDA_VISIBLE_DEVICES" in script or level == "minimal"


# --- runtel info ------------------------------------------------------------------------------------


def _info_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runtel")
    info_cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_info_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``runtel info --json`` prints the collected inventory as JSON."""
    monkeypatch.setenv("RUNTEL_GPU", "none")
    args = _info_parser().parse_args(["info", "--json", "--level", "full"])
    assert args.handler(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["level"] == "full"
    assert data["resource"][semconv.PROCESS_PID] == os.getpid()
    assert data["record"]["machine"]["cpu"]["logical_cores"] == os.cpu_count()


def test_info_minimal_json(capsys: pytest.CaptureFixture[str]) -> None:
    """``--level minimal`` shows what a minimal run records: no host name."""
    args = _info_parser().parse_args(["info", "--json", "--level", "minimal"])
    assert args.handler(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert semconv.HOST_NAME not in data["resource"] and "host" not in data["record"]


def test_info_tree(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --json the inventory is a readable tree with the main sections."""
    monkeypatch.setenv("RUNTEL_GPU", "none")
    args = _info_parser().parse_args(["info"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "runtel info" in out
    for section in ("host", "machine", "python", "packages"):
        assert section in out, section


def test_info_respects_telemetry_off(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """With RUNTEL_TELEMETRY=off and no --level, info says nothing is recorded."""
    monkeypatch.setenv("RUNTEL_TELEMETRY", "off")
    args = _info_parser().parse_args(["info", "--json"])
    assert args.handler(args) == 0
    assert json.loads(capsys.readouterr().out) == {"level": "off"}


# --- the last collection is reused --------------------------------------------------------------------


def test_same_inputs_return_the_same_environment_object() -> None:
    """Equal inputs (even freshly built argv lists, env dicts and Redactors) give back the cached object."""
    first = _collect("minimal", env={"RANK": "1"}, argv=["train.py", "--lr", "0.1"])
    second = _collect("minimal", env={"RANK": "1"}, argv=["train.py", "--lr", "0.1"], redactor=Redactor())
    assert second is first


@pytest.mark.parametrize(
    ("changed", "check"),
    [
        ({"argv": ["eval.py", "--epochs", "3"]}, lambda e: e.record["process"]["argv"][0] == "eval.py"),
        ({"env": {"RANK": "2"}}, lambda e: e.record["cluster"]["rank"]["rank"] == 2),
        ({"level": "full"}, lambda e: "packages" in e.record and semconv.PROCESS_WORKING_DIRECTORY in e.resource),
        (
            {"redactor": Redactor([r"0\.1"])},
            lambda e: e.record["process"]["argv"] == ["train.py", "--lr", REDACTED],
        ),
    ],
    ids=["argv", "env", "level", "redactor-patterns"],
)
def test_changed_input_gives_a_new_environment(changed: dict[str, Any], check: Any) -> None:
    """Any changed input is collected anew and the result shows the change (not the cached one)."""
    base: dict[str, Any] = {"level": "minimal", "env": {"RANK": "1"}, "argv": ["train.py", "--lr", "0.1"]}
    first = _collect(**base)
    assert first.record["process"]["argv"] == ["train.py", "--lr", "0.1"]
    assert first.record["cluster"]["rank"]["rank"] == 1
    args = {**base, **changed}
    second = _collect(args.pop("level"), **args)
    assert second is not first
    assert check(second)
    assert not check(first)


def test_changed_cwd_gives_a_new_environment(tmp_path: Path) -> None:
    """A run started from another directory records that directory, not the cached one."""
    first = _collect("full", cwd=os.getcwd())
    second = _collect("full", cwd=str(tmp_path))
    assert second is not first
    assert second.record["process"]["cwd"] == str(tmp_path)
    assert second.resource[semconv.PROCESS_WORKING_DIRECTORY] == str(tmp_path)
    assert first.record["process"]["cwd"] == os.getcwd()


def test_mapping_changed_in_place_gives_a_new_environment() -> None:
    """The same mapping object changed in place (a caller passing os.environ) is not mistaken for unchanged."""
    env = {"RANK": "1"}
    first = _collect("minimal", env=env)
    env["RANK"] = "3"
    second = _collect("minimal", env=env)
    assert second is not first
    assert second.record["cluster"]["rank"]["rank"] == 3


def test_clear_caches_forgets_the_last_environment() -> None:
    """After clear_caches() the same inputs are collected again (a new, equal object)."""
    first = _collect("minimal", env={"RANK": "1"})
    clear_caches()
    second = _collect("minimal", env={"RANK": "1"})
    assert second is not first
    assert second == first


def test_package_hash_is_sha256_without_loading_openssl() -> None:
    """The inventory hash equals hashlib's sha256 (first 16 hex digits) and, in a fresh interpreter, computing it
    does not import hashlib (which loads OpenSSL, ~4 ms of the first run)."""
    import hashlib
    import subprocess
    import sys

    from runtel.environment.packages import inventory_hash

    packages = {"numpy": "2.1.0", "runtel": "0.1.0"}
    text = "numpy==2.1.0\nruntel==0.1.0"
    assert inventory_hash(packages) == hashlib.sha256(text.encode()).hexdigest()[:16]
    code = ("import sys\nfrom runtel.environment.packages import inventory_hash\n"
            "inventory_hash({'a': '1'})\nprint('hashlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
