"""The default suite of ``loracheck run``: synthetic problems of several (K, N, m, n, lam, loss).

A suite is data: a list of :class:`ProblemSpec` (a generator name and its keyword arguments) and
the claims to check on each.  Reports record the specs, so a reader can rebuild every problem.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from landscapes.catalog import ProblemSpec, build_problem
from landscapes.nuc import NucSolution, solve_nuc
from landscapes.threads import LARGE_WORK, gradient_work, work_threads
from theory.errors import UserInputError
from verify.registry import EVIDENCE_CLAIMS, NUC_CLAIMS, get_checker
from verify.verdict import Verdict, jsonable

__all__ = [
    "ProblemSpec",
    "DEFAULT_SUITE",
    "REAL_SUITE",
    "HSK_SUITE",
    "build_problem",
    "run_suite",
    "suite_tasks",
    "finished_verdicts",
]


_RANK = ("JLR-rank-FT", "JLR-rank-NUC", "JLR-equiv", "JLR-magnitude", "JLR-zero-saddle")

DEFAULT_SUITE: tuple[ProblemSpec, ...] = (
    ProblemSpec(
        "gauss-sq-K1",
        "gaussian",
        dict(K=1, N=20, blocks=[(12, 10)], lam=0.05, loss="squared", seed=0),
        _RANK + ("JLR-no-spurious", "JLR-spurious-below"),
        note="second-order checks at r = r_max + 1 = 6 (no-spurious) and r = 1 (search below the bound)",
        checker_options={
            "JLR-no-spurious": {"n_starts": 12},
            "JLR-spurious-below": {"n_starts": 12, "rank": 1},
        },
    ),
    ProblemSpec(
        "teacher-sq-K2",
        "teacher",
        dict(K=2, N=16, blocks=[(24, 20)], lam=0.02, teacher_rank=2, loss="squared", seed=1),
        _RANK + ("WYL-alignment",),
        note="WYL-alignment of vanilla LoRA (zero B, Kaiming-uniform A): about ||G P_row(A0)|| / ||G||",
        checker_options={"WYL-alignment": {"init": "vanilla"}},
    ),
    ProblemSpec(
        "features-ce-K2",
        "random_features",
        dict(K=2, N=24, m=20, n=16, lam=0.01, tokens=4, loss="cross_entropy", seed=2),
        ("JLR-rank-NUC", "JLR-equiv", "JLR-magnitude", "JLR-zero-saddle", "JLR-no-spurious")
        + ("WYL-first-step", "WYL-directions", "WYL-unchanged", "WYL-alignment"),
        note="separable: FT has no minimizer, so JLR-rank-FT is not run here; LoRA-GA at r = 4",
        checker_options={"JLR-no-spurious": {"n_starts": 9}},
    ),
    ProblemSpec(
        "loraga-pipeline-sq-K1",
        "planted_gradient",
        dict(
            N=256,
            m=24,
            n=20,
            spectrum=[1.0, 0.98, 0.96, 0.94, 0.92, 0.9, 0.88, 0.86] + [0.05] * 12,
            spread=0.1,
            seed=0,
        ),
        ("WYL-first-step",),
        note="LoRA-GA as the reference code runs it, r = 4: G from 64 mini-batches of 2 (128 of N = 256 "
        "examples), randomized SVD with q = 4r, niter = 4; per-example gradients M + noise (10 % spread), "
        "gap sigma_8 - sigma_9 = 0.81; tolerance from the estimator and the gap (Wedin)",
        checker_options={"WYL-first-step": {"rank": 4, "gradient": "sampled", "svd": "randomized"}},
    ),
    ProblemSpec(
        "tiny-sq-K1",
        "gaussian",
        dict(K=1, N=6, blocks=[(6, 5)], lam=0.02, loss="squared", seed=5),
        ("JLR-gd",),
        note="GD, SGD (batch 3) and Adam with weight decay, 20000 steps each, r = 4 > r_max = 3",
        expected={
            "JLR-gd": (
                "inconclusive",
                "SGD with a constant step from the small start stays about 2e-5 above the optimum after "
                "20000 steps (its noise floor), so it is neither certified global nor a counterexample",
            )
        },
    ),
    ProblemSpec(
        "lowrankJ-ce-K2",
        "gaussian",
        dict(K=2, N=60, blocks=[(24, 24)], lam=0.01, loss="cross_entropy", seed=3, jacobian_rank=10),
        ("JLR-rank-FT", "JLR-rank-NUC", "JLR-magnitude"),
        note="J of rank 10: cross-entropy is not separable, FT has a (full-rank) minimizer",
    ),
    ProblemSpec(
        "gauss-logistic-K1",
        "gaussian",
        dict(K=1, N=24, blocks=[(16, 16)], lam=0.01, loss="logistic", seed=4),
        ("JLR-rank-NUC", "JLR-equiv", "JLR-magnitude", "JLR-zero-saddle"),
    ),
    ProblemSpec(
        "two-blocks-sq-K2",
        "gaussian",
        dict(K=2, N=12, blocks=[(16, 16), (16, 12)], lam=[0.01, 0.02], loss="squared", seed=5),
        ("JLR-rank-FT", "JLR-rank-blocks", "JLR-magnitude", "JLR-zero-saddle"),
    ),
    ProblemSpec(
        "sensing-special",
        "kkr",
        dict(name="sensing-special"),
        ("KKR-special", "KKR-loud", "KKR-magnitude", "KKR-bias"),
        note="[KKR25] without linearization: Gaussian matrix sensing 6 x 5, N = 2000, rank-1 planted, "
        "lam = 0.05; LoRA r = 3 from zero and large inits (5 seeds each); 2 lambda_min(H) > "
        "lambda_max(H) certifies the special regime",
        checker_options={
            "evidence": {
                "rank": 3,
                "radius": 3.0,
                "inits": ["zero", "large"],
                "seeds": [0, 1, 2, 3, 4],
                "steps": 1500,
                "lr": 0.02,
                "samples": 100,
            }
        },
        expected={
            "KKR-loud": (
                "inconclusive",
                "the special regime is certified here, and KKR-loud (Corollary 1) is stated for the "
                "generic regime: out of its hypotheses on this problem",
            ),
            "KKR-bias": (
                "inconclusive",
                "every run from both inits ends at the global minimum, so the contrast the claim "
                "predicts (a large init can fail) does not occur on this problem",
            ),
        },
    ),
    ProblemSpec(
        "gauss-null-sq-K1",
        "gaussian",
        dict(K=1, N=8, blocks=[(10, 6)], lam=0.05, loss="squared", seed=8),
        ("KKR-includes-JLR",),
        note="m = 10 > KN = 8: a rank-one null direction of J makes alpha = eps exactly (ridge reading)",
        checker_options={"KKR-includes-JLR": {"samples": 50}},
        expected={
            "KKR-includes-JLR": (
                "violated",
                "a known refutation: a null direction of J makes the restricted strong convexity "
                "alpha as small as the ridge eps, so 2 alpha <= beta and the linearized problem is not "
                "in the special regime the claim says it is in",
            )
        },
    ),
    ProblemSpec(
        "teacher-gen-sq-K2",
        "held_out",
        dict(
            generator="teacher",
            n_test=4000,
            K=2,
            N=8000,
            blocks=[(4, 4)],
            lam=0.02,
            teacher_rank=1,
            loss="squared",
            noise=0.5,
            seed=11,
        ),
        ("JLR-gen",),
        note="rank-1 teacher, N = 8000 training and M = 4000 held-out examples (the last 4000 of one "
        "draw); squared loss clipped at b = 2",
        checker_options={"JLR-gen": {"clip": 2.0}},
    ),
    ProblemSpec(
        "minilm-size-sq-K2",
        "gaussian",
        dict(K=2, N=32, blocks=[(384, 384)], lam=0.02, loss="squared", seed=6),
        ("JLR-rank-FT", "JLR-rank-NUC", "JLR-equiv", "JLR-magnitude"),
        note="the size of MiniLM's W_q with the paper's N = 32, K = 2",
    ),
    ProblemSpec(
        "minilm-size-ce-K2",
        "gaussian",
        dict(K=2, N=32, blocks=[(384, 384)], lam=0.01, loss="cross_entropy", seed=7),
        ("JLR-rank-NUC", "JLR-magnitude"),
    ),
)


#: ``loracheck run --real``: the linearized offline MiniLM on N = 32 review sentences, K = 2,
#: cross-entropy, lam = 0.01 -- the [JLR24] setup (last layer's W_q and W_v, float64).
REAL_SUITE: tuple[ProblemSpec, ...] = (
    ProblemSpec(
        "minilm-qv-reviews",
        "reviews",
        dict(N=32, K=2, lam=0.01, loss="cross_entropy", seed=0),
        ("JLR-rank-blocks", "JLR-magnitude", "JLR-zero-saddle", "JLR-no-spurious")
        + ("WYL-first-step", "WYL-unchanged", "WYL-alignment"),
        note="MiniLM layer 5 W_q and W_v (two 384 x 384 blocks), random head on mean pooling; "
        "no-spurious at r = 12 > r_max = 10; LoRA-GA at r = 8 on the real gradient, outputs of the "
        "real model with the offset weights in float64 and float32",
        checker_options={
            "JLR-no-spurious": {"rank": 12, "n_starts": 6},
            "WYL-first-step": {"rank": 8, "search_starts": 0},
            "WYL-unchanged": {"rank": 8, "encoder": "auto"},
            "WYL-alignment": {"rank": 8},
        },
    ),
    ProblemSpec(
        "minilm-v-reviews",
        "reviews",
        dict(
            N=32,
            K=2,
            lam=0.01,
            loss="cross_entropy",
            seed=0,
            targets=["encoder.layer.5.attention.self.value.weight"],
        ),
        ("JLR-rank-NUC", "JLR-equiv"),
        note="W_v alone: the single-matrix claims",
    ),
    ProblemSpec(
        "minilm-qv-reviews-gen",
        "held_out",
        dict(generator="reviews", n_test=500, N=32, K=2, lam=0.01, loss="cross_entropy", seed=0),
        ("JLR-gen",),
        note="the problem of minilm-qv-reviews with 500 held-out review sentences (operator form); "
        "cross-entropy clipped at 2 log 2",
        expected={
            "JLR-gen": (
                "inconclusive",
                "vacuous at N = 32: the Rademacher bound (about 117 with B = sum ||D_j||_* = 12.5) is far "
                "above the trivial predictor's held-out loss (about 0.70), so it can neither hold nor be "
                "refuted here; the held-out loss itself is measured and reported",
            )
        },
    ),
)


_HSK_CLAIMS = ("HSK-exact", "HSK-poly-error", "HSK-below", "HSK-above")
CASE_ADAPTED = {"C1": "QV", "C2": "QKV"}

#: Measured on both cases (benchmarks/results/hsk/report.json): the asymptotic claims cannot be
#: decided at sizes a run can reach.
_HSK_EXPECTED = {
    "HSK-below": (
        "inconclusive",
        "with unscaled scores (M = d Gamma^2) the polynomial method's counted rank C(d+g, g) does not "
        "fall below L at any L a computer can reach, so the measured linear-time route and its error "
        "are evidence for the fixed-Gamma corollary, not for the asymptotic statement",
    ),
    "HSK-above": (
        "inconclusive",
        "the conditional hardness (under SETH) is asymptotic and worst-case: at L = 128..2048 the fitted "
        "exponents of the eps-rank above and below the threshold Gamma^2/log L = 1 cannot be told apart",
    ),
}

#: ``loracheck run --hsk``: the four [HSK24] claims on one attention head, both adapter cases,
#: at the full grids (L up to 65,536 for the fast route's timing; a few minutes on 2 cores).
HSK_SUITE: tuple[ProblemSpec, ...] = tuple(
    ProblemSpec(
        f"attention-{case}",
        "attention",
        dict(case=case, d=4, r=2, beta=1.0, seed=0),
        _HSK_CLAIMS,
        checker_options={
            "HSK-above": {"lengths": (128, 256, 512, 1024, 2048), "ratios": (0.125, 0.25, 0.5, 1.0, 2.0, 3.0)}
        },
        note="one head, d = 4, r = 2, adapters on " + ", ".join("W_" + k for k in CASE_ADAPTED[case]),
        expected=_HSK_EXPECTED,
    )
    for case in ("C1", "C2")
)


def suite_tasks(
    suite: Sequence[ProblemSpec], claims: Sequence[str] | None = None
) -> list[tuple[ProblemSpec, str]]:
    """The (spec, claim) pairs to run, optionally restricted to ``claims``."""
    wanted = set(claims) if claims else None
    if wanted:
        for c in wanted:
            get_checker(c)  # raises a clear KeyError for an unknown claim
    return [(s, c) for s in suite for c in s.claims if wanted is None or c in wanted]


def _run_task(
    spec: ProblemSpec,
    claim: str,
    problem: Any,
    solutions: dict[str, NucSolution],
    evidences: dict[str, Any],
    save_dir: str | Path | None,
) -> Verdict:
    """One check of the suite, with the NUC solution and the [KKR25] evidence shared per problem."""
    opts = dict(spec.checker_options.get(claim, {}))
    if claim in EVIDENCE_CLAIMS:
        if spec.name not in evidences:
            from verify.kkr.checkers import collect_evidence

            evidences[spec.name] = collect_evidence(problem, **spec.checker_options.get("evidence", {}))
        opts.setdefault("evidence", evidences[spec.name])
    if claim in NUC_CLAIMS:
        if spec.name not in solutions:
            solutions[spec.name] = solve_nuc(problem)
        opts.setdefault("solution", solutions[spec.name])
    return get_checker(claim)(problem, save_dir=save_dir, **opts)


def run_suite(
    suite: Sequence[ProblemSpec] = DEFAULT_SUITE,
    *,
    claims: Sequence[str] | None = None,
    save_dir: str | Path | None = None,
    progress: bool | None = None,
    done: Mapping[tuple[str, str], Verdict] | None = None,
) -> Iterator[Verdict]:
    """Run every (problem, claim) of the suite and yield verdicts as they finish.

    One certified NUC solution per problem is shared by its NUC-based checkers.
    ``progress=None`` shows a tqdm bar only on a terminal.  ``done`` maps ``(problem name,
    claim)`` to verdicts finished earlier (an interrupted run's report, see
    :func:`finished_verdicts`): they are yielded again instead of recomputed.
    """
    from tqdm.auto import tqdm

    tasks = suite_tasks(suite, claims)
    bar = tqdm(
        total=len(tasks), desc="loracheck", unit="check", disable=None if progress is None else not progress
    )
    problems: dict[str, Any] = {}
    solutions: dict[str, NucSolution] = {}
    evidences: dict[str, Any] = {}
    try:
        for spec, claim in tasks:
            bar.set_postfix_str(f"{spec.name}: {claim}")
            if done is not None and (spec.name, claim) in done:
                yield done[(spec.name, claim)]
                bar.update(1)
                continue
            if spec.name not in problems:
                with work_threads(LARGE_WORK):  # sized as large: the free cores, read now
                    problems[spec.name] = build_problem(spec)
            problem = problems[spec.name]
            with work_threads(gradient_work(problem), label=f"{spec.name}: {claim}"):  # small: one thread
                verdict = _run_task(spec, claim, problem, solutions, evidences, save_dir)
            yield verdict
            bar.update(1)
    finally:
        bar.close()


def finished_verdicts(
    report: Mapping[str, Any], suite: Sequence[ProblemSpec], *, source: str | None = None
) -> dict[tuple[str, str], Verdict]:
    """Verdicts of an earlier report that belong to the same problems (equal specs) of ``suite``.

    A verdict is kept when the report's spec of its problem equals the current spec (generator,
    keyword arguments, claims and checker options) and the report was written by the same
    loracheck version (its ``environment.loracheck``), so a changed suite, other options or another
    version never reuse stale results: those verdicts are recomputed.

    A report that does not validate against :data:`verify.report.REPORT_SCHEMA` (a verdict without
    ``status``, a certificate that is not an object, ...) or whose reused verdict lacks the
    certificate fields its checker always writes (:data:`verify.verdict.CERTIFICATE_KEYS`: a forged
    ``holds`` with an empty certificate) is refused with :class:`~theory.errors.UserInputError`
    naming ``source`` (the file), the verdict and the missing fields; ``loracheck run --fresh``
    recomputes everything.  A forged but plausible certificate (the right fields, invented
    numbers) is not caught here: only re-verifying it catches it.
    """
    from verify.report import REPORT_SCHEMA, REPORT_VERSION, environment, validate_json
    from verify.verdict import check_certificate

    where = f"report {source}" if source else "report"
    fresh = "; pass --fresh to recompute"
    if not isinstance(report, Mapping):
        raise UserInputError(f"{where}: expected a JSON object, got {type(report).__name__}{fresh}")
    if report.get("version") != REPORT_VERSION:
        return {}  # another report format: recompute everything
    try:
        validate_json(report, REPORT_SCHEMA, where)
    except UserInputError as exc:
        raise UserInputError(f"{exc}{fresh}") from None
    if report["environment"].get("loracheck") != environment()["loracheck"]:
        return {}  # another loracheck version (or none recorded): recompute everything
    specs = {s.name: s.to_dict() for s in suite}
    old = {d.get("name"): d for d in report["suite"]}
    out: dict[tuple[str, str], Verdict] = {}
    for i, d in enumerate(report["verdicts"]):
        name = d["problem"].get("name")
        if (
            isinstance(name, str)
            and name in specs
            and jsonable(old.get(name)) == jsonable(specs[name])
            and d["claim"] in specs[name]["claims"]
        ):
            try:
                check_certificate(d, f"{where}: verdict {i} ({d['claim']} on {name})")
            except UserInputError as exc:
                raise UserInputError(f"{exc}{fresh}") from None
            out[(name, d["claim"])] = Verdict.from_dict(d)
    return out
