r"""Per-example losses :math:`\ell(z, y)`, convex in the model output :math:`z \in \mathbb{R}^K`.

Each loss gives, on a batch ``z`` of shape ``(N, K)``: the values, the gradients, Hessian-vector
products in ``z``, and the convex conjugate :math:`\ell^*(s; y) = \sup_u \langle s, u\rangle -
\ell(u, y)` used by the NUC duality gap.

============== ======= ========================== =========================================
name           K       labels ``y``               :math:`\ell(z, y)`
============== ======= ========================== =========================================
squared        any     float, shape ``(N, K)``    :math:`\tfrac12 \|z - y\|^2`
logistic       1       int 0/1, shape ``(N,)``    :math:`\log(1 + e^{z}) - y z`
cross_entropy  >= 2    int in [0, K), ``(N,)``    :math:`\operatorname{logsumexp}(z) - z_y`
============== ======= ========================== =========================================
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from theory.errors import InputTypeError, UserInputError

__all__ = ["Loss", "SquaredLoss", "LogisticLoss", "CrossEntropyLoss", "get_loss", "LOSS_NAMES"]


class Loss(ABC):
    """A convex per-example loss of a ``K``-dimensional output (see the module table)."""

    name: ClassVar[str]
    #: Upper bound on the eigenvalues of the per-example Hessian in ``z`` (Lipschitz constant of
    #: the gradient); used for step sizes of first-order methods.
    max_curvature: ClassVar[float]
    #: A bound on the third derivative: :math:`\|\ell''(z') - \ell''(z)\|_{op} \le c_3 \|z' - z\|_2`.
    max_third: ClassVar[float]

    @abstractmethod
    def validate(self, y: Tensor, N: int, K: int) -> None:
        """Raise ``ValueError`` unless ``y`` are valid labels for ``N`` examples and ``K`` outputs."""

    @abstractmethod
    def value(self, z: Tensor, y: Tensor) -> Tensor:
        """Per-example losses, shape ``(N,)``."""

    @abstractmethod
    def grad(self, z: Tensor, y: Tensor) -> Tensor:
        r""":math:`\nabla_z \ell(z_i, y_i)`, shape ``(N, K)``."""

    @abstractmethod
    def hvp(self, z: Tensor, y: Tensor, v: Tensor) -> Tensor:
        r""":math:`\nabla_z^2 \ell(z_i, y_i)\, v_i`, shape ``(N, K)``."""

    @abstractmethod
    def conjugate(self, s: Tensor, y: Tensor) -> Tensor:
        r""":math:`\ell^*(s_i; y_i)`, shape ``(N,)``; ``+inf`` outside the domain."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _check_shape(y: Tensor, expected: tuple[int, ...], what: str) -> None:
    if not isinstance(y, Tensor):
        raise InputTypeError(f"y: expected a torch.Tensor of {what}, got {type(y).__name__}")
    if tuple(y.shape) != expected:
        raise UserInputError(f"y: expected shape {expected} ({what}), got {tuple(y.shape)}")


def _check_int_labels(y: Tensor, N: int, K: int, low: int, high: int) -> None:
    _check_shape(y, (N,), f"integer class labels in [{low}, {high}]")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise UserInputError(f"y: expected an integer dtype for class labels, got {y.dtype}")
    if y.numel() and (int(y.min()) < low or int(y.max()) > high):
        bad = y[(y < low) | (y > high)][0].item()
        raise UserInputError(f"y: expected labels in [{low}, {high}] for K = {K}, got a label {bad}")


class SquaredLoss(Loss):
    r"""Squared loss :math:`\ell(z, y) = \tfrac12 \|z - y\|^2`.

    Conjugate: :math:`\ell^*(s; y) = \tfrac12\|s\|^2 + \langle s, y\rangle`.
    """

    name = "squared"
    max_curvature = 1.0
    max_third = 0.0

    def validate(self, y: Tensor, N: int, K: int) -> None:  # noqa: D102
        _check_shape(y, (N, K), "real targets")
        if not y.dtype.is_floating_point:
            raise UserInputError(f"y: expected a floating dtype for squared-loss targets, got {y.dtype}")
        if not bool(torch.isfinite(y).all()):
            raise UserInputError("y: expected finite targets, got NaN or inf")

    def value(self, z: Tensor, y: Tensor) -> Tensor:  # noqa: D102
        return 0.5 * ((z - y) ** 2).sum(dim=1)

    def grad(self, z: Tensor, y: Tensor) -> Tensor:  # noqa: D102
        return z - y

    def hvp(self, z: Tensor, y: Tensor, v: Tensor) -> Tensor:  # noqa: D102
        return v

    def conjugate(self, s: Tensor, y: Tensor) -> Tensor:  # noqa: D102
        return 0.5 * (s**2).sum(dim=1) + (s * y).sum(dim=1)


def _xlogx(p: Tensor) -> Tensor:
    return torch.where(p > 0, p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny)), torch.zeros_like(p))


class LogisticLoss(Loss):
    r"""Single-logit logistic loss :math:`\ell(z, y) = \log(1 + e^z) - y z`, :math:`y \in \{0, 1\}`.

    Conjugate: with :math:`p = s + y`, :math:`\ell^*(s; y) = p \log p + (1 - p)\log(1 - p)` for
    :math:`p \in [0, 1]`, else :math:`+\infty`.
    """

    name = "logistic"
    max_curvature = 0.25
    # |sigma (1 - sigma)(1 - 2 sigma)| <= 1 / (6 sqrt 3) = 0.0962250...
    max_third = 0.0962251
    #: Slack allowed on the domain boundary of the conjugate (float round-off).
    domain_atol: ClassVar[float] = 1e-12

    def validate(self, y: Tensor, N: int, K: int) -> None:  # noqa: D102
        if K != 1:
            raise UserInputError(f"K: the logistic loss needs K = 1 output, got K = {K}")
        _check_int_labels(y, N, K, 0, 1)

    def value(self, z: Tensor, y: Tensor) -> Tensor:  # noqa: D102
        # log(1 + e^z) - y z = log(1 + e^{-z}) when y = 1: both forms exact for large |z|
        # (torch's softplus returns z itself above its threshold and loses log1p(e^{-z})).
        z1 = z[:, 0]
        zero = torch.zeros_like(z1)
        return torch.where(y == 1, torch.logaddexp(zero, -z1), torch.logaddexp(zero, z1))

    def grad(self, z: Tensor, y: Tensor) -> Tensor:  # noqa: D102
        return (torch.sigmoid(z[:, 0]) - y.to(z.dtype)).unsqueeze(1)

    def hvp(self, z: Tensor, y: Tensor, v: Tensor) -> Tensor:  # noqa: D102
        p = torch.sigmoid(z)
        return p * (1 - p) * v

    def conjugate(self, s: Tensor, y: Tensor) -> Tensor:  # noqa: D102
        p = s[:, 0] + y.to(s.dtype)
        inside = (p >= -self.domain_atol) & (p <= 1 + self.domain_atol)
        p = p.clamp(0.0, 1.0)
        val = _xlogx(p) + _xlogx(1 - p)
        return torch.where(inside, val, torch.full_like(val, math.inf))


class CrossEntropyLoss(Loss):
    r"""Softmax cross-entropy :math:`\ell(z, y) = \log\sum_k e^{z_k} - z_y`, ``K >= 2``.

    Conjugate: with :math:`p = s + e_y`, :math:`\ell^*(s; y) = \sum_k p_k \log p_k` when
    :math:`p` lies in the probability simplex, else :math:`+\infty`.
    """

    name = "cross_entropy"
    max_curvature = 0.5
    # The third derivative of log-sum-exp is the third central moment under p = softmax(z):
    # |E[(h - Eh)(u - Eu)^2]| <= max_i |h_i - Eh| Var(u) <= sqrt(2) |h| * |u|^2 / 2.
    max_third = 0.7071068
    domain_atol: ClassVar[float] = 1e-12

    def validate(self, y: Tensor, N: int, K: int) -> None:  # noqa: D102
        if K < 2:
            raise UserInputError(
                f"K: cross_entropy needs K >= 2 outputs, got K = {K} (use 'logistic' for one logit)"
            )
        _check_int_labels(y, N, K, 0, K - 1)

    def value(self, z: Tensor, y: Tensor) -> Tensor:  # noqa: D102
        return torch.logsumexp(z, dim=1) - z.gather(1, y.long().unsqueeze(1)).squeeze(1)

    def grad(self, z: Tensor, y: Tensor) -> Tensor:  # noqa: D102
        p = torch.softmax(z, dim=1)
        return p - torch.nn.functional.one_hot(y.long(), z.shape[1]).to(z.dtype)

    def hvp(self, z: Tensor, y: Tensor, v: Tensor) -> Tensor:  # noqa: D102
        p = torch.softmax(z, dim=1)
        return p * v - p * (p * v).sum(dim=1, keepdim=True)

    def conjugate(self, s: Tensor, y: Tensor) -> Tensor:  # noqa: D102
        p = s + torch.nn.functional.one_hot(y.long(), s.shape[1]).to(s.dtype)
        # round-off slack per row, relative to that row's own size
        scale = s.abs().amax(dim=1).clamp_min(1.0)
        inside = (p >= -self.domain_atol * scale[:, None]).all(dim=1) & (
            (p.sum(dim=1) - 1).abs() <= 1e3 * self.domain_atol * scale * s.shape[1]
        )
        val = _xlogx(p.clamp_min(0.0)).sum(dim=1)
        return torch.where(inside, val, torch.full_like(val, math.inf))


_LOSSES: dict[str, type[Loss]] = {cls.name: cls for cls in (SquaredLoss, LogisticLoss, CrossEntropyLoss)}
LOSS_NAMES: tuple[str, ...] = tuple(_LOSSES)


def get_loss(loss: str | Loss) -> Loss:
    """Return the loss object for a name (``'squared'``, ``'logistic'``, ``'cross_entropy'``)."""
    if isinstance(loss, Loss):
        return loss
    if not isinstance(loss, str) or loss not in _LOSSES:
        raise UserInputError(f"loss: expected one of {', '.join(LOSS_NAMES)}; got {loss!r}")
    return _LOSSES[loss]()
