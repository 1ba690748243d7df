r"""Matrix sensing with a certified spurious second-order stationary point of LoRA ([KKR25], generic regime).

The risk is a convex quadratic, written as matrix sensing with :math:`N = mn` measurements,

.. math:: L(X) = \frac{1}{2N}\sum_{i=1}^{N} (\langle M_i, X\rangle - y_i)^2
          = \tfrac12 (x - x_0)^\top H (x - x_0) + \text{const}, \qquad x = \operatorname{vec} X

(row-major ``vec``), with measurement matrices :math:`\operatorname{vec} M_i` the rows of
:math:`\sqrt N\, H^{1/2}` (so :math:`J^\top J/N = H`) and :math:`y = \sqrt N H^{1/2} x_0`.  The
LoRA problem is :math:`L(AB^\top) + \frac{\lambda}{2}(\|A\|_F^2 + \|B\|_F^2)` at rank ``r``.

**Design (inverse problem).**  Each configuration fixes a rank-``r*`` matrix
:math:`X^\star = \operatorname{diag}(s^\star_1, \dots, s^\star_{r^\star}, 0, \dots)` and a gradient
:math:`G^\star = -\lambda \sum_{k \le r^\star} e_k e_k^\top + \begin{bmatrix}0 & 0\\ 0 & W\end{bmatrix}`
with :math:`\|W\|_{op} < \lambda`, and sets :math:`x_0 = x^\star - H^{-1} \operatorname{vec} G^\star`.
Then :math:`\nabla L(X^\star) = G^\star` and :math:`-G^\star \in \lambda\,\partial\|X^\star\|_*`:
:math:`X^\star` is the global minimizer of the (strictly convex, :math:`H \succ 0`) penalized
problem :math:`L(X) + \lambda\|X\|_*`, of rank ``r*`` (the certified NUC solver of
:func:`landscapes.nonlinear.penalized.minimize_penalized` finds it again).  The stored positive definite
:math:`H` (rounded to 6 or 8 decimals) was found by a semidefinite program over :math:`H` (and
:math:`W`): :math:`I \preceq H \preceq \kappa I` with :math:`\kappa` minimal (or a trade-off with
the ratio of (ii) below), such that a chosen rank-``r`` point :math:`X_s = U S V^\top` is a
stationary point of LoRA at the balanced factors :math:`(U S^{1/2}, V S^{1/2})`, i.e.
:math:`\nabla L(X_s) = -\lambda U V^\top + c\, u_\perp v_\perp^\top` with :math:`|c| > \lambda`
(so :math:`X_s` is *not* penalized-optimal), whose LoRA Hessian is positive definite off the
:math:`O(r)` gauge directions (a linear matrix inequality in :math:`H`).  Everything these
properties rest on is re-checked numerically, not assumed: the stored data only fix the
problem; the spurious point is reached by training from :func:`adversarial_start` and certified
by the dense LoRA Hessian (:func:`landscapes.nonlinear.sosp.end_point`).

Structure gives two-sided constants (:func:`landscapes.nonlinear.restricted.restricted_bounds`):
:math:`\alpha \ge \lambda_{\min}(H) \approx 1` and :math:`\beta \le \lambda_{\max}(H) = \kappa`
on every set, so :math:`\alpha > 0` is certified and :math:`\rho = 2\alpha/\beta \ge 2/\kappa`.
With :math:`\kappa \ge 4 > 2` the configurations are in the generic regime of [KKR25] (certified
by a sample, since a sampled :math:`2\hat\alpha \le \hat\beta` certifies it) and Theorem 1.2's
inequalities (ii) :math:`\sigma_r(X) \ge \rho\,\sigma_{r^\star}(X)` and (iii) have content at the
spurious point.

Configurations (:data:`SPURIOUS_CONFIGS`; ``m x n``, LoRA rank ``r``, ``r*``, :math:`\kappa(H)`):

* ``"kappa4"`` -- 3 x 3, r = 2, r* = 1, :math:`\kappa = 4.15` (the smallest the search found);
* ``"kappa10"`` -- 3 x 3, r = 2, r* = 1, :math:`\kappa = 9.96`, (ii) within a factor 1.17 at
  :math:`\rho = 2/\kappa`;
* ``"kappa20"`` -- 3 x 3, r = 2, r* = 1, :math:`\kappa = 19.98`, (ii) within a factor 1.075;
* ``"rank-gap2"`` -- 4 x 4, r = 3, r* = 1, :math:`\kappa = 5.96`.

``meta["radius"]`` is a radius ``D`` that contains the spurious point (its distance to
:math:`X^\star`, rounded up), ``meta["lora_rank"]`` the LoRA rank ``r`` of the spurious point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from landscapes.curvature.nonlinear import nonlinear_hessian
from landscapes.curvature.vectors import flatten_factors, unflatten_factors
from landscapes.nonlinear.factors import Factors
from landscapes.nonlinear.problems import NonlinearProblem, quadratic_sensing
from theory.errors import UserInputError

__all__ = [
    "SPURIOUS_CONFIGS",
    "spurious_sensing",
    "adversarial_start",
    "spurious_hessian",
    "newton_polish",
]


@dataclass(frozen=True)
class _Design:
    """Stored data of one configuration (see the module docstring)."""

    m: int
    n: int
    r: int
    r_star: int
    lam: float
    radius: float
    x_star_sv: tuple[float, ...]
    w: tuple[tuple[float, ...], ...]
    hessian: tuple[tuple[float, ...], ...]  # upper triangle, row by row
    start_a: tuple[tuple[float, ...], ...]
    start_b: tuple[tuple[float, ...], ...]


# fmt: off
_DESIGNS: dict[str, _Design] = {
    "kappa4": _Design(
        m=3, n=3, r=2, r_star=1, lam=0.1, radius=2.1,
        x_star_sv=(1.746077,),
        w=(
            (-0.094377, 0.010859,),
            (0.010859, 0.094377,),
        ),
        hessian=(
            (2.569792, -0.233537, -0.014768, 0.223714, 1.056959, -0.114076, -0.042462, -0.1191,
                -1.099284,),
            (3.082603, -0.033127, 1.035519, 0.006497, -0.101829, -0.060598, 0.12724, 0.21384,),
            (3.022124, -0.091575, 0.091598, 0.165844, -0.999331, -0.042064, 0.119694,),
            (3.01144, 0.201108, -0.148058, -0.000903, 0.09405, -0.03164,),
            (2.224252, -0.019796, -0.128171, -0.035183, -0.268129,),
            (1.93414, -0.132766, -0.041539, 0.03039,),
            (3.046431, 0.04399, -0.102202,),
            (1.913409, 0.048544,),
            (2.242478,),
        ),
        start_a=(
            (-0.125537, 0.079287,),
            (0.345968, -0.772537,),
            (0.791242, 0.350369,),
        ),
        start_b=(
            (-0.104847, -0.003759,),
            (0.269632, -0.809792,),
            (-0.8233, -0.264729,),
        ),
    ),
    "kappa10": _Design(
        m=3, n=3, r=2, r_star=1, lam=0.1, radius=4.6,
        x_star_sv=(3.667688,),
        w=(
            (-0.086513, -0.039249,),
            (-0.039249, 0.086513,),
        ),
        hessian=(
            (4.920999, 0.338101, 0.214712, 0.535051, 2.496564, 2.493968, -0.462686, -0.435931,
                -2.11803,),
            (5.611397, -1.752176, 1.522353, 1.176715, 0.203994, 1.519317, -0.367763, 0.362765,),
            (4.518647, -0.036, -0.20682, 0.745311, -1.715354, -0.126785, -0.774531,),
            (4.220475, 0.96656, 0.80522, 1.516479, -0.183971, 0.010996,),
            (3.948059, 0.878282, 0.295039, 0.107618, -0.894482,),
            (4.050208, -0.445201, -0.825968, -0.652659,),
            (6.124762, 0.446938, 1.165552,),
            (3.61408, -0.338303,),
            (3.793895,),
        ),
        start_a=(
            (-0.443825, -0.021355,),
            (1.433995, -0.405816,),
            (-0.797534, -0.717788,),
        ),
        start_b=(
            (-0.399348, 0.009707,),
            (0.976323, -0.663997,),
            (1.332929, 0.489262,),
        ),
    ),
    "kappa20": _Design(
        m=3, n=3, r=2, r_star=1, lam=0.1, radius=4.2,
        x_star_sv=(3.216063,),
        w=(
            (-0.067365, 0.066985,),
            (-0.066984, -0.067365,),
        ),
        hessian=(
            (9.063849, -0.180045, 1.696557, -1.052692, 1.432576, -6.625859, 0.821609, 0.218088,
                5.440246,),
            (13.847891, 1.066782, 3.085199, -2.348866, 0.862501, 3.656938, 1.63138, 1.103034,),
            (4.70658, -0.52495, 0.017213, -2.13443, 1.123481, 0.017668, 1.914634,),
            (8.083051, -0.984516, 2.59781, 4.626492, 0.458779, 0.300103,),
            (6.844891, -0.405232, -0.837086, 2.67041, 0.399769,),
            (8.409284, 0.157883, 0.80751, -2.969312,),
            (10.189133, 0.335962, 2.850973,),
            (7.94457, 0.313215,),
            (7.155491,),
        ),
        start_a=(
            (-0.462098, -0.001846,),
            (-1.288459, -0.349768,),
            (1.028148, -0.439153,),
        ),
        start_b=(
            (-0.487356, -0.000583,),
            (-0.18801, -0.557707,),
            (1.630303, -0.06449,),
        ),
    ),
    "rank-gap2": _Design(
        m=4, n=4, r=3, r_star=1, lam=0.1, radius=7.7,
        x_star_sv=(6.55014425,),
        w=(
            (-0.00565006, -0.08298303, -0.04590056,),
            (-0.00614534, -0.04556487, 0.08313268,),
            (-0.09463233, 0.00791348, -0.00265805,),
        ),
        hessian=(
            (3.09025324, -0.7706898, -0.22206325, 0.58085575, 0.13393005, 0.08502386, 0.9901148,
                0.64202752, 0.52668715, -0.01578156, 0.47465084, -1.01471897, 0.75946691, 0.99048294,
                -0.12617073, 0.14549151,),
            (4.26263664, 0.12335559, -0.11719221, 0.25413065, 0.37896864, -0.24219528, -0.05295802,
                -0.22622979, -0.22498347, -0.12401599, 0.26240477, 1.28879637, -0.36297537, 0.12201136,
                0.57293404,),
            (4.02534064, -0.14026802, 1.41380518, -0.26831294, 0.38767928, 0.45026428, 0.56083964,
                -0.11057229, -0.27702776, 0.42265911, -0.34722344, -0.1031779, 0.1755714, -0.10963695,),
            (3.68616384, 0.58101698, -0.09620527, 0.04888756, 0.63744579, -1.27703454, 0.22872562,
                -0.04209325, -0.76952604, -0.03492234, 0.05212848, -0.01884149, 0.11108823,),
            (3.6364483, -0.23377457, 0.34588747, 0.75853781, 0.12655057, -0.03941414, -0.19176829,
                0.05563861, -0.07148659, -0.05546015, 0.13795832, 0.0334504,),
            (2.2135257, -0.01975113, -0.0943345, 0.04828451, 0.03847178, 0.05534593, -0.03680527,
                0.42725523, 0.02692475, -0.00017181, 0.15075985,),
            (2.40366081, 0.18900835, 0.49846538, -0.0796714, 0.15075005, -0.09327032, 0.27106705,
                0.20070177, 0.013674, 0.03184431,),
            (2.37984585, -0.08915897, 0.00821721, -0.04484876, -0.14120417, 0.134518, 0.07750768,
                0.03348994, 0.07147236,),
            (3.96109928, -0.31904005, 0.1832883, 0.52202009, 0.37519971, 0.3213736, 0.02130696,
                -0.04965604,),
            (2.14560095, -0.02732019, -0.09940907, -0.22991758, -0.04097521, -0.00981537, -0.06994063,),
            (2.13272009, -0.13226772, 0.18123774, 0.0999908, -0.03896208, 0.02852293,),
            (2.43967699, -0.2728335, -0.15445227, 0.05587008, -0.10780254,),
            (4.17611597, 0.16408872, 0.04596736, 0.77242974,),
            (2.37131681, -0.04170759, -0.01699027,),
            (2.16715268, -0.0288641,),
            (2.28587106,),
        ),
        start_a=(
            (-0.40835617, 0.18142096, 0.03469866,),
            (1.16651312, -0.5254463, -0.89508279,),
            (-1.21418592, -0.49349603, -0.91287879,),
            (-0.06889855, -1.2747502, 0.72729156,),
        ),
        start_b=(
            (-0.62009978, -0.2614132, 0.01533023,),
            (0.07351673, -1.330645, 0.58622395,),
            (0.50377356, -0.56402317, -1.28857212,),
            (1.5371356, 0.14303381, 0.40045755,),
        ),
    ),
}
# fmt: on

SPURIOUS_CONFIGS: tuple[str, ...] = tuple(_DESIGNS)


def _design(config: str) -> _Design:
    if not isinstance(config, str) or config not in _DESIGNS:
        raise UserInputError(f"config: expected one of {SPURIOUS_CONFIGS}, got {config!r}")
    return _DESIGNS[config]


def spurious_hessian(config: str) -> Tensor:
    r"""The Hessian :math:`H = J^\top J/N` of the risk of ``config`` on row-major ``vec X`` (float64)."""
    d = _design(config)
    p = d.m * d.n
    H = torch.zeros(p, p, dtype=torch.float64)
    for i, row in enumerate(d.hessian):
        if len(row) != p - i:
            raise AssertionError(f"stored Hessian of {config!r}: row {i} has {len(row)} entries, not {p - i}")
        H[i, i:] = torch.tensor(row, dtype=torch.float64)
    return torch.triu(H) + torch.triu(H, 1).T


def spurious_sensing(*, config: str = "kappa4") -> NonlinearProblem:
    r"""The sensing problem of ``config`` (module docstring): convex risk, certified rank-``r*`` optimum.

    :math:`L(X) = \frac{1}{2N}\sum_i (\langle M_i, X\rangle - y_i)^2` with :math:`N = mn`,
    :math:`\operatorname{vec} M_i` the rows of :math:`\sqrt N H^{1/2}`, :math:`y = \sqrt N H^{1/2}
    x_0` and :math:`x_0 = x^\star - H^{-1}\operatorname{vec} G^\star`; ``x_star`` is the designed
    :math:`X^\star`, the global minimizer of :math:`L + \lambda\|\cdot\|_*`.  ``linear`` is the same
    risk as a linearized ``Problem`` (so the NUC certificate and :math:`H`'s eigenvalues apply).
    """
    d = _design(config)
    m, n, N = d.m, d.n, d.m * d.n
    H = spurious_hessian(config)
    evals, Q = torch.linalg.eigh(H)
    if float(evals[0]) <= 0:
        raise AssertionError(f"stored Hessian of {config!r} is not positive definite")
    Xs = torch.zeros(m, n, dtype=torch.float64)
    G = torch.zeros(m, n, dtype=torch.float64)
    for k, s in enumerate(d.x_star_sv):
        Xs[k, k] = s
        G[k, k] = -d.lam
    G[d.r_star :, d.r_star :] = torch.tensor(d.w, dtype=torch.float64)
    x0 = Xs.reshape(-1) - torch.linalg.solve(H, G.reshape(-1))
    Mflat = math.sqrt(N) * (Q * evals.sqrt()) @ Q.T
    y = Mflat @ x0

    return quadratic_sensing(
        Mflat,
        y,
        shape=(m, n),
        lam=d.lam,
        x_star=Xs,
        name=f"spurious-sensing-{config}-{m}x{n}-r{d.r}",
        linear_name="spurious-sensing-as-linear",
        meta={
            "risk_nonnegative": True,
            "family": "spurious_sensing",
            "config": config,
            "N": N,
            "rank": d.r_star,
            "lora_rank": d.r,
            "radius": d.radius,
            "kappa": float(evals[-1] / evals[0]),
            "seed": 0,
        },
    )


def adversarial_start(*, config: str = "kappa4") -> Factors:
    r"""LoRA factors (rank ``r``) at the designed spurious point of ``config``; training stays there.

    The balanced factors :math:`(U S^{1/2}, V S^{1/2})` of the designed :math:`X_s`, rounded as
    stored; the rounding of :math:`H` moves the actual stationary point by about 1e-5, and
    L-BFGS (or Adam then L-BFGS) from here ends at it.
    """
    d = _design(config)
    A = torch.tensor(d.start_a, dtype=torch.float64)
    B = torch.tensor(d.start_b, dtype=torch.float64)
    return Factors(A=(A,), B=(B,))


def newton_polish(problem: NonlinearProblem, point: Factors, *, steps: int = 5) -> Factors:
    r"""Newton steps on the LoRA objective with the dense Hessian (small problems), gauge removed.

    Each step solves :math:`\nabla^2 L^{\mathrm{lora}}_\lambda\, \delta = -\nabla L^{\mathrm{lora}}_\lambda`
    by least squares with the eigenvalues below :math:`10^{-10}\lambda_{\max}` (the :math:`O(r)`
    gauge at a balanced stationary point) dropped.  Near a strict local minimizer modulo the gauge
    this converges quadratically, to a gradient at round-off, where L-BFGS stalls near
    :math:`10^{-8}`.  One HVP per parameter per step.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise UserInputError(f"steps: expected an int >= 0, got {steps!r}")
    for _ in range(steps):
        _, gA, gB = problem.lora_value_and_grad(point.A, point.B)
        g = flatten_factors(gA, gB).to(torch.float64)
        Hl = nonlinear_hessian(problem, point)
        ev, vec = torch.linalg.eigh((Hl + Hl.T) / 2)
        keep = ev.abs() > 1e-10 * float(ev.abs().max())
        step = -(vec[:, keep] @ ((vec[:, keep].T @ g) / ev[keep]))
        x = flatten_factors(point.A, point.B).to(torch.float64) + step
        A, B = unflatten_factors(x, point.A, point.B)
        point = Factors(tuple(A), tuple(B))
    return point
