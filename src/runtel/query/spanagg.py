"""A run's span tree aggregated while the spans stream past, for runs too large to hold in memory.

``runtel show`` folds siblings of one name into one line once there are more than
:data:`FOLD_THRESHOLD` of them (count, total, mean, max, errors; their children merged by name). This
module builds that folded tree directly: each span is added to its parent's *level* (name -> Group) as it
is read, and a group that grows past the threshold forgets its members and keeps only the totals and the
merged children. Memory so grows with the tree's shape (distinct name paths, at most a few members per
group), not with the number of spans: a loop of a million blocks costs one group.

Spans are written when they end, so children come before their parent: a span's children wait in
``pending`` (by parent span id) until the parent arrives and adopts them; spans whose parent never
arrives are roots, as in :func:`runtel.query.spantree.build_span_tree`. A child read after its parent
(work that outlived the span it started in) cannot be placed any more and is shown at the top level;
such spans are counted and said. Duplicate span ids are skipped within a window of recent ids.
Attributes are decoded only for the spans shown one by one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from runtel import semconv
from runtel.query.energy import cpu_energy_factor, estimated_joules, with_estimated_energy
from runtel.rundir.index import descendants
from runtel.rundir.reader import (
    UNENDED,
    LineStats,
    SpanRow,
    decode_attributes,
    iter_span_rows,
    list_runs,
    parent_run_id,
    run_span_ref,
)
from runtel.rundir.schema import RunRecord, span_segments

__all__ = ("FOLD_THRESHOLD", "FULL_TREE_BYTES", "Aggregate", "Group", "Node", "Totals", "aggregate_run", "child_run_levels",
           "spans_bytes", "usage_figures")

#: siblings with the same name are folded into one group when there are more than this many
FOLD_THRESHOLD = 5
#: span ids remembered for de-duplication and for telling a late child (two generations of this many)
RECENT_IDS = 1 << 17

Level = dict[str, "Group"]


class Acc:
    """Count, sum, min, max and (Welford) variance of a stream of values, mergeable."""

    __slots__ = ("m2", "max", "mean", "min", "n", "total")

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, x: float) -> None:
        """One more value."""
        self.n += 1
        self.total += x
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        if x < self.min:
            self.min = x
        if x > self.max:
            self.max = x

    def merge(self, other: Acc) -> None:
        """Fold ``other`` in (Chan et al.'s pairwise update)."""
        if not other.n:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.m2 += other.m2 + delta * delta * self.n * other.n / n
        self.mean += delta * other.n / n
        self.n = n
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def stat(self, stat: str) -> float | None:
        """``min``, ``max``, ``mean``, ``std`` (sample, n - 1) or ``total``; None without values."""
        if not self.n:
            return None
        if stat == "std":
            return math.sqrt(self.m2 / (self.n - 1)) if self.n >= 2 else None
        return {"min": self.min, "max": self.max, "mean": self.total / self.n, "total": self.total}[stat]


_RSS = f"{semconv.USAGE_MEMORY_PREFIX}{semconv.MEMORY_KIND_RSS}.max.{semconv.SCOPE_COMBINED}"
#: byte strings one of which is in the raw attributes of a span that has usage worth decoding
_USAGE_HINTS = (b"memory.rss", b"gpu.memory", b"energy.total")
_USAGE_KEYS = frozenset({_RSS, semconv.USAGE_GPU_MEMORY_TREE_MAX, semconv.USAGE_GPU_MEMORY_USED_MAX,
                         semconv.USAGE_ENERGY_TOTAL})
_ESTIMATED_USAGE_KEYS = _USAGE_KEYS | {semconv.USAGE_CPU_TIME}


class Usage:
    """What ``compare`` aggregates of a group's spans: durations, peak RSS, peak GPU memory, energy.

    ``cpu_energy``: the run's CPU estimate in joules per CPU-second, for spans that record only CPU time.
    """

    __slots__ = ("cpu_energy", "durations", "energy", "gpu", "kind", "rss")

    def __init__(self, cpu_energy: float | None = None) -> None:
        self.cpu_energy = cpu_energy
        self.durations = Acc()
        self.rss = Acc()
        self.gpu = Acc()
        self.energy = Acc()
        self.kind: str | None = None

    def add(self, duration_ns: int, attrs: object) -> None:
        """One span (its raw attributes are decoded only if they can hold usage)."""
        self.durations.add(duration_ns / 1e9)
        if attrs is None:
            return
        factor = self.cpu_energy
        estimated = factor is not None
        if attrs.__class__ is list:  # parsed already (the json path): look at the keys before decoding
            keys = _ESTIMATED_USAGE_KEYS if estimated else _USAGE_KEYS
            if not any(kv.__class__ is dict and kv.get("key") in keys for kv in attrs):
                return
        else:
            raw = attrs if isinstance(attrs, bytes) else bytes(attrs)  # type: ignore[call-overload]  # msgspec.Raw
            if not any(h in raw for h in _USAGE_HINTS):
                if factor is None or b"cpu.time" not in raw:
                    return
                # The common unsampled block of an estimated run: its only usage figure is its CPU time,
                # read straight from the encoded text (decoding every block's attributes tripled compare's
                # time on 100k spans); anything not written as runtel writes it is decoded below.
                cpu = _cpu_time_text(raw)
                if cpu is not None:
                    joules = estimated_joules(cpu, factor)
                    if joules is not None:
                        self.energy.add(joules)
                    return
            attrs = raw
        rss, gpu, energy = usage_figures(decode_attributes(attrs), self.cpu_energy)
        if rss is not None:
            self.rss.add(rss)
        if gpu is not None:
            self.gpu.add(gpu)
        if energy is not None:
            self.energy.add(energy)

    def merge(self, other: Usage) -> None:
        """Fold another group's usage in."""
        self.durations.merge(other.durations)
        self.rss.merge(other.rss)
        self.gpu.merge(other.gpu)
        self.energy.merge(other.energy)
        self.kind = self.kind or other.kind


class Totals:
    """What ``show`` sums of a folded group's spans: CPU time and energy (as each span's own line shows them).

    Lighter than :class:`Usage` (no distributions): ``show`` of a large run pays it on every span. A span's
    CPU time is read straight from the encoded text, and the estimate of the spans that carry only CPU time is
    made once from their sum; only a span with an ``energy.total`` is decoded.
    ``cpu_energy``: the run's CPU estimate (joules per CPU-second) for spans that record only CPU time.
    """

    __slots__ = ("cpu_energy", "cpu_s", "has_cpu", "has_energy", "recorded_j", "unpriced_s")

    def __init__(self, cpu_energy: float | None = None) -> None:
        self.cpu_energy = cpu_energy
        self.cpu_s = 0.0
        self.unpriced_s = 0.0  #: CPU time of the spans without an energy figure (the estimate's base)
        self.recorded_j = 0.0  #: the energy figures the spans carry
        self.has_cpu = False
        self.has_energy = False

    def add(self, attrs: object) -> None:
        """One span's raw attributes (msgspec/bytes, or the parsed list of the json path)."""
        if attrs is None:
            return
        if attrs.__class__ is not list:
            raw = attrs if isinstance(attrs, bytes) else bytes(attrs)  # type: ignore[call-overload]  # msgspec.Raw
            if b"energy.total" not in raw:
                at = raw.find(_CPU_TIME_HEAD)  # the first one: a sum for display (compare checks for a second)
                if at < 0:
                    if b"cpu.time" not in raw:
                        return
                else:
                    start = at + _CPU_TIME_HEAD_LEN
                    try:
                        cpu = float(raw[start:raw.find(b"}", start)])
                    except ValueError:
                        cpu = math.nan
                    if math.isfinite(cpu):
                        self.cpu_s += cpu
                        self.unpriced_s += cpu
                        self.has_cpu = True
                        return
            attrs = raw
        decoded = decode_attributes(attrs)
        cpu_time = _number(decoded.get(semconv.USAGE_CPU_TIME))
        energy = _number(decoded.get(semconv.USAGE_ENERGY_TOTAL))
        if cpu_time is not None:
            self.cpu_s += cpu_time
            self.has_cpu = True
            if energy is None:
                self.unpriced_s += cpu_time
        if energy is not None:
            self.recorded_j += energy
            self.has_energy = True

    def merge(self, other: Totals) -> None:
        """Fold another group's totals in."""
        self.cpu_s += other.cpu_s
        self.unpriced_s += other.unpriced_s
        self.recorded_j += other.recorded_j
        self.has_cpu = self.has_cpu or other.has_cpu
        self.has_energy = self.has_energy or other.has_energy

    def as_json(self) -> dict[str, float]:
        """``cpu_s`` and ``energy_j``, each only when some of the spans recorded it (or, for the energy, its
        CPU time was priced by the run's estimate)."""
        out = {}
        if self.has_cpu:
            out["cpu_s"] = round(self.cpu_s, 9)
        estimated = estimated_joules(self.unpriced_s, self.cpu_energy) if self.cpu_energy is not None else None
        if self.has_energy or estimated is not None:
            out["energy_j"] = self.recorded_j + (estimated or 0.0)
        return out


#: how runtel's encoder writes the CPU time (``rundir.otlp_json``: a float is always a doubleValue)
_CPU_TIME_HEAD = b'{"key":"' + semconv.USAGE_CPU_TIME.encode() + b'","value":{"doubleValue":'
_CPU_TIME_HEAD_LEN = len(_CPU_TIME_HEAD)


def _cpu_time_text(raw: bytes) -> float | None:
    """``runtel.usage.cpu.time`` from encoded attributes, or None when not written exactly once as runtel does."""
    at = raw.find(_CPU_TIME_HEAD)
    if at < 0 or raw.find(_CPU_TIME_HEAD, at + 1) >= 0:
        return None
    start = at + len(_CPU_TIME_HEAD)
    end = raw.find(b"}", start)
    try:
        return float(raw[start:end]) if end > start else None
    except ValueError:
        return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def usage_figures(attrs: Mapping[str, Any],
                  cpu_energy: float | None = None) -> tuple[float | None, float | None, float | None]:
    """A span's compared usage: peak tree RSS, peak GPU memory (the tree's, else the device's), energy (J).

    ``cpu_energy``: the run's joules per CPU-second where its CPU energy is estimated (a span with CPU time
    and no energy figure used that much, see :mod:`runtel.query.energy`).
    """
    gpu = _number(attrs.get(semconv.USAGE_GPU_MEMORY_TREE_MAX))
    if gpu is None:
        gpu = _number(attrs.get(semconv.USAGE_GPU_MEMORY_USED_MAX))
    energy = _number(with_estimated_energy(attrs, cpu_energy).get(semconv.USAGE_ENERGY_TOTAL))
    return _number(attrs.get(_RSS)), gpu, energy


class Node:
    """One span kept as itself (a group of at most FOLD_THRESHOLD members)."""

    __slots__ = ("attrs_raw", "children", "cpu_energy", "duration_ns", "name", "span_id", "start", "status",
                 "status_message", "trace_id")

    def __init__(self, name: str, span_id: str, trace_id: str, start: int, duration_ns: int, status: int,
                 status_message: str, attrs_raw: object, children: Level, cpu_energy: float | None = None) -> None:
        self.name = name
        self.span_id = span_id
        self.trace_id = trace_id
        self.start = start
        self.duration_ns = duration_ns
        self.status = status
        self.status_message = status_message
        self.attrs_raw = attrs_raw
        self.children = children
        self.cpu_energy = cpu_energy  #: the run's CPU estimate (J per CPU-second), see runtel.query.energy

    def attributes(self, stats: LineStats | None = None) -> dict[str, Any]:
        """The span's attributes, decoded now (malformed entries skipped and counted), estimated energy added."""
        attributes = decode_attributes(self.attrs_raw, stats)
        return cast("dict[str, Any]", with_estimated_energy(attributes, self.cpu_energy))  # a dict in, a dict out


class Group:
    """Every span of one name under one parent (or under the members of one folded group)."""

    __slots__ = ("children", "count", "errors", "first", "max_ns", "members", "min_ns", "name", "total_ns", "totals",
                 "usage")

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.total_ns = 0
        self.max_ns = 0
        self.min_ns = -1
        self.errors = 0
        self.first = -1  # earliest start
        self.members: list[Node] | None = []  # None once folded
        self.children: Level = {}  # the members' children merged, once folded
        self.usage: Usage | None = None  # kept only for ``compare`` (``aggregate_spans(usage=True)``)
        self.totals: Totals | None = None  # kept only for ``show`` (``aggregate_spans(totals=True)``)

    def _count(self, duration: int, status: int, start: int) -> None:
        self.count += 1
        self.total_ns += duration
        if duration > self.max_ns:
            self.max_ns = duration
        if self.min_ns < 0 or duration < self.min_ns:
            self.min_ns = duration
        if status == 2:
            self.errors += 1
        if self.first < 0 or start < self.first:
            self.first = start

    def fold(self) -> None:
        """Forget the members; keep their children merged by name."""
        members, self.members = self.members, None
        for m in members or ():
            merge_level(self.children, m.children)

    @property
    def folded(self) -> bool:
        """Whether the members are forgotten (more than FOLD_THRESHOLD spans)."""
        return self.members is None


def add_node(level: Level, node: Node, usage: bool = False, totals: bool = False) -> None:
    """Put one span into a level: as a member while its group is small, else into the group's totals."""
    group = level.get(node.name)
    if group is None:
        group = level[node.name] = Group(node.name)
        if usage:
            group.usage = Usage(node.cpu_energy)
            kind = node.attributes().get(semconv.SPAN_KIND)
            group.usage.kind = kind if isinstance(kind, str) else None
        if totals:
            group.totals = Totals(node.cpu_energy)
    group._count(node.duration_ns, node.status, node.start)
    if group.usage is not None:
        group.usage.add(node.duration_ns, node.attrs_raw)
    if group.totals is not None:
        group.totals.add(node.attrs_raw)
    if group.members is not None:
        group.members.append(node)
        if len(group.members) > FOLD_THRESHOLD:
            group.fold()
    elif node.children:
        merge_level(group.children, node.children)


def _merge_group(a: Group, b: Group) -> None:
    a.count += b.count
    a.total_ns += b.total_ns
    a.max_ns = max(a.max_ns, b.max_ns)
    a.min_ns = b.min_ns if a.min_ns < 0 else (a.min_ns if b.min_ns < 0 else min(a.min_ns, b.min_ns))
    a.errors += b.errors
    if a.usage is not None and b.usage is not None:
        a.usage.merge(b.usage)
    if a.totals is not None and b.totals is not None:
        a.totals.merge(b.totals)
    a.first = b.first if a.first < 0 else (a.first if b.first < 0 else min(a.first, b.first))
    if a.members is not None and b.members is not None and len(a.members) + len(b.members) <= FOLD_THRESHOLD:
        a.members.extend(b.members)
        return
    if a.members is not None:
        a.fold()
    if b.members is not None:
        for m in b.members:
            merge_level(a.children, m.children)
    else:
        merge_level(a.children, b.children)


def merge_level(dst: Level, src: Level) -> None:
    """Merge ``src`` into ``dst`` by name (``src``'s groups are taken over, not copied)."""
    for name, group in src.items():
        mine = dst.get(name)
        if mine is None:
            dst[name] = group
        else:
            _merge_group(mine, group)


@dataclass
class Aggregate:
    """The folded tree of a run: its roots by the span id they name as parent ("" for none)."""

    roots: dict[str, Level] = field(default_factory=dict)
    spans: int = 0
    duplicates: int = 0
    late: int = 0

    def root_level(self) -> Level:
        """Every root merged into one level (consumes ``roots``)."""
        level: Level = {}
        for part in self.roots.values():
            merge_level(level, part)
        return level

    def problems(self) -> list[str]:
        """What could not be shown as written."""
        out = []
        if self.late:
            out.append(f"spans.jsonl: {self.late} span(s) that ended after their parent are shown at the top level")
        return out


def aggregate_spans(rows: Iterable[SpanRow], graft: Mapping[str, Level] | None = None, *,
                    usage: bool = False, totals: bool = False, cpu_energy: float | None = None) -> Aggregate:
    """Fold spans (file order) into an :class:`Aggregate`.

    ``graft`` are levels (child runs' trees) waiting for the span id they name as parent, as if written
    as that span's children. With ``usage``, every group also aggregates its spans' :class:`Usage`.
    ``cpu_energy``: the run's CPU estimate (:func:`runtel.query.energy.cpu_energy_factor`).
    """
    agg = Aggregate()
    pending: dict[str, Level] = {k: dict(v) for k, v in (graft or {}).items()}
    recent: set[str] = set()
    older: set[str] = set()
    count = 0
    for sid, trace_id, parent, name, start, end, code, message, attrs in rows:
        if sid in recent or sid in older:
            agg.duplicates += 1
            continue
        recent.add(sid)
        count += 1
        if not count % RECENT_IDS:
            older, recent = recent, set()
        duration = end - start
        if duration < 0:
            duration = 0
        if parent and (parent in recent or parent in older):
            agg.late += 1  # its parent was already read (and placed): this one goes to the top level
            parent = ""
        kids = pending.pop(sid, None)
        level = pending.get(parent)
        if level is None:
            level = pending[parent] = {}
        group = level.get(name)
        if kids is None and group is not None and group.members is None:
            # the common case, inlined: one more leaf of a folded group
            group.count += 1
            group.total_ns += duration
            if duration > group.max_ns:
                group.max_ns = duration
            if duration < group.min_ns:
                group.min_ns = duration
            if code == 2:
                group.errors += 1
            if start < group.first:
                group.first = start
            if usage:
                group.usage.add(duration, attrs)  # type: ignore[union-attr]
            if totals:
                group.totals.add(attrs)  # type: ignore[union-attr]
            continue
        if attrs is not None and attrs.__class__ is not list:
            attrs = bytes(attrs)  # a view into the whole line (msgspec): keep only its own bytes
        add_node(level, Node(name, sid, trace_id, start, duration, code, message, attrs, kids or {}, cpu_energy), usage, totals)
    agg.spans = count
    agg.roots = pending
    return agg


#: a run whose spans files are larger than this is read by folding (show) or running sums (compare) while
#: reading, in bounded memory, instead of building every span's node first
FULL_TREE_BYTES = 8 << 20


def spans_bytes(run_dir: Path) -> int:
    """Bytes of a run's spans files (every segment; an unreadable one counts 0): which way to read it."""
    total = 0
    for path in span_segments(run_dir):
        try:
            total += path.stat().st_size
        except OSError:
            pass
    return total


def aggregate_run(run_dir: Path, stats: LineStats, graft: Mapping[str, Level] | None = None, *,
                  usage: bool = False, totals: bool = False, cpu_energy: float | None = None) -> Aggregate:
    """:func:`aggregate_spans` of a run folder's spans (every segment), streamed."""
    return aggregate_spans(iter_span_rows(run_dir, stats), graft, usage=usage, totals=totals, cpu_energy=cpu_energy)


def child_run_levels(run_id: str, root: Path, seen: set[str], problems: list[str] | None = None,
                     runs: Sequence[RunRecord] | None = None, *, usage: bool = False,
                     totals: bool = False) -> dict[str, Level]:
    """Folded trees of the runs that name ``run_id`` as parent (recursively), by the span id they hang under.

    Without ``runs``, the run index finds them (or, without a usable index, a scan of every run.json).
    """
    if runs is None:
        runs = descendants(root, run_id)
    if runs is None:
        runs = list_runs(root)
    out: dict[str, Level] = {}
    for record in runs:
        child_id = str(record.get("id"))
        if parent_run_id(record) != run_id or child_id in seen:
            continue
        seen.add(child_id)
        stats = LineStats()
        graft = child_run_levels(child_id, root, seen, problems, runs, usage=usage, totals=totals)
        agg = aggregate_run(Path(record.get("dir", "")), stats, graft, usage=usage, totals=totals,
                            cpu_energy=cpu_energy_factor(record))
        _stand_in_for_unended(record, agg.roots, usage, totals)
        for parent, level in agg.roots.items():
            merge_level(out.setdefault(parent, {}), level)
        if problems is not None:
            problems.extend(f"child run {child_id}: {p}"
                            for p in [*record.get("problems", ()), *stats.problems(), *agg.problems()])
    return out


def _stand_in_for_unended(record: RunRecord, roots: dict[str, Level], usage: bool, totals: bool = False) -> None:
    """Hang a killed run's spans under a stand-in of its run span (as ``spantree`` does), not loose.

    ``roots`` holds the run's spans by the span id they name as parent; the run span of a run killed before
    it ended is not among its spans, so its children would be grafted nowhere and shown as roots.
    """
    if not roots or set(roots) <= {""}:
        return
    ref = run_span_ref(record)
    if ref is None or ref[0] not in roots:
        return
    span_id, trace_id, parent, name, start = ref
    level = roots.pop(span_id)
    end = max([start, *(g.first + g.max_ns for g in level.values() if g.first >= 0)])
    attrs = [{"key": semconv.SPAN_KIND, "value": {"stringValue": semconv.KIND_RUN}},
             {"key": semconv.RUN_ID, "value": {"stringValue": str(record.get("id"))}}]
    stand_in: Level = {}
    add_node(stand_in, Node(name, span_id, trace_id, start, end - start, 2, UNENDED, attrs, level), usage, totals)
    merge_level(roots.setdefault(parent or "", {}), stand_in)


def level_json(level: Level, depth: int = 0, limit: int = 128) -> list[dict[str, Any]]:
    """A level as JSON: members as span nodes, folded groups as ``{"name", "count", "total_s", ...}`` nodes."""
    items: list[tuple[int, dict[str, Any]]] = []
    for group in level.values():
        if group.members is not None:
            for m in group.members:
                attributes = m.attributes()
                node: dict[str, Any] = {"name": m.name, "span_id": m.span_id, "trace_id": m.trace_id,
                        "start_time_unix_nano": m.start, "duration_s": round(m.duration_ns / 1e9, 9),
                        "status": {0: "unset", 1: "ok", 2: "error"}.get(m.status, "unset"),
                        "status_message": m.status_message, "kind": attributes.get(semconv.SPAN_KIND),
                        "run_id": attributes.get(semconv.RUN_ID), "attributes": attributes,
                        "children": level_json(m.children, depth + 1, limit) if depth + 1 < limit else []}
                items.append((m.start, node))
        else:
            items.append((group.first, {
                "name": group.name, "count": group.count, "total_s": round(group.total_ns / 1e9, 9),
                "mean_s": round(group.total_ns / group.count / 1e9, 9), "min_s": round(max(group.min_ns, 0) / 1e9, 9),
                "max_s": round(group.max_ns / 1e9, 9), "errors": group.errors,
                **(group.totals.as_json() if group.totals is not None else {}),
                "children": level_json(group.children, depth + 1, limit) if depth + 1 < limit else []}))
    items.sort(key=lambda item: item[0])
    return [node for _, node in items]


def _child_items(group: Group) -> list[Group]:
    levels = [group.children] if group.members is None else [m.children for m in group.members]
    return [g for level in levels for g in level.values()]


def walk_paths(level: Level, root_span_id: str | None = None) -> Iterator[tuple[str, Group]]:
    """(path, group) of every group, depth first in start order; a path may come from several groups.

    Paths are span names joined by ``/`` from just below the run's own span (``root_span_id``), as
    ``compare`` matches blocks.
    """
    top: list[tuple[str, Group]] = []
    for group in level.values():
        own = [m for m in group.members or () if root_span_id and m.span_id == root_span_id]
        if own:  # the run's own span is not a block: its children start the paths
            top.extend(("", g) for g in own[0].children.values())
            if len(group.members or ()) == 1:
                continue
        top.append(("", group))
    stack = sorted(top, key=lambda item: item[1].first, reverse=True)
    while stack:  # iterative: trees come from files
        prefix, group = stack.pop()
        path = f"{prefix}/{group.name}" if prefix else group.name
        yield path, group
        stack.extend((path, g) for g in sorted(_child_items(group), key=lambda g: g.first, reverse=True))
