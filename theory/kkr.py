r"""The inequalities of [KKR25] as functions of singular values and constants (pure Python).

Notation: :math:`X = AB^\top` an end point of LoRA at rank ``r``, :math:`X^\star` a rank-``r*``
global minimizer, :math:`\sigma_1 \ge \sigma_2 \ge \dots` the singular values of ``X`` (1-based
indices as in the paper), :math:`\alpha`, :math:`\beta` the (r, D)-RSC / RSM constants.

* :func:`dichotomy` -- Theorem 1.2 (generic regime): a non-global SOSP within distance ``D`` of
  :math:`X^\star` has (i) :math:`\operatorname{rank} X = r`, (ii)
  :math:`\sigma_r(X) \ge (2\alpha/\beta)\,\sigma_{r^\star}(X)`, (iii)
  :math:`\|X - X^\star\|_F^2 \ge
  \|X - \Pi_{r^\star}(X)\|_F^2 / (1 - 2\alpha\sigma_{r^\star}/(\beta\sigma_r))`.
* :func:`loud` -- Corollary 1 (``r > r*``): :math:`\sigma_r \le (2\alpha/\beta)\sigma_{r^\star}` means
  global; otherwise spurious, with the magnitude bound
  :math:`\|X\|_F \ge \sqrt{\sum_{s=r^\star+1}^{r}\sigma_s^2 /
  (1 - 2\alpha\sigma_{r^\star}/(\beta\sigma_r))} - \|X^\star\|_F`
  (the square root is reconstructed from an imperfect text extraction: the checkers test it).
* :func:`sgd_rank_bound` -- Lemma 1 (after Galanti et al.): SGD with batch ``b``, learning rate
  :math:`\mu`, weight decay :math:`\lambda` converging to :math:`\bar X` has, for every
  :math:`\varepsilon > 0`, a ``W`` within :math:`\varepsilon` of :math:`\bar X/\|\bar X\|` of rank at
  most :math:`b \log(\varepsilon/4) / \log(1 - \mu\lambda)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from theory.errors import UserInputError

__all__ = ["dichotomy", "loud", "sgd_rank_bound"]


def _check_svs(sv: Sequence[float]) -> list[float]:
    out = [float(s) for s in sv]
    if any(not math.isfinite(s) or s < 0 for s in out) or any(a < b for a, b in zip(out, out[1:])):
        raise UserInputError(
            f"singular_values: expected finite, non-negative, non-increasing values, got {out[:6]}"
        )
    return out


def _check_ranks(r: int, r_star: int, n_sv: int) -> None:
    for name, v in (("r", r), ("r_star", r_star)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserInputError(f"{name}: expected a positive int, got {v!r}")
    if r_star > r:
        raise UserInputError(f"r_star: expected r_star <= r = {r}, got {r_star}")
    if r > n_sv:
        raise UserInputError(f"r: expected at most the number of singular values ({n_sv}), got {r}")


def _check_constants(alpha: float, beta: float) -> None:
    if not (isinstance(alpha, (int, float)) and alpha > 0 and math.isfinite(alpha)):
        raise UserInputError(f"alpha: expected a positive finite number (RSC must hold), got {alpha!r}")
    if not (isinstance(beta, (int, float)) and beta > 0 and math.isfinite(beta)):
        raise UserInputError(f"beta: expected a positive finite number, got {beta!r}")


def dichotomy(
    singular_values: Sequence[float],
    *,
    r: int,
    r_star: int,
    alpha: float,
    beta: float,
    distance_sq: float,
    rank_rtol: float = 1e-8,
) -> dict[str, Any]:
    r"""The three conditions of Theorem 1.2 at an end point ``X``: which hold, with their numbers.

    ``singular_values`` are those of ``X`` (all of them, non-increasing); ``distance_sq`` is
    :math:`\|X - X^\star\|_F^2`.  The numerical rank counts values above ``rank_rtol``
    :math:`\sigma_1`.  Returns ``rank_is_r``, ``sigma_ratio_ok`` (ii), ``distance_ok`` (iii) and
    ``all`` (every one holds), with the quantities compared; (iii) is vacuous (``inf`` bound,
    not satisfiable) when its denominator is not positive, and ``distance_ok`` is then ``False``.
    """
    sv = _check_svs(singular_values)
    _check_ranks(r, r_star, len(sv))
    _check_constants(alpha, beta)
    if not (isinstance(distance_sq, (int, float)) and distance_sq >= 0 and math.isfinite(distance_sq)):
        raise UserInputError(f"distance_sq: expected a finite number >= 0, got {distance_sq!r}")
    top = sv[0] if sv else 0.0
    rank = sum(1 for s in sv if s > rank_rtol * top) if top > 0 else 0
    s_r, s_rs = sv[r - 1], sv[r_star - 1]
    ratio_needed = (2 * alpha / beta) * s_rs
    tail_sq = sum(s * s for s in sv[r_star:])  # ||X - Pi_{r*}(X)||_F^2
    denom = 1 - (2 * alpha * s_rs) / (beta * s_r) if s_r > 0 else -math.inf
    bound = tail_sq / denom if denom > 0 else math.inf
    out = {
        "rank": rank,
        "rank_is_r": rank == r,
        "sigma_r": s_r,
        "sigma_r_star": s_rs,
        "sigma_r_needed": ratio_needed,
        "sigma_ratio_ok": s_r >= ratio_needed,
        "distance_sq": float(distance_sq),
        "distance_sq_needed": bound,
        "distance_ok": denom > 0 and distance_sq >= bound,
    }
    out["all"] = bool(out["rank_is_r"] and out["sigma_ratio_ok"] and out["distance_ok"])
    return out


def loud(
    singular_values: Sequence[float], *, r: int, r_star: int, alpha: float, beta: float, x_star_norm: float
) -> dict[str, Any]:
    r"""Corollary 1 at an end point ``X`` (``r > r*``): global or spurious, with the magnitude bound.

    ``spurious_norm_bound`` is the lower bound on :math:`\|X\|_F` the corollary gives a spurious
    point (``None`` for a predicted global one); ``norm`` is :math:`\|X\|_F` from the singular
    values, so a reader sees at once whether the bound holds.
    """
    sv = _check_svs(singular_values)
    _check_ranks(r, r_star, len(sv))
    _check_constants(alpha, beta)
    if r <= r_star:
        raise UserInputError(f"r: Corollary 1 needs r > r_star = {r_star}, got r = {r}")
    if not (isinstance(x_star_norm, (int, float)) and x_star_norm >= 0 and math.isfinite(x_star_norm)):
        raise UserInputError(f"x_star_norm: expected a finite number >= 0, got {x_star_norm!r}")
    s_r, s_rs = sv[r - 1], sv[r_star - 1]
    norm = math.sqrt(sum(s * s for s in sv))
    if s_r <= (2 * alpha / beta) * s_rs:
        return {"prediction": "global", "norm": norm, "spurious_norm_bound": None, "bound_holds": None}
    denom = 1 - (2 * alpha * s_rs) / (beta * s_r)
    tail_sq = sum(s * s for s in sv[r_star:r])
    bound = math.sqrt(tail_sq / denom) - x_star_norm
    return {
        "prediction": "spurious",
        "norm": norm,
        "spurious_norm_bound": bound,
        "bound_holds": norm >= bound,
    }


def sgd_rank_bound(*, batch: int, eps: float, lr: float, lam: float) -> float:
    r"""Lemma 1's rank bound :math:`b \log(\varepsilon/4) / \log(1 - \mu\lambda)`.

    Defined for :math:`0 < \mu\lambda < 1` and :math:`0 < \varepsilon < 4`.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UserInputError(f"batch: expected a positive int, got {batch!r}")
    if not (isinstance(eps, (int, float)) and 0 < eps < 4):
        raise UserInputError(f"eps: expected a number in (0, 4), got {eps!r}")
    if not (isinstance(lr, (int, float)) and isinstance(lam, (int, float)) and 0 < lr * lam < 1):
        raise UserInputError(f"lr, lam: expected 0 < lr * lam < 1, got lr = {lr!r}, lam = {lam!r}")
    return batch * math.log(eps / 4) / math.log(1 - lr * lam)
