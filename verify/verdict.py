"""The result of a checker: a verdict with the certificate a reader can re-check."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from theory.errors import InputTypeError, UserInputError

__all__ = ["Verdict", "Status", "STATUSES", "jsonable"]

Status = Literal["holds", "violated", "inconclusive"]
STATUSES: tuple[str, ...] = ("holds", "violated", "inconclusive")


def jsonable(x: Any) -> Any:
    """Convert numbers, tensors, arrays and containers into plain JSON data.

    Non-finite floats become the strings ``"inf"``, ``"-inf"``, ``"nan"`` (JSON has no such numbers).
    """
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().tolist()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        x = x.tolist()
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        if math.isfinite(x):
            return x
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    raise InputTypeError(f"value: expected JSON-compatible data, got {type(x).__name__}")


@dataclass(frozen=True)
class Verdict:
    """A checker's verdict on one claim and one problem.

    Attributes
    ----------
    claim
        The claim id (see ``theory.claims``).
    status
        ``"holds"`` (certified within tolerance), ``"violated"`` (certified counterexample) or
        ``"inconclusive"`` (``reason`` says why).
    problem
        The problem's fingerprint (sizes, K, N, lam, loss, seed, hash).
    certificate
        Numbers a reader can re-check: gaps, residuals, ranks, singular values, the bound.
    reason
        One sentence.
    timings
        Seconds per stage.
    options
        The checker's options (tolerances, ranks, claim variants).
    counterexample
        Path of the saved problem file when ``status == "violated"`` and it was saved.
    """

    claim: str
    status: Status
    problem: Mapping[str, Any]
    certificate: Mapping[str, Any]
    reason: str
    timings: Mapping[str, float] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    counterexample: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise UserInputError(f"status: expected one of {STATUSES}, got {self.status!r}")
        for name in ("problem", "certificate", "timings", "options"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def holds(self) -> bool:
        """``True`` for a certified ``holds``."""
        return self.status == "holds"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data with the field names as keys."""
        return {
            "claim": self.claim,
            "status": self.status,
            "problem": jsonable(dict(self.problem)),
            "certificate": jsonable(dict(self.certificate)),
            "reason": self.reason,
            "timings": jsonable(dict(self.timings)),
            "options": jsonable(dict(self.options)),
            "counterexample": self.counterexample,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        """Inverse of :meth:`to_dict` (numbers stay plain JSON numbers)."""
        return cls(
            claim=d["claim"],
            status=d["status"],
            problem=d["problem"],
            certificate=d["certificate"],
            reason=d["reason"],
            timings=d.get("timings", {}),
            options=d.get("options", {}),
            counterexample=d.get("counterexample"),
        )

    def summary(self) -> str:
        """One line: claim, status, problem, reason."""
        p = self.problem
        if "N" in p:
            where = f"{p.get('name', '')} N={p.get('N')} K={p.get('K')}"
        else:  # e.g. an attention head of [HSK24]: no examples x outputs
            where = f"{p.get('name', '')}" + (f" case {p['case']}" if "case" in p else "")
        return f"{self.claim:<16} {self.status:<12} {where}: {self.reason}"
