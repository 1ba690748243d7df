r"""JLR-gen on a synthetic teacher: where the Rademacher bound becomes non-vacuous, and how loose it is.

The default suite's problem ``teacher-gen-sq-K2`` (:func:`landscapes.synthetic.teacher_problem`:
rank-1 teacher on one 4 x 4 block, ``K = 2``, squared loss, noise 0.5, ``lam = 0.02``) at several
training sizes ``N`` with ``M = 4000`` held-out examples (one draw of ``N + M`` examples, the last
``M`` held out: rows are i.i.d.), loss clipped at ``b = 2``.  For each ``N`` the verdict of
:func:`verify.jlr.gen.check_jlr_gen` (radius ``B = ||D||_*`` of the NUC solution) and, on the
suite's ``N = 8000``, the planted false variant (``bound_scale = 0.1``).

    python benchmarks/jlr_gen_teacher.py            # writes benchmarks/results/jlr_gen/teacher.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from verify.jlr.gen import check_jlr_gen, held_out_problem

KWARGS = dict(K=2, blocks=[(4, 4)], lam=0.02, teacher_rank=1, loss="squared", noise=0.5, seed=11)


def main() -> None:
    """Run the sizes and write one JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[500, 2000, 8000, 32000])
    ap.add_argument("--n-test", type=int, default=4000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "jlr_gen" / "teacher.json"))
    args = ap.parse_args()
    rows = []
    for N in args.n:
        t0 = time.perf_counter()
        p = held_out_problem(generator="teacher", n_test=args.n_test, N=N, **KWARGS)
        v = check_jlr_gen(p, clip=2.0)
        rows.append({"N": N, "seconds": time.perf_counter() - t0, "verdict": v.to_dict()})
        print(f"N={N}: {v.summary()}", flush=True)
        if N == 8000:
            w = check_jlr_gen(p, clip=2.0, bound_scale=0.1, mc_samples=0)
            rows.append({"N": N, "variant": "bound_scale=0.1", "verdict": w.to_dict()})
            print(f"N={N}, bound x 0.1: {w.summary()}", flush=True)
    rec = {"case": "teacher", "kwargs": KWARGS, "n_test": args.n_test, "clip": 2.0, "rows": rows}
    rec["load_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rec, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
