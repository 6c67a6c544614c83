"""Redactor: secret keys, credential-shaped text, URLs, argv, nested values; property tests."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtel import redaction
from runtel.redaction import REDACTED, Redactor

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2
GITLAB_TOKEN = "glpat-" + "x1Y2z3W4v5U6t7S8r9Q0"
SLACK_TOKEN = "xoxb-123456789012-abcdefghijkl"
OPENAI_KEY = "sk-proj-" + "Ab3dEf6hIj9lMn2pQr5tUv8x"
GOOGLE_KEY = "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq1\nabcDEF==\n-----END RSA PRIVATE KEY-----"
TOKENS = [AWS_KEY, GITHUB_TOKEN, GITLAB_TOKEN, SLACK_TOKEN, OPENAI_KEY, GOOGLE_KEY, JWT, PEM]


@pytest.fixture
def redactor() -> Redactor:
    """A Redactor with the built-in rules only."""
    return Redactor()


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "dbPassword",
        "db_passwd",
        "pwd",
        "secret",
        "client_secret",
        "AWS_SECRET_ACCESS_KEY",
        "token",
        "HF_TOKEN",
        "githubToken",
        "access_token",
        "api_key",
        "apiKey",
        "X-Api-Key",
        "api key",
        "access.key",
        "private_key",
        "credentials",
        "auth",
        "Authorization",
        "cookie",
        "Set-Cookie",
        "session",
        "signature",
        "SSH_KEY",
    ],
)
def test_secret_keys_are_recognised(redactor: Redactor, key: str) -> None:
    """Every common spelling of a credential key is a secret key."""
    assert redactor.is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    ["max_tokens", "tokenizer", "num_tokens", "author", "learning_rate", "pin_memory", "sort_key", "monkey", "path"],
)
def test_ordinary_ml_keys_are_not_secret(redactor: Redactor, key: str) -> None:
    """Keys that merely contain a secret-ish word (max_tokens, author) stay readable."""
    assert not redactor.is_secret_key(key)


def test_key_results_are_cached(redactor: Redactor) -> None:
    """The second lookup of a key is served from the cache."""
    assert redactor.is_secret_key("dbPassword")
    assert redactor.key_verdicts["dbPassword"] is True


@pytest.mark.parametrize("token", TOKENS)
def test_tokens_in_text_are_removed(redactor: Redactor, token: str) -> None:
    """Credential-shaped substrings disappear from free text; the surrounding text stays."""
    out = redactor.redact_text(f"before {token} after")
    assert token not in out
    assert out.startswith("before ") and out.endswith(" after")
    assert REDACTED in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def.ghi123", "Authorization: Bearer [REDACTED]"),
        ("curl -H 'Authorization: Basic dXNlcjpwYXNz'", "curl -H 'Authorization: Basic [REDACTED]'"),
        ("bearer 0123456789abcdef", "bearer [REDACTED]"),
        ("https://user:pw@host/x.git", "https://[REDACTED]@host/x.git"),
        ("postgres://u:p@db:5432/x", "postgres://[REDACTED]@db:5432/x"),
        ("https://example.com/a?api_key=abc&x=1", "https://example.com/a?api_key=[REDACTED]&x=1"),
        ("password=hunter2 max_tokens=512", "password=[REDACTED] max_tokens=512"),
        ('{"api_key": "abcd", "lr": 0.1}', '{"api_key": "[REDACTED]", "lr": 0.1}'),
        ("the token embeddings are fine", "the token embeddings are fine"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ("ssh://git@github.com/org/repo", "ssh://git@github.com/org/repo"),
    ],
)
def test_redact_text_examples(redactor: Redactor, text: str, expected: str) -> None:
    """Header, URL and key=value forms are redacted; innocent look-alikes are kept."""
    assert redactor.redact_text(text) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:SECRET@host/repo.git", "https://[REDACTED]@host/repo.git"),
        (f"https://{GITHUB_TOKEN}@github.com/o/r", "https://[REDACTED]@github.com/o/r"),
        ("https://oauth2:tok@gitlab.com/o/r", "https://[REDACTED]@gitlab.com/o/r"),
        ("ssh://u:pw@host/r", "ssh://[REDACTED]@host/r"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ("https://github.com/org/repo", "https://github.com/org/repo"),
    ],
)
def test_redact_url(redactor: Redactor, url: str, expected: str) -> None:
    """URL credentials (user:password or a bare token) go; scp-style and plain URLs are kept."""
    assert redactor.redact_url(url) == expected


def test_redact_value_recurses_and_checks_keys(redactor: Redactor) -> None:
    """Secret keys at any depth lose their value; text is scanned; tuples become lists; numbers pass."""
    value = {
        "db": {"host": "x", "password": "hunter2", "opts": ({"token": "t"}, f"key {AWS_KEY}")},
        "lr": 0.1,
        "credentials": {"user": "a", "pass": "b"},
        "missing_secret": None,
    }
    out = redactor.redact_value("config", value)
    assert out == {
        "db": {"host": "x", "password": REDACTED, "opts": [{"token": REDACTED}, f"key {REDACTED}"]},
        "lr": 0.1,
        "credentials": REDACTED,
        "missing_secret": None,
    }
    assert redactor.redact_value("api_key", 123) == REDACTED
    assert redactor.redact_value(None, 5) == 5


def test_redact_mapping_handles_cycles(redactor: Redactor) -> None:
    """A self-referencing structure is cut off instead of recursing forever."""
    cyclic: dict[str, object] = {"a": 1}
    cyclic["self"] = cyclic
    out = redactor.redact_mapping(cyclic)
    assert out["a"] == 1
    depth = 0
    node: object = out
    while isinstance(node, dict):
        node = node["self"]
        depth += 1
    assert node == REDACTED and depth > 10


def test_redact_argv(redactor: Redactor) -> None:
    """Option values, env-style pairs and inline tokens are removed from a command line."""
    argv = [
        "train.py",
        "--password",
        "hunter2",
        "--api-key=abc",
        "HF_TOKEN=xyz",
        "-p",
        "8080",
        "--lr",
        "0.1",
        "--token",
        "--next",
        "--url=https://u:pw@h/x",
        GITHUB_TOKEN,
        "-dbPassword",
        "s3cr3t",
    ]
    assert redactor.redact_argv(argv) == [
        "train.py",
        "--password",
        REDACTED,
        f"--api-key={REDACTED}",
        f"HF_TOKEN={REDACTED}",
        "-p",
        "8080",
        "--lr",
        "0.1",
        "--token",
        "--next",
        f"--url=https://{REDACTED}@h/x",
        REDACTED,
        "-dbPassword",
        REDACTED,
    ]


def test_extra_patterns_match_keys_and_values() -> None:
    """User patterns redact matching keys and matching substrings of values."""
    redactor = Redactor([r"internal-[0-9]+", r"^corp_id$"])
    assert redactor.is_secret_key("corp_id")
    assert redactor.redact_value("corp_id", "42") == REDACTED
    assert redactor.redact_text("host internal-1234 ok") == f"host {REDACTED} ok"
    assert not Redactor().is_secret_key("corp_id")


def test_invalid_extra_pattern_raises() -> None:
    """A broken user pattern fails loudly at construction, not silently later."""
    with pytest.raises(Exception, match="unterminated|missing"):
        Redactor(["(unclosed"])


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
_json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda children: (
        st.lists(children, max_size=4) | st.tuples(children, children) | st.dictionaries(_text, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(_text)
def test_redact_text_never_raises(text: str) -> None:
    """Arbitrary text is accepted and comes back as a string."""
    assert isinstance(Redactor().redact_text(text), str)


@settings(max_examples=200, deadline=None)
@given(_json_like, st.one_of(st.none(), _text))
def test_redact_value_never_raises(value: object, key: str | None) -> None:
    """Arbitrary nested values are accepted; the result contains no tuples."""
    out = Redactor().redact_value(key, value)

    def no_tuples(node: object) -> bool:
        if isinstance(node, tuple):
            return False
        if isinstance(node, dict):
            return all(no_tuples(v) for v in node.values())
        if isinstance(node, list):
            return all(no_tuples(v) for v in node)
        return True

    assert no_tuples(out)


@settings(max_examples=300, deadline=None)
@given(_text, _text, st.sampled_from(TOKENS))
def test_planted_token_never_survives_text(prefix: str, suffix: str, token: str) -> None:
    """A credential planted anywhere in arbitrary text (as its own word) is always removed."""
    out = Redactor().redact_text(f"{prefix} {token} {suffix}")
    assert token not in out


@settings(max_examples=200, deadline=None)
@given(_json_like, st.sampled_from(TOKENS), _text)
def test_planted_token_never_survives_nested_values(value: object, token: str, key: str) -> None:
    """A credential placed in a nested structure, as a value or under a secret key, never comes back."""
    out = Redactor().redact_value(None, {"data": [value, {key: f"x {token} y"}], "nested": {"password": value}})
    assert token not in repr(out)
    assert out["nested"]["password"] == REDACTED or value is None  # type: ignore[index]


@settings(max_examples=200, deadline=None)
@given(st.lists(_text, max_size=6), st.sampled_from(TOKENS))
def test_planted_token_never_survives_argv(argv: list[str], token: str) -> None:
    """Tokens in argv elements, as --secret values or env pairs, never survive redact_argv."""
    out = Redactor().redact_argv([*argv, token, "--password", token, f"API_KEY={token}", f"--secret={token}"])
    assert all(token not in arg for arg in out)


# --- key normalisation fast path and lazily compiled patterns -------------------------------------------


_CAMEL_1 = re.compile(redaction._CAMEL_1)
_CAMEL_2 = re.compile(redaction._CAMEL_2)
_SEPARATORS = re.compile(redaction._SEPARATORS)


def _normalise_by_regex(key: str) -> str:
    """The reference definition of key normalisation: split camelCase, lower case, separators -> "_"."""
    spaced = _CAMEL_2.sub(r"\1_\2", _CAMEL_1.sub(r"\1_\2", key))
    return _SEPARATORS.sub("_", spaced.lower()).strip("_")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("dbPassword", "db_password"),
        ("X-Api-Key", "x_api_key"),
        ("AWS_SECRET", "aws_secret"),
        ("HTTPServer", "http_server"),
        ("__max__tokens_", "max_tokens"),
        ("A1B", "a1_b"),
        ("ABC1", "abc1"),
        ("abc1", "abc1"),
        ("123_", "123"),
        ("", ""),
        ("___", ""),
        ("é_token", "token"),
    ],
)
def test_normalise_key_examples(key: str, expected: str) -> None:
    """Fast-path and regex-path keys normalise as documented."""
    assert redaction._normalise_key(key) == expected
    assert _normalise_by_regex(key) == expected


def test_normalise_key_fast_path_equals_regex_definition() -> None:
    """For ~20k generated keys (many single-case, which skip the regexes) the result equals the regex definition."""
    rng = random.Random(20261125)
    alphabets = ["aB_1-.Z\u00e9 ", "ab_1", "AB_", "AB_1", "a1_", "_1", "aB"]
    keys = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10))) for alphabet in alphabets
            for _ in range(3000)]
    single_case = [k for k in keys if k.isascii() and re.fullmatch(r"[a-z0-9_]+|[A-Z_]+", k)]
    assert len(single_case) > 5000  # the fast path is really exercised
    results = [(k, redaction._normalise_key(k), _normalise_by_regex(k)) for k in keys]
    assert [r for r in results if r[1] != r[2]] == []


def test_credential_patterns_compile_only_when_their_prefix_is_seen(clean_env: dict[str, str]) -> None:
    """In a fresh process no credential pattern is compiled for plain text; a GitHub token compiles only its rule."""
    token = "ghp_" + "Ab1" * 12
    script = f"""
import json
from runtel import redaction
from runtel.redaction import Redactor

r = Redactor()
plain = r.redact_value("learning_rate", "0.001 with cosine decay")
c = redaction._compiled()
before = [p._pattern is not None for _, p in c.token_rules]
text = r.redact_text("remote uses {token} for pushes")
after = {{prefixes[0]: p._pattern is not None for prefixes, p in c.token_rules}}
print(json.dumps({{"plain": plain, "before": before, "text": text, "after": after}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], env=clean_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["plain"] == "0.001 with cosine decay"
    assert out["before"] and not any(out["before"])
    assert out["text"] == f"remote uses {REDACTED} for pushes"
    assert token not in out["text"]
    assert out["after"]["ghp_"] is True
    assert [prefix for prefix, compiled in out["after"].items() if compiled] == ["ghp_"]


# --- key/value pairs (HTTP header lists, dict.items(), ASGI bytes headers, argv-style lists) ---------------


def test_pairs_with_a_secret_key_lose_their_value(redactor: Redactor) -> None:
    """A sequence of 2-item sequences whose first item is a secret key: the second item is replaced."""
    value = {
        "headers": [("X-Api-Key", "S1"), ("Authorization", "S2"), ("Accept", "json")],
        "env": [["DB_PASSWORD", "S3"], ["HOME", "/h"]],
        "items": list({"api_key": "S4", "lr": 0.1}.items()),
        "asgi": [(b"authorization", b"Bearer S5x"), (b"x-api-key", b"S6"), (b"host", b"h")],
        "none": [("token", None)],
        "nested": [("cookie", {"a": "S7"}), ("session", ["S8"])],
    }
    assert redactor.redact_value(None, value) == {
        "headers": [["X-Api-Key", REDACTED], ["Authorization", REDACTED], ["Accept", "json"]],
        "env": [["DB_PASSWORD", REDACTED], ["HOME", "/h"]],
        "items": [["api_key", REDACTED], ["lr", 0.1]],
        "asgi": [[b"authorization", REDACTED], [b"x-api-key", REDACTED], [b"host", b"h"]],
        "none": [["token", None]],
        "nested": [["cookie", REDACTED], ["session", REDACTED]],
    }


def test_pairs_in_their_run_json_form_lose_their_value(redactor: Redactor) -> None:
    """Bytes become {"__bytes__", "base64"} before run.json is redacted: the decoded key still counts."""
    from runtel.values.jsonable import to_jsonable

    record = to_jsonable({"asgi": [(b"authorization", b"S1"), (b"accept", b"S2")]}, max_str=1000)
    out = redactor.redact_mapping(record)  # type: ignore[arg-type]
    assert out["asgi"][0][1] == REDACTED
    assert out["asgi"][1] == record["asgi"][1]  # type: ignore[index]


def test_lone_pairs_and_ordinary_lists_are_kept(redactor: Redactor) -> None:
    """Only pairs inside a sequence count (a list of field names is not a header); long first items are
    not keys; 3-item tuples are not pairs."""
    value = {
        "fields": ["password", "email"],
        "triples": [("token", "a", "b")],
        "long": [("token" + "x" * 300, "kept")],
        "numbers": [(1, 2), (3, 4)],
        "plain": [("max_tokens", 512), ("author", "ana")],
    }
    assert redactor.redact_value(None, value) == {
        "fields": ["password", "email"],
        "triples": [["token", "a", "b"]],
        "long": [["token" + "x" * 300, "kept"]],
        "numbers": [[1, 2], [3, 4]],
        "plain": [["max_tokens", 512], ["author", "ana"]],
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["train.py", "--token", "S1", "--lr", "0.1"], ["train.py", "--token", REDACTED, "--lr", "0.1"]),
        (["-password", "S1"], ["-password", REDACTED]),
        (["--key", "S1"], ["--key", REDACTED]),
        (["--api-key", 12345], ["--api-key", REDACTED]),
        (["--token", "--verbose"], ["--token", "--verbose"]),  # no value: the next option is kept
        (["--token", None], ["--token", None]),
        (["--tokenizer", "bpe", "-p", "dir"], ["--tokenizer", "bpe", "-p", "dir"]),  # only long/secret flags
        (["--token=S1"], ["--token=" + REDACTED]),
    ],
)
def test_argv_style_lists_hide_the_word_after_a_secret_option(
    redactor: Redactor, value: list[object], expected: list[object]
) -> None:
    """A list like a command line: the value after --token/-password/--key is replaced."""
    assert redactor.redact_value(None, value) == expected
    strings = [v for v in value if isinstance(v, str)]
    if len(strings) == len(value):  # the scrubber's form: a list attribute of (already scanned) strings
        scanned = [redactor.redact_text(v) for v in strings]
        assert redactor.redact_flag_values(scanned) == expected


def test_flag_values_returns_the_same_list_when_clean(redactor: Redactor) -> None:
    """The scrubber's hot path: nothing to hide, no copy."""
    items = ["train.py", "--lr", "0.1"]
    assert redactor.redact_flag_values(items) is items


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[["X-Api-Key","S1"],["Authorization","S2"]]', '[["X-Api-Key","[REDACTED]"],["Authorization","[REDACTED]"]]'),
        ('[["DB_PASSWORD", "S3"], ["HOME", "/h"]]', '[["DB_PASSWORD", "[REDACTED]"], ["HOME", "/h"]]'),
        ("[('X-Api-Key', 'S1'), ('Accept', 'json')]", "[('X-Api-Key', '[REDACTED]'), ('Accept', 'json')]"),
        ("dict_items([('api_key', 'S1'), ('lr', 0.1)])", "dict_items([('api_key', '[REDACTED]'), ('lr', 0.1)])"),
        ("[(b'x-api-key', b'S1')]", "[(b'x-api-key', '[REDACTED]')]"),
        ("('password', 1234)", "('password', '[REDACTED]')"),
        ("('password', None)", "('password', None)"),
        ('[{"__bytes__":9,"base64":"eC1hcGkta2V5"},{"__bytes__":2,"base64":"UzE="}]',
         '[{"__bytes__":9,"base64":"eC1hcGkta2V5"},"[REDACTED]"]'),
        ('["run","--token","S1","--lr","0.1"]', '["run","--token","[REDACTED]","--lr","0.1"]'),
        ('["max_tokens","author"]', '["max_tokens","author"]'),
        ('["a","password","b"]', '["a","password","b"]'),  # in a longer list only an option hides its next item
    ],
)
def test_pairs_inside_text(redactor: Redactor, text: str, expected: str) -> None:
    """Pairs rendered as JSON (a span attribute) or a repr (captured arguments) are redacted too."""
    assert redactor.redact_text(text) == expected


def test_pairs_inside_text_cost_is_linear(redactor: Redactor) -> None:
    """Adversarial texts for the pair rule (unterminated quotes after every comma) finish: no quadratic scan.

    Not a timing assertion: a quadratic scan of these 400 kB texts would take minutes, not seconds.
    """
    for text in ('["key' + ',"' * 200_000, "(\"token\", '" + "x," * 200_000, "[" * 400_000 + 'key"'):
        assert redactor._compute_redact_text(text) == text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://hooks.slack.com/services/T000/B000/XXXXsecret", "https://hooks.slack.com/services/[REDACTED]"),
        ("post to https://hooks.slack.com/workflows/T1/A2/33/abc now", "post to https://hooks.slack.com/workflows/[REDACTED] now"),
        ("https://discord.com/api/webhooks/123456/abc-DEF_ghi", "https://discord.com/api/webhooks/[REDACTED]"),
        ("https://discordapp.com/api/v10/webhooks/1/tok", "https://discordapp.com/api/v10/webhooks/[REDACTED]"),
        ("https://contoso.webhook.office.com/webhookb2/1-2@3-4/IncomingWebhook/abc/5-6",
         "https://contoso.webhook.office.com/webhookb2/[REDACTED]"),
        ("https://outlook.office.com/webhook/1-2@3/IncomingWebhook/abc/5", "https://outlook.office.com/webhook/[REDACTED]"),
        ("https://hooks.slack.com/", "https://hooks.slack.com/"),
        ("see https://discord.com/channels/1/2", "see https://discord.com/channels/1/2"),
    ],
)
def test_webhook_urls_are_redacted(redactor: Redactor, url: str, expected: str) -> None:
    """Incoming-webhook URLs carry their credential in the path: the path goes, the host stays."""
    assert redactor.redact_text(url) == expected


def test_name_value_dicts_are_pairs(redactor: Redactor) -> None:
    """Kubernetes env entries, HAR headers and AWS tags spell a pair as a dict: a secret name hides the value."""
    value = {
        "env": [{"name": "DB_PASSWORD", "value": "S1"}, {"name": "HOME", "value": "/h"}],
        "tags": [{"Key": "api_token", "Value": "S2"}],
        "har": [{"name": "Authorization", "value": "S3", "comment": ""}],
        "none": {"name": "token", "value": None},
        "wide": {"name": "token", "value": "kept", "a": 1, "b": 2, "c": 3},  # 5 entries: not a pair
    }
    assert redactor.redact_value(None, value) == {
        "env": [{"name": "DB_PASSWORD", "value": REDACTED}, {"name": "HOME", "value": "/h"}],
        "tags": [{"Key": "api_token", "Value": REDACTED}],
        "har": [{"name": "Authorization", "value": REDACTED, "comment": ""}],
        "none": {"name": "token", "value": None},
        "wide": {"name": "token", "value": "kept", "a": 1, "b": 2, "c": 3},
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[{"name":"DB_PASSWORD","value":"S1"},{"name":"HOME","value":"/h"}]',
         '[{"name":"DB_PASSWORD","value":"[REDACTED]"},{"name":"HOME","value":"/h"}]'),
        ("{'Key': 'api_token', 'Value': 'S2'}", "{'Key': 'api_token', 'Value': '[REDACTED]'}"),
        ('{"name": "X-Api-Key", "value": 12345}', '{"name": "X-Api-Key", "value": "[REDACTED]"}'),
        ('{"name":"lr","value":"0.1"}', '{"name":"lr","value":"0.1"}'),
    ],
)
def test_name_value_dicts_inside_text(redactor: Redactor, text: str, expected: str) -> None:
    """The JSON or repr form of a name/value dict (name first, as these formats write it)."""
    assert redactor.redact_text(text) == expected


@pytest.mark.parametrize(("arg", "expected"), [
    ("echo curl -u bob:pw1 https://h/x; true", f"echo curl -u bob:{REDACTED} https://h/x; true"),
    ("curl -u 'bob:pw2' http://x", f"curl -u 'bob:{REDACTED}' http://x"),
    ("mysql -ppw3 -h db", f"mysql -p{REDACTED} -h db"),
    ("mysql -p pw4 --port 3306", f"mysql -p {REDACTED} --port 3306"),
    ("train --key k5\t--lr 0.1", f"train --key {REDACTED}\t--lr 0.1"),
    ("gcc -pthread -p 8080 a  b", "gcc -pthread -p 8080 a  b"),
])
def test_a_command_line_held_in_one_argument_gets_the_argv_rules(arg: str, expected: str) -> None:
    """``bash -c "..."`` and a script argument holding a shell line: each word is an argv word, blanks kept."""
    assert Redactor().redact_argv(["bash", "-c", arg]) == ["bash", "-c", expected]


def test_bound_containers_marks_a_cycle_and_leaves_the_rest_whole() -> None:
    """A self-referencing dict is cut at its cycle with the converters' own mark; the containers after it keep
    their budget (it once walked the cycle to the depth limit and left the later ones as truncation marks)."""
    from runtel import redaction
    from runtel.redaction import bound_containers
    from runtel.values import markers

    assert (redaction.CYCLE_MARK, redaction.DEPTH_MARK, redaction.TRUNCATED) == (
        markers.CYCLE_MARK, markers.DEPTH_MARK, markers.TRUNCATION_MARK)
    cyc: dict[str, Any] = {"a": 1}
    cyc["self"] = cyc
    loop: list[Any] = [1]
    loop.append(loop)
    shared = {"k": [1, 2]}
    out = bound_containers({"cyc": cyc, "loop": loop, "other": [1, 2, 3], "z": {"k": "v"}, "s1": shared, "s2": shared})
    assert out == {"cyc": {"a": 1, "self": markers.CYCLE_MARK}, "loop": [1, markers.CYCLE_MARK], "other": [1, 2, 3],
                   "z": {"k": "v"}, "s1": {"k": [1, 2]}, "s2": {"k": [1, 2]}}
    deep: list[Any] = []
    node = deep
    for _ in range(200):
        node.append([])
        node = node[0]
    flat = json.dumps(bound_containers(deep))
    assert flat.count("[") <= 65 and markers.DEPTH_MARK in flat
    assert bound_containers({"big": dict.fromkeys(range(5), 0)}, max_items=3) == {
        "big": {0: 0, 1: 0, 2: 0, "__truncated__": 2}}


@pytest.mark.parametrize(("argv", "expected"), [
    (["prog", "--password=my secret pw"], ["prog", f"--password={REDACTED}"]),  # an option's whole value
    (["prog", "PGPASSWORD=a b"], ["prog", f"PGPASSWORD={REDACTED}"]),
    (["prog", "--user=bob:pw with space"], ["prog", f"--user=bob:{REDACTED}"]),
    (["prog", "-pMy Secret"], ["prog", f"-p{REDACTED}"]),
    (["prog", "-pMySecret", "x"], ["prog", f"-p{REDACTED}", "x"]),
    (["bash", "-c", "mysql -u root --password 'S3 cret' db"], ["bash", "-c", f"mysql -u root --password {REDACTED} db"]),
    (["bash", "-c", "curl -u 'user:my pw' http://x"], ["bash", "-c", f"curl -u 'user:{REDACTED}' http://x"]),
    (["bash", "-c", 'curl -u "user:my pw" http://x'], ["bash", "-c", f'curl -u "user:{REDACTED}" http://x']),
    (["bash", "-c", 'mysql --password="a b c" -h db'], ["bash", "-c", f"mysql --password={REDACTED} -h db"]),
    (["bash", "-c", "sshpass -p 'my pw' ssh host"], ["bash", "-c", f"sshpass -p {REDACTED} ssh host"]),
    (["bash", "-c", "mysql -p'S3 cret'"], ["bash", "-c", f"mysql -p{REDACTED}"]),
    (["bash", "-c", "export API_KEY=abc; run"], ["bash", "-c", f"export API_KEY={REDACTED}; run"]),
    (["bash", "-c", "cd /x && mysql -pS3 && echo ok"], ["bash", "-c", f"cd /x && mysql -p{REDACTED} && echo ok"]),
    (["train.py", "it's fine", "a  b"], ["train.py", "it's fine", "a  b"]),
])
def test_blanks_and_quotes_never_split_a_secret_value(argv: list[str], expected: list[str]) -> None:
    """An option or NAME=value argument keeps its whole-argument rule; inside a one-argument command line a
    quoted value is one word; shell operators after a word are kept."""
    assert Redactor().redact_argv(argv) == expected


def test_a_cut_through_a_credential_still_hides_it_whole() -> None:
    """redact_cut scans the limit plus a margin, then cuts: the part of a token before the cut is not kept
    (cut first, 'ghp_A1b2…' was), for the head and for a stack trace's kept tail; the scan stays bounded."""
    from runtel.redaction import SCAN_MARGIN, TRUNCATED

    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"
    head = "x" * 90 + " " + token + " " + "y" * 10_000
    out = Redactor().redact_cut(head, 100)
    assert out == "x" * 90 + " " + REDACTED[:9] + TRUNCATED and "ghp_" not in out
    tail = "y" * 10_000 + " " + token + " " + "x" * 90
    out = Redactor().redact_cut(tail, 100, tail=True)
    assert out.startswith(TRUNCATED) and out.endswith(" " + "x" * 90) and "ghp_" not in out and "n4" not in out
    assert Redactor().redact_cut("short " + token, 100) == f"short {REDACTED}"
    seen: list[int] = []

    class Counting(Redactor):
        def redact_text(self, text: str) -> str:
            seen.append(len(text))
            return super().redact_text(text)

    Counting().redact_cut("z" * 10_000_000, 4096)
    assert seen == [4096 + SCAN_MARGIN]


@pytest.mark.parametrize(("argv", "expected"), [
    (["bash", "-c", r"prog --password my\ secret\ pw"], ["bash", "-c", f"prog --password {REDACTED}"]),
    (["bash", "-c", "x --password 'it'\\''s secret' y"], ["bash", "-c", f"x --password {REDACTED} y"]),
    (["bash", "-c", 'x --password "a b\\" c d" y'], ["bash", "-c", f"x --password {REDACTED} y"]),
    (["bash", "-c", 'prog "--password" hunter2'], ["bash", "-c", f'prog "--password" {REDACTED}']),
    (["bash", "-c", "docker run -e 'DB_PASSWORD=my secret' img"], ["bash", "-c", f"docker run -e 'DB_PASSWORD={REDACTED}' img"]),
    (["prog", "--env=PASSWORD=my secret"], ["prog", f"--env=PASSWORD={REDACTED}"]),
    (["prog", "--exec=mysql -pS3cret -h db"], ["prog", f"--exec=mysql -p{REDACTED} -h db"]),
    (["prog", "--entrypoint=sh -c 'mysql -pS3cret'"], ["prog", f"--entrypoint=sh -c 'mysql -p{REDACTED}'"]),
    (["curl", "-ubob:pw", "http://x"], ["curl", f"-ubob:{REDACTED}", "http://x"]),
    (["prog", "--name=my run", "echo 'hello world' && ls"], ["prog", "--name=my run", "echo 'hello world' && ls"]),
])
def test_escapes_nested_quotes_and_option_values_holding_commands(argv: list[str], expected: list[str]) -> None:
    """Backslash escapes and '\\'' joins stay in their word, a quoted option name is still the option, an
    option's value that is a pair or a command line gets those rules, and a quoted command inside is parsed."""
    assert Redactor().redact_argv(argv) == expected


def test_a_huge_argument_is_scanned_not_parsed() -> None:
    """Past 64 KiB an argument is scanned as text only: the cost stays that of the scan."""
    out = Redactor().redact_argv(["bash", "-c", "word " * 2_000_000 + "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"])
    assert out[2].endswith(REDACTED)


def test_a_cut_after_shrinking_redactions_and_a_tail_starting_inside_a_key() -> None:
    """A PEM block before the cut is replaced by a short mark, so the scanned window is widened until the cut
    is again well inside it; a kept tail that starts inside a private key hides the key's body too."""
    pem = ("-----BEGIN RSA PRIVATE KEY-----\n" + "MIIEowIBAAKCAQEA1234567890abcdefghijABCDEFGHIJ0123456789abcdefgh\n" * 18
           + "-----END RSA PRIVATE KEY-----")
    limit = 2000
    dsn = "postgres://admin:SuperSecretPassw0rd@db/x"
    head = "key=" + pem + " " + "x" * (limit + 512 - len(pem) - 20) + " " + dsn + " " + "y" * 10_000
    out = Redactor().redact_cut(head, limit)
    assert "SuperSecret" not in out and "MIIE" not in out, out[-120:]
    tail = "could not load key " + pem + "\n" + "z" * (limit - 400)
    out = Redactor().redact_cut(tail, limit, tail=True)
    assert "MIIE" not in out and out.endswith("z" * 100) and out.startswith("…[truncated]"), out[:200]


@given(st.lists(st.text(alphabet=st.sampled_from(list(" \t'\"\\;&|-=:@abcpuP0")), max_size=40), max_size=6))
@settings(max_examples=300, deadline=None)
def test_redact_argv_never_fails_on_shell_like_text(argv: list[str]) -> None:
    """Quotes, escapes and operators in any order: an answer, never an error (a partly quoted word once
    recursed without end: `python -c "print('a b'); ..."` stopped `runtel run`)."""
    assert len(Redactor().redact_argv(argv)) == len(argv)


def test_a_partly_quoted_word_and_deep_nesting_end() -> None:
    r = Redactor()
    assert r.redact_argv(["python", "-c", "print('from the job'); raise SystemExit(3)"])[2] == \
        "print('from the job'); raise SystemExit(3)"
    assert len(r.redact_argv(["bash", "-c", "\"'" * 20_000 + "x y" + "'\"" * 20_000])) == 3


def test_quoted_paths_and_option_chains_end() -> None:
    """A quoted path with a blank inside a command once took exponential time (a nested quantifier in the
    shell-word pattern: 'echo '/home/alice/experiments/run_2024_01 finished'' never ended), and a chain of
    '--a=' values recursed past the interpreter's limit. Run in a child with a generous deadline: it ends."""
    code = (
        "from runtel.redaction import Redactor\n"
        "r = Redactor()\n"
        "print(r.redact_argv(['bash', '-c', \"echo '/home/alice/experiments/run_2024_01 finished'\"]))\n"
        "print(r.redact_argv(['bash', '-c', \"sudo -u svc sh -c '/opt/conda/envs/ml/bin/python train.py'\"]))\n"
        "print(len(r.redact_argv(['x', '--a=' * 1000 + '\\\\ b', 'sh', '-c', 'run ' + '--a=' * 1000 + '\\\\ b'])))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "run_2024_01 finished" in lines[0] and "/opt/conda/envs/ml/bin/python train.py" in lines[1]
    assert lines[2] == "5"


def test_a_cut_never_keeps_text_near_an_unscanned_edge() -> None:
    """When four widenings of the scanned window are not enough (keys before the cut shrink it a lot), the
    kept part is shortened to stay inside what was scanned: shorter than the limit, never a half credential."""
    key = ("-----BEGIN RSA PRIVATE KEY-----\n" + "MIIEowIBAAKCAQEA1234567890abcdefghijABCDEFGHIJ0123456789abcdefgh\n" * 25
           + "-----END RSA PRIVATE KEY-----")
    dsn = " postgres://alice:Zq9Kx7Wv3Mn5Bt@db.example.com:5432/app "
    head = Redactor().redact_cut(3 * key + "x" * 896 + dsn + "y " * 2000, 1000)
    tail = Redactor().redact_cut("y " * 3000 + " " + dsn + "x" * 759 + " " + 4 * key, 2000, tail=True)
    for out in (head, tail):
        assert "Zq9Kx7" not in out and "v3Mn5Bt" not in out and "MIIE" not in out and len(out) <= 2012, out[-80:]


def test_flat_name_value_pairs_follow_the_dict_rule() -> None:
    """Only a pair of 2 to 4 entries (as the dict rule), its dict value hidden whole; a loss named like a
    metric with a weight and options is left alone."""
    r = Redactor()
    loss = {"c.loss.name": "token_level_ce", "c.loss.value": 0.31, "c.loss.weight": 1.0, "c.loss.reduction": "mean",
            "c.loss.ignore_index": -100}
    assert r.hide_flat_named_values(dict(loss)) == loss
    big = {"c.x.name": "DB_PASSWORD", "c.x.value": "v", "c.x.a": 1, "c.x.b": 2, "c.x.c": 3}
    assert r.hide_flat_named_values(dict(big))["c.x.value"] == "v"  # five entries: not a pair (as the dict rule)
    nested = {"c.api.name": "API_TOKEN", "c.api.value.prod": "t1", "c.api.value.dev": "t2"}
    assert r.hide_flat_named_values(dict(nested)) == {"c.api.name": "API_TOKEN", "c.api.value.prod": REDACTED,
                                                      "c.api.value.dev": REDACTED}
    assert r.hide_flat_named_values({"name": "TOKEN", "value": "t"}) == {"name": "TOKEN", "value": REDACTED}


@pytest.mark.parametrize(("argv", "expected"), [
    # "-p" of programs where it is no password, and values that are numbers or port mappings, stay: a run of
    # "mkdir -p build && ..." must stay reproducible
    (["mkdir", "-p", "build"], ["mkdir", "-p", "build"]),
    (["/v/bin/runtel", "run", "--", "mkdir", "-p", "b"], ["/v/bin/runtel", "run", "--", "mkdir", "-p", "b"]),
    (["/s/runtel/__main__.py", "run", "--", "sshpass", "-p", "pw", "ssh"],
     ["/s/runtel/__main__.py", "run", "--", "sshpass", "-p", REDACTED, "ssh"]),  # the wrapper's CMD decides
    (["/usr/bin/pytest", "-p", "no:cacheprovider"], ["/usr/bin/pytest", "-p", "no:cacheprovider"]),
    (["bash", "-c", "mkdir -p build && cd build"], ["bash", "-c", "mkdir -p build && cd build"]),
    (["bash", "-c", "A=1 mkdir -p out; read -p 'Go? ' x"], ["bash", "-c", "A=1 mkdir -p out; read -p 'Go? ' x"]),
    (["train.py", "-p", "0.5", "-q", "1e-3"], ["train.py", "-p", "0.5", "-q", "1e-3"]),
    (["docker", "run", "-p", "8080:80", "-p", "127.0.0.1:9090:90/tcp", "-u", "1000:1000", "img"],
     ["docker", "run", "-p", "8080:80", "-p", "127.0.0.1:9090:90/tcp", "-u", "1000:1000", "img"]),
    # ... and every other program keeps the conservative rule, including one started after a safe one
    (["bash", "-c", "mkdir -p x && mysql -u root -p pw"], ["bash", "-c", f"mkdir -p x && mysql -u root -p {REDACTED}"]),
    (["bash", "-c", "mkdir -p x;mysql -p pw"], ["bash", "-c", f"mkdir -p x;mysql -p {REDACTED}"]),
    (["bash", "-c", "mkdir -p x\nmysql -p pw"], ["bash", "-c", f"mkdir -p x\nmysql -p {REDACTED}"]),
    (["bash", "-c", "mkdir -p a|sshpass -p pw ssh h"], ["bash", "-c", f"mkdir -p a|sshpass -p {REDACTED} ssh h"]),
    (["bash", "-c", "mkdir -p `sshpass -p pw ssh h ls`"], ["bash", "-c", f"mkdir -p `sshpass -p {REDACTED} ssh h ls`"]),
    (["ssh", "host", "mysql", "-p", "pw"], ["ssh", "host", "mysql", "-p", REDACTED]),  # ssh runs a command
    (["sudo", "mkdir", "-p", "d"], ["sudo", "mkdir", "-p", REDACTED]),  # over-redacted: a wrapper is not followed
    (["docker", "login", "-u", "bob", "-p", "pw"], ["docker", "login", "-u", "bob", "-p", REDACTED]),
    (["curl", "-u", "bob:123"], ["curl", "-u", f"bob:{REDACTED}"]),
])
def test_short_p_is_a_password_only_where_it_may_be(argv: list[str], expected: list[str]) -> None:
    """The program a ``-p`` belongs to decides: a short list of programs whose ``-p`` is known to be no
    credential keeps its value; a value shaped like a number or port mapping is kept everywhere."""
    assert Redactor().redact_argv(argv) == expected
