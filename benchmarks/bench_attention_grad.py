r"""Benchmark: LoRA gradients of one attention head, fast (polynomial method) vs exact (streamed).

Both routes of :mod:`landscapes.attention` on the same instances (``hsk_instance``: Rademacher
inputs, Gaussian weights, rescaled so that the entries of ``Q = X W_Q`` and ``K = X W_K`` are
bounded by ``gamma``), case C1 unless ``--case``, float64, in one run:

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

Part 3 (``--baselines``, instead of parts 1 and 2; its own JSON): a fair exact baseline.  The
exact route above is a float64 Python loop over query slabs; users would take the fused kernel
``torch.nn.functional.scaled_dot_product_attention`` (SDPA) and get the adapter gradients by
autograd through it (``q = X W_Q``, ``k = X W_K``, ``v = X W_V`` with the adapted weights,
``scale = beta``, loss ``(1/2)||Z - Y||_F^2``, ``requires_grad`` on every ``A_mu``, ``B_mu``).  Per
length, interleaved within each repeat (median of ``--repeats``):

* ``exact_slab_f64`` -- the slab loop above (the reference wherever it runs);
* ``sdpa_f32`` / ``sdpa_f64`` -- SDPA forward and backward in float32 / float64, non-causal (the
  HSK head); the kernel PyTorch dispatched to is recorded (on CPU the flash-style CPU kernel,
  O(L d) memory);
* ``sdpa_f32_causal`` -- the same with ``is_causal=True``: a different function (its gradients
  are not the HSK head's), so time only;
* on CUDA also ``flash_bf16`` (the FlashAttention backend forced; it takes half precision only);
  on CPU it is skipped with a message;
* ``fast_f64`` -- the fast route at the degree chosen as in part 1.

Every gradient is compared with the float64 reference (max-entry error); the fair ratio at each
length is the time of the fastest exact (non-causal) route whose measured error is <= the fast
route's, divided by the fast route's time, and ``L*`` is the crossover against that route; the
ratio against the fastest exact route within ``--target`` is reported next to it.  Each route runs
once per length from ``--once-from``; the process CPU time of every call is recorded next to the
wall time (a check on a shared machine); the JSON is rewritten after every length.

Usage::

    python benchmarks/bench_attention_grad.py            # full run (~15 min on 2 cores)
    python benchmarks/bench_attention_grad.py --quick    # smoke run (lengths up to 4096)
    python benchmarks/bench_attention_grad.py --baselines --baseline-cases 4:0.5   # part 3, one case
    python benchmarks/bench_attention_grad.py --baselines --quick       # part 3 smoke run (d = 4, L <= 4096)
    python benchmarks/bench_attention_grad.py --baselines --device cuda # part 3 on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from landscapes.attention import (  # noqa: E402
    AttentionLoRA,
    exact_gradients,
    fast_gradients,
    hsk_instance,
    max_entry_error,
)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "bench_attention_grad.json")
DEFAULT_OUT_BASELINES = os.path.join(HERE, "results", "bench_attention_sdpa.json")

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


#: Routes of part 3: (name, dtype, causal, forced SDPA backend name or None).  The exact routes
#: compute the HSK head's gradients; the causal one is a different function (time only).
EXACT_ROUTES = ("exact_slab_f64", "sdpa_f64", "sdpa_f32", "flash_bf16")
TIME_ONLY_ROUTES = ("sdpa_f32_causal",)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _on(h: AttentionLoRA, dtype: torch.dtype, device: torch.device) -> AttentionLoRA:
    """``h`` with every tensor in ``dtype`` on ``device``."""

    def mv(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=dtype)

    return AttentionLoRA(
        mv(h.X),
        mv(h.Y),
        {k: mv(w) for k, w in h.W.items()},
        {k: mv(a) for k, a in h.A.items()},
        {k: mv(b) for k, b in h.B.items()},
        scale=h.scale,
        beta=h.beta,
    )


def sdpa_gradients(
    h: AttentionLoRA, *, causal: bool = False, backend: Any = None
) -> tuple[float, dict[str, torch.Tensor], dict[str, torch.Tensor], str]:
    r"""The loss and adapter gradients by autograd through ``scaled_dot_product_attention``.

    :math:`Z = \operatorname{softmax}(\beta\, q k^\top) v` with :math:`q = X W_Q`, :math:`k = X W_K`,
    :math:`v = X W_V` (adapted weights :math:`W_\mu + s B_\mu A_\mu`), ``scale = beta``, loss
    :math:`\tfrac12\|Z - Y\|_F^2`, in ``h``'s dtype and device; ``causal`` masks keys after the
    query (a different function); ``backend`` forces one ``SDPBackend``.  Returns ``(loss, grad_A,
    grad_B, kernel)``, ``kernel`` the name of the backward node PyTorch dispatched to.
    """
    A = {k: a.detach().requires_grad_(True) for k, a in h.A.items()}
    B = {k: b.detach().requires_grad_(True) for k, b in h.B.items()}
    W = {k: w + h.scale * B[k] @ A[k] if k in A else w for k, w in h.W.items()}
    q, k, v = ((h.X @ W[n])[None, None] for n in "QKV")
    if backend is None:
        ctx: Any = contextlib.nullcontext()
    else:
        from torch.nn.attention import sdpa_kernel

        ctx = sdpa_kernel(backend)
    with ctx:
        Z = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=h.beta)
    kernel = type(Z.grad_fn).__name__
    G = Z[0, 0] - h.Y
    loss = 0.5 * (G * G).sum()
    names = list(A)
    grads = torch.autograd.grad(loss, [A[n] for n in names] + [B[n] for n in names])
    m = len(names)
    return float(loss.detach()), dict(zip(names, grads[:m])), dict(zip(names, grads[m:])), kernel


def _materializes(kernel: str | None) -> bool:
    """Whether the dispatched SDPA kernel forms the L x L matrix (the math fallback does)."""
    return kernel is not None and not any(s in kernel for s in ("Flash", "Efficient", "Cudnn"))


def _errors(result: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]], ref: Any) -> float:
    gA, gB = ({k: v.detach().to("cpu", torch.float64) for k, v in g.items()} for g in result)
    rA, rB = ({k: v.detach().to("cpu", torch.float64) for k, v in g.items()} for g in ref)
    return max(max_entry_error(gA, rA), max_entry_error(gB, rB))


def _routes(
    hd: dict[torch.dtype, AttentionLoRA],
    L: int,
    degree: int,
    flash: Any,
    kernels: dict[str, str | None],
    args: argparse.Namespace,
) -> tuple[dict[str, Callable[[], Any]], dict[str, int], dict[str, str]]:
    """The calls of part 3 at one length, their repeat counts, and the routes skipped (with why)."""
    calls: dict[str, Callable[[], Any]] = {}
    reps: dict[str, int] = {}
    skipped: dict[str, str] = {}
    todo: list[tuple[str, Callable[[], Any], int | None, int]] = [
        ("exact_slab_f64", partial(_slab_route, hd[torch.float64], _block(L)), args.slab_max_length, 0),
        ("sdpa_f64", partial(sdpa_gradients, hd[torch.float64]), args.sdpa64_max_length, 8),
        ("sdpa_f32", partial(sdpa_gradients, hd[torch.float32]), None, 4),
        ("sdpa_f32_causal", partial(sdpa_gradients, hd[torch.float32], causal=True), None, 4),
    ]
    if flash is not None:
        todo.append(("flash_bf16", partial(sdpa_gradients, hd[torch.bfloat16], backend=flash), None, 2))
    todo.append(("fast_f64", partial(fast_gradients, hd[torch.float64], degree=degree), None, 0))
    for name, f, max_len, itemsize in todo:
        if max_len is not None and L > max_len:
            skipped[name] = f"L > {max_len}"
        elif _materializes(kernels.get(name)) and 3 * L * L * itemsize > args.max_matrix_bytes:
            skipped[name] = f"kernel {kernels[name]} forms L x L matrices: over {args.max_matrix_bytes} bytes"
        else:
            calls[name] = f
            reps[name] = 1 if L >= args.once_from else args.repeats
    return calls, reps, skipped


def _slab_route(h: AttentionLoRA, block: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    _, gA, gB = exact_gradients(h, block_size=block)
    return gA, gB


def _fastest(med: dict[str, float], errors: dict[str, float | None], bound: float | None) -> str | None:
    """The fastest exact (non-causal) route whose measured error is at most ``bound``."""
    if bound is None:
        return None
    ok = [n for n in EXACT_ROUTES if n in med and (e := errors.get(n)) is not None and e <= bound]
    return min(ok, key=lambda n: med[n]) if ok else None


def part3(
    args: argparse.Namespace, save: Callable[[list[dict[str, Any]]], None] | None = None
) -> list[dict[str, Any]]:
    """Fast route against every exact route (slab loop, SDPA float32/float64, FlashAttention on CUDA).

    ``save`` gets the rows so far after every length (partial results survive an interrupted run).
    """
    device = torch.device(args.device)
    flash = None
    if device.type == "cuda":
        from torch.nn.attention import SDPBackend

        flash = SDPBackend.FLASH_ATTENTION
    else:
        print(
            f"[part 3] FlashAttention (CUDA kernel) skipped: device is {device}; on CPU the default "
            "SDPA dispatch is timed (its kernel name is recorded)",
            flush=True,
        )
    rows = []
    for spec in args.baseline_cases:
        d_s, g_s = spec.split(":")
        d, gamma = int(d_s), float(g_s)
        cal = hsk_instance(L=args.calibration, d=d, r=args.r, gamma=gamma, case=args.case, seed=args.seed)
        ref = exact_gradients(cal, block_size=_block(args.calibration))
        g, e = degree_for(cal, ref, args.target, args.max_degree)
        rec: dict[str, Any] = {"d": d, "gamma": gamma, "degree": g, "calibration_error": e}
        if g is None:
            print(f"[d={d} gamma={gamma}] no degree <= {args.max_degree} meets {args.target:g}; skipped")
            rec["rank"] = None
            rows.append(rec)
            continue
        rec["rank"] = math.comb(d + g, g)
        kernels: dict[str, str | None] = {}
        per = []
        warm = False
        for L in args.lengths:
            h64 = hsk_instance(L=L, d=d, r=args.r, gamma=gamma, case=args.case, seed=args.seed)
            hd = {dt: _on(h64, dt, device) for dt in (torch.float64, torch.float32)}
            if flash is not None:
                hd[torch.bfloat16] = _on(h64, torch.bfloat16, device)
            calls, reps, skipped = _routes(hd, L, g, flash, kernels, args)
            if not warm:  # one untimed call per route at the smallest length
                for f in calls.values():
                    f()
                warm = True
            times: dict[str, list[float]] = {n: [] for n in calls}
            cpu: dict[str, list[float]] = {n: [] for n in calls}
            out: dict[str, Any] = {}
            for rep in range(max(reps.values())):
                for name, f in calls.items():  # interleaved: every route once per repeat
                    if rep >= reps[name]:
                        continue
                    _sync(device)
                    t, c = time.perf_counter(), time.process_time()
                    res = f()
                    _sync(device)
                    times[name].append(time.perf_counter() - t)
                    cpu[name].append(time.process_time() - c)
                    if rep == 0:
                        out[name] = res
            for name, res in out.items():
                if name.startswith("sdpa") or name.startswith("flash"):
                    kernels[name] = res[3]
            grads = {
                n: ((r.grad_A, r.grad_B) if n == "fast_f64" else (r[1], r[2]) if len(r) == 4 else r)
                for n, r in out.items()
            }
            ref_name = next((n for n in ("exact_slab_f64", "sdpa_f64") if n in grads), None)
            errors: dict[str, float | None] = {}
            for n in calls:
                if n in TIME_ONLY_ROUTES or ref_name is None:
                    errors[n] = None
                elif n == ref_name:
                    errors[n] = 0.0  # the reference itself (float64 round-off, not measured)
                else:
                    errors[n] = _errors(grads[n], grads[ref_name])
            med = {n: statistics.median(ts) for n, ts in times.items()}
            fast_err = errors["fast_f64"]
            fast_s = med["fast_f64"]

            fair = _fastest(med, errors, fast_err)
            at_target = _fastest(med, errors, args.target)
            row = {
                "L": L,
                "seconds": med,
                "all_seconds": times,
                "cpu_seconds": {n: statistics.median(ts) for n, ts in cpu.items()},
                "all_cpu_seconds": cpu,
                "repeats": reps,
                "errors": errors,
                "reference": ref_name,
                "skipped": skipped,
                "kernels": {n: kernels.get(n) for n in calls if n.startswith(("sdpa", "flash"))},
                "fair_route": fair,
                "fair_exact_s": None if fair is None else med[fair],
                "ratio_fair": None if fair is None else med[fair] / fast_s,
                "fast_in_units_of_fair_exact": None if fair is None else fast_s / med[fair],
                "route_at_target": at_target,
                "ratio_at_target": None if at_target is None else med[at_target] / fast_s,
                "ratio_vs_slab": med["exact_slab_f64"] / fast_s if "exact_slab_f64" in med else None,
                "ratio_fair_cpu": None
                if fair is None
                else statistics.median(cpu[fair]) / statistics.median(cpu["fast_f64"]),
                "loadavg": list(os.getloadavg()),
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
            per.append(row)
            if save is not None:
                save([*rows, {**rec, "per_length": per, "partial": True}])
            cells = ", ".join(
                f"{n} {med[n]:.3g} s" + ("" if errors[n] is None else f" (err {errors[n]:.1e})") for n in med
            )
            print(
                f"[d={d} gamma={gamma} rank={rec['rank']}] L={L}: {cells}; fair route {fair}"
                + ("" if fair is None else f", fair ratio {med[fair] / fast_s:.3g}")
                + ("" if at_target is None else f"; within target: {at_target} {med[at_target] / fast_s:.3g}")
                + ("" if not skipped else f"; skipped {skipped}"),
                flush=True,
            )
        rec["per_length"] = per
        rec["kernels"] = kernels
        fair_rows = [p for p in per if p["fair_exact_s"] is not None]
        rec["crossover_L_fair"] = (
            _crossover(
                [p["L"] for p in fair_rows], [p["fair_exact_s"] for p in fair_rows],
                [p["seconds"]["fast_f64"] for p in fair_rows],
            )
            if len(fair_rows) >= 2
            else None
        )
        rec["crossover_L"] = {}
        rec["exponent"] = {}
        for n in EXACT_ROUTES + TIME_ONLY_ROUTES + ("fast_f64",):
            pts = [p for p in per if n in p["seconds"]]
            if not pts:
                continue
            big = [p for p in pts if p["L"] >= 4096]
            rec["exponent"][n] = _fit([p["L"] for p in big], [p["seconds"][n] for p in big])
            if n != "fast_f64" and len(pts) >= 2:
                rec["crossover_L"][n] = _crossover(
                    [p["L"] for p in pts],
                    [p["seconds"][n] for p in pts],
                    [p["seconds"]["fast_f64"] for p in pts],
                )
        rows.append(rec)
    return rows


def _print_part3(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if r.get("rank") is None:
            continue
        print(
            f"\nd = {r['d']}, gamma = {r['gamma']}, degree {r['degree']}, rank {r['rank']}; "
            f"kernels {r['kernels']}"
        )
        names = [n for n in EXACT_ROUTES + TIME_ONLY_ROUTES + ("fast_f64",) if n in r["exponent"]]
        print("       L  " + "  ".join(f"{n:>22}" for n in names) + "  fair route      fair ratio")
        for p in r["per_length"]:
            cells = []
            for n in names:
                if n not in p["seconds"]:
                    cells.append(f"{'-':>22}")
                    continue
                e = p["errors"].get(n)
                cells.append(f"{p['seconds'][n]:>9.3g} s " + (f"{'':>10}" if e is None else f"{e:>10.1e}"))
            fr = "-" if p["fair_route"] is None else p["fair_route"]
            ratio = "-" if p["ratio_fair"] is None else f"{p['ratio_fair']:.3g}"
            print(f"{p['L']:>8}  " + "  ".join(cells) + f"  {fr:<15} {ratio}")
        cl = r["crossover_L_fair"]
        print(
            f"L* against the fair route: {'none' if cl is None else f'{cl:.0f}'}; per route: "
            + ", ".join(f"{n} {'none' if v is None else f'{v:.0f}'}" for n, v in r["crossover_L"].items())
        )


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
    ap.add_argument("--out", default=None, help="JSON path (default: results/bench_attention_grad.json, "
                    "with --baselines results/bench_attention_sdpa.json)")
    ap.add_argument("--baselines", action="store_true",
                    help="part 3 only: the fast route against SDPA (float32/float64) and the slab loop")
    ap.add_argument("--baseline-cases", nargs="+", default=["4:0.5", "4:1.0", "16:0.5"],
                    help="part 3: d:gamma pairs")
    ap.add_argument("--device", default="cpu", help="part 3: torch device (cuda adds FlashAttention)")
    ap.add_argument("--slab-max-length", type=int, default=65536, help="part 3: longest L for the slab loop")
    ap.add_argument("--sdpa64-max-length", type=int, default=16384, help="part 3: longest L for float64 SDPA")
    ap.add_argument("--once-from", type=int, default=32768, help="part 3: time each route once from this L")
    ap.add_argument("--max-matrix-bytes", type=int, default=8 << 30,
                    help="part 3: skip an SDPA kernel that forms L x L matrices beyond this")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = DEFAULT_OUT_BASELINES if args.baselines else DEFAULT_OUT
    if args.quick:
        args.dims, args.lengths, args.calibration = [4], [256, 1024, 4096], 1024
        args.rank_lengths, args.rank_gammas = [256, 1024], [0.5, 1.0]
        args.baseline_cases = args.baseline_cases[:1]
    t0 = time.time()
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "device": args.device,
        "cuda_device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None,
        "loadavg_start": list(os.getloadavg()),
    }
    if args.baselines:

        def save(base: list[dict[str, Any]]) -> None:
            env["loadavg"] = list(os.getloadavg())
            _write(
                args.out,
                {
                    "benchmark": "bench_attention_grad --baselines",
                    "started": t0,
                    "seconds": time.time() - t0,
                    "environment": env,
                    "config": {k: v for k, v in vars(args).items() if k != "out"},
                    "fast_vs_exact_routes": base,
                },
            )

        base = part3(args, save)
        _print_part3(base)
        save(base)
        return 0
    rows = part1(args)
    table = part2(args)
    env["loadavg"] = list(os.getloadavg())
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
    _write(args.out, data)
    return 0


def _write(path: str, data: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)
    print(f"written {path}")


if __name__ == "__main__":
    raise SystemExit(main())
