"""``runtel.load()``: a recorded run for notebooks — its record, and its traced calls by stage and function.

Inspired by hyrax's ``TraceResult``/``TraceStage``/``TraceCall``, but read back from the run folder, so
it works after the fact, for any process, and for every call ``@runtel.trace(capture=...)`` recorded::

    rec = runtel.load("latest")              # a LoadedRun
    rec.stages["evaluation"][0].params["x"]   # {'shape': [32, 3], 'dtype': 'float32', 'mean': ...}
    rec.evaluation                            # the same stage (attribute access)
    rec.functions["model.forward"][-1].returned
    rec.forward                               # calls of a function, by its short name

Objects print readably (notebooks show ``repr``), support ``[]`` and ``.`` alike, and list their keys
in ``dir()`` for tab completion.

:class:`LoadedRun` was called ``RunRecord`` before run.json's own type took that name
(:class:`runtel.rundir.schema.RunRecord`); ``runtel.query.notebook.RunRecord`` still works, with a
``DeprecationWarning``.
"""

from __future__ import annotations

import html
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtel import semconv
from runtel.errors import RunFolderError, RunNotFound
from runtel.rundir import schema
from runtel.rundir.index import resolve_run
from runtel.rundir.reader import (
    LineStats,
    SpanRecord,
    effective_status,
    iter_spans,
    read_record,
    read_spans,
)

if TYPE_CHECKING:
    from runtel.recording.run import Run

__all__ = ("LoadedRun", "TraceCall", "TraceStage", "load")

_REPR_CALLS = 20
_RETURN_PREFIX = semconv.RETURN_VALUE + "."


def _fmt_value(value: Any, limit: int = 80) -> str:
    """A one-line rendering of a captured value (array summaries as ``ndarray[3, 4] float32 mean=…``)."""
    if isinstance(value, Mapping):
        if "shape" in value and "dtype" in value:
            t = str(value.get("type", "array")).rsplit(".", 1)[-1]
            shape = value.get("shape")
            dims = list(shape) if isinstance(shape, (list, tuple)) else [] if shape is None else [shape]
            text = f"{t}{dims} {value.get('dtype')}"
            stats = [f"{k}={value[k]:.4g}" if isinstance(value[k], float) else f"{k}={value[k]}"
                     for k in ("min", "max", "mean", "nan_count") if k in value]
            text += (" " + " ".join(stats)) if stats else ""
        elif "len" in value:
            text = f"{value.get('type')}(len={value.get('len')})"
        elif "repr" in value:
            text = str(value["repr"])
        else:
            text = str(dict(value))
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _split_captured(attributes: Mapping[str, Any]) -> tuple[dict[str, Any], Any, bool]:
    """(params, return value, whether a return value was captured) rebuilt from flattened attributes."""
    params: dict[str, Any] = {}
    returned: Any = None
    has_return = False
    ret_fields: dict[str, Any] = {}
    prefix = semconv.PARAM_PREFIX
    for key, value in attributes.items():
        if key.startswith(prefix):
            name, dot, sub = key[len(prefix):].partition(".")
            if dot:
                slot = params.get(name)
                if not isinstance(slot, dict):
                    slot = params[name] = {}
                slot[sub] = value
            else:
                params[name] = value
        elif key == semconv.RETURN_VALUE:
            returned, has_return = value, True
        elif key.startswith(_RETURN_PREFIX):
            ret_fields[key[len(_RETURN_PREFIX):]] = value
            has_return = True
    if ret_fields:
        returned = ret_fields
    return params, returned, has_return


class _Browsable:
    """``[]`` and ``.`` both reach the contents; ``dir()`` lists them; ``repr`` is the readable text."""

    def _keys(self) -> list[str]:
        raise NotImplementedError

    def __getitem__(self, key: Any) -> Any:
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except (KeyError, IndexError, TypeError):
            raise AttributeError(f"{type(self).__name__} has no {name!r} (try one of: {', '.join(self._keys()[:10])})"
                                 ) from None

    def __dir__(self) -> list[str]:
        own = [n for n in dir(type(self)) if not n.startswith("_")] + list(vars(self))
        return sorted({*own, *(k for k in self._keys() if k.isidentifier())} - {n for n in vars(self) if n.startswith("_")})


@dataclass(repr=False)
class TraceCall(_Browsable):
    """One traced call: its captured parameters and return value, duration and span attributes."""

    function: str
    name: str
    stage: str | None
    params: dict[str, Any]
    returned: Any
    duration_s: float
    attributes: dict[str, Any] = field(default_factory=dict)
    span_id: str = ""
    start_ns: int = 0
    error: str | None = None
    has_return: bool = False

    @classmethod
    def from_span(cls, span: SpanRecord) -> TraceCall:
        """Build from a span read back from spans.jsonl."""
        attrs = span.attributes
        params, returned, has_return = _split_captured(attrs)
        return cls(
            function=str(attrs.get(semconv.CODE_FUNCTION_NAME) or span.name),
            name=span.name,
            stage=attrs.get(semconv.STAGE),
            params=params,
            returned=returned,
            duration_s=span.duration_s,
            attributes=attrs,
            span_id=span.span_id,
            start_ns=span.start_ns,
            error=span.status_message or str(attrs.get(semconv.ERROR_TYPE) or "") or None
            if span.status_code == 2 else None,
            has_return=has_return,
        )

    @property
    def captured(self) -> bool:
        """Whether this call's arguments or return value were captured (``capture_limit`` stops capture)."""
        return bool(self.params) or self.has_return

    @property
    def capture_skipped(self) -> bool:
        """True for a call whose capture was asked for but not taken: it came after ``capture_limit``."""
        return bool(self.attributes.get(semconv.CAPTURE_SKIPPED))

    def _keys(self) -> list[str]:
        return [*self.params, "returned"]

    def __getitem__(self, key: Any) -> Any:
        if key in ("return", "returned"):
            return self.returned
        return self.params[key]

    def __repr__(self) -> str:
        head = f"{self.function}  {self.duration_s * 1000:.3f} ms" + (f"  [error: {self.error}]" if self.error else "")
        lines = [head] + [f"  {k} = {_fmt_value(v)}" for k, v in self.params.items()]
        if self.has_return:
            lines.append(f"  -> {_fmt_value(self.returned)}")
        if self.capture_skipped:
            lines.append("  (not captured: past capture_limit)")
        return "\n".join(lines)

    def brief(self) -> str:
        """One line: ``f(x=ndarray[3] float64, n=2) -> 5  0.120 ms``."""
        if self.capture_skipped:  # not "forward()": that reads like a call without arguments
            return f"{self.name}(…)  not captured (past capture_limit)  {self.duration_s * 1000:.3f} ms"
        args = ", ".join(f"{k}={_fmt_value(v, 40)}" for k, v in self.params.items())
        ret = f" -> {_fmt_value(self.returned, 40)}" if self.has_return else ""
        return f"{self.name}({args}){ret}  {self.duration_s * 1000:.3f} ms"


class TraceStage(_Browsable, Sequence[TraceCall]):
    """The calls of one stage in execution order; ``stage[0]`` a call, ``stage["fn"]`` a function's calls."""

    def __init__(self, name: str, calls: Sequence[TraceCall]) -> None:
        self.name = name
        self.calls = list(calls)

    def _by_function(self) -> dict[str, list[TraceCall]]:
        out: dict[str, list[TraceCall]] = {}
        for c in self.calls:
            out.setdefault(c.function, []).append(c)
            short = c.function.rsplit(".", 1)[-1]
            if short != c.function:
                out.setdefault(short, [])
                if c not in out[short]:
                    out[short].append(c)
        return out

    def _keys(self) -> list[str]:
        return list(self._by_function())

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, slice)):
            return self.calls[key]
        return self._by_function()[key]

    def __len__(self) -> int:
        return len(self.calls)

    def __iter__(self) -> Iterator[TraceCall]:
        return iter(self.calls)

    def _repr_html_(self) -> str:
        """The stage as a table of its calls, for notebooks (values escaped)."""
        rows = "".join(f"<tr><td>{i}</td><td><code>{html.escape(c.brief())}</code></td></tr>"
                       for i, c in enumerate(self.calls[:_REPR_CALLS]))
        more = f"<p>… {len(self.calls) - _REPR_CALLS} more</p>" if len(self.calls) > _REPR_CALLS else ""
        return (f"<b>stage {html.escape(self.name)}</b>: {len(self.calls)} call(s)"
                f"<table><tr><th>#</th><th>call</th></tr>{rows}</table>{more}")

    def __repr__(self) -> str:
        lines = [f"stage {self.name!r}: {len(self.calls)} call(s)"]
        lines += [f"  [{i}] {c.brief()}" for i, c in enumerate(self.calls[:_REPR_CALLS])]
        if len(self.calls) > _REPR_CALLS:
            lines.append(f"  … {len(self.calls) - _REPR_CALLS} more")
        return "\n".join(lines)


class LoadedRun(_Browsable):
    """A recorded run, as :func:`load` returns it: ``record`` (run.json), ``spans``, ``calls``, ``stages``
    and ``functions``; ``problems`` lists what could not be read (see :mod:`runtel.rundir.reader`)."""

    def __init__(self, run_dir: Path, record: schema.RunRecord, spans: list[SpanRecord] | None,
                 problems: Sequence[str] = (), *, functions: list[SpanRecord] | None = None,
                 span_count: int | None = None) -> None:
        """``spans`` is every span, or None to read them on first use of :attr:`spans` (then ``functions``,
        the traced-call spans in start order, and ``span_count`` say what :func:`load` streamed past)."""
        self.dir = run_dir
        self.record = record
        self._spans = spans
        self.span_count = len(spans) if spans is not None else int(span_count or 0)
        self.problems = [*record.get("problems", ()), *problems]
        if functions is None:
            functions = [s for s in spans or () if s.attributes.get(semconv.SPAN_KIND) == semconv.KIND_FUNCTION]
        self.calls = [TraceCall.from_span(s) for s in functions]
        stages: dict[str, list[TraceCall]] = {}
        by_function: dict[str, list[TraceCall]] = {}
        for c in self.calls:
            if c.stage:
                stages.setdefault(str(c.stage), []).append(c)
            by_function.setdefault(c.function, []).append(c)
        self.stages = {k: TraceStage(k, v) for k, v in stages.items()}
        self.functions = by_function

    @property
    def spans(self) -> list[SpanRecord]:
        """Every span of the run, in start order (read on first use: a large run's spans take memory;
        :meth:`iter_spans` streams them instead)."""
        if self._spans is None:
            self._spans = read_spans(self.dir)
        return self._spans

    def iter_spans(self) -> Iterator[SpanRecord]:
        """The run's spans in file order (roughly end order), read as they are used: bounded memory."""
        return iter_spans(self.dir) if self._spans is None else iter(self._spans)

    # --- the record -------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        """The run id."""
        return str(self.record.get("id", ""))

    @property
    def name(self) -> str:
        """The run name."""
        return str(self.record.get("name", ""))

    @property
    def status(self) -> str:
        """ok, error, interrupted or running (a dead "running" run reads as interrupted)."""
        return effective_status(self.record)

    @property
    def config(self) -> Any:
        """The recorded config."""
        return self.record.get("config")

    @property
    def artifacts(self) -> dict[str, schema.ArtifactEntry]:
        """Artifacts by name (see ``Run.add_artifact``)."""
        from runtel.rundir.artifacts import record_artifacts  # deferred: runtel.rundir.artifacts (~6 ms)

        return {str(a.get("name")): a for a in record_artifacts(self.record)}

    @property
    def metadata(self) -> dict[str, Any]:
        """Metadata added with ``Run.add_metadata``."""
        return dict(self.record.get("metadata") or {})

    @property
    def sources(self) -> list[schema.SourceEntry]:
        """What the run was made from."""
        return list(self.record.get("sources") or [])

    # --- browsing ---------------------------------------------------------------------------------
    def _short_names(self) -> dict[str, str]:
        short: dict[str, list[str]] = {}
        for fn in self.functions:
            short.setdefault(fn.rsplit(".", 1)[-1], []).append(fn)
        return {k: v[0] for k, v in short.items() if len(v) == 1}

    def _keys(self) -> list[str]:
        return [*self.stages, *self.functions, *self._short_names()]

    def __getitem__(self, key: Any) -> Any:
        """A stage by name, else a function's calls by full or (unambiguous) short name."""
        if key in self.stages:
            return self.stages[key]
        if key in self.functions:
            return self.functions[key]
        full = self._short_names().get(key)
        if full is not None:
            return self.functions[full]
        raise KeyError(key)

    def _repr_html_(self) -> str:
        """The run's summary, results, stages and artifacts as HTML tables, for notebooks (values escaped)."""
        def table(title: str, rows: Sequence[tuple[str, object]]) -> str:
            if not rows:
                return ""
            body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt_value(v, 120))}</td></tr>"
                           for k, v in rows)
            return f"<h4>{html.escape(title)}</h4><table>{body}</table>"

        record = self.record
        summary = [("id", self.id), ("name", self.name), ("status", self.status),
                   ("duration s", record.get("duration_s")), ("spans", self.span_count),
                   ("traced calls", len(self.calls))]
        results = record.get("results") or {}
        final = results.get("final") if isinstance(results, Mapping) else None
        result_rows = list(final.items()) if isinstance(final, Mapping) else []
        stage_rows = [(name, f"{len(stage)} call(s)") for name, stage in self.stages.items()]
        artifact_rows = [(name, a.get("path", "")) for name, a in self.artifacts.items()]
        problems = "".join(f"<p>problem: {html.escape(p)}</p>" for p in self.problems)
        return (table("run", summary) + table("results", result_rows) + table("stages", stage_rows)
                + table("artifacts", artifact_rows) + problems)

    def __repr__(self) -> str:
        duration = self.record.get("duration_s")
        lines = [f"LoadedRun {self.id} ({self.status}" + (f", {duration:.3f} s)" if isinstance(duration, (int, float))
                                                          else ")")]
        lines.append(f"  {self.span_count} span(s), {len(self.calls)} traced call(s)")
        for name, stage in self.stages.items():
            counts = ", ".join(f"{fn} ×{len(calls)}" for fn, calls in _group(stage.calls).items())
            lines.append(f"  stage {name}: {len(stage)} call(s) ({counts})")
        unstaged = [c for c in self.calls if not c.stage]
        if unstaged:
            counts = ", ".join(f"{fn} ×{len(calls)}" for fn, calls in _group(unstaged).items())
            lines.append(f"  no stage: {counts}")
        if self.artifacts:
            lines.append("  artifacts: " + ", ".join(self.artifacts))
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)


def _group(calls: Sequence[TraceCall]) -> dict[str, list[TraceCall]]:
    out: dict[str, list[TraceCall]] = {}
    for c in calls:
        out.setdefault(c.function, []).append(c)
    return out


def __getattr__(name: str) -> Any:
    if name == "RunRecord":  # deprecated: the old name of LoadedRun

        warnings.warn("runtel.query.notebook.RunRecord is now LoadedRun (RunRecord is run.json's type, in "
                      "runtel.rundir.schema)", DeprecationWarning, stacklevel=2)
        return LoadedRun
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load(run: str | os.PathLike[str] | Run = "latest", *, dir: str | os.PathLike[str] | None = None) -> LoadedRun:
    """Load a recorded run: an id, unique id prefix, run folder path, ``"latest"``, or a :class:`runtel.Run`.

    ``dir`` is the runs root (default ``RUNTEL_DIR`` or ``./runs``). Loading a run that is still open
    flushes its finished spans first. Lines of spans.jsonl that cannot be read are skipped and named in
    :attr:`LoadedRun.problems`, as are values of run.json that had the wrong type.

    Example:
        >>> import runtel
        >>> rec = runtel.load("latest")  # doctest: +SKIP
        >>> rec.stages["evaluation"][0].params  # doctest: +SKIP

    Raises:
        runtel.errors.RunNotFound: no run matches, or its run.json cannot be read.
    """
    if not isinstance(run, (str, os.PathLike)):  # a Run (duck-typed: the read side never imports recording)
        if run.dir is None:
            raise RunNotFound(f"run {run.id or '(disabled)'} has no run folder")
        from runtel._sdk.process import flush  # deferred: runtel._sdk.process (~17 ms)

        flush()
        run_dir = Path(run.dir)
    else:
        if dir is None:
            from runtel import _sdk  # deferred: the composition root (~60 ms), only for the default root

            dir = _sdk.settings().dir
        run_dir = resolve_run(os.fspath(run), Path(dir))
    stats = LineStats()
    try:
        record = read_record(run_dir)
    except RunFolderError as exc:
        raise RunNotFound(str(exc)) from exc
    # one streaming pass: the traced calls are kept, the other spans only counted (LoadedRun.spans reads
    # them again if asked), so loading a run of a million blocks does not hold a million spans
    functions: dict[str, SpanRecord] = {}
    recent: set[str] = set()
    older: set[str] = set()
    count = 0
    for span in iter_spans(run_dir, stats):
        if span.span_id in recent or span.span_id in older:
            continue  # written twice (de-duplicated within the last ~130,000 spans, as `show` does)
        recent.add(span.span_id)
        count += 1
        if len(recent) >= 1 << 17:
            older, recent = recent, set()
        if span.attributes.get(semconv.SPAN_KIND) == semconv.KIND_FUNCTION:
            functions[span.span_id] = span
    calls = sorted(functions.values(), key=lambda r: (r.start_ns, r.end_ns))
    return LoadedRun(run_dir, record, None, stats.problems(), functions=calls, span_count=count)
