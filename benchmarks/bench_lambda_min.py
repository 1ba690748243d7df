r"""Benchmark: certified lambda_min of the LoRA Hessian -- structured route vs generic eigensolvers.

Methods, on the same point, in one run:

* ``structured`` (ours, :func:`landscapes.curvature.structured.lambda_min_structured`): eigendecomposition of
  the column-pair matrix, one pass over ``J``'s rows, inertia bisection in ``K N`` dimensions;
  returns a rigorous interval of relative width <= ``--rtol``.
* ``eigsh``: SciPy/ARPACK ``eigsh(which="SA", k=1)`` on the closed-form HVP operator
  (:class:`landscapes.curvature.hvp.LoRAHessianOperator`), ``tol = --eigsh-tol``, stopped after
  ``--eigsh-max-matvecs`` HVPs or ``--eigsh-time-limit`` seconds (then the Rayleigh quotient of the
  last Krylov vector is reported and the ratio is a lower bound).
* ``power``: a PyHessian-style shifted power iteration: power iteration for the dominant
  eigenvalue ``theta_1`` (the largest in magnitude), then power iteration on
  ``theta_1 I - H`` whose dominant eigenvalue is ``theta_1 - lambda_min`` (when
  ``theta_1 > 0``); each stage stops when the Rayleigh quotient changes by less than
  ``--power-tol`` relative, or at ``--power-max-matvecs`` / ``--power-time-limit``.
* ``dense``: ``eigh`` of the closed-form dense Hessian (only where it fits, ``--dense-max``
  parameters).

Accuracy: every estimate is compared with the reference value (the dense eigenvalue where it
ran, else the structured interval's midpoint); a method "reaches" the accuracy when its error is
at most ``rtol * max(|lambda_min|, 1e-6 * max(1, lambda_max))`` -- the structured route's own
stopping rule -- and the practical "decision" accuracy when its error is at most 1e-3 of the
curvature tolerance ``1e-6 * max(1, lambda_max)`` (enough to decide an SOSP; it matters where
``lambda_min ~ 0``, at SOSPs).  The power iteration's stopping rule is a relative change below
``--power-tol`` (default 1e-15: it gets every chance to reach the accuracy before its cap).
Speed ratios (method seconds / structured seconds) are printed; the cost is
also given in HVPs and in multiples of one gradient of the LoRA objective.

Points: a random point (Gaussian factors, scale ``--scale``) and a certified SOSP (found by
:func:`landscapes.sosp.find_sosp` from a small start; its search is not timed).

Usage::

    python benchmarks/bench_lambda_min.py [--sizes 64 384] [--rank 12] [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from landscapes import gaussian_problem  # noqa: E402
from landscapes.curvature import (  # noqa: E402
    LoRAHessianOperator,
    gradient_seconds,
    lambda_min_dense,
    lambda_min_structured,
)
from landscapes.io import atomic_write  # noqa: E402
from landscapes.lora import random_factors  # noqa: E402
from landscapes.sosp import find_sosp, make_init  # noqa: E402


def _atomic_json(path: str, data: Any) -> None:
    text = json.dumps(data, indent=1).encode()
    atomic_write(path, lambda fh: fh.write(text))


def power_lambda_min(
    op: LoRAHessianOperator, *, tol: float, max_matvecs: int, time_limit: float, seed: int
) -> dict[str, Any]:
    """Shifted power iteration (two stages); returns the estimate, cost and stopping reason."""
    t0 = time.perf_counter()
    P = op.shape[0]
    gen = torch.Generator().manual_seed(seed)
    start = op.count

    def power(shift: float | None) -> tuple[float, str]:
        v = torch.randn(P, generator=gen, dtype=op.dtype)
        v /= v.norm()
        theta = math.inf
        while True:
            Hv = op.matvec(v)
            w = Hv if shift is None else shift * v - Hv
            new = float(v @ w)
            nrm = float(w.norm())
            if nrm == 0.0:
                return new, "zero vector"
            v = w / nrm
            if abs(new - theta) <= tol * max(abs(new), 1e-300):
                return new, "converged"
            theta = new
            if op.count - start >= max_matvecs:
                return new, "max_matvecs"
            if time.perf_counter() - t0 > time_limit:
                return new, "time_limit"

    theta1, why1 = power(None)
    if theta1 <= 0:  # the dominant eigenvalue is the most negative one: that is lambda_min
        return {
            "value": theta1,
            "stop": why1,
            "matvecs": op.count - start,
            "seconds": time.perf_counter() - t0,
        }
    mu, why2 = power(theta1)
    return {
        "value": theta1 - mu,
        "stop": f"{why1}/{why2}",
        "matvecs": op.count - start,
        "seconds": time.perf_counter() - t0,
        "theta_1": theta1,
    }


class _Budget(Exception):
    pass


def eigsh_lambda_min(
    op: LoRAHessianOperator, *, tol: float, seed: int, max_matvecs: int, time_limit: float
) -> dict[str, Any]:
    """ARPACK on the HVP operator; stopped (no estimate) when the matvec or time budget runs out."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    from landscapes.threads import scipy_blas_single_thread

    t0 = time.perf_counter()
    start = op.count
    A = op.to_scipy()
    last: dict[str, Any] = {}

    def mv(x: np.ndarray) -> np.ndarray:
        if op.count - start >= max_matvecs or time.perf_counter() - t0 > time_limit:
            raise _Budget
        y = A.matvec(x)
        last["x"], last["y"] = x, y
        return y

    B = LinearOperator(A.shape, matvec=mv, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(op.shape[0])
    with scipy_blas_single_thread():
        try:
            w = eigsh(B, k=1, which="SA", tol=tol, v0=v0, return_eigenvectors=False)
            value, stop = float(w[0]), "converged"
        except ArpackNoConvergence as exc:
            value = float(exc.eigenvalues[0]) if len(exc.eigenvalues) else math.nan
            stop = "no convergence"
        except _Budget:
            x = np.asarray(last.get("x", v0)).reshape(-1)
            y = np.asarray(last.get("y", A.matvec(x))).reshape(-1)
            value = float(x @ y / (x @ x))  # Rayleigh quotient of the last Krylov vector
            stop = f"budget ({max_matvecs} HVPs / {time_limit:.0f} s)"
    return {"value": value, "stop": stop, "matvecs": op.count - start, "seconds": time.perf_counter() - t0}


def run_point(problem, U, V, *, label: str, args: argparse.Namespace) -> dict[str, Any]:
    tg = gradient_seconds(problem, U, V, repeats=10)
    rec: dict[str, Any] = {
        "point": label,
        "t_grad_seconds": tg,
        "n_params": sum(u.numel() + v.numel() for u, v in zip(U, V)),
    }
    t = time.perf_counter()
    s = lambda_min_structured(problem, U, V, rtol=args.rtol, t_grad=tg)
    s_sec = time.perf_counter() - t
    rec["structured"] = {**s.to_dict(), "seconds": s_sec, "grad_multiple": s_sec / tg}
    ref, ref_kind = 0.5 * (s.lower + s.upper), "structured midpoint"
    if rec["n_params"] <= args.dense_max:
        t = time.perf_counter()
        d = lambda_min_dense(problem, U, V, max_params=args.dense_max, t_grad=tg)
        d_sec = time.perf_counter() - t
        rec["dense"] = {
            "value": d.value,
            "seconds": d_sec,
            "grad_multiple": d_sec / tg,
            "residual": d.residual,
        }
        ref, ref_kind = d.value, "dense eigh"
    acc = args.rtol * max(abs(ref), 1e-6 * max(1.0, abs(s.lambda_max)))
    # A second, practical level: 1e-3 of the curvature tolerance of an SOSP decision.
    acc_decision = max(acc, 1e-3 * 1e-6 * max(1.0, abs(s.lambda_max)))
    rec["reference"] = {
        "value": ref,
        "kind": ref_kind,
        "accuracy_target": acc,
        "decision_accuracy": acc_decision,
    }
    rec["structured"]["error"] = abs(rec["structured"]["value"] - ref)
    rec["structured"]["reached"] = s.lower - acc <= ref <= s.upper + acc and s.upper - s.lower <= acc * 1.0001

    op = LoRAHessianOperator(problem, U, V)
    e = eigsh_lambda_min(
        op, tol=args.eigsh_tol, seed=0, max_matvecs=args.eigsh_max_matvecs, time_limit=args.eigsh_time_limit
    )
    e["error"] = abs(e["value"] - ref)
    e["reached"] = e["error"] <= acc
    e["reached_decision"] = e["error"] <= acc_decision
    e["grad_multiple"] = e["seconds"] / tg
    rec["eigsh"] = e
    if not args.no_power:
        op = LoRAHessianOperator(problem, U, V)
        pw = power_lambda_min(
            op,
            tol=args.power_tol,
            max_matvecs=args.power_max_matvecs,
            time_limit=args.power_time_limit,
            seed=0,
        )
        pw["error"] = abs(pw["value"] - ref)
        pw["reached"] = pw["error"] <= acc
        pw["reached_decision"] = pw["error"] <= acc_decision
        pw["grad_multiple"] = pw["seconds"] / tg
        rec["power"] = pw
    for k in ("eigsh", "power", "dense"):
        if k in rec:
            rec[k]["ratio_seconds_over_structured"] = rec[k]["seconds"] / s_sec
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 384], help="m = n (default 64 384)")
    ap.add_argument(
        "--rank", type=int, default=12, help="LoRA rank r (default 12, above the bound for KN = 64)"
    )
    ap.add_argument("--K", type=int, default=2)
    ap.add_argument("--N", type=int, default=32)
    ap.add_argument("--loss", default="cross_entropy")
    ap.add_argument("--lam", type=float, default=0.01)
    ap.add_argument("--scale", type=float, default=0.05, help="std of the random point's factor entries")
    ap.add_argument("--rtol", type=float, default=1e-8)
    ap.add_argument("--eigsh-tol", type=float, default=1e-10)
    ap.add_argument("--eigsh-max-matvecs", type=int, default=20000)
    ap.add_argument("--eigsh-time-limit", type=float, default=240.0)
    ap.add_argument("--power-tol", type=float, default=1e-15)
    ap.add_argument("--power-max-matvecs", type=int, default=20000)
    ap.add_argument("--power-time-limit", type=float, default=240.0)
    ap.add_argument("--no-power", action="store_true")
    ap.add_argument("--dense-max", type=int, default=2000)
    ap.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "results", "bench_lambda_min.json")
    )
    ap.add_argument("--quick", action="store_true", help="sizes 16 32, rank 4, power capped at 2000 matvecs")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.rank, args.power_max_matvecs = [16, 32], 4, 2000
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    out: dict[str, Any] = {"benchmark": "lambda_min", "environment": env, "config": vars(args), "records": []}
    print(f"environment: {env}")
    for m in args.sizes:
        P = gaussian_problem(K=args.K, N=args.N, blocks=[(m, m)], lam=args.lam, loss=args.loss, seed=0)
        r = min(args.rank, m)
        rnd = random_factors(P, [r], scale=args.scale, generator=torch.Generator().manual_seed(1))
        sos = find_sosp(P, make_init(P, [r], "small", generator=torch.Generator().manual_seed(2)))
        for label, (U, V) in (("random", (rnd.U, rnd.V)), ("sosp", (sos.point.U, sos.point.V))):
            rec = run_point(P, U, V, label=label, args=args)
            rec.update(m=m, n=m, K=args.K, N=args.N, rank=r, loss=args.loss, lam=args.lam)
            if label == "sosp":
                rec["sosp_certified"] = sos.certificate.is_sosp
            out["records"].append(rec)
            s = rec["structured"]
            line = (
                f"[m={m} r={r} {label}] structured {s['seconds']:.3f} s ({s['grad_multiple']:.0f} grads, "
                f"{s['matvecs']} HVP-equiv, width {s['upper'] - s['lower']:.1e}, reached={s['reached']})"
            )
            for k in ("dense", "eigsh", "power"):
                if k in rec:
                    x = rec[k]
                    line += (
                        f" | {k} {x['seconds']:.3f} s x{x['ratio_seconds_over_structured']:.0f}"
                        + (f" {x['matvecs']} HVPs" if "matvecs" in x else "")
                        + (
                            f" err {x['error']:.1e} reached={x['reached']}/{x['reached_decision']}"
                            f" ({x['stop']})"
                            if "stop" in x
                            else ""
                        )
                    )
            print(line, flush=True)
            _atomic_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
