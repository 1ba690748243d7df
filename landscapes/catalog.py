"""The named problems of loracheck: one catalog for the suite, ``kkr``, ``speed`` and sweeps.

Two kinds of names:

* **generators** (:data:`GENERATORS`): a name and keyword arguments make a problem -- the linearized
  synthetic families of :mod:`landscapes.synthetic`, the review sentences on the offline MiniLM,
  LoRA-GA's planted gradient, one attention head ([HSK24]), a training problem with held-out
  examples (JLR-gen), and ``kkr`` (a named non-linearized configuration).  A :class:`ProblemSpec`
  is plain data (a generator, its arguments, the claims to check), so a report that records it
  lets a reader rebuild the problem (:func:`build_problem`).
* **non-linearized configurations** (:data:`KKR_PROBLEMS`, [KKR25]): a builder of
  :mod:`landscapes.nonlinear`, its arguments and the training settings of its runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from landscapes import synthetic
from landscapes.held_out import with_held_out, with_review_held_out
from landscapes.nonlinear import problems as nl
from landscapes.nonlinear.problems import NonlinearProblem
from landscapes.problem import Problem
from theory.errors import UserInputError

__all__ = [
    "GENERATORS",
    "ProblemSpec",
    "build_problem",
    "held_out_problem",
    "KKR_PROBLEMS",
    "NONLINEAR_BUILDERS",
    "build_kkr_problem",
]


# --------------------------------------------------------------------------------------------------
# Non-linearized configurations ([KKR25])
def _minilm(**kwargs: Any) -> NonlinearProblem:
    from landscapes.transformer.encoder import review_nonlinear_problem

    return review_nonlinear_problem(**kwargs)


def _spurious(**kwargs: Any) -> NonlinearProblem:
    from landscapes.nonlinear.spurious_sensing import spurious_sensing

    return spurious_sensing(**kwargs)


NONLINEAR_BUILDERS: dict[str, Callable[..., NonlinearProblem]] = {
    "spurious_sensing": _spurious,
    "matrix_sensing": nl.matrix_sensing,
    "nonlinear_sensing": nl.nonlinear_sensing,
    "two_layer": nl.two_layer,
    "attention_block": nl.attention_block,
    "double_well": nl.double_well,
    "minilm": _minilm,
}


#: Named configurations: builder, its arguments, and the training settings (LoRA rank, Adam
#: steps and learning rate, the radius D of the restricted sets).
KKR_PROBLEMS: dict[str, dict[str, Any]] = {
    "sensing-special": {
        "builder": "matrix_sensing",
        "kwargs": {"m": 6, "n": 5, "N": 2000, "rank": 1, "lam": 0.05, "seed": 0},
        "train": {"rank": 3, "steps": 1500, "lr": 0.02, "radius": 3.0},
        "note": "well-conditioned Gaussian sensing: 2 lambda_min(H) > lambda_max(H) certifies the special "
        "regime",
    },
    "sensing-illcond": {
        "builder": "matrix_sensing",
        "kwargs": {
            "m": 10,
            "n": 8,
            "N": 200,
            "rank": 2,
            "measurement_condition": 100.0,
            "lam": 0.01,
            "seed": 0,
        },
        "train": {"rank": 4, "steps": 2000, "lr": 0.02, "radius": 3.0},
        "note": "ill-conditioned measurements: generic regime, convex risk (certified global optimum)",
    },
    "tanh-sensing": {
        "builder": "nonlinear_sensing",
        "kwargs": {"m": 12, "n": 10, "N": 400, "rank": 2, "lam": 0.01, "seed": 0},
        "train": {"rank": 4, "steps": 2000, "lr": 0.02, "radius": 3.0},
        "note": "tanh link: not convex, generic regime",
    },
    "two-layer": {
        "builder": "two_layer",
        "kwargs": {"m": 10, "n": 8, "N": 100, "rank": 2, "lam": 0.01, "seed": 0},
        "train": {"rank": 4, "steps": 2000, "lr": 0.02, "radius": 3.0},
        "note": "two-layer tanh network with a planted teacher: generic regime",
    },
    "attention": {
        "builder": "attention_block",
        "kwargs": {"d": 8, "rank": 2, "lam": 0.001, "seed": 0},
        "train": {"rank": 4, "steps": 2000, "lr": 0.02, "radius": 3.0},
        "note": "one softmax head, W_Q adapted, planted teacher: generic regime",
    },
    "double-well": {
        "builder": "double_well",
        "kwargs": {"lam": 0.05},
        "train": {"rank": 2, "steps": 1500, "lr": 0.02, "radius": 5.0},
        "note": "closed-form spurious SOSP of rank 2 and large norm; RSC fails at this radius",
    },
    **{
        f"spurious-{c}": {
            "builder": "spurious_sensing",
            "kwargs": {"config": c},
            "train": {"rank": r, "steps": 1500, "lr": 0.02, "radius": D, "witnesses": True},
            "note": f"designed quadratic sensing {m} x {m}, kappa(H) = {k}: a certified spurious SOSP of "
            f"rank {r} > r* = 1 (init 'adversarial'; seeds > 0 perturb that start by 10 %); alpha >= 1 "
            "certified",
        }
        for c, m, r, D, k in (
            ("kappa4", 3, 2, 2.1, 4.15),
            ("kappa10", 3, 2, 4.6, 9.96),
            ("kappa20", 3, 2, 4.2, 19.98),
            ("rank-gap2", 4, 3, 7.7, 5.96),
        )
    },
    "minilm-qv": {
        "builder": "minilm",
        "kwargs": {"N": 32, "lam": 0.01, "layers": "last"},
        "train": {
            "rank": 8,
            "steps": 150,
            "lr": 0.01,
            "radius": 5.0,
            "polish": 100,
            "lanczos_maxiter": 15,
            "reference_iter": 150,
            "max_samples": 40,
        },
        "note": "the offline MiniLM without linearization, W_q and W_v of the last layer, review sentences",
    },
}


def build_kkr_problem(name: str) -> NonlinearProblem:
    """The problem of a named configuration (:data:`KKR_PROBLEMS`)."""
    if name not in KKR_PROBLEMS:
        raise UserInputError(f"problem: expected one of {', '.join(KKR_PROBLEMS)}, got {name!r}")
    spec = KKR_PROBLEMS[name]
    return NONLINEAR_BUILDERS[spec["builder"]](**spec["kwargs"])


# --------------------------------------------------------------------------------------------------
# Generators and specs
def _reviews(**kwargs: Any) -> Problem:
    # Imported on use: the real-model extra (transformers, the offline MiniLM) is optional.
    from landscapes.transformer.encoder import review_problem

    return review_problem(**kwargs)


def _planted_gradient(**kwargs: Any) -> Problem:
    from landscapes.inits import planted_gradient_problem

    return planted_gradient_problem(**kwargs)


def _kkr(**kwargs: Any) -> Any:
    return build_kkr_problem(**kwargs)


def _attention(**kwargs: Any) -> Any:
    from landscapes.attention import HskSetting

    return HskSetting(**kwargs)


def _held_out(**kwargs: Any) -> Problem:
    # A training problem carrying held-out examples in meta["held_out"] (JLR-gen).
    return held_out_problem(**kwargs)


GENERATORS: dict[str, Callable[..., Any]] = {
    "gaussian": synthetic.gaussian_problem,
    "teacher": synthetic.teacher_problem,
    "random_features": synthetic.random_features_problem,
    "reviews": _reviews,
    "kkr": _kkr,
    "attention": _attention,
    "planted_gradient": _planted_gradient,
    "held_out": _held_out,
}


@dataclass(frozen=True)
class ProblemSpec:
    """A named synthetic problem and the claims checked on it."""

    name: str
    generator: str
    kwargs: dict[str, Any]
    claims: tuple[str, ...]
    note: str = ""
    checker_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Claim -> ``(status, why)``: the status its verdict is recorded to have on this problem when it
    #: is not ``"holds"`` (a known refutation, a known inconclusive), and why.  Claims not listed
    #: are expected to hold.
    expected: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for claim, (status, why) in self.expected.items():
            if claim not in self.claims:
                raise ValueError(f"{self.name}: an expectation for {claim}, which is not checked on it")
            if status not in ("violated", "inconclusive") or not why:
                raise ValueError(f"{self.name}: {claim} expected {status!r}: a non-holds status and a why")

    def expected_status(self, claim: str) -> str:
        """The recorded status of ``claim`` on this problem (``"holds"`` unless listed)."""
        return self.expected[claim][0] if claim in self.expected else "holds"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for reports."""
        d: dict[str, Any] = {
            "name": self.name,
            "generator": self.generator,
            "kwargs": dict(self.kwargs),
            "claims": list(self.claims),
            "note": self.note,
            "checker_options": {k: dict(v) for k, v in self.checker_options.items()},
        }
        if self.expected:
            d["expected"] = {c: {"status": st, "why": why} for c, (st, why) in self.expected.items()}
        return d


def build_problem(spec: ProblemSpec) -> Any:
    """Instantiate a spec's problem (named after the spec).

    A linearized :class:`~landscapes.problem.Problem`, or for the ``kkr`` generator a
    :class:`~landscapes.nonlinear.problems.NonlinearProblem` (a named configuration of
    :data:`verify.kkr.training.KKR_PROBLEMS`).
    """
    if spec.generator not in GENERATORS:
        raise UserInputError(f"generator: expected one of {', '.join(GENERATORS)}, got {spec.generator!r}")
    p = GENERATORS[spec.generator](**spec.kwargs)
    if not isinstance(p, Problem):
        return dataclasses.replace(p, name=spec.name)
    return Problem(
        p.J, p.f0, p.y, loss=p.loss, blocks=p.blocks, lam=p.lam, seed=p.seed, name=spec.name, meta=p.meta
    )


def held_out_problem(*, generator: str, n_test: int, **kwargs: Any) -> Problem:
    r"""The suite generator ``held_out``: a training problem carrying ``n_test`` held-out examples.

    ``generator="reviews"``: ``review_problem(**kwargs)`` and :func:`with_review_held_out`.
    Otherwise a synthetic generator of the suite is called with ``N + n_test`` examples and the
    last ``n_test`` are held out (:func:`with_held_out`), so the training problem has ``N``.
    """
    if generator in ("held_out", "kkr", "attention") or generator not in GENERATORS:
        known = sorted(set(GENERATORS) - {"held_out", "kkr", "attention"})
        raise UserInputError(f"generator: expected one of {', '.join(known)}, got {generator!r}")
    if isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < 1:
        raise UserInputError(f"n_test: expected a positive int, got {n_test!r}")
    if generator == "reviews":
        return with_review_held_out(GENERATORS["reviews"](**kwargs), n_test)
    N = kwargs.pop("N", None)
    if isinstance(N, bool) or not isinstance(N, int) or N < 1:
        raise UserInputError(f"N: expected a positive int (training examples), got {N!r}")
    return with_held_out(GENERATORS[generator](N=N + n_test, **kwargs), n_test)
