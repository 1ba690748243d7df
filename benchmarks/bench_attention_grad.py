r"""Benchmark: LoRA gradients of one attention head, fast (polynomial method) vs exact (streamed).

Both routes of :mod:`landscapes.attention` on the same instances (``hsk_instance``: Gaussian data
rescaled so that the entries of ``Q = X W_Q`` and ``K = X W_K`` are bounded by ``gamma``), case
C1 unless ``--case``, float64, in one run:

* **exact** -- ``exact_gradients(h, block_size=...)``: the attention matrix streamed in slabs of
  query rows, O(L^2 d) time and O(L d) memory;
* **fast** -- ``fast_gradients(h, degree=g)``: degree-``g`` Taylor features, rank ``C(d+g, g)``,
  O(L R d^2) time, no L x L matrix.

Part 1 (per ``d`` and entry bound): the smallest degree whose gradients (every adapter, A and B)
are within ``--target`` (max-entry relative error) of the exact ones at the calibration length;
then both routes timed over the lengths (median of ``--repeats``; exact at the largest length
once), the error of the fast route at every length, the fitted time exponents (over the lengths
>= 4096), the crossover length ``L*`` where the fast route becomes faster (log-log interpolation),
and the speed ratio exact / fast.  Also in units of one exact gradient at the same ``L``.

Part 2: the Taylor rank the fast route needs for ``--target`` over a grid of ``gamma`` and ``L``,
next to ``sqrt(log L)`` -- where the fast route stops paying off (its rank approaches ``L``).

Usage::

    python benchmarks/bench_attention_grad.py            # full run (~15 min on 2 cores)
    python benchmarks/bench_attention_grad.py --quick    # smoke run (lengths up to 4096)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from landscapes.attention import exact_gradients, fast_gradients, hsk_instance, max_entry_error  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "bench_attention_grad.json")

#: Entry bounds per head dimension: small enough that a moderate degree meets 1e-3 (d = 4: rank
#: <= 100 at the smallest), and one larger where the rank is several hundred.
DEFAULT_GAMMAS = {4: (0.5, 1.0), 8: (0.35, 0.7), 16: (0.25, 0.5)}


def _time(f: Callable[[], Any], repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _block(L: int) -> int:
    return max(1, min(L, (1 << 22) // L))


def _err(f: Any, exact: Any) -> float:
    return max(max_entry_error(f.grad_A, exact[1]), max_entry_error(f.grad_B, exact[2]))


def _fit(xs: list[int], ys: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def _crossover(lengths: list[int], exact: list[float], fast: list[float]) -> float | None:
    """The length where the log-log interpolated times cross (None: fast never faster, or always)."""
    diff = [math.log(e) - math.log(f) for e, f in zip(exact, fast)]
    if diff[0] >= 0:
        return float(lengths[0]) if all(x >= 0 for x in diff) else None
    for i in range(1, len(lengths)):
        if diff[i] >= 0:
            a, b = math.log(lengths[i - 1]), math.log(lengths[i])
            t = diff[i - 1] / (diff[i - 1] - diff[i])
            return float(math.exp(a + t * (b - a)))
    return None


def degree_for(h: Any, exact: Any, target: float, max_degree: int) -> tuple[int | None, float]:
    """Smallest degree whose fast gradients meet ``target`` (None if none up to ``max_degree``)."""
    best = math.inf
    for g in range(max_degree + 1):
        try:
            f = fast_gradients(h, degree=g)
        except ValueError:
            continue
        e = _err(f, exact)
        best = min(best, e)
        if e <= target:
            return g, e
    return None, best


def part1(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for d in args.dims:
        for gamma in DEFAULT_GAMMAS.get(d, (0.5,)) if args.gammas is None else args.gammas:
            cal = hsk_instance(L=args.calibration, d=d, r=args.r, gamma=gamma, case=args.case, seed=args.seed)
            g, e = degree_for(
                cal, exact_gradients(cal, block_size=_block(args.calibration)), args.target, args.max_degree
            )
            rec: dict[str, Any] = {"d": d, "gamma": gamma, "degree": g, "calibration_error": e}
            if g is None:
                rec["rank"] = None
                print(
                    f"[d={d} gamma={gamma}] no degree <= {args.max_degree} meets {args.target:g} "
                    f"(best {e:.2e})"
                )
                rows.append(rec)
                continue
            rec["rank"] = math.comb(d + g, g)
            per = []
            for L in args.lengths:
                h = hsk_instance(L=L, d=d, r=args.r, gamma=gamma, case=args.case, seed=args.seed)
                reps_exact = 1 if L >= 32768 else args.repeats
                box: dict[str, Any] = {}

                def run_exact(h: Any = h, L: int = L, box: dict[str, Any] = box) -> None:
                    box["exact"] = exact_gradients(h, block_size=_block(L))

                t_exact = _time(run_exact, reps_exact)
                t_fast = _time(lambda h=h, g=g: fast_gradients(h, degree=g), args.repeats)
                err = _err(fast_gradients(h, degree=g), box["exact"])
                per.append(
                    {"L": L, "exact_s": t_exact, "fast_s": t_fast, "ratio": t_exact / t_fast, "error": err}
                )
                print(
                    f"[d={d} gamma={gamma} rank={rec['rank']}] L={L}: exact {t_exact:.3g} s, "
                    f"fast {t_fast:.3g} s, "
                    f"exact/fast {t_exact / t_fast:.3g}, error {err:.2e}",
                    flush=True,
                )
            Ls = [p["L"] for p in per]
            big = [p for p in per if p["L"] >= 4096]
            rec["per_length"] = per
            rec["exponent_exact"] = _fit([p["L"] for p in big], [p["exact_s"] for p in big])
            rec["exponent_fast"] = _fit([p["L"] for p in big], [p["fast_s"] for p in big])
            rec["crossover_L"] = _crossover(Ls, [p["exact_s"] for p in per], [p["fast_s"] for p in per])
            rec["max_error"] = max(p["error"] for p in per)
            rows.append(rec)
    return rows


def part2(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for L in args.rank_lengths:
        for gamma in args.rank_gammas:
            h = hsk_instance(L=L, d=args.rank_d, r=args.r, gamma=gamma, case=args.case, seed=args.seed)
            g, e = degree_for(h, exact_gradients(h, block_size=_block(L)), args.target, args.rank_max_degree)
            rank = None if g is None else math.comb(args.rank_d + g, g)
            out.append(
                {
                    "L": L,
                    "gamma": gamma,
                    "sqrt_log_L": math.sqrt(math.log(L)),
                    "gamma_over_sqrt_log_L": gamma / math.sqrt(math.log(L)),
                    "degree": g,
                    "rank": rank,
                    "rank_over_L": None if rank is None else rank / L,
                    "error": e,
                }
            )
            print(
                f"[rank table d={args.rank_d}] L={L} gamma={gamma}: degree {g}, rank {rank}, error {e:.2e}",
                flush=True,
            )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--gammas", type=float, nargs="+", default=None, help="entry bounds (default: per d)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096, 16384, 65536])
    ap.add_argument("--calibration", type=int, default=4096, help="length at which the degree is chosen")
    ap.add_argument("--target", type=float, default=1e-3)
    ap.add_argument("--max-degree", type=int, default=8)
    ap.add_argument("--case", choices=["C1", "C2"], default="C1")
    ap.add_argument("--r", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rank-d", type=int, default=4)
    ap.add_argument("--rank-lengths", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--rank-gammas", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
    ap.add_argument("--rank-max-degree", type=int, default=14)
    ap.add_argument("--quick", action="store_true", help="lengths up to 4096, d = 4 only")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.quick:
        args.dims, args.lengths, args.calibration = [4], [256, 1024, 4096], 1024
        args.rank_lengths, args.rank_gammas = [256, 1024], [0.5, 1.0]
    t0 = time.time()
    rows = part1(args)
    table = part2(args)
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "loadavg": list(os.getloadavg()),
    }
    data = {
        "benchmark": "bench_attention_grad",
        "started": t0,
        "seconds": time.time() - t0,
        "environment": env,
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "fast_vs_exact": rows,
        "rank_table": table,
    }
    print("\n   d  gamma  rank  L*        exp exact  exp fast  exact/fast at the largest L  max error")
    for r in rows:
        if r.get("rank") is None:
            print(f"{r['d']:>4} {r['gamma']:>6}  none up to degree {args.max_degree}")
            continue
        last = r["per_length"][-1]
        cross = "none" if r["crossover_L"] is None else f"{r['crossover_L']:.0f}"
        ee = "-" if r["exponent_exact"] is None else f"{r['exponent_exact']:.2f}"
        ef = "-" if r["exponent_fast"] is None else f"{r['exponent_fast']:.2f}"
        print(
            f"{r['d']:>4} {r['gamma']:>6} {r['rank']:>5}  {cross:<9} {ee:>9} {ef:>9}  "
            f"{last['ratio']:.3g} (L = {last['L']}){'':>8} {r['max_error']:.1e}"
        )
    print(f"\nrank needed for max-entry error <= {args.target:g}, d = {args.rank_d}:")
    print("     L  sqrt(log L)  " + "  ".join(f"g={gm:<5}" for gm in args.rank_gammas))
    for L in args.rank_lengths:
        cells = []
        for gm in args.rank_gammas:
            row = next(t for t in table if t["L"] == L and t["gamma"] == gm)
            cells.append(f"{row['rank'] if row['rank'] is not None else '>':>7}")
        print(f"{L:>6}  {math.sqrt(math.log(L)):>11.2f}  " + "  ".join(cells))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, args.out)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
