"""The check registry: every check, built in or from another package, is a ``CheckSpec`` found by name.

A check declares what it needs (embeddings, out-of-fold probabilities, ...), a frozen parameter dataclass
whose fields are its thresholds (defaults = the tuned values), the function that runs it over
:class:`~curato.checks.data.AuditData`, and optionally how its evidence renders in the HTML report.
Packages add checks with ``register_check`` or through the ``curato.checks`` entry-point group (an entry
point names a ``CheckSpec`` or a function that registers one); docs/extending.md walks through it.

Parameters are resolved in one place (``resolve_params``): defaults, then the workspace's ``curato.toml``,
then the caller's overrides (``--set check.field=value`` or ``params={...}``); each step is validated by
the dataclass itself and the result is recorded in the run.
"""

from __future__ import annotations

import dataclasses
import math
import time
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from curato.checks.data import AuditData
from curato.checks.findings import Finding
from curato.errors import InputError
from curato.plugins import load_entry_points
from curato.progress import SILENT, LaneProgress, Progress
from curato.system import available_cpus, cpu_share

NEEDS = frozenset({"embeddings", "pred_probs", "properties", "thumbnails", "labels", "masks"})
ENTRY_POINT_GROUP = "curato.checks"

CheckRun = Callable[[AuditData, Any], list[Finding]]
Renderer = Callable[[Finding], list[dict[str, Any]]]


@dataclass(frozen=True)
class CheckSpec:
    """One check: its name, what it needs, its parameters, how it runs and how its evidence renders."""

    name: str
    run: CheckRun  # (data, params) -> findings; params is an instance of ``params`` (or None without one)
    params: type | None = None  # a frozen dataclass whose fields all have defaults
    needs: frozenset[str] = frozenset()
    description: str = ""
    render: Renderer | None = None  # finding -> tables ({"title", "columns", "rows", "notes"}) for the report
    findings: tuple[str, ...] = ()  # the names of the findings it returns (default: its own name)
    # How long it runs relative to other checks (CPU seconds on the 70k Fashion-MNIST audit for the built-ins):
    # side by side, the longest waiting check starts first, so no long check is left for the end.
    cost: float = 1.0

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"check name {self.name!r}: use letters, digits, '_' or '-'")
        unknown = set(self.needs) - NEEDS
        if unknown:
            raise ValueError(f"check {self.name}: unknown needs {sorted(unknown)}; known: {sorted(NEEDS)}")
        if not (isinstance(self.cost, int | float) and self.cost >= 0):
            raise ValueError(f"check {self.name}: cost must be a number >= 0, got {self.cost!r}")
        if self.params is not None and not (dataclasses.is_dataclass(self.params) and isinstance(self.params, type)):
            raise ValueError(f"check {self.name}: params must be a dataclass type")
        object.__setattr__(self, "needs", frozenset(self.needs))
        object.__setattr__(self, "findings", tuple(self.findings) or (self.name,))

    def default_params(self) -> Any:
        """The parameters with their defaults (None for a check without parameters)."""
        return None if self.params is None else self.params()


_REGISTRY: dict[str, CheckSpec] = {}
_LOADED = False


def register_check(name: str, run: CheckRun, *, params: type | None = None, needs: Iterable[str] = (),
                   description: str = "", render: Renderer | None = None, findings: Sequence[str] = (),
                   replace: bool = False, cost: float = 1.0) -> CheckSpec:
    """Add a check under ``name``; ``replace=True`` overrides an existing one (else a name clash raises).
    ``cost``: its running time relative to the other checks (see ``CheckSpec.cost``)."""
    spec = CheckSpec(name, run, params, frozenset(needs), description, render, tuple(findings) or (name,), cost)
    return add_check(spec, replace=replace)


def add_check(spec: CheckSpec, *, replace: bool = False) -> CheckSpec:
    """Register a ready ``CheckSpec`` (what an entry point may name)."""
    if spec.name in _REGISTRY and not replace and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"a check named {spec.name!r} is registered already; pass replace=True to override it")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_check(name: str) -> None:
    """Remove the check called ``name`` (e.g. one a notebook registered); unknown names raise ``KeyError``."""
    registered_checks()
    del _REGISTRY[name]


def registered_checks() -> dict[str, CheckSpec]:
    """Every known check by name: the built-ins, then those of installed packages (entry points)."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        import curato.checks.builtin  # noqa: F401 - registers the built-in checks

        load_entry_points(ENTRY_POINT_GROUP, _add_loaded)
    return dict(_REGISTRY)


def _add_loaded(name: str, loaded: Any) -> bool:
    if isinstance(loaded, CheckSpec):
        add_check(loaded, replace=True)
        return True
    return False


def finding_checks() -> dict[str, str]:
    """Finding name -> the check that produces it (``split_leakage`` -> ``duplicates``), over every registered
    check; a check's own name maps to itself, so either kind of name can pick a check."""
    mapping: dict[str, str] = {}
    for name, spec in registered_checks().items():
        for finding in spec.findings:
            mapping.setdefault(finding, name)
    mapping.update({name: name for name in registered_checks()})
    return mapping


def check_of(name: str, *, where: str = "--checks") -> str:
    """The check that a check or finding name picks; an unknown name is an error listing both kinds."""
    mapping = finding_checks()
    if name in mapping:
        return mapping[name]
    known = registered_checks()
    findings = sorted(finding for finding in mapping if finding not in known)
    raise InputError(f"{where}: unknown check {name!r} (nor a finding's name); checks: {', '.join(known)}; "
                     f"findings: {', '.join(findings)}")


def check_names(names: Sequence[str] | None) -> list[str]:
    """The checks to run (default: all), validated. A finding's name picks the check that produces it
    (``split_leakage`` runs ``duplicates``); an unknown name is an error listing the known checks and findings."""
    known = registered_checks()
    if not names:
        return list(known)
    return list(dict.fromkeys(check_of(name) for name in names))


def parse_assignments(assignments: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["duplicates.max_distance=0.05", ...]`` -> ``{"duplicates": {"max_distance": "0.05"}}``."""
    parsed: dict[str, dict[str, str]] = {}
    for text in assignments:
        key, sep, value = text.partition("=")
        check, dot, name = key.strip().partition(".")
        if not sep or not dot or not check or not name:
            raise InputError(f"--set {text!r}: write it as CHECK.FIELD=VALUE, e.g. outliers.k=15")
        parsed.setdefault(check, {})[name.strip()] = value.strip()
    return parsed


def resolve_params(chosen: Sequence[str], *layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Parameters of each chosen check: its defaults, overridden by each layer in turn.

    A layer maps check name -> a dict of field values (strings are converted to the field's type) or a ready
    parameter instance. Unknown checks or fields, and values the dataclass rejects, raise ``InputError``.
    """
    known = registered_checks()
    resolved = {name: known[name].default_params() for name in chosen}
    for layer in layers:
        for named, values in (layer or {}).items():
            check = check_of(named, where="check settings")
            spec = known[check]
            if check not in resolved or values is None:
                continue  # settings for a check this run does not include, or nothing to change
            if spec.params is None:
                raise InputError(f"{check}: this check has no parameters")
            if isinstance(values, spec.params):
                resolved[check] = values
                continue
            if not isinstance(values, Mapping):
                raise InputError(f"{check}: give its parameters as a mapping of field to value or a "
                                 f"{spec.params.__name__}")
            resolved[check] = _replaced(spec, resolved[check], values)
    return resolved


def _replaced(spec: CheckSpec, current: Any, values: Mapping[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(current)}
    hints = typing.get_type_hints(spec.params)
    changes = {}
    for name, value in values.items():
        if name not in fields:
            raise InputError(f"{spec.name}.{name}: no such parameter; {spec.name} has {', '.join(fields) or 'none'}")
        changes[name] = _converted(f"{spec.name}.{name}", value, hints.get(name, Any), getattr(current, name))
    try:
        return dataclasses.replace(current, **changes)
    except (TypeError, ValueError) as error:
        raise InputError(f"{spec.name}: {error}") from None


def _converted(where: str, value: Any, hint: Any, default: Any) -> Any:
    """``value`` as the field's type (from its annotation, else from its default's type); ``none`` / ``null``
    is None for a field that may be None."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] if typing.get_args(hint) else [hint]
    optional = type(None) in typing.get_args(hint) or default is None
    if optional and text.lower() in ("none", "null", ""):
        return None
    kinds = [k for k in kinds if isinstance(k, type)] or ([type(default)] if default is not None else [str])
    for kind in kinds:
        try:
            return _parsed(text, kind)
        except ValueError:
            continue
    names = " or ".join(k.__name__ for k in kinds) + (" or none" if optional else "")
    raise InputError(f"{where}: {value!r} is not a valid {names}") from None


def _parsed(text: str, kind: type) -> Any:
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    if kind in (tuple, list):
        return kind(part.strip() for part in text.split(",") if part.strip())
    if kind is str:
        return text
    raise ValueError(text)


def params_record(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters as plain JSON values, for the run record and the audit JSON."""
    return {name: None if value is None else _jsonable(dataclasses.asdict(value)) for name, value in params.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        return [_jsonable(v) for v in value]
    return value


def run_checks(data: AuditData, names: Sequence[str] | None = None, *, params: Mapping[str, Any] | None = None,
               timings: dict[str, float] | None = None, progress: Progress = SILENT, workers: int = 1,
               before: Callable[[Progress], Any] | None = None) -> list[Finding]:
    """Run the named checks (default: all) on loaded data; findings most severe first.

    A check that fails raises: an audit is never silently partial. Seconds per check go to ``timings``.
    ``before(progress)`` fills what checks needing ``pred_probs`` read (the out-of-fold probabilities; its seconds
    go to ``timings["out_of_fold"]``). With ``workers`` 1 it runs first and each check is a ``progress`` stage of
    its own, so a slow one shows by name. With more, ``before`` and the checks that do not need it share
    ``workers`` threads (their NumPy, faiss and onnxruntime work releases the GIL; most checks alone keep one core
    busy), the others queue once it is done, and each piece of work gets a bar of its own
    (:class:`~curato.progress.LaneProgress`). Findings do not depend on the order.
    """
    chosen = check_names(names)
    resolved = resolve_params(chosen, params)
    known = registered_checks()
    seconds: dict[str, float] = {}

    def run_one(name: str, lane: Progress = SILENT) -> list[Finding]:
        lane.stage(f"check {chosen.index(name) + 1}/{len(chosen)}: {name}", 1)
        started = time.perf_counter()
        produced = known[name].run(data, resolved[name])
        for finding in produced:
            finding.produced_by = name
        seconds[name] = time.perf_counter() - started
        lane.advance()
        return produced

    def run_before(lane: Progress) -> None:
        started = time.perf_counter()
        before(lane)  # type: ignore[misc]
        seconds["out_of_fold"] = time.perf_counter() - started

    findings: list[Finding] = []
    if workers <= 1 or len(chosen) < 2:
        if before is not None:
            run_before(progress)
        for name in chosen:
            findings += run_one(name, progress)
    else:
        findings = _run_side_by_side(chosen, known, run_one, run_before if before is not None else None,
                                     workers, progress)
    if timings is not None:
        timings.update({"out_of_fold": seconds["out_of_fold"]} if "out_of_fold" in seconds else {})
        timings.update({name: seconds[name] for name in chosen})
    return sorted(findings, key=lambda f: -f.rank)


def _run_side_by_side(chosen: list[str], known: Mapping[str, CheckSpec],
                      run_one: Callable[[str, Progress], list[Finding]], run_before: Callable[[Progress], None] | None,
                      workers: int, progress: Progress) -> list[Finding]:
    """``run_checks`` on ``workers`` lanes; the first failure (or Ctrl-C) stops what has not started and is raised.

    The lanes are daemon threads: a check still running in the other lane when the caller stops does not keep
    the process alive (a pool's threads would be waited for at exit, minutes for a long check).
    """
    import queue
    import threading

    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    share = max(1, available_cpus() // workers)
    progress.stage("checks side by side", 0)  # stops the clock of the stage before; each lane shows its own bars
    waiting = [name for name in chosen if run_before is not None and "pred_probs" in known[name].needs]
    ready = [name for name in chosen if name not in waiting]
    # Longest first (by ``CheckSpec.cost``; ties in the checks' order): a free lane takes the costliest check
    # that may start, so the lanes end close together instead of one starting a long check as the other ends.
    tasks: queue.PriorityQueue[tuple[float, int, Any]] = queue.PriorityQueue()
    order = {name: position for position, name in enumerate(chosen)}

    def put(name: str | None, work: Callable[..., Any] | None = None, args: tuple[Any, ...] = ()) -> None:
        if work is None:  # a lane's stop sign, after everything queued
            tasks.put((math.inf, len(order), None))
        elif name is None:  # the out-of-fold probabilities: before any check
            tasks.put((-math.inf, -1, (None, work, args)))
        else:
            tasks.put((-known[name].cost, order[name], (name, work, args)))

    results: queue.SimpleQueue[tuple[str | None, BaseException | None, Any]] = queue.SimpleQueue()
    stopped = threading.Event()

    def lane() -> None:
        while (task := tasks.get()[2]) is not None and not stopped.is_set():
            key, work, args = task
            try:
                with cpu_share(share):
                    results.put((key, None, work(*args, LaneProgress(progress))))
            except BaseException as error:  # handed to the caller, which raises it
                results.put((key, error, None))

    def before_then_release(lane_progress: Progress) -> None:
        run_before(lane_progress)  # type: ignore[misc]
        for name in waiting:  # queued before this lane asks for its next check, so it may be one of them
            put(name, run_one, (name,))

    if run_before is not None:  # takes the first lane
        put(None, before_then_release)
    for name in ready:
        put(name, run_one, (name,))
    # Every check counts from the start: the lane that computed the probabilities queues the waiting checks before
    # its result reaches this loop, and another lane may finish one of them first.
    pending = len(ready) + len(waiting) + (run_before is not None)
    findings: list[Finding] = []
    # Each lane sizes its threads to its share of the CPUs; BLAS (one pool for the process) to the same share.
    limits = threadpool_limits(limits=share, user_api="blas")
    try:
        for number in range(workers):
            threading.Thread(target=lane, name=f"curato-check-{number}", daemon=True).start()
        while pending:
            key, error, value = results.get()
            pending -= 1
            if error is not None:
                raise error
            if key is not None:  # (None: the out-of-fold probabilities, whose lane queued the checks reading them)
                findings += value
    finally:
        stopped.set()
        for _ in range(workers):
            put(None)
        limits.restore_original_limits()
    return findings


def renderers_for(findings: Sequence[Finding]) -> dict[str, Renderer]:
    """Finding name -> the render function of the check that produced it (for the HTML report)."""
    known = registered_checks()
    chosen = {}
    for finding in findings:
        spec = known.get(finding.produced_by or finding.check)
        if spec is not None and spec.render is not None:
            chosen[finding.check] = spec.render
    return chosen


def needs_of(names: Sequence[str]) -> frozenset[str]:
    """Everything the named checks need together."""
    known = registered_checks()
    return frozenset().union(*(known[name].needs for name in names)) if names else frozenset()


__all__ = ["CheckSpec", "add_check", "check_names", "check_of", "finding_checks", "needs_of", "parse_assignments",
           "register_check", "registered_checks", "renderers_for", "resolve_params", "run_checks", "unregister_check"]
