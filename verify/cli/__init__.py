"""The ``loracheck`` command line."""

from verify.cli.common import EXIT_BAD_INPUT, EXIT_INTERNAL
from verify.cli.main import main

__all__ = ["main", "EXIT_BAD_INPUT", "EXIT_INTERNAL"]
