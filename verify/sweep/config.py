r"""Sweeps: a grid or a random design of task parameters, expanded into tasks and run on an executor.

A sweep is a TOML file (read with the standard library's ``tomllib``; the full format is in
``docs/sweep.md``)::

    [sweep]
    name = "phase-diagram"   # default: the file's stem
    task = "phase"           # a task kind (verify.sweep.tasks) or "package.module:function"
    seed = 0                 # base seed; every task's seeds are derived from its spec
    replicates = 2           # independent runs per parameter point

    [params]                 # the same for every task
    size = 12

    [grid]                   # the Cartesian product of these axes, in this order
    problem = [{K = 1, N = 3}, {K = 2, N = 10}]   # an axis of tables sets several parameters
    r = [1, 2, 3]

or, instead of ``[grid]``, a random design: ``samples = S`` in ``[sweep]`` and a ``[random]``
table whose axes are lists (a uniform choice) or ranges ``{low = a, high = b}`` (integers:
uniform on ``a..b``; floats: uniform on ``[a, b)``, ``log = true`` for log-uniform), each draw
derived from ``(seed, sample, axis)`` by hashing, so a design is the same on every machine.

**Expansion.** Each parameter point and replicate ``i`` gives one task with the spec
``{"task": ..., "seed": ..., "replicate": i, ["sample": j,] **params}`` (every parameter, with
the task kind's defaults filled in); its hash keys it in the store (:func:`verify.sweep.tasks.task_hash`).
The sweep's identity (``config_hash``) is the sha256 of its sorted task hashes: two files that
expand to the same tasks are the same sweep.  The expansion is streamed (:func:`iter_tasks`); a
sweep is first counted from its configuration (:func:`count_tasks`: the product of the axes'
lengths, or ``samples``, times ``replicates``) and refused above ``max_tasks`` (default
:data:`MAX_TASKS` = 10^6, ``loracheck sweep --max-tasks N``), so a 12^9 grid or 10^9 replicates
cost nothing; computing the identity keeps about 70 bytes per task.

**Running** (:func:`run_sweep`): the tasks not yet finished in the store are submitted to the
executor (at most a small window at a time, so a killed sweep loses at most the tasks in
flight), each outcome is committed to the store as it arrives (outcomes that arrive together in
one transaction: one fsync however many workers deliver at once), and a progress bar shows tasks
done, failures and the ETA.  A task that raises is recorded as failed with its error and the
sweep goes on; ``resume=True`` runs the failed tasks again (they may have failed for a transient
reason: memory, a lost worker).  A process pool whose worker dies (killed, out of memory, a
crash in native code) cannot continue: the sweep stops with :class:`SweepAborted`, everything
finished so far stays in the store, and ``resume=True`` continues.

**Stopping.** A ``KeyboardInterrupt`` in the coordinating process (Ctrl-C, or SIGTERM/SIGHUP,
which the ``loracheck`` command turns into :class:`verify.signals.Terminated`) abandons the tasks
in flight, commits the outcomes that had arrived, and stops an executor the sweep made: the
serial executor's running task is interrupted in place; a process pool's workers are terminated
(SIGTERM, then SIGKILL), also in the middle of a task, and its resource tracker exits with them;
a local Dask cluster is closed (its nannies stop their workers).  No process outlives the sweep,
and ``resume=True`` runs exactly the tasks not finished.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from theory.errors import UserInputError, finite_number, shown
from verify.sweep.tasks import REQUIRED, canonical_json, derive_seed, resolve_task
from verify.taskkind import RESERVED_KEYS

__all__ = [
    "SweepAborted",
    "SweepConfig",
    "SweepConfigError",
    "SweepSummary",
    "Task",
    "check_task_count",
    "config_hash",
    "count_tasks",
    "expand",
    "iter_tasks",
    "load_config",
    "parse_config",
]

_SECTIONS = ("sweep", "params", "grid", "random")
_SWEEP_KEYS = ("name", "task", "seed", "replicates", "samples")


#: Work per executor call that an automatic chunk size aims at, in seconds of task time, for an
#: executor that does not name its own (a Dask executor asks for more: ``chunk_seconds``).
CHUNK_SECONDS = 0.25
#: Largest automatic chunk (tasks per executor call).
MAX_CHUNK = 64
#: Default largest number of tasks of a sweep (``run_sweep(max_tasks=...)``, ``loracheck sweep
#: --max-tasks``).  A sweep is counted from its configuration before it is expanded; above the
#: limit it is refused.  Expanding costs about 100 bytes of memory per task (its hash, for the
#: sweep's identity) and some 20 microseconds of CPU, twice (identity, then the run).
MAX_TASKS = 10**6
#: Largest sweep configuration file read (bytes).
MAX_CONFIG_BYTES = 64 * 2**20


class SweepConfigError(UserInputError):
    """A sweep configuration that cannot be used; the message names the file and the key."""


class SweepAborted(RuntimeError):
    """The executor broke (a worker process died); finished tasks are in the store."""


@dataclass(frozen=True)
class SweepConfig:
    """A parsed, validated sweep configuration (see the module docstring for the format).

    ``params`` holds the fixed parameters (normalized), ``axes`` the axes in file order: for a
    grid each is a tuple of values (a scalar, or a dict of parameters for a joint axis); for a
    random design ``("choice", values)`` or ``("range", low, high, log)``.
    """

    name: str
    task: str
    seed: int
    replicates: int
    design: Literal["grid", "random"]
    samples: int | None
    params: Mapping[str, Any]
    axes: Mapping[str, Any]
    source: str = field(default="<config>", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The normalized configuration as JSON data (stored in the store's meta)."""
        return {
            "name": self.name,
            "task": self.task,
            "seed": self.seed,
            "replicates": self.replicates,
            "design": self.design,
            "samples": self.samples,
            "params": dict(self.params),
            "axes": {k: _jsonable(v) for k, v in self.axes.items()},
        }


@dataclass(frozen=True)
class Task:
    """One expanded task: its position, spec, canonical spec text and hash."""

    index: int
    spec: Mapping[str, Any]
    spec_json: str
    hash: str


@dataclass(frozen=True)
class SweepSummary:
    """What one :func:`run_sweep` call did.

    ``tasks`` in the sweep; ``skipped``: finished before this call; ``finished``/``failed``:
    outcomes recorded by this call; ``failed_in_store``: failed records in the store now;
    ``wall_seconds``: the whole call (executor start-up and shut-down included);
    ``first_result_seconds``: from the call's start to the first recorded outcome;
    ``task_seconds``: the tasks' own wall times summed; ``errors``: ``(index, first line of the
    error)`` of this call's failures; ``calls``: executor calls made (a call runs a chunk of tasks).
    """

    name: str
    store: str
    executor: str
    tasks: int
    skipped: int
    finished: int
    failed: int
    failed_in_store: int
    wall_seconds: float
    first_result_seconds: float | None
    task_seconds: float
    errors: tuple[tuple[int, str], ...] = ()
    calls: int = 0

    @property
    def complete(self) -> bool:
        """Every task of the sweep is finished in the store."""
        return self.skipped + self.finished == self.tasks

    @property
    def tasks_per_minute(self) -> float:
        """Outcomes recorded by this call per minute of its wall time (start-up included)."""
        n = self.finished + self.failed
        return 60.0 * n / self.wall_seconds if self.wall_seconds > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "name": self.name,
            "store": self.store,
            "executor": self.executor,
            "tasks": self.tasks,
            "skipped": self.skipped,
            "finished": self.finished,
            "failed": self.failed,
            "failed_in_store": self.failed_in_store,
            "complete": self.complete,
            "wall_seconds": self.wall_seconds,
            "first_result_seconds": self.first_result_seconds,
            "task_seconds": self.task_seconds,
            "tasks_per_minute": self.tasks_per_minute,
            "errors": [list(e) for e in self.errors],
            "calls": self.calls,
        }

    def text(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"sweep {self.name!r}: {self.tasks} tasks; {self.skipped} finished before, {self.finished} "
            f"finished now, {self.failed} failed now ({self.failed_in_store} failed in the store)",
            f"  {self.executor}: {self.wall_seconds:.1f} s wall, {self.tasks_per_minute:.1f} tasks/min, "
            f"{self.task_seconds / max(1, self.finished + self.failed):.3f} s per task on its worker"
            if self.finished + self.failed
            else f"  {self.executor}: nothing to run",
            f"  store: {self.store}",
        ]
        for idx, err in self.errors[:5]:
            lines.append(f"  failed task {idx}: {err}")
        if len(self.errors) > 5:
            lines.append(f"  ... and {len(self.errors) - 5} more failures (their errors are in the store)")
        if self.failed_in_store:
            lines.append("  failed tasks are run again by a resumed sweep (--resume)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
def load_config(path: str | os.PathLike[str]) -> SweepConfig:
    """Read and validate a sweep TOML file; :class:`SweepConfigError` names the key at fault."""
    p = Path(path)
    try:
        if p.exists() and not p.is_file():  # a directory, a FIFO, /dev/zero: never read
            raise SweepConfigError(f"config: expected a TOML file, got {str(p)!r} (not a regular file)")
        with open(p, "rb") as fh:
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_CONFIG_BYTES and (chunk := fh.read(2**20)):  # read(n) reserves n bytes
                chunks.append(chunk)
                size += len(chunk)
        if size > MAX_CONFIG_BYTES:
            raise SweepConfigError(
                f"config: expected a TOML file of at most {MAX_CONFIG_BYTES} bytes, got {str(p)!r} of more "
                "(list long axes as a [random] range, or split the sweep)"
            )
        raw = b"".join(chunks)
        data = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise SweepConfigError(
            f"config: expected an existing TOML file, got {str(p)!r} (no such file)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepConfigError(f"config: cannot read {str(p)!r} ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepConfigError(f"{p}: not valid TOML ({exc})") from None
    except ValueError as exc:  # an int over Python's 4,300-digit limit
        raise SweepConfigError(f"{p}: not a TOML file loracheck can read ({exc})") from None
    except RecursionError:  # tomllib recurses once per level of nested arrays and tables
        raise SweepConfigError(
            f"{p}: not a TOML file loracheck can read (arrays or tables nested beyond the parser's limit)"
        ) from None
    return parse_config(data, source=str(p), default_name=p.stem)


def parse_config(
    data: Mapping[str, Any], *, source: str = "<config>", default_name: str = "sweep"
) -> SweepConfig:
    """Validate a configuration given as a mapping (the parsed TOML); see the module docstring."""

    def err(msg: str) -> SweepConfigError:
        return SweepConfigError(f"{source}: {msg}")

    if not isinstance(data, Mapping):
        raise err(f"expected a table, got {type(data).__name__}")
    for key, val in data.items():
        if key not in _SECTIONS:
            raise err(f"unknown section [{key}]; expected [sweep], [params], and [grid] or [random]")
        if not isinstance(val, Mapping):
            raise err(f"[{key}]: expected a table, got {_show(val)}")
    head = _sweep_section(data, err, default_name)
    params_read = _Params(head.task, head.kind.params, err)
    params: dict[str, Any] = {}
    for pname, v in data.get("params", {}).items():
        params_read.claim(pname, f"[params] {pname}")
        params[pname] = params_read.value(pname, v, f"[params] {pname}")
    axes = {
        aname: params_read.axis(head.design, aname, spec) for aname, spec in data.get(head.design, {}).items()
    }
    schema = head.kind.params
    if schema is not None:
        missing = [p for p, s in schema.items() if s.default is REQUIRED and p not in params_read.known]
        if missing:
            raise err(
                f"task {head.task!r} needs the parameter(s) {', '.join(missing)}; set them in [params] or "
                f"as axes of [{head.design}]"
            )
    cfg = SweepConfig(
        name=head.name,
        task=head.task,
        seed=head.seed,
        replicates=head.replicates,
        design=head.design,
        samples=head.samples,
        params=params,
        axes=axes,
        source=source,
    )
    _check_distinct(cfg)
    if count_tasks(replace(cfg, replicates=1)) <= MAX_TASKS:
        # the task kind's cross-parameter check of every parameter point (SweepConfigError); more
        # points are checked by run_sweep after it has counted them, before any task runs
        for _ in _specs(cfg, points_only=True):
            pass
    return cfg


@dataclass(frozen=True)
class _Head:
    """The ``[sweep]`` section, checked."""

    task: str
    kind: Any
    name: str
    seed: int
    replicates: int
    design: Literal["grid", "random"]
    samples: int | None


def _sweep_section(
    data: Mapping[str, Any], err: Callable[[str], SweepConfigError], default_name: str
) -> _Head:
    sw = data.get("sweep")
    if sw is None:
        raise err("missing section [sweep] (with at least task = ...)")
    for key in sw:
        if key not in _SWEEP_KEYS:
            raise err(f"[sweep] unknown key {key!r}; expected one of {', '.join(_SWEEP_KEYS)}")
    if "task" not in sw:
        raise err("[sweep] task: missing; expected a task kind such as 'phase' or 'package.module:function'")
    task = sw["task"]
    try:
        kind = resolve_task(task)
    except ValueError as exc:
        raise err(f"[sweep] {exc}") from None
    name = sw.get("name", default_name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise err(
            f"[sweep] name: expected letters, digits, '.', '_' and '-' (it names the store file), "
            f"got {_show(name)}"
        )
    seed = _int(sw.get("seed", 0), 0, err, "[sweep] seed")
    replicates = _int(sw.get("replicates", 1), 1, err, "[sweep] replicates")
    if "grid" in data and "random" in data:
        raise err("expected either [grid] or [random], got both")
    design: Literal["grid", "random"] = "random" if "random" in data else "grid"
    samples = None
    if design == "random":
        if "samples" not in sw:
            raise err("[sweep] samples: missing; a [random] design needs the number of points to draw")
        samples = _int(sw["samples"], 1, err, "[sweep] samples")
    elif "samples" in sw:
        raise err("[sweep] samples: applies to a [random] design only (this file has no [random] table)")
    return _Head(task, kind, name, seed, replicates, design, samples)


@dataclass
class _Params:
    """The parameters a configuration sets, checked against the task kind's schema as they are read."""

    task: str
    schema: Mapping[str, Any] | None
    err: Callable[[str], SweepConfigError]
    known: dict[str, str] = field(default_factory=dict)  # parameter -> where it is set

    def claim(self, pname: str, where: str) -> None:
        """Record that ``where`` sets ``pname`` (a known parameter, set once)."""
        if pname in RESERVED_KEYS:
            raise self.err(f"{where}: {pname!r} is set by the sweep itself; use another parameter name")
        if self.schema is not None and pname not in self.schema:
            raise self.err(
                f"{where}: unknown parameter {pname!r} of task {self.task!r}; expected one of "
                f"{', '.join(self.schema)}"
            )
        if pname in self.known:
            raise self.err(f"{where}: parameter {pname!r} is set twice (also in {self.known[pname]})")
        self.known[pname] = where

    def value(self, pname: str, v: Any, where: str) -> Any:
        """A parameter's value, normalized by its schema (any JSON value without one)."""
        if self.schema is None:
            if not _is_json_value(v):
                raise self.err(f"{where}: expected a string, number, boolean, array or table, got {_show(v)}")
            return v
        try:
            return self.schema[pname].normalize(v)
        except ValueError as exc:
            raise self.err(f"{where}: {exc}") from None

    def axis(self, design: str, aname: str, spec: Any) -> Any:
        """One axis of ``[grid]`` or ``[random]``: values, a joint axis of tables, or a range."""
        where = f"[{design}] {aname}"
        if design == "random" and isinstance(spec, Mapping):
            ptype = self.schema[aname].type if self.schema is not None and aname in self.schema else None
            return _range_axis(aname, spec, where, self.claim, self.value, self.err, ptype)
        if not isinstance(spec, list) or not spec:
            what = (
                "a non-empty array or a range table {low, high}"
                if design == "random"
                else "a non-empty array"
            )
            raise self.err(f"{where}: expected {what}, got {_show(spec)}")
        if all(isinstance(x, Mapping) for x in spec):
            keys = list(spec[0])
            if not keys:
                raise self.err(f"{where}[0]: expected a table of parameters, got an empty table")
            for k in keys:
                self.claim(k, where)
            vals = []
            for i, x in enumerate(spec):
                if set(x) != set(keys):
                    raise self.err(
                        f"{where}[{i}]: expected the keys {', '.join(keys)} (as in {where}[0]), "
                        f"got {', '.join(x)}"
                    )
                vals.append({k: self.value(k, x[k], f"{where}[{i}].{k}") for k in keys})
        elif any(isinstance(x, Mapping) for x in spec):
            raise self.err(f"{where}: expected all tables (a joint axis) or no tables, got a mix")
        else:
            self.claim(aname, where)
            vals = [self.value(aname, x, f"{where}[{i}]") for i, x in enumerate(spec)]
        return ("choice", tuple(vals)) if design == "random" else tuple(vals)


def _range_axis(
    aname: str, spec: Mapping[str, Any], where: str, claim: Any, value: Any, err: Any, schema_type: str | None
) -> tuple[Any, ...]:
    extra = set(spec) - {"low", "high", "log"}
    if extra or "low" not in spec or "high" not in spec:
        raise err(
            f"{where}: expected a range table {{low = a, high = b[, log = true]}}, got keys {', '.join(spec)}"
        )
    claim(aname, where)
    low, high, log = spec["low"], spec["high"], spec.get("log", False)
    if not isinstance(log, bool):
        raise err(f"{where}.log: expected true or false, got {_show(log)}")
    if log and schema_type == "int":
        raise err(f"{where}: log = true draws floats, but {aname!r} takes ints (use a list of values)")
    for k, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not finite_number(v):
            raise err(f"{where}.{k}: expected a finite number, got {_show(v)}")
    if not low < high and not (low == high and isinstance(low, int) and isinstance(high, int)):
        raise err(f"{where}: expected low < high (low <= high for integers), got low = {low}, high = {high}")
    if log and not low > 0:
        raise err(f"{where}: a log range needs low > 0, got {low}")
    integer = isinstance(low, int) and isinstance(high, int) and not log
    # the end points must be valid values of the parameter
    value(aname, low, f"{where}.low")
    value(aname, high if integer else float(high), f"{where}.high")
    return ("range", low, high, log) if not integer else ("range", int(low), int(high), False)


def _int(v: Any, low: int, err: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise err(f"{where}: expected an int >= {low}, got {_show(v)}")
    return v


def _show(v: Any) -> str:
    kind = {dict: "a table", list: "an array", str: "a string", bool: "a boolean"}.get(type(v))
    return shown(v) if kind is None else f"{kind} {shown(v)}"


def _is_json_value(v: Any) -> bool:
    if v is None or isinstance(v, (str, bool, int)):
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, list):
        return all(_is_json_value(x) for x in v)
    if isinstance(v, Mapping):
        return all(isinstance(k, str) and _is_json_value(x) for k, x in v.items())
    return False


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


# ---------------------------------------------------------------------------------------------
# Expansion
# ---------------------------------------------------------------------------------------------
def _points(cfg: SweepConfig) -> Iterable[tuple[int | None, dict[str, Any]]]:
    """Parameter points (sample index for random designs, None for grids) in expansion order."""
    if cfg.design == "grid":
        names = list(cfg.axes)
        for combo in itertools.product(*(cfg.axes[n] for n in names)):
            point: dict[str, Any] = {}
            for n, v in zip(names, combo):
                point.update(v if isinstance(v, Mapping) else {n: v})
            yield None, point
        return
    for j in range(cfg.samples or 0):
        point = {}
        for n, ax in cfg.axes.items():
            u = derive_seed("sweep.random", cfg.seed, j, n) / 2.0**63  # uniform on [0, 1)
            if ax[0] == "choice":
                vals = ax[1]
                v = vals[min(int(u * len(vals)), len(vals) - 1)]
            else:
                _, low, high, log = ax
                if isinstance(low, int) and isinstance(high, int) and not log:
                    v = low + min(int(u * (high - low + 1)), high - low)
                elif log:
                    v = _round(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
                else:
                    v = _round(low + u * (high - low))
            point.update(v if isinstance(v, Mapping) else {n: v})
        yield j, point


def _round(x: float) -> float:
    # 12 significant digits: the drawn value does not depend on the last bit of a platform's libm.
    return float(f"{x:.12g}")


def count_tasks(cfg: SweepConfig) -> int:
    """The number of tasks of ``cfg``, from its configuration alone (nothing is expanded).

    A grid has the product of its axes' lengths times ``replicates`` tasks, a random design
    ``samples * replicates``.
    """
    points = (cfg.samples or 0) if cfg.design == "random" else math.prod(len(v) for v in cfg.axes.values())
    return points * cfg.replicates


def check_task_count(cfg: SweepConfig, max_tasks: int | None = None) -> int:
    """``count_tasks(cfg)``, or :class:`SweepConfigError` when it exceeds ``max_tasks``.

    ``max_tasks=None`` is :data:`MAX_TASKS`.  The message names the count, the limit and how to
    raise it (``--max-tasks``).
    """
    limit = _max_tasks(max_tasks)
    n = count_tasks(cfg)
    if n > limit:
        if cfg.design == "random":
            how = f"{cfg.samples} samples x {cfg.replicates} replicates"
        else:
            how = " x ".join(f"{len(v)} ({k})" for k, v in cfg.axes.items()) or "1 point"
            how = f"grid {how} x {cfg.replicates} replicates"
        raise SweepConfigError(
            f"{cfg.source}: max_tasks: expected a sweep of at most {limit} tasks, got {n} tasks ({how}); "
            f"pass --max-tasks {n} (run_sweep(max_tasks={n})) to run it anyway, or split the sweep"
        )
    return n


def _max_tasks(max_tasks: int | None) -> int:
    if max_tasks is None:
        return MAX_TASKS
    if isinstance(max_tasks, bool) or not isinstance(max_tasks, int) or max_tasks < 1:
        raise UserInputError(f"max_tasks: expected None or a positive int, got {max_tasks!r}")
    return max_tasks


def _check_distinct(cfg: SweepConfig) -> None:
    """Refuse a grid with a repeated value on an axis (two equal tasks), naming the first repeat.

    Every parameter is set in one place only, so two grid points are equal exactly when, on some
    axis, they take equal values; samples of a random design differ by their ``sample`` index.
    Checking the axes costs their length, not the product.
    """
    if cfg.design != "grid":
        return
    names = list(cfg.axes)
    stride = cfg.replicates
    for name in reversed(names):  # the last axis varies fastest: its repeat comes first
        vals = cfg.axes[name]
        first: dict[str, int] = {}
        for i, v in enumerate(vals):
            j = first.setdefault(canonical_json(v), i)
            if j != i:
                raise SweepConfigError(
                    f"{cfg.source}: task {i * stride} repeats task {j * stride} ([grid] {name}[{i}] equals "
                    f"{name}[{j}]: the same parameters twice in an axis?); every task must be distinct"
                )
        stride *= len(vals)


def _specs(cfg: SweepConfig, *, points_only: bool = False) -> Iterator[dict[str, Any]]:
    """Every task's spec in order (streamed), each parameter point checked by the task kind.

    ``points_only``: the first replicate of each point only (what the check sees).
    """
    kind = resolve_task(cfg.task)
    schema = kind.params or {}
    defaults = {p: s.default for p, s in schema.items() if s.default is not REQUIRED}
    for number, (sample, point) in enumerate(_points(cfg)):
        index = number * cfg.replicates  # of the point's first task
        params = {**defaults, **cfg.params, **point}
        if kind.params is not None:
            try:
                params = {p: schema[p].normalize(v) for p, v in params.items()}
            except ValueError as exc:
                raise SweepConfigError(f"{cfg.source}: task {index}: {exc}") from None
        for rep in range(1 if points_only else cfg.replicates):
            spec: dict[str, Any] = {"task": cfg.task, "seed": cfg.seed, "replicate": rep, **params}
            if sample is not None:
                spec["sample"] = sample
            if rep == 0 and kind.check is not None:
                try:
                    kind.check(spec)
                except ValueError as exc:
                    listed = ", ".join(f"{k}={shown(v, 40)}" for k, v in params.items())
                    raise SweepConfigError(f"{cfg.source}: task {index} ({listed}): {exc}") from None
            yield spec


def iter_tasks(cfg: SweepConfig) -> Iterator[Task]:
    """The sweep's tasks in order, one at a time: every parameter point, ``replicates`` times.

    Fills in the task kind's defaults, runs its cross-parameter check on every parameter point
    (:class:`SweepConfigError` naming the task), refuses repeated tasks, and computes the hashes.
    Nothing is counted or refused by size here: see :func:`check_task_count`.
    """
    _check_distinct(cfg)
    for index, spec in enumerate(_specs(cfg)):
        text = canonical_json(spec)
        h = hashlib.sha256(text.encode("ascii")).hexdigest()
        yield Task(index=index, spec=spec, spec_json=text, hash=h)


def expand(cfg: SweepConfig, *, max_tasks: int | None = None) -> list[Task]:
    """The sweep's tasks in order, as a list (:func:`iter_tasks`).

    Refused with :class:`SweepConfigError` before anything is expanded when the sweep has more
    than ``max_tasks`` tasks (default :data:`MAX_TASKS`).
    """
    check_task_count(cfg, max_tasks)
    return list(iter_tasks(cfg))


def config_hash(tasks: Iterable[Task]) -> str:
    """The sweep's identity: sha256 of its sorted task hashes, one per line.

    Takes any iterable (e.g. :func:`iter_tasks`): it keeps 32 bytes per task, not the tasks.
    """
    return _hash_of_hashes(t.hash for t in tasks)[0]


def _hash_of_hashes(hashes: Iterable[str]) -> tuple[str, int]:
    # Sorting raw digests sorts their hex forms (hex digits keep the byte order); ~70 bytes a task.
    digests = sorted(bytes.fromhex(h) for h in hashes)
    h = hashlib.sha256()
    for i, d in enumerate(digests):
        h.update(b"\n" + d.hex().encode("ascii") if i else d.hex().encode("ascii"))
    return h.hexdigest(), len(digests)
