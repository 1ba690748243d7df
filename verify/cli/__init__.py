"""The ``loracheck`` command line."""

from verify.cli.main import main

__all__ = ["main"]
