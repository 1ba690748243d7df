"""``loracheck claims``: every claim and whether it has a checker."""

from __future__ import annotations

import argparse
import json
import textwrap

NAME = "claims"
HELP = "list the claims and which have checkers"
DESCRIPTION = HELP


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the subcommand's arguments to its parser ``p``."""
    p.add_argument("--json", action="store_true", help="machine-readable output")


def handle(args: argparse.Namespace) -> int:
    """List the claims and which have checkers."""
    from theory.claims import CLAIMS, PAPERS
    from verify.registry import CHECKERS

    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": c.id,
                        "paper": c.paper,
                        "reference": c.reference,
                        "statement": c.statement,
                        "confirmed": c.confirmed,
                        "checker": c.id in CHECKERS,
                    }
                    for c in CLAIMS
                ],
                indent=1,
            )
        )
        return 0
    width = max(len(c.id) for c in CLAIMS)
    for paper, cite in PAPERS.items():
        print(f"[{paper}] {cite}")
        for c in CLAIMS:
            if c.paper != paper:
                continue
            mark = "checker" if c.id in CHECKERS else "planned"
            conf = "" if c.confirmed else " (exact form unconfirmed)"
            text = textwrap.shorten(c.statement, 100)
            print(f"  {c.id:<{width}}  {mark:<7}  {c.reference}{conf}: {text}")
        print()
    print(f"{len(CHECKERS)} of {len(CLAIMS)} claims have checkers.")
    return 0
