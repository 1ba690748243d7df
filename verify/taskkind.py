r"""Task kinds: what a unit of a sweep declares -- its function, parameter schema and seeds.

A task is described completely by its **spec**, a JSON object ``{"task": KIND, "seed": S,
"replicate": i, ...parameters}``: its hash :math:`\operatorname{sha256}(\operatorname{canon}(\text{spec}))`
keys the result store (:func:`canonical_json`: sorted keys, no whitespace, ASCII, ``repr``-exact
floats), and its seeds come from :func:`derive_seed` (the first 63 bits of a sha256 of the parts:
stable across machines and processes, independent of the order tasks run in).  A paper's task kind
(e.g. the [JLR24] phase-diagram run) is a :class:`TaskKind` with a :class:`Param` schema; the sweep
machinery (:mod:`verify.sweep`) expands, runs and stores them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from theory.errors import UserInputError, finite_number, shown

__all__ = ["REQUIRED", "RESERVED_KEYS", "Param", "TaskKind", "canonical_json", "derive_seed", "task_hash"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Default of a parameter that every task must set.
REQUIRED: Any = _Required()


#: Keys every spec has, set by the sweep (not parameters of the task kind).
RESERVED_KEYS = ("task", "seed", "replicate", "sample")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no whitespace, ASCII only; NaN and infinities are refused.

    Floats are written by ``repr`` (shortest round-trip form), so equal floats give equal text
    and the text reads back to the same bits.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def task_hash(spec: Mapping[str, Any]) -> str:
    """The sha256 (64 hex digits) of :func:`canonical_json` of ``spec``: the task's key in a store."""
    return hashlib.sha256(canonical_json(dict(spec)).encode("ascii")).hexdigest()


def derive_seed(*parts: Any) -> int:
    r"""A seed in :math:`[0, 2^{63})` from JSON-able ``parts``: the top 63 bits of their sha256.

    ``derive_seed("phase.problem", 0, 1, 3)`` is the same on every machine and in every process.
    Valid for ``torch.Generator.manual_seed`` and ``numpy.random.default_rng``.

    >>> derive_seed("a", 1) == derive_seed("a", 1) != derive_seed("a", 2)
    True
    """
    digest = hashlib.sha256(canonical_json(list(parts)).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True)
class Param:
    """One parameter of a task kind: its type, default, allowed values and meaning.

    ``type`` is ``"int"``, ``"float"`` (an int is accepted and converted, so ``lam = 1`` and
    ``lam = 1.0`` are the same task), ``"str"`` or ``"bool"``; ``low`` is an inclusive lower bound
    (``"int"``), ``positive`` requires a finite value ``> 0`` (``"float"``); ``choices`` lists the
    allowed values.
    """

    type: Literal["int", "float", "str", "bool"]
    default: Any = REQUIRED
    doc: str = ""
    low: int | None = None
    positive: bool = False
    choices: tuple[Any, ...] | None = None

    def expected(self) -> str:
        """The expectation in words (for error messages)."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.type == "int":
            return "an int" + (f" >= {self.low}" if self.low is not None else "")
        if self.type == "float":
            return "a finite number" + (" > 0" if self.positive else "")
        return {"str": "a string", "bool": "true or false"}[self.type]

    def normalize(self, value: Any) -> Any:
        """``value`` converted to this parameter's type; ``ValueError`` (without location) if invalid."""
        bad = UserInputError(f"expected {self.expected()}, got {shown(value)}")
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad
            if self.low is not None and value < self.low:
                raise bad
        elif self.type == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not finite_number(value):
                raise bad
            value = float(value)
            if not math.isfinite(value) or (self.positive and not value > 0):
                raise bad
        elif self.type == "str":
            if not isinstance(value, str):
                raise bad
        elif not isinstance(value, bool):
            raise bad
        if self.choices is not None and value not in self.choices:
            raise bad
        return value


@dataclass(frozen=True)
class TaskKind:
    """A kind of sweep task: the function, its parameter schema and a cross-parameter check.

    ``function(spec) -> dict`` computes one task; it must be importable by reference (a module
    attribute) so process-pool and Dask workers can run it, must draw all randomness from seeds
    derived from ``spec`` (:func:`derive_seed`), and must return JSON values (no NaN/inf: use
    ``None``).  ``params`` maps each parameter to its :class:`Param` (``None``: any JSON values,
    unchecked); ``check(spec)`` raises ``ValueError`` for invalid combinations (e.g. ``r > size``).
    """

    name: str
    function: Callable[[Mapping[str, Any]], Mapping[str, Any]]
    params: Mapping[str, Param] | None = None
    check: Callable[[Mapping[str, Any]], None] | None = field(default=None, repr=False)
    doc: str = ""
