"""``loracheck run``: the default suite, a table of verdicts against the suite's record, report files."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from verify.cli.common import (
    BadInput,
    add_no_progress_argument,
    add_out_argument,
    add_problems_argument,
    check_real_extras,
    int_in,
    out_dir,
)
from verify.run.record import Comparison

NAME = "run"
HELP = "run the default suite of checks on synthetic problems (--real: and on a real model)"
DESCRIPTION = (
    "Run the default suite: the claims' checkers on synthetic NTK-regime problems "
    "(with --real also on the linearized offline MiniLM); print a table and write "
    "report.json/report.md.  The suite records the status each check is expected to have (holds; "
    "a known refutation; a known inconclusive, with why): the run reports every verdict and "
    "any difference from that record."
)
EPILOG = (
    "Exit codes: 0 every verdict as recorded, 1 a new violation, 2 another difference from "
    "the record (an expected holds came out inconclusive, or a recorded non-holds changed); with "
    "--strict: 0 all hold, 1 some violated, 2 some inconclusive.  3 bad input, 4 internal error."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the subcommand's arguments to its parser ``p``."""
    p.add_argument(
        "--strict",
        action="store_true",
        help="ignore the suite's record: exit 1 on any violation and 2 on any inconclusive",
    )
    add_out_argument(p, what="directory for report.json, report.md and counterexamples")
    p.add_argument("--claims", nargs="+", metavar="ID", help="only these claim ids (see `loracheck claims`)")
    add_problems_argument(p, help="only these problems of the suite")
    p.add_argument(
        "--real",
        action="store_true",
        help="add the real-model problems: the linearized offline MiniLM on 32 review sentences "
        "(needs the extra `models` and the review data, see the README)",
    )
    p.add_argument(
        "--hsk",
        action="store_true",
        help="add the attention-gradient claims of [HSK24] at full size (both adapter cases; the "
        "fast route is timed up to L = 65,536: a few minutes)",
    )
    add_no_progress_argument(p)
    p.add_argument(
        "--fresh",
        action="store_true",
        help="recompute everything (default: an interrupted run's finished verdicts in DIR are reused)",
    )
    p.add_argument(
        "--threads",
        type=int_in(1, 4096),
        default=None,
        metavar="N",
        help="threads for every check (default: one for small problems, the free cores for large ones)",
    )


def handle(args: argparse.Namespace) -> int:
    """Run the default suite and compare each verdict with the suite's record."""
    from verify.registry import CHECKERS
    from verify.report import build_report, evidence, exit_code, report_file, write_report
    from verify.run.record import compare, record_exit_code, record_summary
    from verify.run.suite import (
        DEFAULT_SUITE,
        HSK_SUITE,
        REAL_SUITE,
        finished_verdicts,
        run_suite,
        suite_tasks,
    )

    if args.claims:
        unknown = [c for c in args.claims if c not in CHECKERS]
        if unknown:
            raise BadInput(
                f"--claims: expected ids with checkers ({', '.join(CHECKERS)}); got {', '.join(unknown)}"
            )
    suite = list(DEFAULT_SUITE)
    if args.real:
        check_real_extras()
        suite += list(REAL_SUITE)
    if args.hsk:
        suite += list(HSK_SUITE)
    if args.problems:
        names = {s.name for s in suite}
        unknown = [n for n in args.problems if n not in names]
        if unknown:
            raise BadInput(
                f"--problems: expected names from the suite ({', '.join(sorted(names))}); "
                f"got {', '.join(unknown)}"
            )
        suite = [s for s in suite if s.name in args.problems]
    if not suite_tasks(suite, args.claims):
        raise BadInput("--claims/--problems: the selection contains no (problem, claim) pair")
    out = out_dir(args.out)
    try:  # before any work: a directory that cannot be made would lose the first verdict
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--out: cannot create the directory {str(out)!r} ({exc.strerror})") from None
    done = None
    previous = report_file(out)
    # an interrupted run's report resumes; a finished one, or a file of another format, is replaced
    old = previous.load(
        None, fresh=args.fresh, other="replace", resumable=lambda d: d.get("complete") is False
    )
    if old is not None:
        done = finished_verdicts(old, suite, source=str(previous.path))
        _refuse_losing_another_selection(old, suite, args.claims, out)
        print(
            f"resuming the interrupted run in {out}: {len(done)} finished verdicts reused "
            "(--fresh: recompute)"
        )
    t0 = time.perf_counter()
    verdicts = []
    specs = [s.to_dict() for s in suite]
    print(f"{'claim':<18} {'problem':<21} {'status':<12} {'record':<19} evidence")
    for v in run_suite(
        suite,
        claims=args.claims,
        save_dir=out / "counterexamples",
        progress=False if args.no_progress else None,
        done=done,
    ):
        verdicts.append(v)
        (cmp,) = compare([v], suite)
        line = f"{v.claim:<18} {v.problem['name']:<21} {v.status:<12} {_record_word(cmp):<19} {evidence(v)}"
        write_report(  # before the line: a closed stdout pipe stops the run with this verdict saved
            build_report(verdicts, suite=specs, seconds=time.perf_counter() - t0, complete=False), out
        )
        print(line, flush=True)
    seconds = time.perf_counter() - t0
    comparisons = compare(verdicts, suite)
    record = record_summary(comparisons)
    report = build_report(verdicts, suite=specs, seconds=seconds, record=record)
    j, m = write_report(report, out)
    c = report["counts"]
    print(
        f"\n{c['holds']} holds, {c['violated']} violated, {c['inconclusive']} inconclusive "
        f"in {seconds:.1f} s.  Report: {j}  Summary: {m}"
    )
    differences = [x for x in comparisons if not x.as_recorded]
    print(
        f"Against the suite's record: {record['as_recorded']} of {len(comparisons)} as recorded "
        f"({record['known_refutations']} known refutation(s), {record['known_inconclusive']} known "
        f"inconclusive), {len(differences)} different."
    )
    for v, x in zip(verdicts, comparisons):
        if v.status != "holds" or not x.as_recorded:
            label = "as recorded" if x.as_recorded else f"{x.kind.upper()} (recorded: {x.expected})"
            print(f"  {v.status}, {label}: {v.claim} on {v.problem['name']}: {v.reason}")
            if x.why:
                print(f"      recorded because: {x.why}")
            if v.counterexample:
                print(f"      counterexample: {v.counterexample} (replay: loracheck audit FILE)")
    return exit_code(verdicts) if args.strict else record_exit_code(comparisons)


def _refuse_losing_another_selection(
    old: dict[str, Any], suite: list[Any], claims: list[str] | None, out: Path
) -> None:
    """An interrupted run of another selection in ``--out`` would be overwritten: refuse (exit 3)."""
    from verify.run.suite import suite_tasks

    selected = {(s.name, c) for s, c in suite_tasks(suite, claims)}
    verdicts = old.get("verdicts")
    other = [
        d
        for d in (verdicts if isinstance(verdicts, list) else [])
        if isinstance(d, dict)
        and isinstance(d.get("problem"), dict)
        and (d["problem"].get("name"), d.get("claim")) not in selected
    ]
    if other:
        raise BadInput(
            f"--out: {str(out)!r} holds an interrupted run with {len(other)} finished verdict(s) outside "
            "this selection (--problems/--claims/--real/--hsk), which this run would overwrite; re-run "
            "that selection to resume it, choose another --out, or pass --fresh to start over"
        )


def _record_word(c: Comparison) -> str:
    if c.as_recorded:
        return {"holds": "as recorded", "violated": "known refutation"}.get(c.expected, "known inconclusive")
    return {"new violation": "NEW VIOLATION", "holds became inconclusive": "EXPECTED HOLDS"}.get(
        c.kind, f"RECORDED {c.expected.upper()}"
    )
