r"""WYL-speed: how fast each LoRA init reaches the certified optimum of the problem it trains.

Each init (``landscapes.inits``) trains the shifted problem of its weight offset
(:func:`~landscapes.inits.shifted_problem`) from its LoRA point with Adam (the L2 form of
:func:`landscapes.sosp.train`, weight decay ``lam`` inside the gradient).  Its objective
:math:`F = L(sBA - O) + \tfrac\lambda2(\|U\|^2 + \|V\|^2)` has the certified minimum
:math:`F^\star` of the NUC problem of the shifted problem (:func:`landscapes.nuc.solve_nuc`; equal
to the rank-``r`` LoRA minimum once ``r`` is at least the NUC solution's rank, which each run
records).  Progress after ``t`` steps is

.. math:: p(t) = \frac{F(0) - F(t)}{F(0) - F^\star} \in (-\infty, 1],

and a run's speed is the first step with :math:`p(t) \ge q` for ``q`` in ``fractions`` (``None``
when the step budget ends first).  Every init gets the same learning-rate grid and seeds; the
table keeps, per init, the learning rate with the smallest median steps to the last fraction.
Each run also records where it ends: the numerical rank and the norm of the weight change
:math:`\Delta W = sBA - O` (the [KKR25] question of zero versus non-zero init).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from landscapes.inits import INIT_NAMES, init_lora, shifted_problem, synthetic_weights
from landscapes.lora import lora_value
from landscapes.nuc import solve_nuc
from landscapes.problem import Problem
from landscapes.sosp import train
from verify.jlr import _save
from verify.verdict import Verdict

__all__ = ["SpeedRun", "speed_runs", "speed_table", "check_wyl_speed", "DEFAULT_LRS"]

#: Adam learning rates tried for every init.
DEFAULT_LRS: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2)


@dataclass(frozen=True)
class SpeedRun:
    """One training run of one init: speed, end point and the optimum it was measured against."""

    init: str
    seed: int
    lr: float
    steps: int
    steps_to: Mapping[str, int | None]
    start_value: float
    final_value: float
    optimum: float
    optimum_rel_gap: float
    optimum_ranks: tuple[int, ...]
    final_progress: float
    final_ranks: tuple[int, ...]
    final_delta_norm: float
    final_adapter_norm: float
    offset_norm: float
    diverged: bool
    seconds: float
    curve: tuple[tuple[int, float], ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for reports)."""
        d = asdict(self)
        d["steps_to"] = dict(self.steps_to)
        return d


def _key(q: float) -> str:
    return f"{q:g}"


def _curve_steps(steps: int) -> list[int]:
    """About 40 log-spaced steps (and 0) at which a run's progress is kept."""
    pts = {0, steps}
    x = 1.0
    while x < steps:
        pts.add(int(x))
        x *= 1.25
    return sorted(p for p in pts if p <= steps)


def speed_runs(
    problem: Problem,
    *,
    inits: Sequence[str] = ("vanilla", "gaussian", "loraga", "loraga-peft", "pissa"),
    rank: int = 4,
    seeds: Sequence[int] = (0, 1, 2),
    lrs: Sequence[float] = DEFAULT_LRS,
    steps: int = 1000,
    alpha: float | None = None,
    rslora: bool = True,
    fractions: Sequence[float] = (0.9, 0.99),
    gap_rtol: float = 1e-9,
    weights: Sequence[torch.Tensor] | None = None,
    rank_rtol: float = 1e-6,
    callback: Callable[[SpeedRun], None] | None = None,
) -> tuple[SpeedRun, ...]:
    """Train every (init, seed, lr) on ``problem`` and measure the steps to each fraction of the way.

    ``weights`` are the base weights for ``pissa`` (default :func:`~landscapes.inits.synthetic_weights`).
    ``callback`` receives each finished run (progress reporting, incremental saving).
    """
    for name in inits:
        if name not in INIT_NAMES:
            raise ValueError(f"inits: expected names from {INIT_NAMES}, got {name!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected a positive int, got {steps!r}")
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ValueError(f"seeds: expected a non-empty sequence of ints, got {list(seeds)!r}")
    if not lrs or any(not (isinstance(x, (int, float)) and x > 0 and math.isfinite(x)) for x in lrs):
        raise ValueError(f"lrs: expected positive learning rates, got {list(lrs)!r}")
    if not fractions or any(not (isinstance(q, float) and 0 < q <= 1) for q in fractions):
        raise ValueError(f"fractions: expected floats in (0, 1], got {list(fractions)!r}")
    W = weights if weights is not None else synthetic_weights(problem, seed=0)
    optima: dict[bytes, Any] = {}
    runs: list[SpeedRun] = []
    keep = set(_curve_steps(steps))
    for name in inits:
        for seed in seeds:
            ini = init_lora(problem, name, rank=rank, alpha=alpha, rslora=rslora, seed=seed, weights=W)
            sp = shifted_problem(problem, ini.offset)
            key = b"".join(o.detach().cpu().contiguous().numpy().tobytes() for o in ini.offset)
            if key not in optima:
                sol = solve_nuc(sp, gap_rtol=gap_rtol)
                optima[key] = sol
            sol = optima[key]
            f_star = sol.certificate.primal
            pt = ini.point()
            f_start = lora_value(sp, pt.U, pt.V)
            for lr in lrs:
                t0 = time.perf_counter()
                diverged = False
                try:
                    end, hist = train(sp, pt, optimizer="adam", steps=steps, lr=float(lr), record_every=1)
                except FloatingPointError:
                    diverged, end, hist = True, None, ()
                span = f_start - f_star
                prog = [(t, (f_start - f) / span if span > 0 else 1.0) for t, f in hist]
                steps_to: dict[str, int | None] = {}
                for q in fractions:
                    steps_to[_key(q)] = next((t for t, p in prog if p >= q), None)
                if end is not None:
                    delta = [u @ v.T - o for u, v, o in zip(end.U, end.V, ini.offset)]  # s B A - O
                    adapter = [u @ v.T for u, v in zip(end.U, end.V)]
                    ranks = []
                    for d in delta:
                        sv = torch.linalg.svdvals(d)
                        top = float(sv[0]) if sv.numel() else 0.0
                        ranks.append(int((sv > rank_rtol * top).sum()) if top > 0 else 0)
                    final_value = hist[-1][1]
                    dn = math.sqrt(sum(float(d.pow(2).sum()) for d in delta))
                    an = math.sqrt(sum(float(a.pow(2).sum()) for a in adapter))
                else:
                    ranks, final_value, dn, an = [], math.inf, math.inf, math.inf
                run = SpeedRun(
                    init=name,
                    seed=seed,
                    lr=float(lr),
                    steps=steps,
                    steps_to=steps_to,
                    start_value=f_start,
                    final_value=final_value,
                    optimum=f_star,
                    optimum_rel_gap=sol.certificate.rel_gap,
                    optimum_ranks=tuple(sol.ranks),
                    final_progress=prog[-1][1] if prog else -math.inf,
                    final_ranks=tuple(ranks),
                    final_delta_norm=dn,
                    final_adapter_norm=an,
                    offset_norm=math.sqrt(sum(float(o.pow(2).sum()) for o in ini.offset)),
                    diverged=diverged,
                    seconds=time.perf_counter() - t0,
                    curve=tuple((t, p) for t, p in prog if t in keep),
                )
                runs.append(run)
                if callback is not None:
                    callback(run)
    return tuple(runs)


def _stats(values: Sequence[int | None], steps: int) -> dict[str, Any]:
    """Median, min, max of steps (a run that never got there counts as ``> steps``)."""
    inf = [v if v is not None else math.inf for v in values]
    med = statistics.median(inf)
    return {
        "median": med if math.isfinite(med) else None,
        "min": min(inf) if math.isfinite(min(inf)) else None,
        "max": max(inf) if math.isfinite(max(inf)) else None,
        "reached": sum(v is not None for v in values),
        "runs": len(values),
        "budget": steps,
    }


def speed_table(runs: Sequence[SpeedRun], *, fractions: Sequence[float] = (0.9, 0.99)) -> dict[str, Any]:
    """Per init: the learning rate with the fewest median steps to the last fraction, and its statistics.

    Ties (or no run reaching it) fall back to the earlier fractions, then to the mean final progress.
    """
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r.init for r in runs):
        mine = [r for r in runs if r.init == name]
        by_lr: dict[float, list[SpeedRun]] = {}
        for r in mine:
            by_lr.setdefault(r.lr, []).append(r)

        def score(lr: float, by_lr: dict[float, list[SpeedRun]] = by_lr) -> tuple[float, ...]:
            rs = by_lr[lr]
            keys = []
            for q in reversed(fractions):
                vals = [r.steps_to[_key(q)] for r in rs]
                med = statistics.median([v if v is not None else math.inf for v in vals])
                keys.append(med)
            keys.append(-statistics.fmean([r.final_progress for r in rs]))
            return tuple(keys)

        best = min(by_lr, key=score)
        rs = by_lr[best]
        steps = rs[0].steps
        out[name] = {
            "lr": best,
            "steps_to": {_key(q): _stats([r.steps_to[_key(q)] for r in rs], steps) for q in fractions},
            "final_progress_median": statistics.median([r.final_progress for r in rs]),
            "final_ranks": [list(r.final_ranks) for r in rs],
            "final_delta_norm_median": statistics.median([r.final_delta_norm for r in rs]),
            "final_adapter_norm_median": statistics.median([r.final_adapter_norm for r in rs]),
            "offset_norm": rs[0].offset_norm,
            "optimum_ranks": list(rs[0].optimum_ranks),
            "diverged": sum(r.diverged for r in mine),
            "by_lr": {
                str(lr): {_key(q): _stats([r.steps_to[_key(q)] for r in v], steps) for q in fractions}
                for lr, v in by_lr.items()
            },
        }
    return out


def check_wyl_speed(
    problem: Problem,
    *,
    rank: int = 4,
    faster: str = "loraga",
    slower: str = "vanilla",
    factor: float = 1.0,
    fraction: float = 0.99,
    seeds: Sequence[int] = (0, 1, 2),
    lrs: Sequence[float] = DEFAULT_LRS,
    steps: int = 1000,
    alpha: float | None = None,
    rslora: bool = True,
    gap_rtol: float = 1e-9,
    save_dir: str | Path | None = None,
) -> Verdict:
    r"""WYL-speed: ``faster`` gets ``fraction`` of the way to the optimum ``factor`` x sooner than ``slower``.

    Each init runs at its best learning rate of ``lrs`` (fewest median steps).  With
    :math:`T_f`, :math:`T_s` the per-seed steps (a run that never gets there: :math:`+\infty`):
    ``holds`` when :math:`\text{factor}\cdot\max T_f \le \min T_s` (every seed of ``faster`` beats
    every seed of ``slower`` by the factor); ``violated`` when
    :math:`\text{factor}\cdot\min T_f > \max T_s`; ``inconclusive`` in between (the spreads
    overlap).  The paper's statement is the default (LoRA-GA faster than vanilla); a planted
    false variant (``factor=100``, or the inits swapped) must come out ``violated``.  A verdict on
    seeds is empirical evidence on this problem, not a proof; the reason says so.
    """
    claim = "WYL-speed"
    for name in (faster, slower):
        if name not in INIT_NAMES:
            raise ValueError(f"faster, slower: expected names from {INIT_NAMES}, got {name!r}")
    if not (isinstance(factor, (int, float)) and factor > 0 and math.isfinite(factor)):
        raise ValueError(f"factor: expected a positive number, got {factor!r}")
    if not (isinstance(fraction, float) and 0 < fraction <= 1):
        raise ValueError(f"fraction: expected a float in (0, 1], got {fraction!r}")
    opts: dict[str, Any] = {
        "rank": rank,
        "faster": faster,
        "slower": slower,
        "factor": factor,
        "fraction": fraction,
        "seeds": list(seeds),
        "lrs": list(lrs),
        "steps": steps,
        "alpha": alpha,
        "rslora": rslora,
        "optimizer": "adam",
    }
    t0 = time.perf_counter()
    runs = speed_runs(
        problem,
        inits=(faster, slower),
        rank=rank,
        seeds=seeds,
        lrs=lrs,
        steps=steps,
        alpha=alpha,
        rslora=rslora,
        fractions=(fraction,),
        gap_rtol=gap_rtol,
    )
    table = speed_table(runs, fractions=(fraction,))
    q = _key(fraction)

    def per_seed(name: str) -> list[float]:
        lr = table[name]["lr"]
        vals = [r.steps_to[q] for r in runs if r.init == name and r.lr == lr]
        return [float(v) if v is not None else math.inf for v in vals]

    tf, tsl = per_seed(faster), per_seed(slower)
    med_f, med_s = statistics.median(tf), statistics.median(tsl)
    ratio = (
        med_s / med_f
        if math.isfinite(med_f) and med_f > 0
        else (math.nan if not math.isfinite(med_s) else 0.0)
    )
    cert: dict[str, Any] = {
        "table": table,
        "steps_faster": tf,
        "steps_slower": tsl,
        "median_ratio_slower_over_faster": ratio,
        "runs": [r.to_dict() for r in runs],
    }
    timings = {"total": time.perf_counter() - t0}
    fp = problem.fingerprint()
    label = f"{faster} vs {slower} to {fraction:g} of the way (Adam, best lr each, {len(seeds)} seeds)"
    if all(not math.isfinite(v) for v in tf + tsl):
        return Verdict(
            claim, "inconclusive", fp, cert, f"{label}: no run got there within {steps} steps", timings, opts
        )
    if factor * max(tf) <= min(tsl):
        status, why = "holds", f"every {faster} run is at least {factor:g}x sooner"
    elif factor * min(tf) > max(tsl):
        status, why = "violated", f"no {faster} run is {factor:g}x sooner than any {slower} run"
    else:
        status, why = "inconclusive", "the seeds' spreads overlap"
    path = _save(problem, save_dir, claim, problem.zeros(), opts) if status == "violated" else None
    return Verdict(
        claim,
        status,  # type: ignore[arg-type]
        fp,
        cert,
        f"{label}: median steps {med_f:g} vs {med_s:g} (ratio {ratio:.3g}); {why} "
        "(empirical, on this problem)",
        timings,
        opts,
        path,
    )
