r"""WYL-speed: how fast each LoRA init reaches the certified optimum of the problem it trains.

Each init (``landscapes.inits``) trains the shifted problem of its weight offset
(:func:`~landscapes.inits.shifted_problem`) from its LoRA point with Adam (the L2 form of
:func:`landscapes.sosp.train`, weight decay ``lam`` inside the gradient).  Its objective
:math:`F = L(sBA - O) + \tfrac\lambda2(\|U\|^2 + \|V\|^2)` has the certified minimum
:math:`F^\star` of the NUC problem of the shifted problem (:func:`landscapes.nuc.solve_nuc`; equal
to the rank-``r`` LoRA minimum once ``r`` is at least the NUC solution's rank, which each run
records).  Progress after ``t`` steps is

.. math:: p(t) = \frac{F(0) - F(t)}{F(0) - F^\star}

(at most 1 up to the certified gap of :math:`F^\star`, which every run records),

and a run's speed is the first step with :math:`p(t) \ge q` for ``q`` in ``fractions`` (``None``
when the step budget ends first).  Every init gets the same learning-rate grid and seeds; the
table keeps, per init, the learning rate with the smallest median steps to the last fraction.
Each run also records where it ends: the numerical rank and the norm of the weight change
:math:`\Delta W = sBA - O` (the [KKR25] question of zero versus non-zero init).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from landscapes.inits import (
    INIT_NAMES,
    init_lora,
    lora_scale,
    sampled_gradient,
    shifted_problem,
    synthetic_weights,
)
from landscapes.lora import lora_value
from landscapes.nuc import _spectra, solve_nuc
from landscapes.problem import Problem
from landscapes.sosp import train
from theory.errors import UserInputError, finite_number, shown
from verify.checker import Judge, checker, fmt, save_counterexample
from verify.options import BOOL, NONNEG, POS, POS_OPT, SEED, TOL, Choice, Int, Rank, Real, Seq, Str
from verify.results import ResultsFile
from verify.verdict import Status, Verdict

__all__ = ["SpeedRun", "speed_runs", "speed_table", "check_wyl_speed", "DEFAULT_LRS"]

#: Relative gap of the certified optimum of each run, and the numerical-rank threshold of end points.
GAP_RTOL = 1e-9
RANK_RTOL = 1e-6

#: Adam learning rates tried for every init.
DEFAULT_LRS: tuple[float, ...] = (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)

#: The most steps a run may take (the cap of step counts in :mod:`verify.options`).
_STEPS = 10**7


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
    #: The seed whose run this one repeats (the init came out bit for bit the same), else ``None``.
    same_as_seed: int | None = None
    #: sha256 of the init's factors and offset (bytes), the key under which seeds are deduplicated.
    init_sha256: str | None = None

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
    gap_rtol: float = GAP_RTOL,
    weights: Sequence[torch.Tensor] | None = None,
    rank_rtol: float = RANK_RTOL,
    gradient: str = "sampled",
    callback: Callable[[SpeedRun], None] | None = None,
    reuse: dict[Any, SpeedRun] | None = None,
) -> tuple[SpeedRun, ...]:
    """Train every (init, seed, lr) on ``problem`` and measure the steps to each fraction of the way.

    ``weights`` are the base weights for ``pissa`` (default :func:`~landscapes.inits.synthetic_weights`).
    ``gradient`` is the LoRA-GA inits' ``G``: ``"sampled"`` (the reference code's estimate, 64
    mini-batches of 2 drawn with the run's seed; a dense ``J`` is needed) or ``"full"``.
    ``callback`` receives each finished run (progress reporting, incremental saving).  Training is
    deterministic given the init (full-batch Adam), so a seed whose init is bit for bit that of an
    earlier seed (LoRA-GA with the full gradient, PiSSA) repeats its runs instead of recomputing
    them (``same_as_seed``); ``reuse`` carries that memory across calls.
    """
    memo: dict[Any, SpeedRun] = reuse if reuse is not None else {}
    problem_sha = str(problem.name) + ":" + str(problem.fingerprint().get("sha256", ""))
    _check_inits_and_steps(inits, steps)
    _check_seeds(seeds)
    if not lrs or any(not (isinstance(x, (int, float)) and x > 0 and math.isfinite(x)) for x in lrs):
        raise UserInputError(f"lrs: expected positive learning rates, got {list(lrs)!r}")
    _check_fractions_and_gradient(fractions, gradient)
    W = weights if weights is not None else synthetic_weights(problem, seed=0)
    optima: dict[bytes, Any] = {}
    runs: list[SpeedRun] = []
    keep = set(_curve_steps(steps))
    for name in inits:
        for seed in seeds:
            ini = _make_init(
                problem, name, seed, rank=rank, alpha=alpha, rslora=rslora, weights=W, gradient=gradient
            )
            sp = shifted_problem(problem, ini.offset)
            key = b"".join(o.detach().cpu().contiguous().numpy().tobytes() for o in ini.offset)
            if key not in optima:
                optima[key] = solve_nuc(sp, gap_rtol=gap_rtol)
            pt = ini.point()
            fingerprint = _init_fingerprint(ini)
            start = _Start(name, seed, ini, sp, pt, optima[key], lora_value(sp, pt.U, pt.V), fingerprint)
            # Everything a run depends on besides the seed: the problem, the init (bit for bit),
            # its scale, the learning rate, the budget and what is measured.
            context = (problem_sha, fingerprint, ini.scale, steps, tuple(fractions), gap_rtol, rank_rtol)
            for lr in lrs:
                seen = memo.get((name, context, float(lr)))
                if seen is not None:
                    again = dataclasses.replace(seen, seed=seed, seconds=0.0, same_as_seed=seen.seed)
                    runs.append(again)
                    if callback is not None:
                        callback(again)
                    continue
                run = start.run(float(lr), steps, fractions, rank_rtol, keep)
                runs.append(run)
                memo[(name, context, float(lr))] = run
                if callback is not None:
                    callback(run)
    return tuple(runs)


@dataclass(frozen=True)
class _Start:
    """Where the runs of one init and seed start: the init, its shifted problem, point and optimum."""

    name: str
    seed: int
    ini: Any
    sp: Problem  # the problem shifted by the init's weight offset
    pt: Any  # the init's LoRA point
    sol: Any  # the certified NUC solution of sp
    f_start: float  # the objective at pt
    fingerprint: str  # sha256 of the init (_init_fingerprint)

    def run(
        self, lr: float, steps: int, fractions: Sequence[float], rank_rtol: float, keep: set[int]
    ) -> SpeedRun:
        """One run: Adam at ``lr`` for ``steps``; its progress curve keeps the steps in ``keep``."""
        ini, f_start = self.ini, self.f_start
        f_star = self.sol.certificate.primal
        t0 = time.perf_counter()
        diverged = False
        try:
            end, hist = train(self.sp, self.pt, optimizer="adam", steps=steps, lr=lr, record_every=1)
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
            ranks = list(_spectra(tuple(delta), rank_rtol)[1])
            final_value = hist[-1][1]
            dn = math.sqrt(sum(float(d.pow(2).sum()) for d in delta))
            an = math.sqrt(sum(float(a.pow(2).sum()) for a in adapter))
        else:
            ranks, final_value, dn, an = [], math.inf, math.inf, math.inf
        return SpeedRun(
            init=self.name,
            seed=self.seed,
            lr=lr,
            steps=steps,
            steps_to=steps_to,
            start_value=f_start,
            final_value=final_value,
            optimum=f_star,
            optimum_rel_gap=self.sol.certificate.rel_gap,
            optimum_ranks=tuple(self.sol.ranks),
            final_progress=prog[-1][1] if prog else -math.inf,
            final_ranks=tuple(ranks),
            final_delta_norm=dn,
            final_adapter_norm=an,
            offset_norm=math.sqrt(sum(float(o.pow(2).sum()) for o in ini.offset)),
            diverged=diverged,
            seconds=time.perf_counter() - t0,
            curve=tuple((t, p) for t, p in prog if t in keep),
            init_sha256=self.fingerprint,
        )


def _check_inits_and_steps(inits: Sequence[str], steps: int) -> None:
    for name in inits:
        if name not in INIT_NAMES:
            raise UserInputError(f"inits: expected names from {INIT_NAMES}, got {name!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserInputError(f"steps: expected a positive int, got {steps!r}")


def _check_seeds(seeds: Sequence[int]) -> None:
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise UserInputError(f"seeds: expected a non-empty sequence of ints, got {list(seeds)!r}")
    if len(set(seeds)) != len(seeds):
        raise UserInputError(f"seeds: expected distinct ints, got {list(seeds)!r}")


def _check_fractions_and_gradient(fractions: Sequence[float], gradient: str) -> None:
    if not fractions or any(not (isinstance(q, float) and 0 < q <= 1) for q in fractions):
        raise UserInputError(f"fractions: expected floats in (0, 1], got {list(fractions)!r}")
    if gradient not in ("sampled", "full"):
        raise UserInputError(f"gradient: expected 'sampled' or 'full', got {gradient!r}")


def _make_init(
    problem: Problem,
    name: str,
    seed: int,
    *,
    rank: int,
    alpha: float | None,
    rslora: bool,
    weights: Sequence[torch.Tensor] | None,
    gradient: str,
) -> Any:
    """The init of one run (LoRA-GA's ``G`` estimated with the run's seed when ``gradient="sampled"``)."""
    G = None
    if name.startswith("loraga") and gradient == "sampled":
        G = sampled_gradient(
            problem, batch_size=min(2, problem.N), batches=64, generator=torch.Generator().manual_seed(seed)
        )
    return init_lora(
        problem, name, rank=rank, alpha=alpha, rslora=rslora, seed=seed, weights=weights, gradient=G
    )


def _init_fingerprint(ini: Any) -> str:
    h = hashlib.sha256()
    for x in ini.B + ini.A + ini.offset:
        h.update(x.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


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
            # True when the seeds gave the same run (a deterministic init): its range says nothing.
            "identical_across_seeds": len(rs) > 1 and len({(tuple(r.curve), r.final_value) for r in rs}) == 1,
            "optimum_ranks": list(rs[0].optimum_ranks),
            "diverged": sum(r.diverged for r in mine),
            "by_lr": {
                str(lr): {_key(q): _stats([r.steps_to[_key(q)] for r in v], steps) for q in fractions}
                for lr, v in by_lr.items()
            },
        }
    return out


#: The paper's speed-up: "2-4x faster convergence" [WYL24]; WYL-speed tests its lower end.
PAPER_FACTOR = 2.0


def _decide(
    tf: Sequence[float],
    tsl: Sequence[float],
    factor: float,
    faster: str,
    slower: str,
    *,
    margin: float = 0.1,
    distinct: tuple[int, int] | None = None,
    steps: int | None = None,
) -> tuple[Status, str]:
    r"""The WYL-speed rule on per-seed steps (``inf``: never got there within the budget).

    ``steps`` is the step budget of the runs: a run that did not get there within it took at least
    ``steps + 1`` steps, a lower bound only (``steps=None``: budget unknown, the bound is 0).  A lower
    bound is sound for ``holds`` on the ``slower`` side and for ``violated`` on the ``faster`` side;
    a decision that needs an unfinished run's true value is ``inconclusive`` ("step budget too
    short"), never a verdict from treating it as infinitely slow.

    ``distinct`` = the numbers of distinct runs of ``faster`` and ``slower`` among their seeds
    (default: all distinct).  With :math:`T_f`, :math:`T_s` the per-seed steps:

    * ``inconclusive`` unless both inits have at least 2 distinct runs: a spread over seeds needs
      seeds that really differ (LoRA-GA's sampled ``G`` is the full gradient when ``N <= 128``,
      so all its seeds give the same run);
    * ``holds``: :math:`\min T_s \ge \text{factor}\cdot\max T_f` and :math:`\min T_s - \max T_f
      \ge 2` (every ``slower`` run takes ``factor`` times as many steps as every ``faster`` run;
      a one-step difference is not a difference);
    * ``violated`` (``faster`` is slower): every ``slower`` run got there,
      :math:`\min T_f > (1 + \text{margin})\max T_s` and :math:`\min T_f - \max T_s \ge 2`;
    * otherwise ``inconclusive``: faster but by less than ``factor`` ("not reproduced here"),
      slower by less than the margin or by one step, or overlapping spreads.

    The pairwise ratio range :math:`[\min T_s/\max T_f, \max T_s/\min T_f]` contains the ratio of
    the two medians with probability at least :math:`1 - 2^{1-n_f} - 2^{1-n_s}` (each seed range
    covers its median with probability :math:`1 - 2^{1-n}`, distribution-free, for independent seeds).
    """
    if distinct is not None and min(distinct) < 2:
        who = faster if distinct[0] < 2 else slower
        return "inconclusive", (
            f"the seeds of {who} do not differ ({distinct[0] if who == faster else distinct[1]} distinct "
            "run): no spread over seeds, not judged (LoRA-GA's sampled G needs N > 128 to vary with the seed)"
        )
    if not any(math.isfinite(v) for v in list(tf) + list(tsl)):
        return "inconclusive", "no run got there within the step budget: step budget too short"
    fast_all, slow_all = all(math.isfinite(v) for v in tf), all(math.isfinite(v) for v in tsl)
    # An unfinished run took at least steps + 1 steps (a lower bound, not infinity).
    floor = float(steps + 1) if steps is not None else 0.0
    tf = [v if math.isfinite(v) else max(floor, 0.0) for v in tf]
    tsl = [v if math.isfinite(v) else max(floor, 0.0) for v in tsl]
    if fast_all and min(tsl) >= factor * max(tf) and min(tsl) - max(tf) >= 2:
        return "holds", f"every {slower} run takes at least {factor:g}x the steps of every {faster} run"
    if slow_all and min(tf) > (1 + margin) * max(tsl) and min(tf) - max(tsl) >= 2:
        return "violated", (
            f"every {faster} run is slower than every {slower} run by more than the margin {margin:g}"
        )
    if not (fast_all and slow_all):
        return "inconclusive", (
            "some runs did not get there within the step budget and the comparison needs their steps: "
            "step budget too short"
        )
    if fast_all and min(tsl) - max(tf) >= 2:
        return "inconclusive", (
            f"{faster} is faster, but by less than the paper's {factor:g}x: not reproduced here"
        )
    if slow_all and min(tf) - max(tsl) >= 1:
        return "inconclusive", (
            f"{faster} is slower, but by less than the margin {margin:g} or by one step: not reproduced here"
        )
    return "inconclusive", "the seeds' spreads overlap (or runs did not get there): not reproduced here"


def _ratio_interval(
    tf: Sequence[float], tsl: Sequence[float], distinct: tuple[int, int] | None = None
) -> tuple[float, float, float]:
    """Pairwise range of ``T_slower / T_faster`` and its distribution-free coverage of the median ratio.

    The coverage counts the distinct runs (``distinct``, default all) of each init: repeated runs are
    not independent draws.  It is conditional on the learning rate, which was chosen on the same seeds.
    """

    def div(a: float, b: float) -> float:
        if math.isinf(a) and math.isinf(b):
            return math.nan
        return a / b if b > 0 else math.inf

    lo, hi = div(min(tsl), max(tf)), div(max(tsl), min(tf))
    nf, ns = distinct if distinct is not None else (len(tf), len(tsl))
    coverage = max(0.0, 1 - 2.0 ** (1 - nf) - 2.0 ** (1 - ns))
    return lo, hi, coverage


#: A run's certified optimum must be this accurate (relative gap) for its progress to count.
OPTIMUM_RTOL = 1e-6


def _uncertified(runs: Sequence[SpeedRun]) -> list[SpeedRun]:
    return [r for r in runs if not r.optimum_rel_gap <= OPTIMUM_RTOL]


def _speed_evidence(c: Mapping[str, Any], d: Mapping[str, Any]) -> list[str]:
    """The per-seed steps of both inits, the median ratio and the range over seed pairs."""
    if "steps_faster" not in c:
        return []
    parts = [
        f"steps {fmt(c['steps_faster'])} vs {fmt(c['steps_slower'])}",
        f"median ratio {fmt(c.get('median_ratio_slower_over_faster'))}",
    ]
    if "ratio_interval" in c:
        parts.append(f"pairs [{fmt(c['ratio_interval'][0])}, {fmt(c['ratio_interval'][1])}]")
    return parts


_SPEED_CERTIFICATE = ("table", "runs", "steps_faster", "steps_slower", "median_ratio_slower_over_faster")


@checker(
    "WYL-speed",
    options={
        "rank": Rank(),
        "faster": Str(),  # (the checker names the inits: "faster, slower: expected names from ...")
        "slower": Str(),
        "factor": Real(expect="a positive number (finite, not a bool)"),
        "margin": NONNEG,
        "fraction": Real(0.0, 1.0, hi_open=False),
        "seeds": Seq(SEED, 1, 1_000, distinct=True),
        "lrs": Seq(POS, 1, 1_000),
        "steps": Int(1, _STEPS),
        "alpha": POS_OPT,
        "rslora": BOOL,
        "gap_rtol": TOL,
        "gradient": Choice(("sampled", "full")),
    },
    certificate={st: [_SPEED_CERTIFICATE] for st in ("holds", "violated")},
    evidence=_speed_evidence,
)
def check_wyl_speed(
    problem: Problem,
    *,
    rank: int = 4,
    faster: str = "loraga",
    slower: str = "vanilla",
    factor: float = PAPER_FACTOR,
    margin: float = 0.1,
    fraction: float = 0.99,
    seeds: Sequence[int] = (0, 1, 2),
    lrs: Sequence[float] = DEFAULT_LRS,
    steps: int = 1000,
    alpha: float | None = None,
    rslora: bool = True,
    gap_rtol: float = 1e-9,
    gradient: str = "sampled",
    save_dir: str | Path | None = None,
) -> Verdict:
    r"""WYL-speed: ``faster`` gets ``fraction`` of the way to the optimum ``factor`` x sooner than ``slower``.

    Each init runs at its best learning rate of ``lrs`` (fewest median steps), on the same seeds;
    the rule on the per-seed steps is :func:`_decide`.  The claim tested is the paper's "2-4x
    faster convergence" at its lower end (``factor = 2``): ``holds`` when every ``slower`` run
    takes at least ``factor`` times the steps of every ``faster`` run; ``violated`` only when
    ``faster`` is *slower*, every run of it by more than ``margin`` (relative) and by more than one
    step; anything in between (faster by less than ``factor``, slower by a step) is "not reproduced
    here" (``inconclusive``, with the numbers).  Both inits need seeds that really differ: LoRA-GA's
    sampled ``G`` (``gradient="sampled"``) varies with the seed only when ``N > 128``, so on smaller
    problems its runs are identical and the verdict is ``inconclusive``.  Also ``inconclusive``
    whenever an optimum is not certified to :data:`OPTIMUM_RTOL`.  The reason gives the pairwise
    ratio range and its distribution-free coverage of the median ratio.  Planted false variant: the
    inits swapped (``faster="vanilla", slower="loraga"``) on a problem where LoRA-GA is faster.  A
    verdict on seeds is empirical evidence on this problem, not a proof; the reason says so.

    Certificate: ``table`` (:func:`speed_table` of the two inits), ``runs`` (every run,
    :meth:`SpeedRun.to_dict`), and the numbers of :func:`_judge`: ``steps_faster``, ``steps_slower``
    (per seed, at each init's best learning rate; ``inf``: not there within the budget),
    ``median_ratio_slower_over_faster``, ``ratio_interval`` (over seed pairs) with its
    ``ratio_interval_coverage``, ``distinct_runs``, ``factor``, ``margin``.
    """
    claim = "WYL-speed"
    for name in (faster, slower):
        if name not in INIT_NAMES:
            raise UserInputError(f"faster, slower: expected names from {INIT_NAMES}, got {name!r}")
    if isinstance(factor, bool) or not (isinstance(factor, (int, float)) and 0 < factor < math.inf):
        raise UserInputError(f"factor: expected a positive number (finite, not a bool), got {factor!r}")
    if (
        not seeds
        or any(isinstance(x, bool) or not isinstance(x, int) for x in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise UserInputError(f"seeds: expected distinct ints (a non-empty sequence), got {list(seeds)!r}")
    if isinstance(margin, bool) or not (isinstance(margin, (int, float)) and 0 <= margin < math.inf):
        raise UserInputError(f"margin: expected a finite number >= 0, got {margin!r}")
    if not (isinstance(fraction, float) and 0 < fraction <= 1):
        raise UserInputError(f"fraction: expected a float in (0, 1], got {fraction!r}")
    opts: dict[str, Any] = {
        "rank": rank,
        "faster": faster,
        "slower": slower,
        "factor": factor,
        "margin": margin,
        "fraction": fraction,
        "seeds": list(seeds),
        "lrs": list(lrs),
        "steps": steps,
        "alpha": alpha,
        "rslora": rslora,
        "gradient": gradient,
        "optimizer": "adam",
    }
    judge = Judge(claim, problem.fingerprint(), opts)
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
        gradient=gradient,
    )
    table = speed_table(runs, fractions=(fraction,))
    status, reason, numbers = _judge(runs, table, fraction, faster, slower, factor, margin)
    cert: dict[str, Any] = {"table": table, **numbers, "runs": [r.to_dict() for r in runs]}
    judge.timings["total"] = time.perf_counter() - t0
    if status == "violated":
        path = save_counterexample(problem, save_dir, claim, problem.zeros(), opts)
        return judge.violated(cert, reason, counterexample=path)
    return judge.verdict(status, cert, reason)


def _judge(
    runs: Sequence[SpeedRun],
    table: Mapping[str, Any],
    fraction: float,
    faster: str,
    slower: str,
    factor: float,
    margin: float = 0.1,
) -> tuple[Status, str, dict[str, Any]]:
    """Status, reason and per-seed numbers of WYL-speed from finished runs (each init at its table lr)."""
    q = _key(fraction)

    def mine(name: str) -> list[SpeedRun]:
        return [r for r in runs if r.init == name and r.lr == table[name]["lr"]]

    def per_seed(name: str) -> list[float]:
        return [float(v) if (v := r.steps_to.get(q)) is not None else math.inf for r in mine(name)]

    def n_distinct(name: str) -> int:
        return len({(tuple(tuple(x) for x in r.curve), r.final_value) for r in mine(name)})

    tf, tsl = per_seed(faster), per_seed(slower)
    med_f, med_s = statistics.median(tf), statistics.median(tsl)
    ratio = (
        med_s / med_f
        if math.isfinite(med_f) and med_f > 0
        else (math.nan if not math.isfinite(med_s) else 0.0)
    )
    distinct = (n_distinct(faster), n_distinct(slower))
    both = mine(faster) + mine(slower)
    budget = min(r.steps for r in both) if both else None
    status, why = _decide(tf, tsl, factor, faster, slower, margin=margin, distinct=distinct, steps=budget)
    if _uncertified(runs):
        status, why = "inconclusive", f"an optimum was not certified to {OPTIMUM_RTOL:g}"
    lo, hi, coverage = _ratio_interval(tf, tsl, distinct)
    reason = (
        f"{faster} vs {slower} to {fraction:g} of the way (Adam, best lr each, {len(tf)} seeds, "
        f"{distinct[0]} and {distinct[1]} distinct runs): median steps {med_f:g} vs {med_s:g} (speed-up "
        f"{ratio:.3g}; over seed pairs [{lo:.3g}, {hi:.3g}], covering the median ratio with probability "
        f">= {coverage:.2g}, given the lr chosen on the same seeds); claim: >= {factor:g}x; {why} "
        "(empirical, on this problem)"
    )
    numbers = {
        "steps_faster": tf,
        "steps_slower": tsl,
        "median_ratio_slower_over_faster": ratio,
        "ratio_interval": [lo, hi],
        "ratio_interval_coverage": coverage,
        "distinct_runs": list(distinct),
        "factor": factor,
        "margin": margin,
    }
    return status, reason, numbers


#: Problems of ``loracheck speed`` (suite specs: plain data, rebuilt by
#: :func:`landscapes.catalog.build_problem`).
SPEED_PROBLEMS: dict[str, tuple[str, dict[str, Any]]] = {
    "teacher": (
        "teacher",
        dict(K=2, N=16, blocks=[(32, 32)], lam=0.01, teacher_rank=2, loss="squared", seed=0),
    ),
    "features": (
        "random_features",
        dict(K=2, N=24, m=32, n=32, lam=0.01, tokens=4, loss="cross_entropy", seed=2),
    ),
    "minilm": ("reviews", dict(N=32, K=2, lam=0.01, loss="cross_entropy", seed=0)),
}

#: The format of ``speed.json`` (:mod:`verify.results`), at version :data:`SPEED_VERSION`; files
#: written before the ``version`` key said ``loracheck.speed/1`` and are still resumed and drawn.
SPEED_FORMAT = "loracheck.speed"
SPEED_VERSION = 1


def speed_experiment(
    problems: Sequence[str],
    *,
    out: str | Path,
    inits: Sequence[str] = INIT_NAMES,
    rank: int = 4,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    lrs: Sequence[float] = DEFAULT_LRS,
    steps: int = 2000,
    alpha: float | None = None,
    rslora: bool = True,
    fractions: Sequence[float] = (0.9, 0.99),
    gradient: str = "sampled",
    fresh: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run :func:`speed_runs` on named problems (:data:`SPEED_PROBLEMS`) and write ``out`` (JSON).

    The file is rewritten atomically after every run; re-running with the same configuration
    keeps the finished runs of an interrupted file (``fresh=True`` starts over).  Per problem it
    holds the runs, :func:`speed_table` and the WYL-speed verdict (``loraga`` vs ``vanilla`` at the
    last fraction, when both are among ``inits``).
    """
    from tqdm.auto import tqdm

    from verify.verdict import jsonable

    # Every option is checked before anything is written (an earlier file is never lost to a typo).
    _check_experiment_options(problems, inits, rank, seeds, lrs, steps, fractions, gradient)
    config = {
        "problems": {
            n: {"generator": SPEED_PROBLEMS[n][0], "kwargs": SPEED_PROBLEMS[n][1]} for n in problems
        },
        "inits": list(inits),
        "rank": rank,
        "seeds": list(seeds),
        "lrs": [float(x) for x in lrs],
        "steps": steps,
        "alpha": alpha,
        "rslora": rslora,
        "fractions": list(fractions),
        "gradient": gradient,
        # What "sampled" means (files of an older estimator are not resumed into this one).
        "sampled_gradient": "reference code: 64 batches of 2, each example once",
        "optimizer": "adam",
    }
    path = Path(out)
    file = ResultsFile(path, fmt=SPEED_FORMAT, version=SPEED_VERSION, noun="a speed file")
    grid = _SpeedGrid(tuple(inits), tuple(seeds), tuple(lrs), steps, tuple(fractions))
    data = _resumed(file, jsonable(config), problems, grid, fresh)
    t_start = time.perf_counter()
    total = len(problems) * len(inits) * len(seeds) * len(lrs)
    bar = tqdm(total=total, desc="speed", unit="run", disable=None if progress is None else not progress)

    def save() -> None:
        file.save(jsonable(data))

    built = _built_problems(data, problems, grid, rank, path)
    computed = False
    try:
        for pname in problems:
            entry = data["problems"].setdefault(pname, {"runs": []})
            done = {(r["init"], r["seed"], float(r["lr"])) for r in entry["runs"]}
            bar.update(len(done))
            todo = [
                (i, s, float(lr)) for i in inits for s in seeds for lr in lrs if (i, s, float(lr)) not in done
            ]
            if pname not in built:
                # Every run finished earlier: the table and the verdict are recomputed from them.
                _tabulate(entry, fractions, entry["problem"])
                continue
            problem = built[pname]
            computed = True
            entry["problem"] = problem.fingerprint()
            _run_missing(
                entry, problem, pname, inits, todo, bar, save,
                rank=rank, steps=steps, alpha=alpha, rslora=rslora, fractions=fractions, gradient=gradient,
            )  # fmt: skip
            _tabulate(entry, fractions, problem.fingerprint())
            save()
    finally:
        bar.close()
    data["complete"] = True
    if computed or "seconds" not in data:
        data["seconds"] = data.get("seconds", 0.0) + time.perf_counter() - t_start
    save()
    return data


def _check_experiment_options(
    problems: Sequence[str],
    inits: Sequence[str],
    rank: int,
    seeds: Sequence[int],
    lrs: Sequence[float],
    steps: int,
    fractions: Sequence[float],
    gradient: str,
) -> None:
    """Refuse the options of :func:`speed_experiment` before anything is written."""
    for name in problems:
        if name not in SPEED_PROBLEMS:
            raise UserInputError(f"problems: expected names from {', '.join(SPEED_PROBLEMS)}, got {name!r}")
    _check_inits_and_steps(inits, steps)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise UserInputError(f"rank: expected a positive int, got {rank!r}")
    _check_seeds(seeds)
    if not lrs or any(not (isinstance(x, (int, float)) and 0 < x < math.inf) for x in lrs):
        raise UserInputError(f"lrs: expected positive finite learning rates, got {list(lrs)!r}")
    _check_fractions_and_gradient(fractions, gradient)


def _resumed(
    file: ResultsFile, config: Any, problems: Sequence[str], grid: _SpeedGrid, fresh: bool
) -> dict[str, Any]:
    """The data of ``file`` to resume (checked), or a new file's data (``fresh``, or no file there)."""
    data = file.load(
        file.new(config=config, problems={}, complete=False),
        identity=("config",),
        fresh=fresh,
        contents="runs",
        check=lambda old, where: _check_speed_data(old, where, problems, grid),
    )
    data["complete"] = False
    return data


def _built_problems(
    data: Mapping[str, Any], problems: Sequence[str], grid: _SpeedGrid, rank: int, path: Path
) -> dict[str, Problem]:
    """The problems that still have runs to do, built, with the rank checked against every block.

    Built first, so that a bad rank fails before any run is written (a file of another
    configuration is never overwritten).  A problem whose runs are all finished (and whose
    fingerprint was stored) is not rebuilt: only its table and verdict are recomputed from the runs
    (a stored table or verdict is never reused).
    """
    from landscapes.catalog import ProblemSpec, build_problem
    from verify.verdict import jsonable

    built: dict[str, Problem] = {}
    for pname in problems:
        entry = data["problems"].get(pname, {})
        finished = {(r["init"], r["seed"], float(r["lr"])) for r in entry.get("runs", [])}
        if "problem" in entry and all(
            (i, s, float(lr)) in finished for i in grid.inits for s in grid.seeds for lr in grid.lrs
        ):
            continue
        gen, kwargs = SPEED_PROBLEMS[pname]
        problem = build_problem(ProblemSpec(pname, gen, dict(kwargs), ()))
        for j, (m, n) in enumerate(problem.blocks):
            need = 2 * rank if any(i.startswith("loraga") for i in grid.inits) else rank
            if need > min(m, n):
                raise UserInputError(
                    f"rank: expected {'2 r' if need > rank else 'r'} <= min(m, n) = {min(m, n)} on block {j} "
                    f"of {pname}, got r = {rank}"
                )
        if "problem" in entry and entry["problem"] != jsonable(problem.fingerprint()):
            raise UserInputError(
                f"out: {str(path)!r} holds runs of another {pname} problem (its fingerprint differs); "
                "use fresh (--fresh) or another directory"
            )
        built[pname] = problem
    return built


def _run_missing(
    entry: dict[str, Any],
    problem: Problem,
    pname: str,
    inits: Sequence[str],
    todo: Sequence[tuple[str, int, float]],
    bar: Any,
    save: Callable[[], None],
    *,
    rank: int,
    steps: int,
    alpha: float | None,
    rslora: bool,
    fractions: Sequence[float],
    gradient: str,
) -> None:
    """Run the ``todo`` (init, seed, lr) of one problem, appending each run to ``entry`` and saving."""
    W: tuple[torch.Tensor, ...] | None = None  # pissa's base weights: the model's when it has one
    if "pissa" in inits and "model_path" in problem.meta:
        from landscapes.transformer.encoder import target_weights

        W = target_weights(problem)
    # Finished runs seed the memory of deterministic inits, by the init hash each run stored
    # when it was computed (a resumed file repeats them too; a run without one is not reused).
    memo: dict[Any, SpeedRun] = {}
    psha = str(problem.name) + ":" + str(problem.fingerprint().get("sha256", ""))
    for r in entry["runs"]:
        if r.get("same_as_seed") is None and r.get("init_sha256"):
            scale = lora_scale(alpha if alpha is not None else 2.0 * rank, rank, rslora=rslora)
            ctx = (psha, r["init_sha256"], scale, steps, tuple(fractions), GAP_RTOL, RANK_RTOL)
            memo[(r["init"], ctx, float(r["lr"]))] = _run_from_dict(r)
    entry["pissa_weights"] = "the model's" if "model_path" in problem.meta else "synthetic_weights(seed=0)"
    for init_name, seed in dict.fromkeys((i, s) for i, s, _ in todo):
        lr_todo = [lr for i, s, lr in todo if (i, s) == (init_name, seed)]
        bar.set_postfix_str(f"{pname}: {init_name} seed {seed}")

        def keep(run: SpeedRun) -> None:
            entry["runs"].append(run.to_dict())
            save()
            bar.update(1)

        speed_runs(
            problem,
            inits=(init_name,),
            weights=W,
            reuse=memo,
            rank=rank,
            seeds=(seed,),
            lrs=lr_todo,
            steps=steps,
            alpha=alpha,
            rslora=rslora,
            fractions=fractions,
            gradient=gradient,
            callback=keep,
        )


def _tabulate(entry: dict[str, Any], fractions: Sequence[float], fingerprint: Mapping[str, Any]) -> None:
    """The table and the verdict of one problem's runs, recomputed from them into ``entry``."""
    runs = [_run_from_dict(r) for r in entry["runs"]]
    entry["table"] = speed_table(runs, fractions=fractions)
    entry["verdict"] = _speed_verdict(runs, entry["table"], fractions[-1], fingerprint).to_dict()


#: The float fields of a saved run (JSON numbers, or "inf", "-inf", "nan" as :func:`jsonable` writes them).
_RUN_FLOATS = (
    "start_value",
    "final_value",
    "optimum",
    "optimum_rel_gap",
    "final_progress",
    "final_delta_norm",
    "final_adapter_norm",
    "offset_norm",
    "seconds",
)


def _json_float(value: Any) -> float:
    """A float field of a saved run as a float (``"inf"`` etc. are how JSON holds non-finite ones)."""
    return float(value)


def _run_from_dict(d: Mapping[str, Any]) -> SpeedRun:
    """The :class:`SpeedRun` of a saved run (checked by :func:`_check_speed_run` when read from a file)."""
    fields = dict(d)
    for k in ("optimum_ranks", "final_ranks"):
        fields[k] = tuple(int(v) for v in fields[k])
    fields["curve"] = tuple((int(t), _json_float(p)) for t, p in fields["curve"])
    for k in _RUN_FLOATS:
        fields[k] = _json_float(fields[k])
    fields["lr"] = float(fields["lr"])
    return SpeedRun(**fields)


def _need(ok: bool, where: str, expected: str, value: Any) -> None:
    if not ok:
        raise UserInputError(f"{where}: expected {expected}, got {shown(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_number(value: Any) -> bool:
    """A finite number, or a non-finite float as :func:`jsonable` writes it ("inf", "-inf", "nan")."""
    return finite_number(value) or (isinstance(value, str) and value in ("inf", "-inf", "nan"))


@dataclass(frozen=True)
class _SpeedGrid:
    """The runs a ``speed.json`` may hold: the command's inits, seeds, rates, steps and fractions."""

    inits: tuple[str, ...]
    seeds: tuple[int, ...]
    lrs: tuple[float, ...]
    steps: int
    fractions: tuple[float, ...]


def _check_speed_run(run: Any, where: str, grid: _SpeedGrid) -> None:
    """Every field of one saved run: what :func:`_run_from_dict`, the table and the verdict read."""
    _need(isinstance(run, Mapping), where, "a JSON object (a run)", run)
    fields = {f.name for f in dataclasses.fields(SpeedRun)}
    optional = {"same_as_seed", "init_sha256"}
    for k in sorted(fields - optional):
        if k not in run:
            raise UserInputError(f"{where}: missing {k!r}")
    extra = sorted(str(k) for k in run if k not in fields)
    _need(not extra, where, f"only the fields of a run ({', '.join(sorted(fields))})", extra)
    init = run["init"]
    _need(isinstance(init, str) and init in grid.inits, f"{where} 'init'", f"one of {list(grid.inits)}", init)
    seed = run["seed"]
    _need(
        _is_int(seed) and seed in grid.seeds, f"{where} 'seed'", f"one of the seeds {list(grid.seeds)}", seed
    )
    lr = run["lr"]
    rates = {float(x) for x in grid.lrs}
    ok = finite_number(lr) and float(lr) in rates
    _need(ok, f"{where} 'lr'", f"one of the learning rates {sorted(rates)}", lr)
    _need(
        _is_int(run["steps"]) and run["steps"] == grid.steps,
        f"{where} 'steps'",
        f"{grid.steps}",
        run["steps"],
    )
    st = run["steps_to"]
    keys = [_key(q) for q in grid.fractions]
    _need(
        isinstance(st, Mapping) and sorted(st) == sorted(keys),
        f"{where} 'steps_to'",
        f"a JSON object with the keys {keys}",
        st,
    )
    for k in keys:
        v = st[k]
        ok = v is None or (_is_int(v) and 0 <= v <= grid.steps)
        _need(ok, f"{where} 'steps_to' {k!r}", f"null or an int in [0, {grid.steps}]", v)
    for k in _RUN_FLOATS:
        _need(_json_number(run[k]), f"{where} {k!r}", "a number", run[k])
    for k in ("optimum_ranks", "final_ranks"):
        v = run[k]
        ok = isinstance(v, list) and all(_is_int(x) and 0 <= x <= 1 << 31 for x in v)
        _need(ok, f"{where} {k!r}", "a list of ints >= 0", v)
    _need(isinstance(run["diverged"], bool), f"{where} 'diverged'", "a bool", run["diverged"])
    curve = run["curve"]
    _need(isinstance(curve, list), f"{where} 'curve'", "a list of [step, progress] pairs", curve)
    for i, pt in enumerate(curve):
        ok = (
            isinstance(pt, list)
            and len(pt) == 2
            and _is_int(pt[0])
            and 0 <= pt[0] <= grid.steps
            and _json_number(pt[1])
        )
        _need(ok, f"{where} 'curve'[{i}]", f"a [step, progress] pair (step an int in [0, {grid.steps}])", pt)
    same = run.get("same_as_seed")
    ok = same is None or (_is_int(same) and same in grid.seeds)
    _need(ok, f"{where} 'same_as_seed'", "null or one of the seeds", same)
    sha = run.get("init_sha256")
    _need(sha is None or isinstance(sha, str), f"{where} 'init_sha256'", "null or a str", sha)


def _check_speed_data(
    data: Mapping[str, Any],
    where: str,
    problems: Sequence[str],
    grid: _SpeedGrid,
) -> None:
    """Refuse a ``speed.json`` whose fields are not what :func:`speed_experiment` writes.

    A saved file handed back in is input (it may be forged or damaged): every field that the resume
    reads is checked before any of it is used.  Tables and verdicts are not checked: they are never
    read back, but recomputed from the runs.
    """
    probs: Any = data.get("problems")
    _need(isinstance(probs, Mapping), f"{where}: 'problems'", "a JSON object", probs)
    for pname, entry in probs.items():
        at = f"{where}: 'problems' {shown(pname)}"
        _need(pname in problems, f"{where}: 'problems'", f"only the problems {list(problems)}", pname)
        _need(isinstance(entry, Mapping), at, "a JSON object", entry)
        runs = entry.get("runs")
        _need(isinstance(runs, list), f"{at} 'runs'", "a list of runs", runs)
        seen: set[tuple[str, int, float]] = set()
        for i, run in enumerate(runs):
            _check_speed_run(
                run,
                f"{at} 'runs'[{i}]",
                grid,
            )
            key = (run["init"], run["seed"], float(run["lr"]))
            _need(key not in seen, f"{at} 'runs'[{i}]", "one run per (init, seed, lr)", list(key))
            seen.add(key)
        if "problem" in entry:
            _check_fingerprint(entry["problem"], f"{at} 'problem'")
    sec = data.get("seconds", 0.0)
    _need(finite_number(sec) and sec >= 0, f"{where}: 'seconds'", "a finite number >= 0", sec)


def _check_fingerprint(fp: Any, where: str) -> None:
    """A stored problem fingerprint (:meth:`Problem.fingerprint`): the fields the report prints."""
    _need(isinstance(fp, Mapping), where, "a JSON object (a problem fingerprint)", fp)
    for k in ("name", "loss", "sha256"):
        _need(isinstance(fp.get(k), str), f"{where} {k!r}", "a str", fp.get(k))
    for k in ("N", "K"):
        _need(_is_int(fp.get(k)) and fp[k] >= 1, f"{where} {k!r}", "a positive int", fp.get(k))
    blocks = fp.get("blocks")
    ok = isinstance(blocks, list) and all(
        isinstance(b, list) and len(b) == 2 and all(_is_int(x) and x >= 1 for x in b) for b in blocks
    )
    _need(ok, f"{where} 'blocks'", "a list of [m, n] pairs of positive ints", blocks)
    lam = fp.get("lam")
    ok = isinstance(lam, list) and all(finite_number(x) for x in lam)
    _need(ok, f"{where} 'lam'", "a list of finite numbers", lam)


def _speed_verdict(
    runs: Sequence[SpeedRun], table: Mapping[str, Any], fraction: float, fingerprint: Mapping[str, Any]
) -> Verdict:
    """The WYL-speed verdict (loraga vs vanilla) of finished runs, by the rule of :func:`check_wyl_speed`.

    ``fingerprint`` is the problem's (:meth:`~landscapes.problem.Problem.fingerprint`).
    """
    if "loraga" not in table or "vanilla" not in table:
        return Judge("WYL-speed", dict(fingerprint), {}).inconclusive(
            {}, "needs both loraga and vanilla runs"
        )
    status, reason, numbers = _judge(runs, table, fraction, "loraga", "vanilla", PAPER_FACTOR)
    opts = {
        "faster": "loraga",
        "slower": "vanilla",
        "factor": PAPER_FACTOR,
        "margin": 0.1,
        "fraction": fraction,
    }
    return Judge("WYL-speed", dict(fingerprint), opts).verdict(status, numbers, reason)
