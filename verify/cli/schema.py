"""``loracheck schema``: the JSON Schema of a report or an audit."""

from __future__ import annotations

import argparse
import json

NAME = "schema"
HELP = "print the JSON Schema of a report or an audit file"
DESCRIPTION = (
    "Print the JSON Schema (draft 2020-12) of `loracheck run`'s report.json or of "
    "`loracheck audit --json`'s file (the copies in docs/schemas/ are written by this command)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the subcommand's arguments to its parser ``p``."""
    p.add_argument("kind", choices=["audit", "report"], help="which file format")


def handle(args: argparse.Namespace) -> int:
    """Print the schema."""
    from verify.report import REPORT_SCHEMA
    from verify.run.audits import AUDIT_SCHEMA

    print(json.dumps(AUDIT_SCHEMA if args.kind == "audit" else REPORT_SCHEMA, indent=1))
    return 0
