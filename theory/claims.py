"""The claim registry: every checked statement of the four papers, as data.

``verify`` attaches checkers to these ids and the CLI lists them.  A :class:`Claim` carries the
statement in words, where it comes from, whether its exact form is confirmed from the paper text,
and the tolerances its checker uses by default (float64).

Papers
------
[JLR24] U. Jang, J. D. Lee, E. K. Ryu, *LoRA Training in the NTK Regime has No Spurious Local
        Minima*, ICML 2024.
[KKR25] J. Kim, J. Kim, E. K. Ryu, *LoRA Training Provably Converges to a Low-Rank Global Minimum
        or It Fails Loudly (But it Probably Won't Fail)*, 2025.
[WYL24] S. Wang, L. Yu, J. Li, *LoRA-GA: Low-Rank Adaptation with Gradient Approximation*,
        NeurIPS 2024.
[HSK24] J. Y.-C. Hu, M. Su, E.-J. Kuo, Z. Song, H. Liu, *Computational Limits of Low-Rank
        Adaptation (LoRA) for Transformer-Based Models*, 2024.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

__all__ = ["Claim", "Tolerances", "DEFAULT_TOLERANCES", "CLAIMS", "get_claim", "claim_ids", "PAPERS"]

Paper = Literal["JLR24", "KKR25", "WYL24", "HSK24"]

PAPERS: Mapping[str, str] = MappingProxyType(
    {
        "JLR24": "Jang, Lee, Ryu. LoRA Training in the NTK Regime has No Spurious Local Minima. ICML 2024.",
        "KKR25": "Kim, Kim, Ryu. LoRA Training Provably Converges to a Low-Rank Global Minimum or "
        "It Fails Loudly (But it Probably Won't Fail). 2025.",
        "WYL24": "Wang, Yu, Li. LoRA-GA: Low-Rank Adaptation with Gradient Approximation. NeurIPS 2024.",
        "HSK24": "Hu, Su, Kuo, Song, Liu. Computational Limits of Low-Rank Adaptation (LoRA) for "
        "Transformer-Based Models. 2024.",
    }
)


@dataclass(frozen=True)
class Tolerances:
    r"""Default numerical tolerances of the checkers (float64).

    Attributes
    ----------
    gap_rtol
        Optimality: NUC duality gap :math:`\le` ``gap_rtol * max(1, |objective|)`` (invariant under
        :math:`J \to cJ`, :math:`\lambda \to c\lambda`, which leaves objective values unchanged);
        comparisons of LoRA objectives (global, non-global) at ``gap_rtol * max(|F|, L(0))``.
    grad_rtol
        Stationarity: :math:`\|\nabla F\| \le` ``grad_rtol * sqrt(L(0) max(||grad L(0)||_op, lam))``
        (:func:`landscapes.sosp.gradient_scale`; it scales like the gradient under that rescaling).
    curvature_rtol
        Curvature of an approximate SOSP: :math:`\lambda_{\min} \ge -` ``curvature_rtol * |lambda_max|``
        on the complement of the gauge directions.
    rank_rtol
        Numerical rank: singular values above ``rank_rtol * sigma_1`` count.
    """

    gap_rtol: float = 1e-8
    grad_rtol: float = 1e-7
    curvature_rtol: float = 1e-6
    rank_rtol: float = 1e-8


DEFAULT_TOLERANCES = Tolerances()


@dataclass(frozen=True)
class Claim:
    """One checked statement.

    ``confirmed`` is ``False`` where the exact form could not be confirmed from the paper text;
    such claims are implemented as written and their verdicts report what they find.
    """

    id: str
    paper: Paper
    reference: str
    statement: str
    confirmed: bool = True
    tolerances: Tolerances = field(default=DEFAULT_TOLERANCES)


_T = DEFAULT_TOLERANCES

CLAIMS: tuple[Claim, ...] = (
    Claim(
        "JLR-rank-FT",
        "JLR24",
        "low-rank FT solution",
        "If full fine-tuning has a global minimizer, it has one of rank r with r(r+1)/2 <= KN.",
    ),
    Claim(
        "JLR-rank-NUC",
        "JLR24",
        "low-rank NUC solution",
        "The nuclear-norm-regularized problem (the problem LoRA with weight decay solves) has a "
        "minimizer of rank r with r(r+1)/2 <= KN.",
    ),
    Claim(
        "JLR-rank-blocks",
        "JLR24",
        "block form of the Barvinok-Pataki bound",
        "With several adapted matrices, each with its own weight decay, the NUC problem with the "
        "sum of nuclear norms has a minimizer with sum_j r_j(r_j+1)/2 <= KN.",
    ),
    Claim(
        "JLR-equiv",
        "JLR24",
        "LoRA-NUC equivalence",
        "For r >= the rank of a NUC minimizer, min LoRA objective = min NUC objective, and every "
        "global LoRA minimizer (U, V) is balanced: U^T U = V^T V.",
    ),
    Claim(
        "JLR-no-spurious",
        "JLR24",
        "no spurious local minima",
        "For lam > 0 and r(r+1)/2 > KN (with several adapted matrices: r_j(r_j+1)/2 > KN for every "
        "block j, not the sum), every second-order stationary point of LoRA is a global "
        "minimizer, with probability 1 over a small random perturbation of the objective.",
        confirmed=False,
    ),
    Claim(
        "JLR-spurious-below",
        "JLR24",
        "below the bound",
        "Below the bound r(r+1)/2 <= KN (in at least one block) the guarantee is absent: spurious "
        "second-order stationary points can exist for some problems.",
    ),
    Claim(
        "JLR-gd",
        "JLR24",
        "(S)GD finds low-rank solutions",
        "(Stochastic) gradient descent with weight decay from standard inits converges to a "
        "global minimizer when r(r+1)/2 > KN (in every block).",
    ),
    Claim(
        "JLR-gen",
        "JLR24",
        "generalization",
        "The low-rank solution found generalizes (a Rademacher-complexity bound for linear "
        "predictors with bounded nuclear norm; checked as the standard bound of "
        "theory.generalization for the clipped loss against held-out loss).",
        confirmed=False,
    ),
    Claim(
        "JLR-magnitude",
        "JLR24",
        "comparison with D = 0",
        "Every global minimizer of NUC satisfies lam ||D*||_* <= L(0) - L(D*) <= L(0).",
    ),
    Claim(
        "JLR-zero-saddle",
        "JLR24",
        "Hessian at zero",
        "At U = V = 0, lambda_min(Hessian) = lam - ||grad L(0)||_op, so zero is a strict saddle "
        "iff ||grad L(0)||_op > lam.",
    ),
    Claim(
        "KKR-special",
        "KKR25",
        "Thm 1.1",
        "In the special regime 2 alpha > beta every SOSP within distance D of X* is a global minimizer.",
    ),
    Claim(
        "KKR-dichotomy",
        "KKR25",
        "Thm 1.2",
        "In the generic regime a non-global SOSP within distance D of X* has rank exactly r, "
        "sigma_r(X) >= (2 alpha/beta) sigma_r*(X), and a lower bound on ||X - X*||_F.",
    ),
    Claim(
        "KKR-loud",
        "KKR25",
        "Cor. 1",
        "For r > r*, sigma_r(X) <= (2 alpha/beta) sigma_r*(X) implies X is global; otherwise X "
        "is spurious and has large Frobenius norm.",
        confirmed=False,
    ),
    Claim(
        "KKR-magnitude", "KKR25", "Sec. 3.4", "With weight decay, ||X*||_* <= (L(0) - L(X*))/lam < L(0)/lam."
    ),
    Claim(
        "KKR-bias",
        "KKR25",
        "Fig. 2",
        "Zero-init plus weight decay reaches the low-rank global minimizer; a large random init "
        "can end at a high-rank, large-norm spurious point.",
    ),
    Claim(
        "KKR-sgd-rank",
        "KKR25",
        "Lemma 1",
        "SGD with weight decay converges to points that are close to matrices of rank at most "
        "b log(eps/4) / log(1 - mu lam).",
    ),
    Claim(
        "KKR-includes-JLR",
        "KKR25",
        "relation to [JLR24]",
        "The eps-perturbed linearized loss of [JLR24] lies in the special regime.",
    ),
    Claim(
        "WYL-first-step",
        "WYL24",
        "first-step analysis",
        "The first step of the LoRA-GA reference init equals -lr zeta G_[2r] up to O(lr^2), the "
        "best rank-2r approximation of the full gradient.",
    ),
    Claim(
        "WYL-directions", "WYL24", "reference code", "ArB2r, A2rBr and ArBr give the same first-step update."
    ),
    Claim(
        "WYL-unchanged",
        "WYL24",
        "weight offset",
        "After W0 <- W0 - eta B0 A0 the model output equals the pre-trained output.",
    ),
    Claim(
        "WYL-alignment",
        "WYL24",
        "gradient alignment",
        "At step 1, cos(dW_GA, -G) = ||G_[2r]||_F / ||G||_F, against about "
        "||G P_row(A0)||_F / ||G||_F for vanilla LoRA.",
    ),
    Claim(
        "WYL-speed", "WYL24", "experiments", "LoRA-GA converges faster than vanilla LoRA (2-4x in the paper)."
    ),
    Claim(
        "HSK-exact",
        "HSK24",
        "Sec. 3",
        "The exact LoRA gradients of one attention head agree with autograd; exact time grows as L^2.",
    ),
    Claim(
        "HSK-below",
        "HSK24",
        "Thm 3.1",
        "Below the norm threshold an L^(1+o(1)) algorithm approximates the LoRA gradients to 1/poly(L).",
    ),
    Claim(
        "HSK-above",
        "HSK24",
        "Thm 4.1",
        "Above the threshold no O(L^(2-delta)) algorithm exists (under SETH, worst case); checked as "
        "evidence: certified bounds on the max-entry eps-rank of exp(S) over L, random and "
        "orthogonal-vectors instances (never 'holds').",
    ),
    Claim(
        "HSK-poly-error",
        "HSK24",
        "Lemma (polynomial method)",
        "Degree-g Taylor features give a rank <= C(d+g, g) factorization of exp(<q,k>) with "
        "entry error <= e^M M^(g+1)/(g+1)!.",
    ),
)

_BY_ID: Mapping[str, Claim] = MappingProxyType({c.id: c for c in CLAIMS})
assert len(_BY_ID) == len(CLAIMS), "duplicate claim ids"


def claim_ids() -> tuple[str, ...]:
    """All claim ids, in registry order."""
    return tuple(c.id for c in CLAIMS)


def get_claim(claim_id: str) -> Claim:
    """Look up a claim by id; unknown ids raise ``KeyError`` listing the known ones."""
    try:
        return _BY_ID[claim_id]
    except KeyError:
        raise KeyError(f"claim_id: expected one of {', '.join(_BY_ID)}; got {claim_id!r}") from None
