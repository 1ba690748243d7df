r"""Benchmark: certified NUC on the linearized MiniLM at N = 512, token-factored J against the dense J.

Model and data: the offline MiniLM, its last layer's W_q and W_v (2 blocks of 384 x 384), K = 2,
a random head on mean pooling, ``N`` review sentences by the seeded stratified split, cross-entropy,
``lam = 0.01``: the [JLR24] experiment's problem.  In one run:

* **set-up**: building the encoder (tokenize, bucket, the frozen layers' forward pass, cached), the
  logits ``f0`` (the adapted layers' forward pass), then ``J`` as token factors
  (:meth:`~landscapes.transformer.encoder.LinearizedEncoder.token_operator`: a forward pass and
  ``K`` backward passes through the adapted layers).  The floor is the encoder plus ``f0``: one
  frozen forward pass over the same buckets.
* **solve**: :func:`landscapes.nuc.solve_nuc` (factored, relative gap target ``--gap``) on the
  token form; its seconds, L-BFGS iterations, risk-and-gradient evaluations and certificate.
* **today's route** (``--dense``): the dense ``J`` (built, timed), the seconds of one LoRA
  risk-and-gradient evaluation on it at the solution (median of ``--evals``), against the same on
  the token form; the dense route's solve time is *estimated* as that evaluation time times the
  solve's evaluation count (it was not run: at N = 512 it took 510 s).  The token solution's
  certificate is recomputed on the dense ``J`` (an independent check of the token products).

Cost is also given as a multiple of one risk-and-gradient evaluation on the token form.  Peak
memory is the process's ``ru_maxrss``.

Usage::

    python benchmarks/bench_real_scale.py [--n 512] [--dense] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from landscapes.lora import balanced_factors, lora_value_and_grad  # noqa: E402
from landscapes.nuc import nuc_certificate, solve_nuc  # noqa: E402
from landscapes.transformer.data import load_reviews, train_test_split  # noqa: E402
from landscapes.transformer.encoder import LinearizedEncoder, load_encoder  # noqa: E402
from theory.atomic import atomic_write_text  # noqa: E402


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _timed(f: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def _eval_seconds(problem: Any, U: Any, V: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        times.append(_timed(lambda: lora_value_and_grad(problem, U, V))[1])
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=512, help="examples (default 512)")
    ap.add_argument("--lam", type=float, default=0.01)
    ap.add_argument("--gap", type=float, default=1e-8, help="relative gap target (default 1e-8)")
    ap.add_argument("--dense", action="store_true", help="also build the dense J (today's route)")
    ap.add_argument("--evals", type=int, default=5, help="repeats of one evaluation (median)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_real_scale.json")
    args = ap.parse_args()
    if args.n < 2 or args.evals < 1 or not args.gap > 0:
        ap.error("--n: at least 2; --evals: at least 1; --gap: positive")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    rec: dict[str, Any] = {
        "format": "loracheck.bench_real_scale",
        "version": 1,
        "environment": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": "cpu",
            "git_head": head.strip(),
        },
        "settings": {
            "N": args.n,
            "K": 2,
            "lam": args.lam,
            "gap_rtol": args.gap,
            "blocks": "last layer W_q, W_v",
        },
    }
    train, _ = train_test_split(load_reviews(), n_train=args.n, seed=0)
    net, tok = load_encoder(None, head="random", dtype=torch.float64)
    lin, t_enc = _timed(lambda: LinearizedEncoder(net, tok, list(train.texts), K=2, dtype=torch.float64))
    _, t_f0 = _timed(lin.f0)
    T, t_tok = _timed(lambda: lin.token_operator(progress=True))
    tokens = sum(int(b.inputs[0].shape[0] * b.inputs[0].shape[1]) for b in T.buckets)
    rec["setup"] = {
        "encoder_s": t_enc,
        "f0_s": t_f0,
        "floor_s": t_enc + t_f0,
        "token_factors_s": t_tok,
        "setup_over_floor": (t_enc + t_f0 + t_tok) / (t_enc + t_f0),
        "tokens_padded": tokens,
        "token_factors_gb": T.nbytes() / 2**30,
        "dense_J_gb": lin.dense_bytes() / 2**30,
    }
    print(json.dumps(rec["setup"], indent=1), flush=True)
    labels = train.label_tensor()
    problem = lin.problem(labels, lam=args.lam, J=T)
    sol, t_solve = _timed(lambda: solve_nuc(problem, gap_rtol=args.gap))
    pt = balanced_factors(sol.D)
    t_eval = _eval_seconds(problem, pt.U, pt.V, args.evals)
    rec["solve"] = {
        "seconds": t_solve,
        "iterations": sol.iterations,
        "gradient_evaluations": sol.gradient_evaluations,
        "rel_gap": sol.certificate.rel_gap,
        "converged": sol.converged,
        "ranks": list(sol.ranks),
        "eval_s": t_eval,
        "solve_over_eval": t_solve / t_eval,
        "target_s": 20.0,
        "target_met": bool(t_solve <= 20.0 and sol.certificate.rel_gap <= args.gap),
    }
    print(json.dumps(rec["solve"], indent=1), flush=True)
    if args.dense:
        J, t_dense = _timed(lambda: lin.jacobian())
        dense = lin.problem(labels, lam=args.lam, J=J)
        t_eval_dense = _eval_seconds(dense, pt.U, pt.V, args.evals)
        cert = nuc_certificate(dense, sol.D)
        rec["dense"] = {
            "jacobian_s": t_dense,
            "eval_s": t_eval_dense,
            "eval_ratio_dense_over_tokens": t_eval_dense / t_eval,
            "estimated_solve_s": t_eval_dense * sol.gradient_evaluations,
            "estimate": "eval_s x the token solve's gradient_evaluations (not run)",
            "rel_gap_of_the_token_solution": cert.rel_gap,
        }
        print(json.dumps(rec["dense"], indent=1), flush=True)
        del J, dense
    rec["peak_rss_gb"] = _peak_gb()
    atomic_write_text(args.out, json.dumps(rec, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
