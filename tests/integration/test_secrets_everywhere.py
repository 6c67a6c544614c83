"""Issue 13's check: credentials planted in every input runtel reads appear in nothing it writes, prints or sends.

``PLANTS`` is the list, one line per source: a new source is one line here plus the line of the job (or of
the environment / command line below) that plants it. Each secret is distinct, so a leak names its source.
The job reads its secrets from an untracked JSON file rather than its own source, so a stack trace that
shows a source line is not mistaken for a leak (a secret written into source code is a different case).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import Receiver  # type: ignore[import-not-found]

PY = sys.executable

#: (source, secret) — one line per source
PLANTS: list[tuple[str, str]] = [
    ("env name: HF_TOKEN", "hf_" + "Zq8mX2nB7vC4kL9pR1sT6wY3uI5oA0eD"),
    ("env name: RUNTEL_API_KEY", "rk-env-apikey-9f8e7d6c"),
    ("env name: OTEL_SECRET (allowlisted prefix)", "otel-secret-value-5d4c3b"),
    ("env name outside allowlist: AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("env value: HF_PASS", "hfpass-Vb7Nm3Qw"),
    ("env value: NCCL_PW", "ncclpw-Lk9Jh6Gf"),
    ("env value: Azure SAS sig= in HF_ENDPOINT", "sv3CgQe1Xz%2Bab%2FSASsig0123456789"),
    ("env value: SLURM_JOB_NAME='train --password ...'", "slurm-jobname-pw-4Rt7"),
    ("env value: URL userinfo in HF_HUB_URL", "hubpw-Ee5Rr6Tt"),
    ("env value: AWS key id in CUDA_CACHE_PATH", "AKIAIOSFODNN7ENVVAL1"),
    ("env value: OTEL_RESOURCE_ATTRIBUTES service.api_key", "resattr-apikey-Uu8Ii9"),
    ("env value: OTEL_RESOURCE_ATTRIBUTES deployment.token", "resattr-token-Oo1Pp2"),
    ("OTLP header: authorization=Bearer", "otlp-bearer-Aa3Ss4Dd5Ff6"),
    ("OTLP header: x-api-key", "otlp-xapikey-Gg7Hh8"),
    ("argv: --password P", "argv-password-Jj9Kk0"),
    ("argv: --pass P", "argv-pass-Ll1Zz2"),
    ("argv: --key K", "argv-key-Xx3Cc4"),
    ("argv: -p P", "argv-shortp-Vv5Bb6"),
    ("argv: -pP glued", "argvGluedP7Nn8Mm"),
    ("argv: -u admin:P", "argv-curluser-Qq9Ww0"),
    ("argv: --api-key=P", "argv-apikeyeq-Ee1Rr2"),
    ("argv: DB_PASSWORD=P", "argv-envpair-Tt3Yy4"),
    ("argv: positional GitHub token", "ghp_" + "ArGvP0s1t10nalT0kenAbCdEfGhIjKlMn"),
    ("argv: --db postgres://u:P@h", "argv-dsnpw-Uu5Ii6"),
    ("argv: --token=P", "argv-tokeneq-Oo7Pp8"),
    ("argv: one word holding a shell line, curl -u admin:P", "argv-shcurl-Ww3Qq1"),
    ("argv: one word holding a shell line, mysql -pP", "argvShMysql5Rr7Tt"),
    ("runtel run: --tag api_key=P", "cli-tag-apikey-Aa9Ss0"),
    ("runtel run: --tag token=P", "cli-tag-token-Dd1Ff2"),
    ("runtel run: wrapped command --secret P", "cli-cmd-secret-Gg3Hh4"),
    ("config: nested db.password", "cfg-nested-pw-Jj5Kk6"),
    ("config: credentials dict", "cfg-creds-Ll7Zz8"),
    ("config: list of dicts with token", "cfg-listtok-Xx9Cc0"),
    ("config: DSN string", "cfg-dsn-pw-Vv1Bb2"),
    ("config: Bearer in a header string", "cfgBearerTok3Nn4Mm5"),
    ("config: object whose repr holds password=", "cfg-repr-pw-Qq6Ww7"),
    ("config: AWS key id as a plain value", "AKIAIOSFODNN7CONFIG2"),
    ("config: 10 levels deep api_key", "cfg-deep-apikey-Ee8Rr9"),
    ("tags: run_span(tags={'api_key': P})", "tag-dict-apikey-Tt0Yy1"),
    ("tags: run_span(tags=['token=P'])", "tag-list-token-Uu2Ii3"),
    ("run_span kwargs: api_key=", "run-kwarg-apikey-Oo4Pp5"),
    ("run.set_attributes(cookie=...)", "run-attr-cookie-Aa6Ss7"),
    ("run.set_attributes(endpoint=https://u:P@host)", "run-attr-urlpw-Dd8Ff9"),
    ("block(token=...)", "block-attr-token-Gg0Hh1"),
    ("block.set_attributes(note='password=P')", "block-setattr-pw-Jj2Kk3"),
    ("exception in a block: postgres://admin:P@db", "exc-block-dsn-Ll4Zz5"),
    ("exception in a run: password=P", "exc-run-pw-Xx6Cc7"),
    ("exception in a traced call: Authorization: Bearer P", "excTracedBearer8Vv9Bb"),
    ("exception chained cause: api_key=P", "exc-cause-apikey-Nn0Mm1"),
    ("@trace(capture=True) parameter password", "capture-param-pw-Qq2Ww3"),
    ("@trace(capture=True) parameter token in a dict", "capture-dict-token-Ee4Rr5"),
    ("@trace(capture=True) return value repr", "capture-ret-pw-Tt6Yy7"),
    ("@trace(attributes={'api_key': P})", "trace-static-apikey-Uu8Ii9"),
    ("user span: set_attribute('db.password')", "user-span-dbpw-Oo0Pp1"),
    ("user span: URL with userinfo", "user-span-urlpw-Aa2Ss3"),
    ("user span: event attribute secret", "user-event-secret-Dd4Ff5"),
    ("user span: name with ?token=", "user-spanname-token-Gg6Hh7"),
    ("user span: status description with password=", "user-status-pw-Jj8Kk9"),
    ("user span: link attribute api_key", "user-link-apikey-Ll0Zz1"),
    ("user span: recorded exception message user:pass@", "user-exc-userinfo-Xx2Cc3"),
    ("library span: aws.secret_access_key", "lib-span-awssecret-Vv4Bb5"),
    ("library span: http.request.header.authorization", "lib-span-authz-Nn6Mm7"),
    ("git remote: https://user:P@github.com", "git-remote-tok-Qq8Ww9"),
    ("git diff: my_pw = '...'", "gitdiff-mypw-Ee0Rr1"),
    ("git diff: API_KEY=...", "gitdiff-apikey-Tt2Yy3"),
    ("git diff: GitHub token", "ghp_" + "GitD1ffT0kenZyXwVuTsRqPoNmLkJiHgFe"),
]

SECRETS = dict(PLANTS)


def _s(source_prefix: str) -> str:
    """The secret of the one source starting with ``source_prefix``."""
    (value,) = [v for k, v in PLANTS if k.startswith(source_prefix)]
    return value


JOB = textwrap.dedent('''
    import json, os, sys
    import runtel
    from opentelemetry import trace
    from opentelemetry.trace import Link, Status, StatusCode

    S = json.load(open(os.environ["PLANTS_FILE"]))
    def s(prefix):
        (v,) = [v for k, v in S if k.startswith(prefix)]
        return v

    class DB:
        def __repr__(self):
            return "DB(host='db.local', password=" + repr(s("config: object whose repr")) + ")"

    deep = {"api_key": s("config: 10 levels deep")}
    for i in range(9):
        deep = {f"level{i}": deep}
    config = {
        "db": {"password": s("config: nested db.password"), "host": "db.local"},
        "credentials": {"user": "ana", "value": s("config: credentials dict")},
        "servers": [{"name": "a", "token": s("config: list of dicts")}],
        "dsn": "postgresql://ana:" + s("config: DSN string") + "@db.local/x",
        "headers": "Authorization: Bearer " + s("config: Bearer"),
        "conn": DB(),
        "note": s("config: AWS key id"),
        "deep": deep,
        "lr": 0.1,
    }

    @runtel.trace(capture=True, capture_return=True)
    def login(user, password, options):
        class Creds:
            def __repr__(self):
                return "Creds(user='ana', password='" + s("@trace(capture=True) return") + "')"
        return Creds()

    @runtel.trace(attributes={"api_key": s("@trace(attributes=")})
    def fetch():
        raise PermissionError("denied; Authorization: Bearer " + s("exception in a traced call"))

    tags = {"api_key": s("tags: run_span(tags={"), "team": "ml"}
    with runtel.run_span("secret-job", config=config, tags=tags, api_key=s("run_span kwargs")) as run:
        run.set_attributes(cookie=s("run.set_attributes(cookie"),
                           endpoint="https://u:" + s("run.set_attributes(endpoint") + "@example.com/x")
        with runtel.block("auth", token=s("block(token"), user="ana") as b:
            b.set_attributes(note="password=" + s("block.set_attributes"))
        try:
            with runtel.block("connect"):
                raise RuntimeError("connect postgres://admin:" + s("exception in a block") + "@db/x")
        except RuntimeError:
            pass
        try:
            with runtel.block("chained"):
                try:
                    raise KeyError("api_key=" + s("exception chained"))
                except KeyError as inner:
                    raise ValueError("lookup failed") from inner
        except ValueError:
            pass
        login("ana", s("@trace(capture=True) parameter password"), {"token": s("@trace(capture=True) parameter token")})
        try:
            fetch()
        except PermissionError:
            pass
        tracer = trace.get_tracer("user.code")
        link_ctx = trace.get_current_span().get_span_context()
        with tracer.start_as_current_span("GET /x?token=" + s("user span: name"),
                                          links=[Link(link_ctx, {"api_key": s("user span: link")})]) as span:
            span.set_attribute("db.password", s("user span: set_attribute"))
            span.set_attribute("url.full", "https://bob:" + s("user span: URL") + "@api.example.com/v1")
            span.add_event("login", {"secret": s("user span: event")})
            span.record_exception(ConnectionError("retry ana:" + s("user span: recorded exception") + "@db.local"))
            span.set_status(Status(StatusCode.ERROR, "password=" + s("user span: status")))
        lib = trace.get_tracer("somelib.instrumentation", "1.0")
        with lib.start_as_current_span("s3.put") as span:
            span.set_attribute("aws.secret_access_key", s("library span: aws"))
            span.set_attribute("http.request.header.authorization", "Basic " + s("library span: http"))
    try:
        with runtel.run_span("failing-run", tags=["token=" + s("tags: run_span(tags=[")]):
            raise ValueError("login failed: password=" + s("exception in a run"))
    except ValueError:
        pass
    print(run.dir)
''')


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"})


def _repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    (repo / "job.py").write_text(JOB)
    _git(repo, "init", "-q")
    _git(repo, "remote", "add", "origin", f"https://user:{_s('git remote')}@github.com/acme/repo.git")
    _git(repo, "add", "job.py")
    _git(repo, "commit", "-qm", "init")
    dirty = (f'\nmy_pw = "{_s("git diff: my_pw")}"\nAPI_KEY=\'{_s("git diff: API_KEY")}\'\n'
             f'# pushed with {_s("git diff: GitHub")}\n')
    (repo / "job.py").write_text(JOB + dirty)
    return repo


def test_sixty_planted_credentials_leak_nowhere(tmp_path: Path, clean_env: dict[str, str],
                                                receiver: Receiver) -> None:
    """Run folder files, `runtel show` (text and JSON) and what a real OTLP receiver got hold none of them."""
    assert len(SECRETS) == len(PLANTS) >= 60, "each source plants a distinct secret"
    repo = _repo(tmp_path)
    plants_file = tmp_path / "plants.json"
    plants_file.write_text(json.dumps(PLANTS))
    runs = tmp_path / "runs"
    env = {
        **clean_env,
        "PLANTS_FILE": str(plants_file),
        "RUNTEL_DIR": str(runs),
        "RUNTEL_EXPORTERS": "json,otlp",
        "RUNTEL_SAMPLING": "true",  # metrics.jsonl and OTLP metrics carry the Resource too
        "RUNTEL_METRIC_INTERVAL": "0.5",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint("http/protobuf"),
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {_s('OTLP header: authorization')},"
                                      f"x-api-key={_s('OTLP header: x-api-key')}",
        "OTEL_RESOURCE_ATTRIBUTES": f"service.api_key={_s('env value: OTEL_RESOURCE_ATTRIBUTES service')},"
                                    f"deployment.token={_s('env value: OTEL_RESOURCE_ATTRIBUTES deployment')}",
        "HF_TOKEN": _s("env name: HF_TOKEN"),
        "RUNTEL_API_KEY": _s("env name: RUNTEL_API_KEY"),
        "OTEL_SECRET": _s("env name: OTEL_SECRET"),
        "AWS_SECRET_ACCESS_KEY": _s("env name outside allowlist"),
        "HF_PASS": _s("env value: HF_PASS"),
        "NCCL_PW": _s("env value: NCCL_PW"),
        "HF_ENDPOINT": f"https://acct.blob.core.windows.net/models?sv=2022-11-02&sig={_s('env value: Azure')}&se=2030",
        "SLURM_JOB_NAME": f"train --password {_s('env value: SLURM_JOB_NAME')} --epochs 3",
        "HF_HUB_URL": f"https://ana:{_s('env value: URL userinfo')}@hub.local/",
        "CUDA_CACHE_PATH": f"/cache/{_s('env value: AWS key id')}",
        "SLURM_JOB_ID": "4242",
        "CUDA_VISIBLE_DEVICES": "",
    }
    job_argv = [
        PY, str(repo / "job.py"),
        "--password", _s("argv: --password"), "--pass", _s("argv: --pass "), "--key", _s("argv: --key"),
        "-p", _s("argv: -p P"), f"-p{_s('argv: -pP')}", "-u", f"admin:{_s('argv: -u')}",
        f"--api-key={_s('argv: --api-key')}", f"DB_PASSWORD={_s('argv: DB_PASSWORD')}", _s("argv: positional"),
        "--db", f"postgres://u:{_s('argv: --db')}@h/x", f"--token={_s('argv: --token')}",
        "--secret", _s("runtel run: wrapped command"),
        f"curl -u admin:{_s('argv: one word holding a shell line, curl')} https://h/x; "
        f"mysql -p{_s('argv: one word holding a shell line, mysql')} -h db",
    ]
    argv = [PY, "-m", "runtel", "run", "--name", "wrapper", "--tag", f"api_key={_s('runtel run: --tag api_key')}",
            "--tag", f"token={_s('runtel run: --tag token')}", "--", *job_argv]
    proc = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    records = {json.loads(p.read_text())["name"]: json.loads(p.read_text()) for p in runs.glob("*/run.json")}
    assert set(records) == {"wrapper", "secret-job", "failing-run"}, proc.stderr
    job = records["secret-job"]
    assert (runs / job["id"] / "git.diff").exists(), "the dirty diff should be saved (redacted)"
    assert job["config"]["lr"] == 0.1 and job["config"]["db"]["host"] == "db.local", "clean values stay"

    outputs = {f"file {p.relative_to(runs)}": p.read_text(errors="replace") for p in runs.rglob("*") if p.is_file()}
    outputs["stdout/stderr"] = proc.stdout + proc.stderr
    for record in records.values():
        for args in (["show", record["id"]], ["show", "--json", record["id"]], ["show", "--all-spans", record["id"]]):
            shown = subprocess.run([PY, "-m", "runtel", *args, "--dir", str(runs)], env=env,
                                   capture_output=True, text=True, timeout=60)
            assert shown.returncode == 0, shown.stderr
            outputs[f"runtel {' '.join(args[:-1])} {record['name']}"] = shown.stdout + shown.stderr
    assert receiver.wait_for(lambda: any(s.name == "s3.put" for s in receiver.spans({job["trace_id"]})), 20), \
        "the run should have been exported"
    time.sleep(0.5)  # metrics and the last batches
    outputs["OTLP receiver"] = receiver.text()
    assert "[REDACTED]" in outputs["OTLP receiver"]
    assert any(name.endswith("metrics.jsonl") for name in outputs), "the sampled run should write metrics"

    leaks = [f"{source} -> {where}" for source, secret in PLANTS for where, text in outputs.items() if secret in text]
    assert not leaks, "\n".join(leaks)


APP_PROVIDER_JOB = """
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
trace.set_tracer_provider(TracerProvider(resource=Resource.create({"app.api_key": "app-res-key-Zz9"})))
import runtel
with runtel.run_span("app-provider"):
    with trace.get_tracer("app").start_as_current_span("q") as span:
        span.set_attribute("db.password", "app-span-pw-Yy8")
        span.record_exception(RuntimeError("token=app-exc-tok-Xx7"))
"""


def test_spans_on_the_applications_own_provider_are_scrubbed(tmp_path: Path, clean_env: dict[str, str]) -> None:
    """runtel attaches to an SDK provider the application installed: its spans and Resource pass the scrubber."""
    runs = tmp_path / "runs"
    proc = subprocess.run([PY, "-c", APP_PROVIDER_JOB], env={**clean_env, "RUNTEL_DIR": str(runs)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (spans_file,) = runs.glob("*/spans.jsonl")
    text = spans_file.read_text()
    assert '"q"' in text and "[REDACTED]" in text
    for secret in ("app-res-key-Zz9", "app-span-pw-Yy8", "app-exc-tok-Xx7"):
        assert secret not in text, secret


def test_a_credential_in_a_run_name_reaches_no_path_id_or_attribute(rt: object, tmp_path: Path) -> None:
    """The run name is scanned before it becomes the folder name, the run id and the span's names."""
    import runtel

    secret = "n4me" + "S3cret"  # built here, so a git.diff of this very file cannot hold it
    with runtel.run_span(f"sync postgres://admin:{secret}@db/x") as run:
        pass
    assert run.dir is not None
    assert secret not in run.id and secret not in str(run.dir) and secret not in run.name
    for path in run.dir.iterdir():
        assert secret not in path.read_text(errors="replace"), path.name
