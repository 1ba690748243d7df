"""The package's one input-error type.

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

__all__ = ["UserInputError", "InputTypeError"]


class UserInputError(ValueError):
    """Bad input: the message names the argument, the expected value and the value received."""


class InputTypeError(UserInputError, TypeError):
    """Bad input of the wrong Python type (also a ``TypeError``, as the built-ins raise)."""
