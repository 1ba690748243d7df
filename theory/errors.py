"""The package's one input-error type, and the checks of input values shared by every layer.

Every function that takes input from a user (a file, a command-line value, an argument of the
public API, a replayed option) validates it where it enters and raises :class:`UserInputError`
naming the argument, what was expected and what came. The command line maps this type, and only
this type, to exit code 3 ("bad input"); any other exception that escapes a command is a failure of
the computation (exit code 4), reported with its message.

Both classes subclass the built-in type that Python code would expect (``ValueError``,
``TypeError``), so ``except ValueError`` in user code keeps working. This module is at the bottom of
the import graph (``theory`` imports nothing of the package) so that every layer can raise it.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["UserInputError", "InputTypeError", "finite_number", "positive_int", "nonnegative_int", "shown"]


class UserInputError(ValueError):
    """Bad input: the message names the argument, the expected value and the value received."""


class InputTypeError(UserInputError, TypeError):
    """Bad input of the wrong Python type (also a ``TypeError``, as the built-ins raise)."""


def finite_number(value: object) -> bool:
    """Whether ``value`` is a real number (not a bool) that is finite *as a float*.

    An int beyond the float range (``10**400`` from a JSON or TOML file) is not: ``float`` and
    ``math.isfinite`` raise ``OverflowError`` on it, which is no ``ValueError`` and would escape the
    input boundary as an internal error.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _int_at_least(name: str, value: object, low: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputTypeError(f"{name}: expected {what}, got {type(value).__name__} {value!r}")
    if value < low:
        raise UserInputError(f"{name}: expected {what}, got {value!r}")
    return value


def positive_int(name: str, value: object) -> int:
    """``value`` if it is an int >= 1 (not a bool); else a :class:`UserInputError` naming ``name``."""
    return _int_at_least(name, value, 1, "a positive int")


def nonnegative_int(name: str, value: object) -> int:
    """``value`` if it is an int >= 0 (not a bool); else a :class:`UserInputError` naming ``name``."""
    return _int_at_least(name, value, 0, "a non-negative int")


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages quoting input of any size.

    Safe for ints of any length (``repr`` of an int over 4,300 digits raises ``ValueError``).
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        sign = "-" if value < 0 else ""
        return f"an int of {value.bit_length()} bits (about {sign}10**{int(value.bit_length() * 0.30103)})"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
