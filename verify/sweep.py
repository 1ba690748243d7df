r"""Sweeps: a grid or a random design of task parameters, expanded into tasks and run on an executor.

A sweep is a TOML file (read with the standard library's ``tomllib``; the full format is in
``docs/sweep.md``)::

    [sweep]
    name = "phase-diagram"   # default: the file's stem
    task = "phase"           # a task kind (verify.tasks) or "package.module:function"
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
the task kind's defaults filled in); its hash keys it in the store (:func:`verify.tasks.task_hash`).
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

import contextlib
import hashlib
import itertools
import math
import os
import queue
import re
import signal
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import BrokenExecutor, Executor, Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from theory.errors import UserInputError, finite_number, shown
from verify.executors import make_executor
from verify.store import StoreError, StoreWriteError, SweepStore
from verify.tasks import (
    REQUIRED,
    RESERVED_KEYS,
    canonical_json,
    derive_seed,
    resolve_task,
    run_tasks,
)

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
    "open_sweep_store",
    "parse_config",
    "run_sweep",
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

    schema = kind.params
    known: dict[str, str] = {}  # parameter -> where it is set

    def claim(pname: str, where: str) -> None:
        if pname in RESERVED_KEYS:
            raise err(f"{where}: {pname!r} is set by the sweep itself; use another parameter name")
        if schema is not None and pname not in schema:
            raise err(
                f"{where}: unknown parameter {pname!r} of task {task!r}; expected one of {', '.join(schema)}"
            )
        if pname in known:
            raise err(f"{where}: parameter {pname!r} is set twice (also in {known[pname]})")
        known[pname] = where

    def value(pname: str, v: Any, where: str) -> Any:
        if schema is None:
            if not _is_json_value(v):
                raise err(f"{where}: expected a string, number, boolean, array or table, got {_show(v)}")
            return v
        try:
            return schema[pname].normalize(v)
        except ValueError as exc:
            raise err(f"{where}: {exc}") from None

    params: dict[str, Any] = {}
    for pname, v in data.get("params", {}).items():
        claim(pname, f"[params] {pname}")
        params[pname] = value(pname, v, f"[params] {pname}")

    axes: dict[str, Any] = {}
    section = design
    for aname, spec in data.get(section, {}).items():
        where = f"[{section}] {aname}"
        if design == "random" and isinstance(spec, Mapping):
            ptype = schema[aname].type if schema is not None and aname in schema else None
            axes[aname] = _range_axis(aname, spec, where, claim, value, err, ptype)
            continue
        if not isinstance(spec, list) or not spec:
            what = (
                "a non-empty array or a range table {low, high}"
                if design == "random"
                else "a non-empty array"
            )
            raise err(f"{where}: expected {what}, got {_show(spec)}")
        if all(isinstance(x, Mapping) for x in spec):
            keys = list(spec[0])
            if not keys:
                raise err(f"{where}[0]: expected a table of parameters, got an empty table")
            for k in keys:
                claim(k, where)
            vals = []
            for i, x in enumerate(spec):
                if set(x) != set(keys):
                    raise err(
                        f"{where}[{i}]: expected the keys {', '.join(keys)} (as in {where}[0]), "
                        f"got {', '.join(x)}"
                    )
                vals.append({k: value(k, x[k], f"{where}[{i}].{k}") for k in keys})
        elif any(isinstance(x, Mapping) for x in spec):
            raise err(f"{where}: expected all tables (a joint axis) or no tables, got a mix")
        else:
            claim(aname, where)
            vals = [value(aname, x, f"{where}[{i}]") for i, x in enumerate(spec)]
        axes[aname] = ("choice", tuple(vals)) if design == "random" else tuple(vals)

    if schema is not None:
        missing = [p for p, s in schema.items() if s.default is REQUIRED and p not in known]
        if missing:
            raise err(
                f"task {task!r} needs the parameter(s) {', '.join(missing)}; set them in [params] or as "
                f"axes of [{section}]"
            )
    cfg = SweepConfig(
        name=name,
        task=task,
        seed=seed,
        replicates=replicates,
        design=design,
        samples=samples,
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


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
def open_sweep_store(
    path: str | os.PathLike[str],
    cfg: SweepConfig,
    tasks: Iterable[Task],
    *,
    resume: bool = False,
    fresh: bool = False,
) -> SweepStore:
    """Open the store for ``cfg`` (creating it), following the ``resume``/``fresh`` rules.

    ``tasks`` are the sweep's tasks (a list or :func:`iter_tasks`).  A new path gets a new store.
    An existing one is refused unless ``resume`` (continue it; it must belong to the same sweep) or
    ``fresh`` (it must be a loracheck store; it is deleted and started over).
    """
    h, n = _hash_of_hashes(t.hash for t in tasks)
    return _open_store(path, cfg, h, n, resume=resume, fresh=fresh)


def _open_store(
    path: str | os.PathLike[str], cfg: SweepConfig, h: str, n: int, *, resume: bool, fresh: bool
) -> SweepStore:
    if resume and fresh:
        raise UserInputError("resume, fresh: expected at most one of them, got both")
    p = Path(path)
    if p.exists():
        if fresh:
            SweepStore.open(p).close()  # refuse to delete a file that is not ours, or one in use
            for q in (p, p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")):
                q.unlink(missing_ok=True)
        else:
            st = SweepStore.open(p, readonly=not resume)
            try:
                meta = st.meta
                if meta.get("config_hash") != h:
                    raise StoreError(
                        f"store: {str(p)!r} belongs to another sweep configuration (sweep "
                        f"{meta.get('name')!r}, config hash {meta.get('config_hash', '?')[:12]}, this "
                        f"configuration {h[:12]}); pass --fresh to delete it and start over, or write "
                        "to another store"
                    )
                if not resume:
                    c = st.counts()
                    raise StoreError(
                        f"store: {str(p)!r} exists ({c['finished']} finished and {c['failed']} failed tasks "
                        f"of sweep {meta.get('name')!r}); pass --resume to continue it or --fresh to delete "
                        "it and start over"
                    )
            except BaseException:
                st.close()
                raise
            return st
    return SweepStore.create(
        p,
        meta={
            "config_hash": h,
            "config": canonical_json(cfg.to_dict()),
            "name": cfg.name,
            "task": cfg.task,
            "tasks": str(n),
        },
    )


def run_sweep(
    config: SweepConfig | str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    executor: str | Executor = "process",
    resume: bool = False,
    fresh: bool = False,
    retry_failed: bool = True,
    max_in_flight: int | None = None,
    chunk: int | None = None,
    progress: bool | None = None,
    max_tasks: int | None = None,
) -> SweepSummary:
    """Run a sweep into ``store``; return what this call did.

    Stopped by ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM/SIGHUP turned into
    :class:`verify.signals.Terminated` by the ``loracheck`` command), it abandons the tasks in
    flight, commits the outcomes that had arrived, stops an executor it made (the workers of a
    process pool are terminated, also in the middle of a task; a local Dask cluster is closed) and
    re-raises; ``resume=True`` continues.

    Parameters
    ----------
    config
        A :class:`SweepConfig` or the path of a TOML file.
    store
        The SQLite result store (see :mod:`verify.store`); created if missing.
    executor
        A spec for :func:`verify.executors.make_executor` (``"serial"``, ``"process"``,
        ``"process:N"``, ``"dask"``, ``"dask://HOST:PORT"``) or any
        ``concurrent.futures.Executor`` (not shut down here).
    resume
        Continue an existing store of the same sweep: finished tasks are skipped.
    fresh
        Delete an existing store first (it must be a loracheck sweep store).
    retry_failed
        With ``resume``: run the tasks that failed before again (default) or leave them.
    max_in_flight
        Executor calls submitted and not yet recorded, at most (default: 1 for the serial
        executor, twice the executor's workers otherwise).  A killed sweep loses at most these
        calls' tasks.
    chunk
        Tasks per executor call (consecutive tasks of the expansion, run one after the other on
        one worker; their outcomes are recorded together).  Above 1 it amortizes the per-call cost
        of the executor (for Dask a few milliseconds of scheduler and client work, which would
        otherwise bound a cluster's throughput) over several short tasks.  ``None`` (default):
        1 for the serial executor; otherwise 1 at first, then, from the mean task time ``t`` so
        far, about ``c`` seconds of work per call (``round(c / t)``, at most :data:`MAX_CHUNK`, and
        small enough that every worker still gets calls at the end), where ``c`` is the
        executor's ``chunk_seconds`` if it has one (1 s for
        :class:`~verify.executors.DaskExecutor`, the ``dask`` specs, whose per-call messages cost
        more) or else :data:`CHUNK_SECONDS` (0.25 s; a process pool).
    progress
        tqdm bar (``None``: only on a terminal).
    max_tasks
        Largest number of tasks (``None``: :data:`MAX_TASKS`); a larger sweep is refused with
        :class:`SweepConfigError` before it is expanded.
    """
    cfg = config if isinstance(config, SweepConfig) else load_config(config)
    n_tasks = check_task_count(cfg, max_tasks)
    if max_in_flight is not None and (
        isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1
    ):
        raise UserInputError(f"max_in_flight: expected None or a positive int, got {max_in_flight!r}")
    if resume and fresh:
        raise UserInputError("resume, fresh: expected at most one of them, got both")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise UserInputError(f"chunk: expected None or a positive int, got {chunk!r}")
    t0 = time.perf_counter()
    own = isinstance(executor, str)
    if isinstance(executor, str):
        from verify.executors import parse_executor

        parse_executor(executor)  # a bad spec fails before the store is touched
    p = Path(store)
    new_store = not p.exists()
    # one streamed pass: every task checked and hashed (the sweep's identity), before any runs
    h, _ = _hash_of_hashes(t.hash for t in iter_tasks(cfg))
    st = _open_store(p, cfg, h, n_tasks, resume=resume, fresh=fresh)
    try:
        try:
            ex: Executor = make_executor(executor) if isinstance(executor, str) else executor
        except BaseException:
            if new_store or fresh:  # nothing was run: leave no empty store behind
                st.close()
                for q in (p, *(p.with_name(p.name + end) for end in ("-wal", "-shm", ".lock"))):
                    q.unlink(missing_ok=True)
            raise
        try:
            summary = _run(
                cfg,
                n_tasks,
                st,
                ex,
                t0=t0,
                retry_failed=retry_failed,
                window=max_in_flight,
                chunk=chunk,
                progress=progress,
                abandon=(lambda: _abandon(ex)) if own else None,
            )
            if own:
                ex.shutdown(wait=True)
        except BaseException:
            if own:  # (again, if _run did: stopping is idempotent) also when stopped outside _run
                with _signals_held():
                    _abandon(ex)
            raise
    finally:
        st.close()
    return replace(summary, wall_seconds=time.perf_counter() - t0)


def _record(st: SweepStore, t: Task, out: Mapping[str, Any]) -> None:
    """Store one task's outcome (a ``run_task`` dict) under its hash."""
    st.record(
        key=t.hash,
        index=t.index,
        spec=t.spec_json,
        status=out["status"],
        result=out["result"],
        error=out["error"],
        seconds=out["seconds"],
        worker=out["worker"],
    )


def _commit_arrived(st: SweepStore, pending: Mapping[Future[Any], list[Task]]) -> None:
    """Commit the outcomes of the calls that had arrived when the sweep was stopped."""
    arrived = [
        (fut, group)
        for fut, group in pending.items()
        if fut.done() and not fut.cancelled() and fut.exception() is None
    ]
    if not arrived:
        return
    with st.transaction():
        for fut, group in arrived:
            for t, out in zip(group, fut.result(), strict=True):
                _record(st, t, out)


def _abandon(ex: Executor) -> None:
    """Stop an executor this module made, now: its own ``terminate`` if it has one."""
    stop: Callable[[], None] | None = getattr(ex, "terminate", None)
    if stop is not None:
        stop()
    else:
        ex.shutdown(wait=False, cancel_futures=True)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold off SIGINT, SIGTERM and SIGHUP for the body (the clean-up after an interrupt).

    A second Ctrl-C or ``kill`` while the workers are being stopped and the arrived outcomes
    committed would otherwise leave workers running or outcomes uncommitted; the clean-up is
    bounded (a few seconds) and the process is stopping anyway, so signals that arrive meanwhile
    are dropped.  Only in the main thread (where Python handles signals).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old: dict[int, Any] = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        num = getattr(signal, name, None)
        if num is None:
            continue
        try:
            old[num] = signal.signal(num, lambda *_: None)
        except (ValueError, OSError):  # pragma: no cover - not settable here
            pass
    try:
        yield
    finally:
        for num, handler in old.items():
            signal.signal(num, handler)


def _run(
    cfg: SweepConfig,
    n_tasks: int,
    st: SweepStore,
    ex: Executor,
    *,
    t0: float,
    retry_failed: bool,
    window: int | None,
    chunk: int | None,
    progress: bool | None,
    abandon: Callable[[], None] | None = None,
) -> SweepSummary:
    from tqdm.auto import tqdm

    done = st.hashes("finished")
    if not retry_failed:
        done |= st.hashes("failed")
    # every record of the store is a task of this sweep (its config hash was checked)
    skipped = min(len(done), n_tasks)
    n_todo = n_tasks - skipped
    todo = (t for t in iter_tasks(cfg) if t.hash not in done)
    n_fin = n_fail = 0
    task_seconds = 0.0
    first: float | None = None
    errors: list[tuple[int, str]] = []
    description = str(getattr(ex, "description", type(ex).__name__))
    in_flight = window or int(getattr(ex, "in_flight", 0) or 2 * (os.cpu_count() or 1))
    bar = tqdm(
        total=n_tasks,
        initial=skipped,
        desc=f"sweep {cfg.name}",
        unit="task",
        disable=None if progress is None else not progress,
        file=sys.stderr,
    )
    pending: dict[Future[Any], list[Task]] = {}
    # Finished futures arrive through a queue (their done-callbacks put them there): O(1) per call
    # however many are in flight, and everything that arrived together is committed together.
    arrived: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
    workers = int(getattr(ex, "workers", 0) or max(1, in_flight // 2))
    serial = workers == 1 and in_flight == 1
    size = chunk or 1
    target = float(getattr(ex, "chunk_seconds", CHUNK_SECONDS))
    pos = calls = 0

    def submit(n: int) -> None:
        nonlocal pos, calls
        for _ in range(n):
            group = list(itertools.islice(todo, size))
            if not group:
                return
            pos += len(group)
            calls += 1
            fut = ex.submit(run_tasks, [t.spec_json for t in group])
            pending[fut] = group
            fut.add_done_callback(arrived.put)

    try:
        submit(in_flight)
        while pending:
            batch = [_get(arrived)]
            while True:
                try:
                    batch.append(arrived.get_nowait())
                except queue.Empty:
                    break
            broken: BaseException | None = None
            n_done = 0
            with st.transaction():  # one commit (one fsync) for the batch
                for fut in batch:
                    group = pending[fut]
                    exc = fut.exception()
                    if isinstance(exc, BrokenExecutor):
                        broken = exc
                        continue
                    outs: list[dict[str, Any]]
                    if exc is not None:
                        err = f"{type(exc).__name__}: {exc} (raised by the executor, not the task)"
                        outs = [
                            {"status": "failed", "result": None, "error": err, "seconds": 0.0, "worker": "?"}
                        ] * len(group)
                    else:
                        outs = fut.result()
                    for t, out in zip(group, outs, strict=True):
                        _record(st, t, out)
                        task_seconds += float(out["seconds"])
                        n_done += 1
                        if out["status"] == "finished":
                            n_fin += 1
                        else:
                            n_fail += 1
                            errors.append((t.index, str(out["error"]).splitlines()[0]))
            for fut in batch:  # committed (an interrupt before this line records them again: a no-op)
                del pending[fut]
            if first is None and n_done:
                first = time.perf_counter() - t0
            if n_fail:
                bar.set_postfix(failed=n_fail, refresh=False)
            bar.update(n_done)
            if chunk is None and not serial and n_fin + n_fail:
                mean = task_seconds / (n_fin + n_fail)
                left = (n_todo - pos) // (2 * workers)  # every worker still gets two calls
                size = max(1, min(MAX_CHUNK, round(target / max(mean, 1e-6)), left))
            if broken is not None:
                raise SweepAborted(
                    f"the executor broke ({type(broken).__name__}: {broken}): a worker process died "
                    f"(killed, out of memory, or a crash in native code); {skipped + n_fin} finished "
                    f"tasks are in {str(st.path)!r}; run the sweep again with --resume to continue"
                )
            submit(len(batch))
    except BaseException as exc:
        with _signals_held():
            for fut in pending:
                fut.cancel()
            if abandon is not None:
                abandon()  # workers stopped, also mid-task: no process outlives the sweep
            store_failed = isinstance(exc, (StoreError, StoreWriteError))
            if isinstance(exc, (Exception, KeyboardInterrupt)) and not store_failed:
                try:
                    _commit_arrived(st, pending)
                except Exception:  # the store failing now: those tasks run again on resume
                    pass
        raise
    finally:
        bar.close()
    return SweepSummary(
        name=cfg.name,
        store=str(st.path),
        executor=description,
        tasks=n_tasks,
        skipped=skipped,
        finished=n_fin,
        failed=n_fail,
        failed_in_store=st.counts()["failed"],
        wall_seconds=time.perf_counter() - t0,
        first_result_seconds=first,
        task_seconds=task_seconds,
        errors=tuple(errors),
        calls=calls,
    )


def _get(q: queue.SimpleQueue[Future[Any]]) -> Future[Any]:
    # A blocking get with a timeout, in a loop: Ctrl-C is noticed within a second on every platform.
    while True:
        try:
            return q.get(timeout=1.0)
        except queue.Empty:
            continue
