r"""Benchmark: how idle OpenMP threads wait, idle and beside busy processes, at two threads.

The thread policy (:mod:`landscapes.threads`) gives a check one thread when the machine is busy
at the check's start; the wait setting matters when a check runs on two threads: idle, and when
other work starts while it runs.  Here the runs are forced to two threads (``--threads 2``) to
show both cases (and to one, for comparison), with one workload of many small parallel regions
back to back: ``loracheck run --claims JLR-rank-FT --problems minilm-size-sq-K2`` (the m = n = 384
build, then full fine-tuning's solve and the rank reduction, whose loop of small products is where
the wait setting shows).

Settings (each in a fresh process started as ``python -c "...verify.cli.main.main(...)"``, so
that the console script adds nothing; the user's thread variables are removed):

* ``default``: GNU OpenMP's own (an idle thread spins 300,000 times, then sleeps);
* ``spin-3000``: ``GOMP_SPINCOUNT=3000``, what the ``loracheck`` command sets (:mod:`_loracheck`);
* ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (an idle thread sleeps at once);
* ``one-thread``: ``--threads 1`` (no pool threads to wait).

Loads 0, 1 and 2 busy processes; every setting once per round, the order rotating; ``--rounds``
rounds (default 3).  Reported: every wall time, the seconds of the check's stages, the median,
and the paired median of each setting over ``spin-3000``.

Usage::

    python benchmarks/bench_wait_policy.py [--rounds 3] [--loads 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_contention import _OLD_ENTRY, ROOT, _Busy, _environment, _run  # noqa: E402

from theory.atomic import atomic_write_text  # noqa: E402

#: Setting -> (environment, threads).
SETTINGS: dict[str, tuple[dict[str, str], int]] = {
    "default": ({}, 2),
    "spin-3000": ({"GOMP_SPINCOUNT": "3000"}, 2),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, 2),
    "one-thread": ({}, 1),
}
ARGS = ["--claims", "JLR-rank-FT", "--problems", "minilm-size-sq-K2"]
BASE = "spin-3000"


def _command(setting: str, out: Path) -> list[str]:
    env, threads = SETTINGS[setting]
    run = [sys.executable, "-c", _OLD_ENTRY, "run", "--no-progress", "--fresh", "--out", str(out), *ARGS]
    return ["env", *[f"{k}={v}" for k, v in env.items()], *run, "--threads", str(threads)]


def _stages(out: Path) -> dict[str, float] | None:
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return None
    return {k: float(v) for verdict in report.get("verdicts", []) for k, v in verdict["timings"].items()}


def _summary(runs: list[dict[str, Any]], loads: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for load in loads:
        walls = {
            s: [
                r["wall"]
                for r in sorted(runs, key=lambda r: r["round"])
                if (r["load"], r["setting"]) == (load, s)
            ]
            for s in SETTINGS
        }
        base = walls[BASE]
        row: dict[str, Any] = {}
        for s, xs in walls.items():
            ratios = [x / b for x, b in zip(xs, base) if b > 0]
            row[s] = {
                "median": statistics.median(xs) if xs else None,
                f"over_{BASE}_paired": statistics.median(ratios) if ratios else None,
                "censored": any(r["censored"] for r in runs if (r["load"], r["setting"]) == (load, s)),
            }
        out[str(load)] = row
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loads", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cap", type=float, default=600.0, help="seconds after which a run is stopped")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_wait_policy.json")
    args = ap.parse_args()
    if args.rounds < 1 or any(n < 0 for n in args.loads):
        ap.error("--rounds: at least 1; --loads: counts >= 0")
    data: dict[str, Any] = {
        "format": "loracheck.bench_wait_policy",
        "version": 1,
        "environment": _environment(2),
        "settings": {
            "rounds": args.rounds,
            "loads": args.loads,
            "cap": args.cap,
            "args": ARGS,
            "settings": {k: {"env": e, "threads": t} for k, (e, t) in SETTINGS.items()},
        },
        "runs": [],
    }
    names = list(SETTINGS)
    work = Path(tempfile.mkdtemp(prefix="bench-wait-"))
    try:
        for rnd in range(args.rounds):
            for load in args.loads:
                k = (rnd + load) % len(names)
                order = names[k:] + names[:k]
                with _Busy(load):
                    for s in order:
                        out = work / f"{load}-{s}-{rnd}"
                        rec = _run(_command(s, out), args.cap)
                        rec.update(round=rnd, load=load, setting=s, stages=_stages(out))
                        data["runs"].append(rec)
                        shutil.rmtree(out, ignore_errors=True)
                        print(
                            f"round {rnd} load {load} {s:<9}: {rec['wall']:6.1f} s  {rec['stages']}",
                            flush=True,
                        )
                        data["summary"] = _summary(data["runs"], args.loads)
                        atomic_write_text(args.out, json.dumps(data, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'load':>4} " + " ".join(f"{s:>22}" for s in SETTINGS))
    for load, row in data["summary"].items():
        cells = [f"{r['median']:7.1f} s ({r[f'over_{BASE}_paired']:.2f}x)" for r in row.values()]
        print(f"{load:>4} " + " ".join(f"{c:>22}" for c in cells))
    print(f"(paired medians over {BASE}) wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
