r"""Benchmark: sweep throughput, serial vs local process pool vs local Dask cluster.

The phase-diagram sweep of ``examples/sweep-phase.toml`` (KN = 3..28, r = 1..8, m = n = 12,
four inits) with ``--replicates`` runs per (problem, r, init), each run through
:func:`verify.sweep.runner.run_sweep` into its own fresh result store: ``serial``, ``process:W`` and
``dask:W`` (``W = --workers``, default: the cores).  Every run executes the
same task list; the stored results are compared byte for byte.

Measured per executor (``tasks/min`` = tasks per minute):

* **end-to-end**: tasks over the whole ``run_sweep`` call -- executor start-up (spawning workers,
  their imports; for Dask the scheduler and nannies too), every task, every store commit
  (``synchronous=FULL``: one fsync per task), shut-down;
* **steady state**: from the store's commit times -- the tasks committed between the 5% and the
  95% quantiles of the commit times, over that interval (start-up and the tail, where workers
  run out of tasks, excluded);
* ``seconds_per_task``: the mean of the tasks' own wall times on their workers;
* ``cpu_share``: the machine's user / system / idle / steal time during the run (``/proc/stat``),
  and ``foreign``: the share of the machine's capacity used by processes other than this one and
  its workers (machine busy time minus our ``getrusage``).  Steal time is time the hypervisor
  gave to other machines.  A run with either above a few percent was disturbed (a warning is
  printed);
* ``cpu_seconds_ours``: CPU seconds of this process and its workers (``getrusage`` of this
  process and its finished children) -- what the tasks cost plus what the machinery costs.

Every executor runs ``--rounds`` times (default 6).  The order rotates between rounds: over as
many rounds as there are executors, each runs once in every position (first, second, ...), so
that neither a drift of the machine nor what ran just before favours one.  Per executor the JSON
has every run (with its position), the median and the mean over the rounds and the best round,
and the ratios of each.  The headline is the **paired median**: the median over the rounds of
the ratio of two executors' runs in the same round.  The runs of a round are a minute or two
apart, so a drift of the machine's speed (10-20 % between runs minutes apart on this machine)
mostly cancels in the ratio.

The sweeps run with the default automatic chunk size (tasks per executor call; the number of
calls is recorded): about 0.25 s of work per call on the pool, 1 s on Dask.  The executor
``dask-0.25s`` (not run by default) is Dask with the pool's 0.25 s, to measure what the larger
Dask calls bring in the same rounds.  A second part measures the machinery alone:
``--overhead-tasks`` trivial tasks (``noop`` below: return the parameter) through each executor
with one task per call, whose rate bounds how fine a call can usefully be (coordinator, store
commits, scheduler and transport per call); and, except serially, in chunks of 50 tasks per
call, which leaves what the coordinator pays per task for receiving and recording it.

Usage::

    python benchmarks/bench_sweep.py [--replicates 4] [--rounds 6] [--workers 2] [--out FILE]
    python benchmarks/bench_sweep.py --executors serial process dask dask-0.25s --rounds 4
    python benchmarks/bench_sweep.py --quick     # replicates 1, a smoke test

Writes the JSON (environment record, per-executor records, ratios) atomically and prints a
table; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
DEFAULT_OUT = HERE / "results" / "bench_sweep.json"
CONFIG = ROOT / "examples" / "sweep-phase.toml"
#: Executor pairs whose throughput ratios are reported (where both ran).
PAIRS = (("process", "serial"), ("dask", "process"), ("dask", "dask-0.25s"), ("dask-0.25s", "process"))


@contextlib.contextmanager
def _chunk_target(name: str) -> Iterator[None]:
    """For the executor ``dask-0.25s``: Dask with the default chunk target, 0.25 s (not 1 s)."""
    from verify.sweep.config import CHUNK_SECONDS
    from verify.sweep.executors import DaskExecutor

    before = DaskExecutor.chunk_seconds
    if name == "dask-0.25s":
        DaskExecutor.chunk_seconds = CHUNK_SECONDS
    try:
        yield
    finally:
        DaskExecutor.chunk_seconds = before


def noop(spec: dict[str, Any]) -> dict[str, Any]:
    """A trivial task (the machinery's overhead): returns its parameter."""
    return {"x": spec["x"]}


def _rows(path: Path) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT hash, idx, spec, status, result, error FROM tasks ORDER BY idx").fetchall()
    finally:
        con.close()


def _commit_times(path: Path) -> list[float]:
    con = sqlite3.connect(path)
    try:
        return sorted(r[0] for r in con.execute("SELECT recorded_at FROM tasks"))
    finally:
        con.close()


def _steady(times: list[float]) -> dict[str, float]:
    n = len(times)
    lo, hi = int(0.05 * n), int(0.95 * n) - 1
    if hi <= lo:
        return {"tasks": float("nan"), "seconds": float("nan"), "tasks_per_min": float("nan")}
    dt = times[hi] - times[lo]
    return {"tasks": hi - lo, "seconds": dt, "tasks_per_min": 60.0 * (hi - lo) / dt}


def _cpu() -> list[int]:
    """The machine's CPU time counters (``/proc/stat``; empty where there is none)."""
    try:
        with open("/proc/stat") as fh:
            return [int(x) for x in fh.readline().split()[1:9]]
    except OSError:
        return []


def _own_cpu() -> float:
    """CPU seconds of this process and its finished children (pool and Dask workers, once joined)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _foreign_share(a: list[int], b: list[int], own_seconds: float, wall: float) -> float:
    """Share of the machine's CPU capacity that processes other than ours used during a run."""
    if not a or not b or wall <= 0:
        return float("nan")
    d = [y - x for x, y in zip(a, b)]
    busy = (d[0] + d[1] + d[2] + d[5] + d[6]) / os.sysconf("SC_CLK_TCK")
    return max(0.0, busy - own_seconds) / (wall * (os.cpu_count() or 1))


def _cpu_share(a: list[int], b: list[int]) -> dict[str, float]:
    """Shares of user, system, idle and steal time between two :func:`_cpu` readings."""
    if not a or not b:
        return {k: float("nan") for k in ("user", "system", "idle", "steal")}
    d = [y - x for x, y in zip(a, b)]
    tot = max(1, sum(d))
    # /proc/stat: user nice system idle iowait irq softirq steal
    return {
        "user": (d[0] + d[1]) / tot,
        "system": (d[2] + d[5] + d[6]) / tot,
        "idle": (d[3] + d[4]) / tot,
        "steal": d[7] / tot,
    }


def environment() -> dict[str, Any]:
    import dask
    import distributed
    import torch

    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        )
    except (OSError, subprocess.SubprocessError):
        head, dirty = None, None
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "sqlite": sqlite3.sqlite_version,
        "git_head": head,
        "git_dirty": dirty,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replicates", type=int, default=4, help="runs per (problem, r, init) (default 4)")
    ap.add_argument("--workers", type=int, default=None, help="pool / Dask workers (default: the cores)")
    ap.add_argument(
        "--executors",
        nargs="+",
        default=["serial", "process", "dask"],
        help="among serial, process, dask, dask-0.25s (Dask with the pool's 0.25 s chunk target)",
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--quick", action="store_true", help="replicates 1 (smoke test; not written by default)")
    ap.add_argument("--overhead-tasks", type=int, default=2000, help="trivial tasks per executor (0: skip)")
    ap.add_argument(
        "--rounds", type=int, default=6, help="runs of every executor, order rotating (default 6)"
    )
    args = ap.parse_args()
    from _loracheck import openmp_wait_defaults

    openmp_wait_defaults()  # as the loracheck command does, before torch loads

    from landscapes.io import atomic_write
    from verify.sweep.config import expand, load_config, parse_config
    from verify.sweep.executors import default_workers

    replicates = 1 if args.quick else args.replicates
    workers = args.workers or default_workers()
    raw = tomllib.loads(CONFIG.read_text())
    raw["sweep"]["replicates"] = replicates
    raw["sweep"]["name"] = f"bench-phase-r{replicates}"
    cfg = parse_config(raw, source=f"{CONFIG.name} (replicates = {replicates})")
    n = len(expand(cfg))
    assert load_config(CONFIG).task == cfg.task
    specs = {
        "serial": "serial",
        "process": f"process:{workers}",
        "dask": f"dask:{workers}",
        "dask-0.25s": f"dask:{workers}",  # with the pool's chunk target (see _chunk_target)
    }
    unknown = [e for e in args.executors if e not in specs]
    if unknown:
        ap.error(f"--executors: expected names among {sorted(specs)}, got {unknown}")
    env = environment()
    env["loadavg_at_start"] = os.getloadavg()
    print(
        f"phase-diagram sweep: {n} tasks ({CONFIG.name}, replicates = {replicates}); {workers} workers; "
        f"load average {env['loadavg_at_start'][0]:.2f}",
        flush=True,
    )
    from verify.sweep.runner import run_sweep

    runs: list[dict[str, Any]] = []
    stores: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        for rnd in range(args.rounds):
            # rotate the order between rounds: over len(executors) rounds every executor runs once
            # in every position, so that a drift of the machine favours nobody
            k = rnd % len(args.executors)
            order = args.executors[k:] + args.executors[:k]
            for name in order:
                spec = specs[name]
                store = Path(tmp) / f"{name}-{rnd}.sqlite"
                cpu0, own0 = _cpu(), _own_cpu()
                with _chunk_target(name):
                    s = run_sweep(cfg, store, executor=spec, progress=False)
                cpu1, own1 = _cpu(), _own_cpu()
                cpu = _cpu_share(cpu0, cpu1)
                cpu["foreign"] = _foreign_share(cpu0, cpu1, own1 - own0, s.wall_seconds)
                steady = _steady(_commit_times(store))
                r = {
                    "round": rnd,
                    "position": order.index(name),
                    "name": name,
                    "executor": spec,
                    "description": s.executor,
                    "tasks": s.tasks,
                    "finished": s.finished,
                    "failed": s.failed,
                    "wall_seconds": s.wall_seconds,
                    "first_result_seconds": s.first_result_seconds,
                    "tasks_per_min_end_to_end": s.tasks_per_minute,
                    "tasks_per_min_steady": steady["tasks_per_min"],
                    "steady_window": steady,
                    "seconds_per_task": s.task_seconds / max(1, s.finished + s.failed),
                    "task_seconds_total": s.task_seconds,
                    "executor_calls": s.calls,
                    "cpu_share": cpu,
                    "cpu_seconds_ours": own1 - own0,
                    "loadavg_after": os.getloadavg(),
                }
                runs.append(r)
                stores.append(store)
                print(
                    f"round {rnd} {name:>8}: {s.wall_seconds:7.1f} s, "
                    f"{r['tasks_per_min_end_to_end']:7.1f} tasks/min end-to-end, "
                    f"{r['tasks_per_min_steady']:7.1f} steady; first result {s.first_result_seconds:.1f} s; "
                    f"{r['seconds_per_task'] * 1e3:.1f} ms per task on its worker; {s.failed} failed; "
                    f"cpu user {cpu['user']:.2f} sys {cpu['system']:.2f} idle {cpu['idle']:.2f} "
                    f"steal {cpu['steal']:.2f} other processes {cpu['foreign']:.2f}",
                    flush=True,
                )
                if cpu["foreign"] > 0.05 or cpu["steal"] > 0.02:
                    print("  WARNING: the machine was not idle during this run", flush=True)
        base = _rows(stores[0])
        identical = {f"{r['name']}-{r['round']}": _rows(p) == base for r, p in zip(runs, stores)}

        # per executor: the median and mean over the rounds and the best round (least disturbed)
        records: dict[str, Any] = {}
        for name in args.executors:
            mine = [r for r in runs if r["name"] == name]
            records[name] = {
                "executor": mine[0]["executor"],
                "description": mine[0]["description"],
                "rounds": len(mine),
                "seconds_per_task_mean": sum(r["seconds_per_task"] for r in mine) / len(mine),
                "cpu_seconds_ours_median": statistics.median(r["cpu_seconds_ours"] for r in mine),
            }
            for key in ("tasks_per_min_end_to_end", "tasks_per_min_steady"):
                vals = [r[key] for r in mine]
                records[name][f"{key}_median"] = statistics.median(vals)
                records[name][f"{key}_mean"] = sum(vals) / len(vals)
                records[name][f"{key}_best"] = max(vals)

        overhead: dict[str, Any] = {}
        if args.overhead_tasks > 0:
            trivial = parse_config(
                {
                    "sweep": {"name": "noop", "task": "bench_sweep:noop"},
                    "grid": {"x": list(range(args.overhead_tasks))},
                },
                source="noop",
            )
            for name in args.executors:
                if name == "dask-0.25s":  # one task per call: the same as dask
                    continue
                s = run_sweep(
                    trivial, Path(tmp) / f"noop-{name}.sqlite", executor=specs[name], chunk=1, progress=False
                )
                steady = _steady(_commit_times(Path(tmp) / f"noop-{name}.sqlite"))
                overhead[name] = {
                    "tasks": s.tasks,
                    "failed": s.failed,
                    "wall_seconds": s.wall_seconds,
                    "tasks_per_sec_end_to_end": s.tasks_per_minute / 60.0,
                    "tasks_per_sec_steady": steady["tasks_per_min"] / 60.0,
                    "ms_per_task_steady": 60e3 / steady["tasks_per_min"],
                }
                o = overhead[name]
                print(
                    f"trivial tasks, {name:>8}: {o['tasks_per_sec_end_to_end']:7.1f} tasks/s end-to-end "
                    f"({s.wall_seconds:.1f} s), {o['tasks_per_sec_steady']:7.1f} steady "
                    f"({o['ms_per_task_steady']:.2f} ms per task); {s.failed} failed",
                    flush=True,
                )
                if name == "serial":
                    continue
                # in chunks of 50 tasks per call: what the coordinator pays per task for
                # receiving and recording it once the per-call cost is shared
                path = Path(tmp) / f"noop-{name}-chunked.sqlite"
                s = run_sweep(trivial, path, executor=specs[name], chunk=50, progress=False)
                steady = _steady(_commit_times(path))
                o["chunk50_tasks_per_sec_steady"] = steady["tasks_per_min"] / 60.0
                o["chunk50_ms_per_task_steady"] = 60e3 / steady["tasks_per_min"]
                print(
                    f"  in chunks of 50: {o['chunk50_tasks_per_sec_steady']:7.1f} tasks/s steady "
                    f"({o['chunk50_ms_per_task_steady']:.3f} ms per task); {s.failed} failed",
                    flush=True,
                )

    ratios: dict[str, float] = {}
    for kind in ("end_to_end", "steady"):
        for stat in ("median", "mean", "best"):
            key = f"tasks_per_min_{kind}_{stat}"
            for a, b in (
                ("process", "serial"),
                ("dask", "process"),
                ("dask", "serial"),
                ("dask", "dask-0.25s"),
            ):
                if a in records and b in records:
                    ratios[f"{a}_over_{b}_{kind}_{stat}"] = records[a][key] / records[b][key]
    paired: dict[str, list[float]] = {}
    for rnd in range(args.rounds):  # and per round
        by = {r["name"]: r for r in runs if r["round"] == rnd}
        for a, b in (
            ("process", "serial"),
            ("dask", "process"),
            ("dask", "dask-0.25s"),
            ("dask-0.25s", "process"),
        ):
            if a in by and b in by:
                for kind in ("end_to_end", "steady"):
                    key = f"tasks_per_min_{kind}"
                    q = by[a][key] / by[b][key]
                    ratios[f"{a}_over_{b}_{kind}_round{rnd}"] = q
                    paired.setdefault(f"{a}_over_{b}_{kind}_paired_median", []).append(q)
    # the median of the per-round ratios: each ratio compares runs minutes apart, so a slow drift
    # of the machine cancels in it
    ratios.update({k: statistics.median(v) for k, v in paired.items()})
    result = {
        "benchmark": "bench_sweep",
        "config": {"file": str(CONFIG.relative_to(ROOT)), "replicates": replicates, "tasks": n},
        "workers": workers,
        "environment": env,
        "rounds": args.rounds,
        "executors": records,
        "runs": runs,
        "identical_results": identical,
        "overhead_trivial_tasks": overhead,
        "ratios": ratios,
        "targets": {"process_over_serial": 1.7, "dask_within_of_process": 0.15},
    }
    for name, rec in records.items():
        print(
            f"{name:>8}: median {rec['tasks_per_min_end_to_end_median']:7.1f} tasks/min end-to-end, "
            f"{rec['tasks_per_min_steady_median']:7.1f} steady; "
            f"{rec['seconds_per_task_mean'] * 1e3:.1f} ms per task on its worker (mean), "
            f"{rec['cpu_seconds_ours_median']:.1f} CPU s of our processes (median)"
        )
    print("ratios:")
    for k, v in ratios.items():
        print(f"  {k}: {v:.3f}")
    print(f"stored results identical across executors: {identical}")
    if not args.quick or args.out != DEFAULT_OUT:
        text = json.dumps(result, indent=1, allow_nan=False).encode()
        atomic_write(args.out, lambda fh: fh.write(text))
        print(f"written {args.out}")
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
