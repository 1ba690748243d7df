r"""Benchmark: ``loracheck run`` on a machine that is doing something else too, old vs new thread policy.

Workloads (each one ``loracheck run`` command, in a fresh process, with ``--fresh`` into its own
directory):

* ``suite``: the default suite (the README's main job);
* ``nuc``: the m = n = 384 NUC solve of the suite (``--claims JLR-rank-NUC --problems
  minilm-size-sq-K2``: the problem's build, the certified solve and the rank reduction);
* ``real``: one real-model check (``--real --claims JLR-rank-NUC --problems minilm-v-reviews``:
  the MiniLM Jacobian of 32 review sentences, then the check); skipped without the ``models`` extra.

Policies:

* ``old``: the thread handling before the policy -- torch's default thread count for every check
  (``--threads`` = that count, measured in a fresh process) and OpenMP's default wait behaviour
  (the old command set ``OMP_WAIT_POLICY`` after torch had loaded OpenMP, which then ignored it);
  run as ``python -c "...verify.cli.main.main(...)"``, which skips the new entry point;
* ``new``: the ``loracheck`` console script as a user runs it (``GOMP_SPINCOUNT=3000`` before
  torch loads; one thread for small problems, the free cores for large ones, read per check).

Loads: 0, 1 and 2 busy processes (``python3 -c "while True: pass"``) started before and stopped
after each group of runs.  The user's ``OMP_*``/``MKL_*``/``OPENBLAS_*``/``GOMP_SPINCOUNT``
variables are removed from the runs' environment.

Every (workload, load) runs both policies once per round, the order alternating between rounds,
for ``--rounds`` rounds (default 3).  Reported per (workload, load, policy): every wall time and
the median; per (workload, load) the **paired median** of new / old (the median over rounds of the
ratio of the two runs of one round, a minute or so apart, so the machine's drift of 10-20 % between
runs mostly cancels); and per policy the slowdown beside a load: the paired median of (wall at
that load) / (wall idle) over rounds.  A run longer than ``--cap`` seconds is stopped and counted
at the cap (``censored``: the true time is longer).

Usage::

    python benchmarks/bench_contention.py [--rounds 3] [--loads 0 1 2] [--workloads suite nuc real]
    python benchmarks/bench_contention.py --quick   # one round, the nuc workload, loads 0 and 2

Writes the JSON (environment, every run, medians, ratios, the targets of the issue) atomically to
``--out`` after every run (a stopped benchmark keeps what finished) and prints a table.  Run it on an
otherwise idle machine: the loads are the benchmark's own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from theory.atomic import atomic_write_text  # noqa: E402

WORKLOADS: dict[str, list[str]] = {
    "suite": [],
    "nuc": ["--claims", "JLR-rank-NUC", "--problems", "minilm-size-sq-K2"],
    "real": ["--real", "--claims", "JLR-rank-NUC", "--problems", "minilm-v-reviews"],
}
_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
)
_OLD_ENTRY = "import sys; from verify.cli.main import main; sys.exit(main(sys.argv[1:]))"


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _THREAD_VARIABLES}


def _torch_default_threads() -> int:
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        check=True,
    )
    return int(out.stdout.strip())


def _command(policy: str, workload: str, out: Path, old_threads: int) -> list[str]:
    args = ["run", "--no-progress", "--fresh", "--out", str(out), *WORKLOADS[workload]]
    if policy == "old":
        return [sys.executable, "-c", _OLD_ENTRY, *args, "--threads", str(old_threads)]
    script = Path(sys.executable).with_name("loracheck")
    return [str(script), *args]


def _run(cmd: list[str], cap: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_clean_env(), start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=cap)
        censored = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        censored = True
    wall = time.perf_counter() - t0
    tail = out.decode(errors="replace").strip().splitlines()[-2:]
    return {
        "wall": min(wall, cap) if censored else wall,
        "censored": censored,
        "rc": proc.returncode,
        "tail": tail,
    }


def _from_report(out: Path) -> dict[str, Any]:
    """The thread record and each check's seconds (its stages' timings) from the run's report."""
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return {"threads": None, "checks": None}
    checks = {}
    for v in report.get("verdicts", []):
        problem = v.get("problem")
        name = problem.get("name") if isinstance(problem, dict) else problem
        checks[f"{name}: {v.get('claim')}"] = sum((v.get("timings") or {}).values())
    return {"threads": report.get("environment", {}).get("threads"), "checks": checks}


class _Busy:
    """``n`` busy processes for the ``with`` body."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> _Busy:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        time.sleep(1.0)
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def _paired(a: list[float], b: list[float]) -> float | None:
    ratios = [x / y for x, y in zip(a, b) if y > 0]
    return statistics.median(ratios) if ratios else None


def _summary(runs: list[dict[str, Any]], workloads: list[str], loads: list[int]) -> dict[str, Any]:
    def walls(w: str, load: int, pol: str) -> list[float]:
        return [
            r["wall"]
            for r in sorted(runs, key=lambda r: r["round"])
            if (r["workload"], r["load"], r["policy"]) == (w, load, pol)
        ]

    out: dict[str, Any] = {}
    for w in workloads:
        rows: dict[str, Any] = {}
        for load in loads:
            old, new = walls(w, load, "old"), walls(w, load, "new")
            n = min(len(old), len(new))
            row: dict[str, Any] = {
                "old_median": statistics.median(old) if old else None,
                "new_median": statistics.median(new) if new else None,
                "new_over_old_paired": _paired(new[:n], old[:n]),
                "censored": any(r["censored"] for r in runs if (r["workload"], r["load"]) == (w, load)),
            }
            for pol, xs in (("old", old), ("new", new)):
                idle = walls(w, 0, pol)
                m = min(len(xs), len(idle))
                row[f"{pol}_over_idle_paired"] = _paired(xs[:m], idle[:m]) if load and m else None
            rows[str(load)] = row
        out[w] = rows
    return out


def _targets(summary: dict[str, Any]) -> dict[str, Any]:
    s = summary.get("suite", {})
    t: dict[str, Any] = {}
    if "1" in s and s["1"]["new_over_idle_paired"] is not None:
        t["suite beside 1 busy <= 1.3 x idle"] = (
            s["1"]["new_over_idle_paired"],
            s["1"]["new_over_idle_paired"] <= 1.3,
        )
    if "2" in s and s["2"]["new_over_idle_paired"] is not None:
        t["suite beside 2 busy <= 2 x idle"] = (
            s["2"]["new_over_idle_paired"],
            s["2"]["new_over_idle_paired"] <= 2.0,
        )
    for w in ("suite", "nuc", "real"):
        r = summary.get(w, {}).get("0")
        if r and r["new_over_old_paired"] is not None:
            t[f"{w} idle: new no slower than old"] = (
                r["new_over_old_paired"],
                r["new_over_old_paired"] <= 1.0,
            )
    return t


def _environment(old_threads: int) -> dict[str, Any]:
    from landscapes.threads import cpu_share

    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        head = None
    share = cpu_share()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpus_allowed": share.allowed,
        "cgroup_quota": share.quota,
        "others_running_at_start": share.others_running,
        "old_threads": old_threads,
        "git_head": head,
    }


def _table(summary: dict[str, Any]) -> str:
    head = ("workload", "load", "old s", "new s", "new/old", "old/idle", "new/idle")
    lines = ["{:<8} {:>4} {:>8} {:>8} {:>8} {:>9} {:>9}".format(*head)]

    def f(x: Any, spec: str) -> str:
        return format("-", ">" + spec.split(".")[0]) if x is None else format(x, spec)

    for w, rows in summary.items():
        for load, r in rows.items():
            lines.append(
                f"{w:<8} {load:>4} {f(r['old_median'], '8.1f')} {f(r['new_median'], '8.1f')} "
                f"{f(r['new_over_old_paired'], '8.2f')} {f(r['old_over_idle_paired'], '9.2f')} "
                f"{f(r['new_over_idle_paired'], '9.2f')}"
                + ("  (censored at the cap)" if r["censored"] else "")
            )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loads", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=["suite", "nuc", "real"])
    ap.add_argument(
        "--cap", type=float, default=900.0, help="seconds after which a run is stopped (default 900)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_contention.json")
    ap.add_argument("--quick", action="store_true", help="one round of the nuc workload at loads 0 and 2")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.loads, args.workloads = 1, [0, 2], ["nuc"]
    if args.rounds < 1 or any(n < 0 for n in args.loads) or 0 not in args.loads:
        ap.error("--rounds: at least 1; --loads: counts >= 0, including 0 (the idle baseline)")
    workloads = list(args.workloads)
    if "real" in workloads:
        import importlib.util

        if importlib.util.find_spec("transformers") is None:
            print("real: skipped (the `models` extra is not installed)")
            workloads.remove("real")
    old_threads = _torch_default_threads()
    data: dict[str, Any] = {
        "format": "loracheck.bench_contention",
        "version": 1,
        "environment": _environment(old_threads),
        "settings": {"rounds": args.rounds, "loads": args.loads, "workloads": workloads, "cap": args.cap},
        "runs": [],
    }
    work = Path(tempfile.mkdtemp(prefix="bench-contention-"))
    try:
        for rnd in range(args.rounds):
            for load in args.loads:
                order = ["old", "new"] if (rnd + load) % 2 == 0 else ["new", "old"]
                with _Busy(load):
                    for w in workloads:
                        for pol in order:
                            out = work / f"{w}-{load}-{pol}-{rnd}"
                            rec = _run(_command(pol, w, out, old_threads), args.cap)
                            rec.update(round=rnd, load=load, workload=w, policy=pol, **_from_report(out))
                            data["runs"].append(rec)
                            shutil.rmtree(out, ignore_errors=True)
                            print(
                                f"round {rnd} load {load} {w:<6} {pol}: {rec['wall']:7.1f} s"
                                + (" (stopped at the cap)" if rec["censored"] else "")
                                + (f" rc={rec['rc']}" if rec["rc"] not in (0, None) else ""),
                                flush=True,
                            )
                            data["summary"] = _summary(data["runs"], workloads, args.loads)
                            data["targets"] = _targets(data["summary"])
                            atomic_write_text(args.out, json.dumps(data, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(_table(data["summary"]))
    for name, (value, ok) in data["targets"].items():
        print(f"{name}: {value:.2f} {'met' if ok else 'NOT met'}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
