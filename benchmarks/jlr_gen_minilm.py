r"""JLR-gen on the linearized MiniLM and the review sentences: the Rademacher bound vs held-out loss.

For each ``N`` (default 32, 128, 512): the [JLR24] setup (``review_problem``: last layer's W_q and
W_v, random head on mean pooling, ``K = 2``, cross-entropy, ``lam = 0.01``, float64) with
``--n-test`` held-out review sentences outside the training split
(:func:`verify.jlr.gen.with_review_held_out`, linearized logits by the operator form).  The judged
point is the NUC solution, solved to ``--gap-rtol`` (looser than the checkers' 1e-8 default at
``N = 512``, where a tight solve takes minutes; the bound holds for any point, and the verdict
records the gap reached) under a ``--time-limit``.  :func:`verify.jlr.gen.check_jlr_gen` then
reports both radii: ``B = sum_j ||D_j||_*`` of the solution (the verdict's) and the magnitude
bound ``B = L(0)/lam`` (no solve needed).

One JSON per ``N`` in ``--out`` (default ``benchmarks/results/jlr_gen``):
``minilm_N{N}.json`` with the verdict, its certificate, the stage timings and the load averages
(the machine is shared: timings are contended unless the load says otherwise).

    python benchmarks/jlr_gen_minilm.py --n 32 128
    python benchmarks/jlr_gen_minilm.py --n 512 --gap-rtol 1e-6 --time-limit 1200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from landscapes.nuc import solve_nuc
from verify.jlr.gen import check_jlr_gen, held_out_problem


def main() -> None:
    """Run the cases named on the command line and write one JSON per ``N``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[32, 128, 512])
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--lam", type=float, default=0.01)
    ap.add_argument("--gap-rtol", type=float, default=1e-8)
    ap.add_argument("--time-limit", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "jlr_gen"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for N in args.n:
        rec: dict = {
            "case": "minilm-reviews",
            "N": N,
            "n_test": args.n_test,
            "lam": args.lam,
            "gap_rtol": args.gap_rtol,
            "time_limit": args.time_limit,
            "seed": args.seed,
            "environment": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "cpus": os.cpu_count(),
            },
            "load_before": os.getloadavg(),
            "seconds": {},
        }
        t0 = time.perf_counter()
        problem = held_out_problem(
            generator="reviews", n_test=args.n_test, N=N, K=2, lam=args.lam, loss="cross_entropy", seed=args.seed
        )
        rec["seconds"]["build"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        sol = solve_nuc(problem, gap_rtol=args.gap_rtol, seed=args.seed, time_limit=args.time_limit)
        rec["seconds"]["nuc_solve"] = time.perf_counter() - t0
        rec["nuc"] = {
            "rel_gap": sol.certificate.rel_gap,
            "converged": sol.converged,
            "ranks": list(sol.ranks),
            "iterations": sol.iterations,
        }
        t0 = time.perf_counter()
        v = check_jlr_gen(problem, solution=sol, gap_rtol=args.gap_rtol, seed=args.seed)
        rec["seconds"]["check"] = time.perf_counter() - t0
        rec["verdict"] = v.to_dict()
        rec["load_after"] = os.getloadavg()
        path = out / f"minilm_N{N}.json"
        path.write_text(json.dumps(rec, indent=1))
        print(f"N={N}: {v.summary()}  ({sum(rec['seconds'].values()):.0f} s) -> {path}", flush=True)
        del problem, sol


if __name__ == "__main__":
    main()
