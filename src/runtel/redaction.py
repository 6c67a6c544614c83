"""Keep credentials out of everything runtel records: keys, free text, URLs, argv, pairs and nested values.

Run records travel (shared folders, OTLP backends, bug reports), so anything that looks like a secret is
replaced by :data:`REDACTED` before it is stored. Redaction is deliberately eager: a false positive costs a
value in a record, a false negative leaks a credential. All patterns are compiled once; verdicts on keys and
results on short strings are cached because the same keys and values come back on every run, block and span.

The choke points that call this module are the span scrubber (``runtel._sdk.scrub``, every span and
Resource) and :meth:`Redactor.redact_record` (every write of run.json); callers cut strings to their limits
before scanning, so the cost is bounded by the limits.

The rules are documented in ``docs/privacy.md``; keep the two in step.
"""

from __future__ import annotations

import binascii
import functools
import re
from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any, Final

__all__ = ("REDACTED", "SCAN_MARGIN", "TRUNCATED", "Redactor", "bound_containers")

REDACTED: Final = "[REDACTED]"
#: appended to a string cut to its limit
TRUNCATED: Final = "…[truncated]"  # the same mark as runtel.values.TRUNCATION_MARK
#: characters past a cut that are scanned with the part kept (longer than any credential pattern's usual match)
SCAN_MARGIN: Final = 512
_PEM_END: Final = r"-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
# bound_containers' marks for a reference cycle and a nesting past _MAX_DEPTH: runtel.values.markers' own
# (the layers keep this module and runtel.values independent; a unit test checks they agree)
CYCLE_MARK: Final = "<cycle>"
DEPTH_MARK: Final = "<max depth>"

_MAX_DEPTH: Final = 64  # deeper (or cyclic) structures are replaced wholesale rather than walked
_KEY_CACHE_LIMIT: Final = 16_384  # a 10,000-key config checked on every record write stays cached
_TEXT_CACHE_LIMIT: Final = 8192
_TEXT_CACHE_MAX_LEN: Final = 256  # longer strings are rarely repeated; the cache holds at most ~4 MB
_TOKEN_MIN_LEN: Final = 15  # the shortest credential token the patterns below can match ("xoxb-" + 10)

# A key is secret when its normalised form (camelCase split, lower case, separators -> "_") ...
# ... contains one of these anywhere (they are unambiguous even inside longer words, e.g. "dbpassword"):
_STRONG_WORDS: Final = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "credential",
    "apikey",
    "accesskey",
    "privatekey",
    "secretkey",
    "signingkey",
    "encryptionkey",
    "authorization",
    "accesstoken",
    "authtoken",
    "refreshtoken",
    "bearertoken",
    "sessionid",
    "cookie",
)
# ... or has one of these as a whole "_"-separated word (too common inside other words: "max_tokens",
# "author", "sessions_per_day" must stay readable):
_WEAK_TOKENS: Final = frozenset(
    {"token", "pwd", "pw", "pass", "auth", "oauth", "session", "signature", "sig", "pat", "dsn", "jwt", "otp", "sas"}
)
# Command-line option names that hold a credential on their own, though too short or too generic to be a
# secret key in a config ("--key K", "-p P" for mysql/sshpass, "-u user:pass" for curl).
_ARGV_SECRET_NAMES: Final = frozenset({"key", "p"})
_ARGV_USER_NAMES: Final = frozenset({"u", "user", "proxy-user", "U"})
# Programs whose "-p" is a flag or a value that is no credential ("mkdir -p build", "pytest -p plugin", "read -p
# PROMPT"). None of them runs another command from its own arguments (ssh, docker, sudo, xargs are left out: their
# "-p" may belong to the command they run, "ssh host mysql -p pw"); any other program keeps the conservative rule.
_P_NOT_A_PASSWORD: Final = frozenset({
    "mkdir", "cp", "ls", "install", "tar", "scp", "rsync", "patch", "ps", "pgrep", "pkill", "lsof", "top", "htop",
    "git", "pytest", "py.test", "read", "psql", "pg_dump", "pg_dumpall", "pg_restore", "pg_isready", "createdb",
    "dropdb", "pg_basebackup", "gunicorn", "tensorboard", "pip", "pip3", "nvidia-smi", "ulimit", "iperf3",
    "redis-cli",
})
# A "-p" value shaped like a number or a port mapping ("-p 0.5", "-p 8080:80", "-p 127.0.0.1:8080:80/tcp") is kept.
_P_NUMBER: Final = re.compile(
    r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?:\d{1,3}(?:\.\d{1,3}){3}:)?\d+(?:-\d+)?:\d+(?:-\d+)?(?:/[a-z]+)?"
)
# Words that end one shell command and start the next ("a && b", "if x; then b", "(cd x; b)").
_COMMAND_BREAKS: Final = frozenset({"&&", "||", "|", "|&", ";", "&", "(", "{", "!", "then", "do", "else", "elif"})
# Inside a word, these may start another command whose end is not known ("x;mysql", "$(mysql", "`mysql"): the
# words after it get no program, so the conservative rule.
_HIDDEN_BREAK: Final = re.compile(r"[;&|`()<>]|\$\(")
# ... or has one of these adjacent word pairs ("api_key" is covered by "apikey" once separators are dropped).
_KEY_QUALIFIERS: Final = frozenset({"ssh", "client", "master", "license", "app", "service", "account", "storage"})

# Pattern sources; they are compiled on first use (compiling them all costs milliseconds, and importing
# runtel must stay cheap).
_CAMEL_1: Final = r"([A-Z]+)([A-Z][a-z])"
_CAMEL_2: Final = r"([a-z0-9])([A-Z])"
_SEPARATORS: Final = r"[^a-z0-9]+"

# Credential-shaped substrings of free text, each behind the literal prefixes that gate it (a substring test
# is ~100x cheaper than running the pattern, and most text has none of them). Each match becomes REDACTED.
_AWS_PREFIXES: Final = ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "APKA")
# No leading \b: it defeats the regex engine's literal-prefix search (30x slower on a large diff), and a token
# glued to other characters is still worth hiding. AWS ids keep a boundary check (the lookbehind after the "A"),
# since their 4-letter prefixes occur inside ordinary upper-case words.
_TOKEN_SOURCES: Final = (
    (
        ("-----BEGIN",),
        r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    ),
    (  # AWS access key ids
        _AWS_PREFIXES,
        r"A(?<![A-Za-z0-9]A)(?:" + "|".join(p[1:] for p in _AWS_PREFIXES) + r")[A-Z0-9]{16}\b",
    ),
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), r"gh[pousr]_[A-Za-z0-9]{20,255}"),  # GitHub tokens
    (("github_pat_",), r"github_pat_[A-Za-z0-9_]{20,255}"),
    (("glpat-",), r"glpat-[A-Za-z0-9_\-]{20,}"),  # GitLab personal access token
    (("xox",), r"xox[abposre]-[A-Za-z0-9\-]{10,}"),  # Slack
    (("sk-",), r"sk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_\-]{20,}"),  # OpenAI / Anthropic style
    (("k_live_", "k_test_"), r"[rps]k_(?:live|test)_[A-Za-z0-9]{16,}"),  # Stripe
    (("AIza",), r"AIza[0-9A-Za-z_\-]{35}"),  # Google API key
    (("hf_",), r"hf_[A-Za-z0-9]{30,}"),  # Hugging Face
    (("npm_",), r"npm_[A-Za-z0-9]{36}"),
    (("pypi-",), r"pypi-[A-Za-z0-9_\-]{50,}"),
    (("eyJ",), r"eyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"),  # JWT (signature may be empty)
    # Incoming-webhook URLs: the path is the credential (anyone holding it can post). A rule with a group
    # named "keep" keeps that part (the host and route, so the record still says what it was).
    (("hooks.slack.com/",), r"(?P<keep>hooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers)/)[A-Za-z0-9/_\-]+"),
    (("/webhooks/",), r"(?P<keep>discord(?:app)?\.com/api/(?:v\d+/)?webhooks/)[0-9]+/[A-Za-z0-9_\-]+"),
    (("webhook.office.com/", "outlook.office.com/webhook"),
     r"(?P<keep>(?:[A-Za-z0-9\-]+\.webhook\.office\.com/webhookb2/|outlook\.office\.com/webhook/))[A-Za-z0-9@/_\-]+"),
)
_BEARER: Final = r"(?i)\b(bearer)([ \t]+)[A-Za-z0-9._~+/\-]{8,}=*"
_AUTH_HEADER: Final = (
    r"(?i)\b((?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*)(?:(basic|digest|negotiate|bearer|token)[ \t]+)?[^\s,;\"']+"
)
# scheme://userinfo@ — userinfo runs to the last "@" before the host part ends.
_URL_USERINFO: Final = r"\b([A-Za-z][A-Za-z0-9+.\-]*://)([^\s/?#@]+(?:@[^\s/?#@]+)*)@"
# user:password@host with no scheme (DSNs, "curl -u", log lines): the part after ":" is the credential.
_BARE_USERINFO: Final = r"(?<![\w.+\-/:@])([A-Za-z0-9_.+\-]+):([^\s:@/\"'=]+)@(?=[A-Za-z0-9\[])"
# "--password VALUE" inside free text (a job name, a logged command line); the name is checked as a key.
_TEXT_FLAG: Final = r"(?<![\w\-])(--?[A-Za-z][\w.\-]*)([ \t]+)(\"[^\"\n]*\"|'[^'\n]*'|[^\s\"'\-][^\s\"']*)"
# One word of a command line as a shell splits it: quoted parts (with their blanks) stay in the word.
# (one plain character per turn, no quantifier inside the outer one: a failed fullmatch stays linear)
_SHELL_WORD: Final = re.compile(r"""(?:[^\s'"\\]|\\.|'[^']*'|"(?:[^"\\]|\\.)*"|['"\\])+""", re.S)
#: arguments longer than this are scanned as text only, not parsed as a command line (bounded cost)
_COMMAND_TEXT_MAX: Final = 65_536
_SSH_SCHEMES: Final = frozenset({"ssh", "git+ssh", "ssh+git", "sftp", "scp"})
# key=value / key: value inside text (query strings, DSNs, command lines, JSON); the key is then checked properly.
_ASSIGN: Final = r"\b([A-Za-z_][\w.\-]*)([\"']?[ \t]*[=:][ \t]*)(\"[^\"\n]*\"|'[^'\n]*'|[^\s,;&\"']+)"
# A key=value pair is only looked at when the text holds one of these (lower case) and a separator.
_ASSIGN_HINTS: Final = (
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "cred",
    "auth",
    "cookie",
    "session",
    "sig",
    "dsn",
    "jwt",
    "pw",
)
_AUTH_SCHEMES: Final = frozenset({"basic", "digest", "negotiate", "bearer", "token"})
# Pairs inside text (a JSON attribute, a repr): `["X-Api-Key","v"]`, `('token', 'v')`, `(b'authorization', b'v')`,
# with the JSON form of bytes `{"__bytes__":N,"base64":"..."}` as a key; and `"--token","v"` inside a longer
# list. A key is at most _PAIR_KEY_MAX characters (bounded work per opening bracket or comma); a value runs to
# its closing quote (work bounded by the distance to the next quote).
_PAIR_KEY_MAX: Final = 256
_PAIR_KEY_ITEM: Final = (
    r"b?\"(?:[^\"\\\n]|\\.){0,256}\"|b?'(?:[^'\\\n]|\\.){0,256}'"
    r"|\{\"__bytes__\":[ ]?\d+,[ ]?\"base64\":[ ]?\"[A-Za-z0-9+/=]{0,344}\"\}"
)
_PAIR_VALUE_ITEM: Final = (
    r"b?\"(?!--)(?:[^\"\\\n]|\\.)*\"|b?'(?!--)(?:[^'\\\n]|\\.)*'"
    r"|\{\"__bytes__\":[ ]?\d+,[ ]?\"(?:base64|sha256)\":[ ]?\"[^\"\n]*\"\}|[^\s,()\[\]{}\"']+"
)
_PAIR_SEP: Final = r"(?P<sep>[ \t]*,[ \t]*)(?P<value>" + _PAIR_VALUE_ITEM + ")"
#: a bracketed pair: ( key , value )
_TEXT_PAIR: Final = r"(?P<open>[\[(])(?P<ws>[ \t]*)(?P<key>" + _PAIR_KEY_ITEM + ")" + _PAIR_SEP + r"(?=[ \t]*[\])])"
#: an option and the item after it, anywhere in a list: , "--token" , value
_TEXT_FLAG_ITEM: Final = (
    r"(?P<open>[\[(,])(?P<ws>[ \t]*)(?P<key>b?\"-[^\"\\\n]{1,255}\"|b?'-[^'\\\n]{1,255}')" + _PAIR_SEP
    + r"(?=[ \t]*[\]),])"
)
_PAIR_HINT: Final = "__bytes__"
# A dict of two to four entries with one of these names and one of these value keys is a name/value pair.
_NAME_KEYS: Final = ("name", "key", "Name", "Key")
_NAMED_VALUE_KEYS: Final = ("value", "Value")
# ... and its JSON or repr text, name first: {"name": "DB_PASSWORD", "value": "..."}
_TEXT_NAMED_VALUE: Final = (
    r"(?P<head>(?P<q1>[\"'])(?:name|key|Name|Key)(?P=q1)[ \t]*:[ \t]*(?P<q>[\"'])"
    r"(?P<key>(?:(?!(?P=q))[^\\\n]|\\.){1,256})(?P=q)[ \t]*,[ \t]*(?P<q2>[\"'])(?:value|Value)(?P=q2)[ \t]*:[ \t]*)"
    r"(?P<value>\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'|[^\s,}\]\"']+)"
)
_ENV_PAIR: Final = r"([A-Za-z_][A-Za-z0-9_.\-]*)=(.*)"


#: containers kept per level by :func:`bound_containers` (one less than to_jsonable's 10,000: room for the mark)
BOUND_ITEMS: Final = 9_999
#: containers entries visited in all by :func:`bound_containers`; past it, nested containers are cut to the mark
BOUND_NODES: Final = 200_000


def bound_containers(value: object, *, max_items: int = BOUND_ITEMS, max_nodes: int = BOUND_NODES) -> object:
    """Plain dicts/lists/tuples cut to ``max_items`` entries each (and ``max_nodes`` in all), before anything
    walks them: a 10^6-key config then costs what 10^4 keys cost in normalising, redacting and converting.

    A cut dict gets ``"__truncated__": <entries dropped>``, a cut list the ``"…[n more items]"`` string (the
    marks :mod:`runtel.values` uses), a reference cycle the ``"<cycle>"`` mark where it closes; other objects
    are returned as they are (their fields are not walked here).
    """
    budget = [max_nodes]
    active: set[int] = set()  # the containers being walked: one seen again is a reference cycle

    def walk(v: object, depth: int) -> object:
        cls = type(v)
        if cls is not dict and cls is not list and cls is not tuple:
            return v
        if id(v) in active:
            return CYCLE_MARK
        if depth >= _MAX_DEPTH:
            return DEPTH_MARK
        active.add(id(v))
        try:
            if cls is dict:
                d: Any = v
                if len(d) <= max_items and budget[0] > len(d):
                    budget[0] -= len(d)
                    if not any(type(x) in (dict, list, tuple) for x in d.values()):
                        return v
                    return {k: walk(x, depth + 1) for k, x in d.items()}
                keep = max(0, min(max_items, budget[0], len(d)))
                budget[0] -= keep
                out = {k: walk(x, depth + 1) for k, x in islice(d.items(), keep)}
                out[_TRUNCATED_KEY if _TRUNCATED_KEY not in out else _TRUNCATED_KEY + "#2"] = len(d) - keep
                return out
            seq: Any = v
            keep = max(0, min(max_items, budget[0], len(seq)))
            budget[0] -= keep
            items = [walk(x, depth + 1) for x in islice(seq, keep)]
            if keep < len(seq):
                items.append(f"…[{len(seq) - keep} more items]")
            elif not any(type(x) in (dict, list, tuple) for x in seq):
                return v
            return items if cls is list else tuple(items)
        finally:
            active.discard(id(v))

    try:
        return walk(value, 0)
    except Exception:
        return value


_TRUNCATED_KEY: Final = "__truncated__"


class _Compiled:
    """The patterns, each compiled on first use: most runs need only a few of them (compiling all costs ~10 ms)."""

    @functools.cached_property
    def camel_1(self) -> re.Pattern[str]:
        return re.compile(_CAMEL_1)

    @functools.cached_property
    def camel_2(self) -> re.Pattern[str]:
        return re.compile(_CAMEL_2)

    @functools.cached_property
    def separators(self) -> re.Pattern[str]:
        return re.compile(_SEPARATORS)

    @functools.cached_property
    def token_rules(self) -> tuple[tuple[tuple[str, ...], _LazyPattern], ...]:
        return tuple((prefixes, _LazyPattern(source)) for prefixes, source in _TOKEN_SOURCES)

    @functools.cached_property
    def long_token_rules(self) -> tuple[tuple[tuple[str, ...], _LazyPattern], ...]:
        """The rules gated by fewer, shorter stems: on long text each substring test is a scan of all of it,
        so the 11 AWS prefixes become one "A" (the pattern itself then jumps from "A" to "A")."""
        coarse = {_TOKEN_SOURCES[1][1]: ("A",), _TOKEN_SOURCES[2][1]: ("gh",), _TOKEN_SOURCES[7][1]: ("k_",)}
        return tuple((coarse.get(rule.source, prefixes), rule) for prefixes, rule in self.token_rules)

    @functools.cached_property
    def token_gate(self) -> re.Pattern[str]:
        return re.compile("|".join(re.escape(p) for prefixes, _ in _TOKEN_SOURCES for p in prefixes))

    @functools.cached_property
    def bearer(self) -> re.Pattern[str]:
        return re.compile(_BEARER)

    @functools.cached_property
    def auth_header(self) -> re.Pattern[str]:
        return re.compile(_AUTH_HEADER)

    @functools.cached_property
    def url_userinfo(self) -> re.Pattern[str]:
        return re.compile(_URL_USERINFO)

    @functools.cached_property
    def assign(self) -> re.Pattern[str]:
        return re.compile(_ASSIGN)

    @functools.cached_property
    def bare_userinfo(self) -> re.Pattern[str]:
        return re.compile(_BARE_USERINFO)

    @functools.cached_property
    def text_flag(self) -> re.Pattern[str]:
        return re.compile(_TEXT_FLAG)

    @functools.cached_property
    def text_pair(self) -> re.Pattern[str]:
        return re.compile(_TEXT_PAIR)

    @functools.cached_property
    def text_flag_item(self) -> re.Pattern[str]:
        return re.compile(_TEXT_FLAG_ITEM)

    @functools.cached_property
    def text_named_value(self) -> re.Pattern[str]:
        return re.compile(_TEXT_NAMED_VALUE)

    @functools.cached_property
    def env_pair(self) -> re.Pattern[str]:
        return re.compile(_ENV_PAIR, re.DOTALL)


class _LazyPattern:
    """A credential pattern compiled the first time some text passes its literal-prefix gate."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._pattern: re.Pattern[str] | None = None

    def sub(self, repl: str, text: str) -> str:
        pattern = self._pattern
        if pattern is None:
            pattern = self._pattern = re.compile(self.source)
        if "keep" in pattern.groupindex:
            return pattern.sub(lambda m: m.group("keep") + repl, text)
        return pattern.sub(repl, text)


@functools.lru_cache(maxsize=1)
def _compiled() -> _Compiled:
    return _Compiled()


def _normalise_key(key: str) -> str:
    """``"dbPassword"``/``"X-Api-Key"``/``"AWS_SECRET"`` -> ``"db_password"``/``"x_api_key"``/``"aws_secret"``."""
    if (key.isascii() and key.replace("_", "").isalnum()
            and (key.islower() or not any(ch.isalpha() for ch in key)
                 or (key.isupper() and not any(ch.isdigit() for ch in key)))):
        # No camelCase boundary possible and no separator but "_" (env names, most config keys): no regex.
        return "_".join(part for part in key.lower().split("_") if part)
    c = _compiled()
    spaced = c.camel_2.sub(r"\1_\2", c.camel_1.sub(r"\1_\2", key))
    return c.separators.sub("_", spaced.lower()).strip("_")


class Redactor:
    """Replaces secrets by :data:`REDACTED`; one instance per configuration, safe to share between threads.

    Args:
        extra_patterns: Additional regular expressions (``RUNTEL_REDACT_PATTERNS`` /
            ``configure(redact_patterns=...)``). A key matching one is a secret key; any match inside a
            value is replaced.
        allow_keys: Regular expressions (``RUNTEL_REDACT_ALLOW`` / ``configure(redact_allow=...)``) for keys
            that are never secret keys, searched like the extra patterns; the text of their values is
            still scanned, so a token inside stays hidden.

    Raises:
        re.error: An extra pattern is not a valid regular expression.
    """

    def __init__(self, extra_patterns: Sequence[str] = (), *, allow_keys: Sequence[str] = ()) -> None:
        self._extra = tuple(re.compile(p) for p in extra_patterns if p)
        self._allow = tuple(re.compile(p) for p in allow_keys if p)
        self.key_verdicts: dict[str, bool] = {}
        self.text_results: dict[str, str] = {}
        self._long_done: dict[int, str] = {}
        self._env_cache: tuple[object, dict[str, Any], int] | None = None

    @property
    def patterns(self) -> tuple[str, ...]:
        """The extra and allow patterns; two Redactors with equal patterns redact identically (a cache key)."""
        return tuple(p.pattern for p in self._extra) + tuple("allow:" + p.pattern for p in self._allow)

    # --- keys ------------------------------------------------------------------------------------------
    def is_secret_key(self, key: str) -> bool:
        """Whether values stored under ``key`` are credentials (any case, any separator, camelCase)."""
        cached = self.key_verdicts.get(key)
        if cached is not None:
            return cached
        result = self._compute_is_secret_key(key)
        if len(self.key_verdicts) >= _KEY_CACHE_LIMIT:
            self.key_verdicts.clear()
        self.key_verdicts[key] = result
        return result

    def _compute_is_secret_key(self, key: str) -> bool:
        if self._allow and any(p.search(key) for p in self._allow):
            return False
        if any(p.search(key) for p in self._extra):
            return True
        norm = _normalise_key(key)
        if not norm:
            return False
        joined = norm.replace("_", "")
        if any(word in joined for word in _STRONG_WORDS):
            return True
        words = norm.split("_")
        for i, word in enumerate(words):
            if word in _WEAK_TOKENS or word.endswith("token"):
                return True
            if word == "key" and i > 0 and words[i - 1] in _KEY_QUALIFIERS:
                return True
        return False

    # --- text ------------------------------------------------------------------------------------------
    def redact_cut(self, text: str, limit: int, *, tail: bool = False) -> str:
        """``text`` redacted and, when longer than ``limit``, cut to it (plus :data:`TRUNCATED`; ``tail``: its
        end kept, the mark in front).

        Only ``limit`` + :data:`SCAN_MARGIN` characters are scanned, so the cost is the limit's, not the
        input's, and a credential the cut goes through is still matched whole (cut first, its prefix would
        be kept: ``ghp_A1b2…``).
        """
        if len(text) <= limit:
            return self.redact_text(text)
        window = limit + SCAN_MARGIN
        for _ in range(4):  # redactions before the cut (a PEM block) shrink the text: widen the window
            out = self.redact_text(text[-window:] if tail else text[:window])
            if len(out) - limit >= SCAN_MARGIN // 2 or window >= len(text):
                break
            window += limit + SCAN_MARGIN - len(out)
        # what is kept stays half a margin inside the scanned part (shorter than the limit when it must)
        keep = limit if window >= len(text) else max(0, min(limit, len(out) - SCAN_MARGIN // 2))
        if tail:
            end = re.search(_PEM_END, out)  # a private key whose BEGIN line is before the window: its body too
            if end is not None and "-----BEGIN" not in out[: end.start()]:
                out = REDACTED + out[end.end():]
            out = TRUNCATED + (out[-keep:] if keep else "")
        else:
            out = out[:keep] + TRUNCATED
        if len(out) > _TEXT_CACHE_MAX_LEN:  # a cut of clean text is clean: not scanned again (run.json rewrites)
            if len(self._long_done) >= 32:
                self._long_done.clear()
            self._long_done[id(out)] = out
        return out

    def redact_text(self, text: str) -> str:
        """Replace credential-looking substrings (tokens, keys, JWTs, PEM blocks, URL userinfo, ``k=v``).

        Results for short strings are cached: span attributes, names and env values repeat on every span
        and run, so the scrubbing stage mostly pays one dict lookup per string.
        """
        if not text:
            return text
        if len(text) <= _TEXT_CACHE_MAX_LEN:
            cache = self.text_results
            hit = cache.get(text)
            if hit is not None:
                return hit
            out = self._compute_redact_text(text)
            if len(cache) >= _TEXT_CACHE_LIMIT:
                cache.clear()
            cache[text] = out
            return out
        # A long text that is itself an output of this redactor (run.json holds the redacted config and is
        # rewritten several times) is not scanned again: redaction is idempotent.
        done = self._long_done.get(id(text))
        if done is text:
            return text
        out = self._compute_redact_text(text)
        if len(self._long_done) >= 32:
            self._long_done.clear()
        self._long_done[id(out)] = out  # holds `out`, so its id cannot be reused while it is a key
        return out

    def _compute_redact_text(self, text: str) -> str:
        c = _compiled()
        out = text
        # One alternation regex is fastest on short text; on long text it tries every prefix at every
        # position, while a substring test per prefix is a C scan (100 ms vs 2 ms for 1 MiB).
        if len(out) >= _TOKEN_MIN_LEN and (c.token_gate.search(out) is not None if len(out) < 4096 else True):
            for prefixes, rule in (c.token_rules if len(out) < 4096 else c.long_token_rules):
                if any(prefix in out for prefix in prefixes):
                    out = rule.sub(REDACTED, out)
        # The remaining rules never span lines: run them line by line, so a large text (a diff) only pays
        # for the few lines that hold a hint instead of every pattern scanning all of it.
        if "\n" in out:
            out = "\n".join(self._redact_line(line, c) for line in out.split("\n"))
        else:
            out = self._redact_line(out, c)
        for pattern in self._extra:
            out = pattern.sub(REDACTED, out)
        return out

    def _redact_line(self, out: str, c: _Compiled) -> str:
        lower = ""
        if "," in out and ('"' in out or "'" in out):  # a pair in JSON or a repr: ["X-Api-Key","v"]
            lower = out.lower()
            if self._extra or _PAIR_HINT in out or any(hint in lower for hint in _ASSIGN_HINTS):
                out = c.text_pair.sub(self._text_pair_sub, out)
                if "\"-" in out or "'-" in out:
                    out = c.text_flag_item.sub(self._text_flag_item_sub, out)
                if "value" in lower:
                    out = c.text_named_value.sub(self._text_named_value_sub, out)
        # Every rule below needs a separator ("=", ":", "@") or a blank ("Bearer x", "--password x").
        if "=" not in out and ":" not in out and " " not in out and "\t" not in out:
            return out
        lower = lower or out.lower()
        if "authorization" in lower:
            out = c.auth_header.sub(self._auth_header_sub, out)
        if "bearer" in lower:
            out = c.bearer.sub(self._bearer_sub, out)
        if "@" in out and ":" in out:
            if "://" in out:
                out = c.url_userinfo.sub(self._userinfo_sub, out)
            out = c.bare_userinfo.sub(self._bare_userinfo_sub, out)
        hinted = any(hint in lower for hint in _ASSIGN_HINTS)
        if hinted and ("=" in out or ":" in out):
            out = c.assign.sub(self._assign_sub, out)
        if hinted and "-" in out and (" " in out or "\t" in out):
            out = c.text_flag.sub(self._text_flag_sub, out)
        return out

    def _text_pair_sub(self, match: re.Match[str]) -> str:
        """``["X-Api-Key","v"]`` -> ``["X-Api-Key","[REDACTED]"]`` (a repr's quotes are kept)."""
        key = match.group("key")
        if key[0] == "{":  # the JSON form of bytes: the key is its base64 text
            try:
                name = _pair_key_name(binascii.a2b_base64(key.rpartition(":")[2].strip(' "}')))
            except (binascii.Error, ValueError):
                return match.group(0)
        else:
            name = key[2:-1] if key[0] == "b" else key[1:-1]
        return self._hide_text_value(match, self.is_secret_key(name))

    def _text_flag_item_sub(self, match: re.Match[str]) -> str:
        """``"--token","v"`` inside a listed command line -> ``"--token","[REDACTED]"``."""
        key = match.group("key")
        return self._hide_text_value(match, self._is_secret_flag(key[2:-1] if key[0] == "b" else key[1:-1]))

    def _text_named_value_sub(self, match: re.Match[str]) -> str:
        """``{"name": "DB_PASSWORD", "value": "v"}`` -> ``{"name": "DB_PASSWORD", "value": "[REDACTED]"}``."""
        value = match.group("value")
        if value in ("None", "null") or value.strip("'\"") == REDACTED or not self.is_secret_key(match.group("key")):
            return match.group(0)
        quote = "'" if value[0] == "'" else '"'
        return f"{match.group('head')}{quote}{REDACTED}{quote}"

    @staticmethod
    def _hide_text_value(match: re.Match[str], secret: bool) -> str:
        value = match.group("value")
        if not secret or value in ("None", "null") or value.lstrip("b").strip("'\"") == REDACTED:
            return match.group(0)
        quote = "'" if match.group("key")[-1] == "'" else '"'
        return f"{match.group('open')}{match.group('ws')}{match.group('key')}{match.group('sep')}{quote}{REDACTED}{quote}"

    def _is_secret_flag(self, item: str) -> bool:
        """``--token``/``-password``/``--key``: an option whose next word on a command line is a credential."""
        if item[:1] != "-" or len(item) > _PAIR_KEY_MAX or "=" in item:
            return False
        name = item.lstrip("-")
        return (len(name) >= 3 and name[:1].isalpha() and self.is_secret_key(name)) or (
            item.startswith("--") and name in _ARGV_SECRET_NAMES)

    def _pair_key(self, first: object) -> bool:
        """Whether ``first`` (the first item of a 2-item sequence) is a secret key: a string, bytes (ASGI
        headers), or bytes in their run.json form ``{"__bytes__": n, "base64": ...}``; at most 256 long."""
        cls = type(first)
        if cls is str:
            text: Any = first
            return len(text) <= _PAIR_KEY_MAX and self.is_secret_key(text)
        if cls is bytes or cls is bytearray:
            raw: Any = first
            return len(raw) <= _PAIR_KEY_MAX and self.is_secret_key(_pair_key_name(raw))
        if cls is dict and len(first) == 2:  # type: ignore[arg-type]
            b64 = first.get("base64")  # type: ignore[attr-defined]
            if "__bytes__" in first and type(b64) is str and len(b64) <= 344:  # type: ignore[operator]
                try:
                    return self.is_secret_key(_pair_key_name(binascii.a2b_base64(b64)))
                except (binascii.Error, ValueError):
                    return False
        return False

    def redact_flag_values(self, items: list[Any]) -> list[Any]:
        """``["--token", "x"]`` -> ``["--token", "[REDACTED]"]`` for a list of (already scanned) strings,
        e.g. a span's list attribute; the same list back when nothing changed. One pass, no copies else."""
        out = items
        hide = False
        for i, item in enumerate(items):
            if type(item) is not str:
                hide = False
                continue
            if hide and not item.startswith("--") and item != REDACTED:
                if out is items:
                    out = list(items)
                out[i] = REDACTED
                hide = False
                continue
            hide = item[:1] == "-" and self._is_secret_flag(item)
        return out

    @staticmethod
    def _bare_userinfo_sub(match: re.Match[str]) -> str:
        if match.group(2) == REDACTED or match.group(2).startswith("[REDACTED"):
            return match.group(0)
        return f"{match.group(1)}:{REDACTED}@"

    def _text_flag_sub(self, match: re.Match[str]) -> str:
        flag, blank, value = match.group(1), match.group(2), match.group(3)
        name = flag.lstrip("-")
        if value.strip("'\"") == REDACTED or not (len(name) >= 3 and self.is_secret_key(name)
                                                    or (flag.startswith("--") and name in _ARGV_SECRET_NAMES)):
            return match.group(0)
        quote = value[0] if value[:1] in ("'", '"') else ""
        return f"{flag}{blank}{quote}{REDACTED}{quote}"

    @staticmethod
    def _auth_header_sub(match: re.Match[str]) -> str:
        scheme = match.group(2)
        return f"{match.group(1)}{scheme + ' ' if scheme else ''}{REDACTED}"

    @staticmethod
    def _bearer_sub(match: re.Match[str]) -> str:
        return f"{match.group(1)}{match.group(2)}{REDACTED}"

    @staticmethod
    def _userinfo_sub(match: re.Match[str]) -> str:
        scheme, userinfo = match.group(1), match.group(2)
        if userinfo == REDACTED:
            return match.group(0)
        # ssh://git@host/x names a login, not a credential; a password in it is still removed.
        if scheme[:-3].lower() in _SSH_SCHEMES and ":" not in userinfo:
            return match.group(0)
        return f"{scheme}{REDACTED}@"

    def _assign_sub(self, match: re.Match[str]) -> str:
        key, sep, value = match.group(1), match.group(2), match.group(3)
        if value.strip("'\"") == REDACTED or value.lower() in _AUTH_SCHEMES:
            return match.group(0)
        if not self.is_secret_key(key):
            # The value may itself hold pairs ("url=https://h/?token=x"): look inside it too.
            inner = _compiled().assign.sub(self._assign_sub, value) if ("=" in value or ":" in value) else value
            return f"{key}{sep}{inner}"
        quote = value[0] if value[:1] in ("'", '"') else ""
        return f"{key}{sep}{quote}{REDACTED}{quote}"

    def redact_url(self, url: str) -> str:
        """Strip credentials from a URL (``https://user:tok@host`` -> ``https://[REDACTED]@host``).

        scp-style git remotes (``git@host:org/repo``) and ``ssh://git@host`` carry no secret and are kept.
        """
        return self.redact_text(url)

    # --- structures ------------------------------------------------------------------------------------
    def redact_value(self, key: str | None, value: object, *, max_str: int | None = None) -> object:
        """Redact one value: whole value under a secret key, text inside strings, recursively in containers
        (where pairs count as keys: ``[("X-Api-Key", v)]``, ``{"name": "DB_PASSWORD", "value": v}``,
        ``["--token", v]``).

        Tuples come back as lists (records are JSON); other scalars are returned unchanged. With
        ``max_str``, every string is cut to that many characters (plus :data:`TRUNCATED`) *before* it is
        scanned, so the cost is bounded by the limit, not by the input.
        """
        return self._value(key, value, 0, max_str)

    def _value(self, key: str | None, value: object, depth: int, max_str: int | None = None) -> object:
        if key is not None and value is not None and self.is_secret_key(key):
            return REDACTED
        if isinstance(value, str):
            if max_str is not None and len(value) > max_str + len(TRUNCATED):  # (already cut: kept as is)
                return self.redact_cut(value, max_str)
            return self.redact_text(value)
        if depth >= _MAX_DEPTH:
            return REDACTED if isinstance(value, (Mapping, list, tuple)) else value
        if isinstance(value, Mapping):
            return self._mapping(value, depth + 1, max_str)
        if isinstance(value, (list, tuple)):
            return self._sequence(value, depth + 1, max_str)
        return value

    def _sequence(self, seq: Sequence[Any], depth: int, max_str: int | None) -> list[object]:
        """Items redacted one by one, plus what a sequence says by position: in ``[(key, value), ...]``
        (HTTP header lists, ``dict.items()``, ``[b"authorization", b"..."]``) a secret key hides its value,
        and in ``[..., "--token", value]`` a secret option hides the word after it. O(1) per item."""
        out: list[object] = []
        hide = False
        for item in seq:
            cls = type(item)
            if hide:
                hide = False
                if item is not None and not (cls is str and item.startswith("--")):
                    out.append(REDACTED)
                    continue
            if cls is str:
                hide = item[:1] == "-" and self._is_secret_flag(item)
            elif (cls is tuple or cls is list) and len(item) == 2 and self._pair_key(item[0]):
                second = item[1]
                out.append([self._value(None, item[0], depth + 1, max_str), None if second is None else REDACTED])
                continue
            out.append(self._value(None, item, depth, max_str))
        return out

    def redact_mapping(self, mapping: Mapping[str, object], *, max_str: int | None = None) -> dict[str, object]:
        """A redacted copy of ``mapping``; keys are checked at every nesting level (``max_str``: as above)."""
        return self._mapping(mapping, 0, max_str)

    def _mapping(self, mapping: Mapping[Any, object], depth: int, max_str: int | None = None) -> dict[str, object]:
        result: dict[str, object] = {}
        verdicts = self.key_verdicts
        # {"name": "DB_PASSWORD", "value": ...} (Kubernetes env, HAR headers, AWS {"Key", "Value"} tags) is a
        # pair spelled as a dict: its value entry is hidden when the name is a secret key.
        hidden = self._named_value(mapping) if 2 <= len(mapping) <= 4 else None
        for raw_key, value in mapping.items():
            key = raw_key if type(raw_key) is str else _key_text(raw_key)
            if key == hidden and value is not None:
                result[key] = REDACTED
                continue
            cls = type(value)
            if cls is int or cls is float or cls is bool or value is None:  # the common leaf, inline
                if value is not None:
                    secret = verdicts.get(key)
                    if secret is None:
                        secret = self.is_secret_key(key)
                    if secret:
                        result[key] = REDACTED
                        continue
                result[key] = value
                continue
            result[key] = self._value(key, value, depth, max_str)
        return result

    def hide_flat_named_values(self, attributes: dict[str, Any]) -> dict[str, Any]:
        """``attributes`` (flattened, dotted keys) with ``X.value`` hidden where ``X.name`` is a secret key:
        the name/value dict ``{"name": "DB_PASSWORD", "value": ...}`` after flattening. Changed in place."""
        names = [k for k in attributes if k.rpartition(".")[2] in _NAME_KEYS]
        if not names:
            return attributes
        entries: dict[str, int] = {}  # flattened entries under each head: a pair is a dict of 2 to 4
        for k in attributes:
            head = k.rpartition(".")[0]
            entries[head] = entries.get(head, 0) + 1
        for key in names:
            head = key.rpartition(".")[0]
            name = attributes[key]
            if type(name) is not str or len(name) > _PAIR_KEY_MAX or not self.is_secret_key(name):
                continue
            for value_key in _NAMED_VALUE_KEYS:
                flat = f"{head}.{value_key}" if head else value_key
                nested = [k for k in attributes if k.startswith(flat + ".")]  # a dict as the value
                if not 2 <= entries.get(head, 0) + (1 if nested else 0) <= 4:
                    continue
                for k in [flat, *nested] if flat in attributes else nested:
                    attributes[k] = REDACTED
        return attributes

    def _named_value(self, mapping: Mapping[Any, object]) -> str | None:
        """The key of the value entry of a name/value dict whose name is a secret key, else None."""
        for value_key in _NAMED_VALUE_KEYS:
            if value_key in mapping:
                break
        else:
            return None
        for name_key in _NAME_KEYS:
            name = mapping.get(name_key)
            if type(name) is str:
                text: Any = name
                return value_key if len(text) <= _PAIR_KEY_MAX and self.is_secret_key(text) else None
        return None

    def redact_record(self, record: Mapping[str, Any], *, max_str: int) -> dict[str, Any]:
        """run.json as it is written: the whole record redacted, every string capped at ``max_str`` first.

        The one exception to key checks is ``environment.packages`` (distribution name -> version): a
        package called ``google-auth`` or ``SecretStorage`` is not a credential, so only its version text
        is scanned. The environment section is assembled once per process and shared by its runs (the
        record writer caches its JSON text on the same assumption), so its redacted copy is kept for as
        long as the same object comes back.
        """
        env = record.get("environment")
        out = self._mapping({k: v for k, v in record.items() if k != "environment"}, 0, max_str)
        if isinstance(env, Mapping):
            cached = self._env_cache
            if cached is not None and cached[0] is env and cached[2] == max_str:
                clean_env = cached[1]
            else:
                packages = env.get("packages")
                clean_env = self._mapping({k: v for k, v in env.items() if k != "packages"}, 1, max_str)
                if isinstance(packages, Mapping):
                    clean_env["packages"] = {str(k): self._value(None, v, 2, max_str) for k, v in packages.items()}
                clean_env = {k: clean_env[k] for k in env}  # the record's key order
                self._env_cache = (env, clean_env, max_str)
            out["environment"] = clean_env
        elif "environment" in record:
            out["environment"] = self._value("environment", env, 0, max_str)
        return {k: out[k] for k in record}

    def redact_argv(self, argv: Sequence[str]) -> list[str]:
        """Redact a command line: values of ``--secret-option`` (both forms), ``SECRET=x`` pairs, inline tokens.

        Long option names (and single-dash words of 3+ letters, ``-password``) are checked as keys, plus
        ``--key``; of the short flags only two are known credential carriers: ``-p`` (mysql, sshpass; a
        numeric value is kept: a port) and ``-u user:password`` (curl), whose password part is hidden.
        An argument that holds a whole command line (``bash -c "mysql -pS3cret -h db"``; it has blanks and is
        not itself an option or a ``NAME=value`` pair, whose rules take the whole argument) has its words run
        through the same rules: words as a shell splits them (a quoted value is one word, quotes kept), the
        blanks between them and a trailing ``;``/``&``/``|`` kept.
        """
        words = [str(a) for a in argv]
        programs = None
        if words and _program_name(words[0]) in _WRAPPERS and "--" in words:  # runtel run [...] -- CMD ...
            cut = words.index("--") + 1
            programs = [_program_name(words[0])] * cut + [_program_name(words[cut])] * (len(words) - cut) \
                if cut < len(words) else None
        return self._redact_words(words, split=True, programs=programs)

    def _redact_words(self, argv: Sequence[object], *, split: bool, depth: int = 0,
                      programs: Sequence[str] | None = None) -> list[str]:
        """``programs``: the program each word belongs to (a command line's words); else the first word's."""
        out: list[str] = []
        hide_next = ""
        program = _program_name(str(argv[0])) if argv and programs is None else ""
        for index, raw in enumerate(argv):
            arg = str(raw)
            if programs is not None:
                program = programs[index]
            if (split and not hide_next and (" " in arg or "\t" in arg or "\n" in arg) and arg[:1] != "-"
                    and not self._is_secret_pair(arg) and len(arg) <= _COMMAND_TEXT_MAX
                    and (depth == 0 or _SHELL_WORD.fullmatch(arg) is None)):  # inside: only several words
                out.append(self.redact_text(self._redact_command_text(arg, depth)))
                continue
            if hide_next:
                mode, hide_next = hide_next, ""
                # After --password anything but another long option is the value (it may start with "-").
                if not arg.startswith("--" if mode == "long" else "-"):
                    if mode == "user" and _UID_GID.fullmatch(arg) is not None:
                        out.append(arg)  # "-u 1000:1000" (docker, podman): ids, no password
                    elif mode == "user":
                        quote = arg[0] if len(arg) > 1 and arg[0] in "'\"" and arg[-1] == arg[0] else ""
                        user, colon, _ = arg.strip(quote).partition(":") if quote else arg.partition(":")
                        out.append(f"{quote}{user}:{REDACTED}{quote}" if colon else self.redact_text(arg))
                    elif mode == "short" and _P_NUMBER.fullmatch(arg) is not None:
                        out.append(arg)  # a port, a probability, a port mapping
                    else:
                        out.append(REDACTED)
                    continue
            if arg.startswith("-") and len(arg) > 1:
                name, eq, value = arg.lstrip("-").partition("=")
                long_form = arg.startswith("--")
                if not long_form and len(name) > 1 and name[0] == "p" and not eq:
                    rest = name[1:]
                    if not (rest.isdigit() or (rest.isalpha() and rest.islower())):
                        # "-pS3cret", "-pMySecret" (mysql): the glued value is the password, whatever it looks
                        # like; "-p8080" is a port, "-pthread"/"-pedantic"/"-password" are words
                        out.append(f"-p{REDACTED}")
                        continue
                if not long_form and name[:1] == "u" and len(name) > 1 and ":" in name and not eq:
                    out.append(f"-{name.partition(':')[0]}:{REDACTED}")  # "-ubob:pw" (curl)
                    continue
                if (len(name) >= 3 and self.is_secret_key(name)) or (long_form and name in _ARGV_SECRET_NAMES):
                    if eq:
                        out.append(f"{self.redact_text(arg[: len(arg) - len(value) - 1])}={REDACTED}")
                    else:
                        out.append(self.redact_text(arg))
                        hide_next = "long"
                    continue
                if not long_form and name in _ARGV_USER_NAMES or long_form and name in _ARGV_USER_NAMES and not eq:
                    out.append(arg)
                    hide_next = "user"
                    continue
                if long_form and name in _ARGV_USER_NAMES and eq and ":" in value:
                    out.append(f"{arg[: len(arg) - len(value)]}{value.partition(':')[0]}:{REDACTED}")
                    continue
                if (split and depth < 8 and eq and (" " in value or "\t" in value or "\n" in value)
                        and len(value) <= _COMMAND_TEXT_MAX):
                    # "--env=PASSWORD=a b", "--exec=mysql -pS3cret": the value as a pair, or as a command line
                    head = arg[: len(arg) - len(value)]
                    bare = _unquoted(value)
                    if self._is_secret_pair(bare):
                        out.append(f"{head}{bare.partition('=')[0]}={REDACTED}")
                    else:
                        out.append(self.redact_text(head + self._redact_command_text(value, depth)))
                    continue
                if not long_form and name == "p":
                    out.append(arg)
                    if program not in _P_NOT_A_PASSWORD:
                        hide_next = "short"
                    continue
            else:
                pair = _compiled().env_pair.fullmatch(arg)
                if pair is not None and self.is_secret_key(pair.group(1)):
                    out.append(f"{pair.group(1)}={REDACTED}")
                    continue
            out.append(self.redact_text(arg))
        return out

    def _is_secret_pair(self, arg: str) -> bool:
        pair = _compiled().env_pair.fullmatch(arg)
        return pair is not None and self.is_secret_key(pair.group(1))

    def _redact_command_text(self, text: str, depth: int = 0) -> str:
        """``text`` as a command line: its shell words through the argv rules, everything between them kept."""
        pieces: list[str] = []
        words: list[str] = []
        tails: list[str] = []
        last = 0
        quotes: list[str] = []
        for match in _SHELL_WORD.finditer(text):
            pieces.append(text[last:match.start()])
            word = match.group(0)
            core = word.rstrip(";&|") or word
            tails.append(word[len(core):])
            bare = _unquoted(core)  # '"--password"' is the option, "'DB_PASSWORD=a b'" the pair
            quotes.append(core[0] if bare is not core else "")
            words.append(bare)
            last = match.end()
        # a quoted command inside is parsed too (a shorter text each level, and at most 8 levels)
        redacted = self._redact_words(words, split=depth < 8, depth=depth + 1, programs=_programs(words, pieces, tails))
        out = [piece + (quote + word + quote if quote and word != REDACTED else word) + tail
               for piece, word, tail, quote in zip(pieces, redacted, tails, quotes, strict=True)]
        return "".join(out) + text[last:]


#: entry points whose argv ends in ``-- CMD ...``: CMD's words belong to CMD (``runtel run -- mkdir -p build``)
_WRAPPERS: Final = frozenset({"runtel", "__main__.py"})
_UID_GID: Final = re.compile(r"\d+:\d+")
_ASSIGNMENT: Final = re.compile(r"[A-Za-z_]\w*=")


def _program_name(word: str) -> str:
    """The program a command word names: ``/usr/bin/mkdir`` -> ``mkdir``."""
    return word.rpartition("/")[2]


def _programs(words: Sequence[str], gaps: Sequence[str], tails: Sequence[str]) -> list[str]:
    """The program each word of a command line belongs to: the first word after a break, past ``NAME=v``.

    ``gaps``: the text before each word (a newline there ends a command). Where a word may hide the start of
    another command, the words after it belong to no known program until the next break.
    """
    programs: list[str] = []
    program = ""
    starting = True
    for word, gap, tail in zip(words, gaps, tails, strict=True):
        if word in _COMMAND_BREAKS or "\n" in gap:
            starting = True
            if word in _COMMAND_BREAKS:
                programs.append("")
                continue
        if starting and _ASSIGNMENT.match(word) is None:
            program, starting = _program_name(word), False
        if _HIDDEN_BREAK.search(word) is not None:
            program = ""
        programs.append(program)
        if tail:  # "x;" "x&&": the next word starts a command
            starting = True
    return programs


def _pair_key_name(raw: bytes | bytearray) -> str:
    """A bytes key (an ASGI header name) as text for the key rules."""
    return bytes(raw[:_PAIR_KEY_MAX]).decode("latin-1")


def _key_text(key: object) -> str:
    """A non-string mapping key as text; one whose ``__str__`` raises must not cost the whole mapping."""
    try:
        return str(key)
    except Exception:
        return f"<unprintable {type(key).__name__}>"


def _unquoted(word: str) -> str:
    """``word`` without the quotes around the whole of it (``'a b'`` -> ``a b``); the same object otherwise."""
    if len(word) >= 2 and word[0] in "'\"" and word[-1] == word[0] and word[0] not in word[1:-1]:
        return word[1:-1]
    return word
