"""The checkers' options: kinds and ranges (:class:`Spec`), and their validation.

Each checker declares its options beside it (:func:`verify.checker.checker`); they are gathered
in :data:`OPTION_SPECS`.  Every path that runs a checker validates its options against them before
any work: the command line, :func:`verify.audit` / :func:`verify.run.audits.plan_audit`
(``options=...``), a replayed counterexample's stored options
(:func:`verify.run.audits.replay_options`), the suites of ``loracheck run`` and a direct call of a
checker from Python (each ``check_*`` function is wrapped by :func:`validated`).  A wrong type
raises :class:`~theory.errors.InputTypeError`, a value out of range
:class:`~theory.errors.UserInputError`; the message names the claim, the option, the expected
range and the value, e.g. ``JLR-rank-NUC option gap_rtol: expected a finite number in (0, 1),
got -1.0``.

Kinds
-----
- tolerances (``*rtol``, ``*_tol``, probabilities, levels): finite numbers in ``(0, 1)``;
- scale factors: finite numbers ``> 0`` (``grid_ratio > 1``);
- counts (``n_starts``, ``steps``, ``samples``, lengths, ...): ints in ``[low, cap]``, the caps
  in each checker's declaration (e.g. ``n_starts <= 10**4``, ``steps <= 10**7``);
- ranks: ints ``>= 1`` (or one per block); given the problem, ``r_j <= m_j + n_j`` in every
  block ``j`` (see :class:`Rank`: not ``min(m, n)``, which the claims' hypotheses can exceed);
- seeds: ints in ``[0, 2**63)``; booleans: ``bool`` only (``1`` is not ``True``);
- enumerations: one of the listed strings; subsets: non-empty sequences of them.

Options that are objects (a NUC ``solution``, KKR ``evidence``, an ``encoder``, a custom
``prediction`` callable, held-out data) are checked by their checker, not here.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from theory.errors import InputTypeError, UserInputError, finite_number, shown

__all__ = [
    "register_options",
    "OPTION_SPECS",
    "Spec",
    "check_options",
    "object_options",
    "spec_table",
    "validated",
]

_F = TypeVar("_F", bound=Callable[..., Any])

_SEED_MAX = 2**63
_INF = math.inf


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _interval(lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    a = "(" if lo_open else "["
    b = ")" if hi_open or hi == _INF else "]"
    hi_s = "inf" if hi == _INF else f"{hi:g}"
    return f"{a}{lo:g}, {hi_s}{b}"


class Spec:
    """One option's kind and range: :meth:`check` raises naming ``where`` (claim and option)."""

    optional: bool = False
    expect: str | None = None

    def describe(self) -> str:
        """What the option must be, for messages (``expect`` when the spec sets one)."""
        return self.expect if self.expect is not None else self._describe()

    def _describe(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def _check(self, value: Any, where: str, problem: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def check(self, value: Any, where: str, problem: Any = None) -> None:
        """Raise :class:`~theory.errors.UserInputError` unless ``value`` fits this spec."""
        if value is None:
            if self.optional:
                return
            raise InputTypeError(f"{where}: expected {self.describe()}, got None")
        self._check(value, where, problem)


@dataclass(frozen=True)
class Real(Spec):
    """A finite number in an interval (ints are accepted as numbers, bools are not)."""

    lo: float = 0.0
    hi: float = _INF
    lo_open: bool = True
    hi_open: bool = True
    optional: bool = False
    expect: str | None = None

    def _describe(self) -> str:
        if self.hi == _INF and self.lo == 0.0:
            s = "a positive finite number" if self.lo_open else "a finite number >= 0"
        elif self.hi == _INF:
            s = f"a finite number {'>' if self.lo_open else '>='} {self.lo:g}"
        else:
            s = f"a number in {_interval(self.lo, self.hi, self.lo_open, self.hi_open)}"
        return ("None or " if self.optional else "") + s

    def _check(self, value: Any, where: str, problem: Any) -> None:
        if not _is_real(value):
            raise InputTypeError(f"{where}: expected {self.describe()}, got {shown(value)}")
        if not finite_number(value):  # nan, inf, or an int beyond the float range (10**400)
            raise UserInputError(f"{where}: expected {self.describe()}, got {shown(value)}")
        v = float(value)
        ok = (
            math.isfinite(v)
            and (v > self.lo if self.lo_open else v >= self.lo)
            and (v < self.hi if self.hi_open else v <= self.hi)
        )
        if not ok:
            raise UserInputError(f"{where}: expected {self.describe()}, got {shown(value)}")


@dataclass(frozen=True)
class Int(Spec):
    """An int in ``[lo, hi]`` (bools and floats are refused)."""

    lo: int = 1
    hi: int = 10**6
    optional: bool = False
    expect: str | None = None

    def _describe(self) -> str:
        if self.lo in (0, 1):
            s = f"{'a positive int' if self.lo == 1 else 'an int >= 0'} (at most {self.hi})"
        else:
            s = f"an int in [{self.lo}, {self.hi}]"
        return ("None or " if self.optional else "") + s

    def _check(self, value: Any, where: str, problem: Any) -> None:
        if not _is_int(value):
            raise InputTypeError(f"{where}: expected {self.describe()}, got {shown(value)}")
        if not self.lo <= value <= self.hi:
            raise UserInputError(f"{where}: expected {self.describe()}, got {shown(value)}")


@dataclass(frozen=True)
class Bool(Spec):
    """``True`` or ``False``."""

    def _describe(self) -> str:
        return "a bool (true or false)"

    def _check(self, value: Any, where: str, problem: Any) -> None:
        if not isinstance(value, bool):
            raise InputTypeError(f"{where}: expected {self.describe()}, got {shown(value)}")


@dataclass(frozen=True)
class Choice(Spec):
    """One of a few values (strings, or ints such as ``order``)."""

    values: tuple[Any, ...] = ()
    optional: bool = False
    expect: str | None = None

    def _describe(self) -> str:
        vals = (["None"] if self.optional else []) + [repr(v) for v in self.values]
        return vals[0] if len(vals) == 1 else ", ".join(vals[:-1]) + " or " + vals[-1]

    def _check(self, value: Any, where: str, problem: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise InputTypeError(f"{where}: expected {self.describe()}, got {shown(value)}")
        if value not in self.values:
            raise UserInputError(f"{where}: expected {self.describe()}, got {shown(value)}")


@dataclass(frozen=True)
class Str(Spec):
    """A string whose allowed values depend on the data (the checker names them)."""

    def _describe(self) -> str:
        return "a string"

    def _check(self, value: Any, where: str, problem: Any) -> None:
        if not isinstance(value, str):
            raise InputTypeError(f"{where}: expected {self.describe()}, got {shown(value)}")


@dataclass(frozen=True)
class Seq(Spec):
    """A list or tuple of ``min_len`` to ``max_len`` items, each fitting ``item``."""

    item: Spec = Real()
    min_len: int = 1
    max_len: int = 64
    distinct: bool = False
    optional: bool = False
    expect: str | None = None

    def _describe(self) -> str:
        d = "distinct " if self.distinct else ""
        if self.min_len == self.max_len:
            s = f"a list of exactly {self.min_len} {d}values"
        elif self.min_len == 1:
            s = f"a non-empty list of at most {self.max_len} {d}values"
        else:
            s = f"at least {self.min_len} {d}values (a list of at most {self.max_len})"
        return ("None or " if self.optional else "") + f"{s}, each {self.item.describe()}"

    def _check(self, value: Any, where: str, problem: Any) -> None:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise InputTypeError(f"{where}: expected {self.describe()}, got {shown(value)}")
        if not self.min_len <= len(value) <= self.max_len:
            raise UserInputError(f"{where}: expected {self.describe()}, got {len(value)} items")
        for i, x in enumerate(value):
            try:
                self.item.check(x, f"{where}[{i}]", problem)
            except UserInputError as exc:
                kind = InputTypeError if isinstance(exc, InputTypeError) else UserInputError
                raise kind(f"{where}: expected {self.describe()}, got {list(value)!r} ({exc})") from None
        if self.distinct and len({repr(x) for x in value}) != len(value):
            raise UserInputError(f"{where}: expected {self.describe()}, got {list(value)!r}")


@dataclass(frozen=True)
class Table(Spec):
    """A mapping from some of ``keys`` to values fitting ``value``."""

    keys: tuple[str, ...] = ()
    value: Spec = Real()
    optional: bool = False
    expect: str | None = None

    def _describe(self) -> str:
        return f"a mapping from {', '.join(map(repr, self.keys))} to {self.value.describe()}" + (
            " or None" if self.optional else ""
        )

    def _check(self, value: Any, where: str, problem: Any) -> None:
        if not isinstance(value, Mapping):
            raise InputTypeError(f"{where}: expected {self.describe()}, got {shown(value)}")
        for k, v in value.items():
            if k not in self.keys:
                raise UserInputError(f"{where}: expected {self.describe()}, got key {k!r}")
            self.value.check(v, f"{where}[{k!r}]", problem)


@dataclass(frozen=True)
class Fields(Spec):
    """A mapping of named sub-options, each with its own spec (e.g. KKR's ``collect``)."""

    fields: Mapping[str, Spec] = field(default_factory=dict)
    optional: bool = False
    expect: str | None = None

    def _describe(self) -> str:
        return ("None or " if self.optional else "") + f"a mapping with keys among {', '.join(self.fields)}"

    def _check(self, value: Any, where: str, problem: Any) -> None:
        if not isinstance(value, Mapping):
            raise InputTypeError(f"{where}: expected {self.describe()}, got {shown(value)}")
        for k, v in value.items():
            if k not in self.fields:
                raise UserInputError(f"{where}: expected {self.describe()}, got key {k!r}")
            self.fields[k].check(v, f"{where}[{k!r}]", problem)


@dataclass(frozen=True)
class Either(Spec):
    """Fits one of ``specs`` (e.g. one tolerance or one per optimizer)."""

    specs: tuple[Spec, ...] = ()
    optional: bool = False
    expect: str | None = None

    def _describe(self) -> str:
        return " or ".join(s.describe() for s in self.specs) + (" or None" if self.optional else "")

    def _check(self, value: Any, where: str, problem: Any) -> None:
        errors: list[UserInputError] = []
        for s in self.specs:
            try:
                s.check(value, where, problem)
                return
            except UserInputError as exc:
                errors.append(exc)
        if all(isinstance(e, InputTypeError) for e in errors):
            raise InputTypeError(f"{where}: expected {self.describe()}, got {shown(value)}")
        raise UserInputError(f"{where}: expected {self.describe()}, got {shown(value)}")


@dataclass(frozen=True)
class Both(Spec):
    """Fits every one of ``specs``, checked in order (the first unmet one is named)."""

    specs: tuple[Spec, ...] = ()
    optional: bool = False
    expect: str | None = None

    def _describe(self) -> str:
        return " and ".join(s.describe() for s in self.specs)

    def _check(self, value: Any, where: str, problem: Any) -> None:
        for s in self.specs:
            s.check(value, where, problem)


@dataclass(frozen=True)
class Rank(Spec):
    r"""A LoRA rank: an int ``>= 1`` (or, with ``per_block``, one per block), at most ``m + n``.

    The bound by the block's size is checked when the problem is known (it has ``blocks``).  It is
    ``m + n``, not ``min(m, n)``: the factors :math:`U \in \mathbb R^{m \times r}`,
    :math:`V \in \mathbb R^{n \times r}` are well defined for any ``r``, and the hypothesis of
    JLR-no-spurious, :math:`r(r+1)/2 > KN`, needs ``r > min(m, n)`` on small blocks (the test suite
    checks such cases); ``m + n`` bounds the factors' memory, ``(m + n) r`` entries per block, by
    ``(m + n)**2``, so a rank of ``10**9`` is refused before anything is allocated.
    """

    per_block: bool = False
    optional: bool = False
    cap: int = 100_000
    expect: str | None = None

    def _describe(self) -> str:
        s = f"a positive int (a LoRA rank, at most m + n per block and {self.cap})"
        if self.per_block:
            s += " or one such rank per block"
        return s + (" or None" if self.optional else "")

    def _check(self, value: Any, where: str, problem: Any) -> None:
        if _is_int(value):
            ranks = None
            r_all: list[int] = [value]
        elif self.per_block and isinstance(value, (list, tuple)):
            ranks = list(value)
            r_all = ranks
            if not ranks or not all(_is_int(r) for r in ranks):
                raise InputTypeError(f"{where}: expected {self.describe()}, got {shown(value)}")
        else:
            raise InputTypeError(f"{where}: expected {self.describe()}, got {shown(value)}")
        if any(not 1 <= r <= self.cap for r in r_all):
            raise UserInputError(f"{where}: expected {self.describe()}, got {shown(value)}")
        blocks = getattr(problem, "blocks", None)
        try:
            sizes = [(int(m), int(n)) for m, n in blocks] if blocks is not None else None
        except (TypeError, ValueError):
            sizes = None
        if not sizes:
            return
        if ranks is not None and len(ranks) != len(sizes):
            raise UserInputError(
                f"{where}: expected one rank per block ({len(sizes)} blocks), got {shown(value)}"
            )
        per = ranks if ranks is not None else [value] * len(sizes)
        for j, (r, (m, n)) in enumerate(zip(per, sizes)):
            if r > m + n:
                raise UserInputError(
                    f"{where}: expected a rank in [1, m + n] = [1, {m + n}] on block {j} ({m} x {n}), "
                    f"got {shown(value)}"
                )


@dataclass(frozen=True)
class Opaque(Spec):
    """An object the checker validates itself (a solution, evidence, an encoder, a callable)."""

    optional: bool = True
    expect: str | None = None

    def _describe(self) -> str:
        return "an object the checker accepts"

    def _check(self, value: Any, where: str, problem: Any) -> None:
        return None


@dataclass(frozen=True)
class Function(Opaque):
    """``None`` or a callable (a prediction to compare with; never taken from a file)."""

    def _describe(self) -> str:
        return "None or a callable"

    def _check(self, value: Any, where: str, problem: Any) -> None:
        if not callable(value):
            raise InputTypeError(f"{where}: expected {self.describe()}, got {shown(value)}")


# ------------------------------------------------------------------------------------------------
# Kinds the checkers' declarations share

RANK_BOUND = Int(0, 100_000, optional=True, expect="None or an int >= 0 (at most 100000)")
TOL = Real(0.0, 1.0)  # a relative tolerance, a probability or a level: (0, 1)
TOL_OPT = Real(0.0, 1.0, optional=True)
POS = Real(0.0, _INF)  # a finite positive number (scales, factors, step sizes)
POS_OPT = Real(0.0, _INF, optional=True)
NONNEG = Real(0.0, _INF, lo_open=False)
SEED = Int(0, _SEED_MAX - 1)
BOOL = Bool()
ANY = Opaque()

_WYL_INITS = ("vanilla", "gaussian", "loraga", "loraga-peft", "pissa")
WYL_INIT = Choice(_WYL_INITS, expect=f"one of {_WYL_INITS}")
FLOAT_TOL = Real(0.0, 1.0, expect="a float in (0, 1)")

_OPTION_TABLE: dict[str, Mapping[str, Spec]] = {}
#: Claim id -> option name -> :class:`Spec`, filled by the checkers' declarations: each checker
#: declares its options where it is written (:func:`verify.checker.checker` calls
#: :func:`register_options`), and :mod:`verify.registry` imports every room.  Options not listed
#: (``save_dir``) are not options of the computation.
OPTION_SPECS: Mapping[str, Mapping[str, Spec]] = MappingProxyType(_OPTION_TABLE)


def register_options(claim: str, specs: Mapping[str, Spec]) -> None:
    """Declare the options of ``claim``'s checker (once per claim)."""
    if claim in _OPTION_TABLE:
        raise RuntimeError(f"options of {claim} declared twice")
    for name, spec in specs.items():
        if not isinstance(spec, Spec):
            raise TypeError(f"option {name} of {claim}: expected a Spec, got {type(spec).__name__}")
    _OPTION_TABLE[claim] = MappingProxyType(dict(specs))


def object_options(claim: str) -> frozenset[str]:
    """The options of ``claim``'s checker that take Python objects, never replayed from a file.

    A solution, a prediction function, evidence, an encoder or weights are recorded in a saved
    file as a description only (a name, a flag).
    """
    return frozenset(k for k, spec in OPTION_SPECS.get(claim, {}).items() if isinstance(spec, Opaque))


def check_options(claim: str, options: Mapping[str, Any], problem: Any = None) -> None:
    """Validate ``options`` of ``claim``'s checker against :data:`OPTION_SPECS`.

    Unknown option names are refused; ``save_dir`` is allowed (it is not an option of the
    computation).  Ranks are also checked against ``problem``'s blocks when it is given.
    """
    if claim not in OPTION_SPECS:
        known = ", ".join(OPTION_SPECS)
        raise UserInputError(f"claim: expected a claim with a checker ({known}), got {claim!r}")
    if not isinstance(options, Mapping):
        raise InputTypeError(f"options of {claim}: expected a mapping of option names, got {options!r}")
    specs = OPTION_SPECS[claim]
    for name, value in options.items():
        if name == "save_dir":
            continue
        if name not in specs:
            raise UserInputError(
                f"options of {claim}: expected option names among {', '.join(specs)}, got {name!r}"
            )
        specs[name].check(value, f"{claim} option {name}", problem)


def validated(claim: str) -> Callable[[_F], _F]:
    """Decorate a checker: its keyword options are checked by :func:`check_options` on every call.

    Only the options the caller passes are checked (the defaults fit the spec; a test checks
    that); the checker's signature is kept (``inspect.signature`` follows ``__wrapped__``).
    """

    def wrap(fn: _F) -> _F:
        params = inspect.signature(fn).parameters
        first = next(iter(params))
        missing = set(params) - set(OPTION_SPECS[claim]) - {first, "save_dir"}
        assert not missing, f"{claim}: options without a spec: {sorted(missing)}"

        @functools.wraps(fn)
        def checker(*args: Any, **kwargs: Any) -> Any:
            problem = args[0] if args else kwargs.get(first)
            check_options(claim, {k: v for k, v in kwargs.items() if k != first}, problem)
            return fn(*args, **kwargs)

        return checker  # type: ignore[return-value]

    return wrap


def spec_table() -> str:
    """Every claim's options and their ranges, one line per option (for documentation)."""
    return "\n".join(f"{c} {n}: {s.describe()}" for c, opts in OPTION_SPECS.items() for n, s in opts.items())
