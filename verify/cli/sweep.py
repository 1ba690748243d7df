"""``loracheck sweep``: a TOML-configured sweep of independent tasks into a resumable result store."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from verify.cli.common import (
    EXIT_INTERNAL,
    BadInput,
    add_no_progress_argument,
    add_out_argument,
    int_in,
    out_dir,
    phase_exit_code,
    stopped,
)
from verify.signals import exit_code
from verify.terminal import printable

NAME = "sweep"
HELP = "run a sweep of independent tasks (e.g. the phase diagram) from a TOML config, resumably"
DESCRIPTION = (
    "Expand CONFIG (a grid or a random design over task parameters, see docs/sweep.md) "
    "into tasks with seeds derived from their specs, run them on an executor and commit each "
    "outcome to the SQLite store DIR/NAME.sqlite as it arrives.  A killed sweep loses at most "
    "the tasks in flight; --resume skips finished tasks and re-runs failed ones.  A phase sweep "
    "also writes DIR/NAME-phase.json (format loracheck.phase, drawn by `loracheck figures`)."
)
EPILOG = (
    "Exit codes: 0 all tasks finished (phase: every run above the bound global), 1 a "
    "certified spurious point above the bound, 2 failed tasks or non-global runs above the bound, "
    "3 bad input, 4 a worker process died (resume with --resume)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the subcommand's arguments to its parser ``p``."""
    p.add_argument("config", metavar="CONFIG", help="sweep configuration (.toml)")
    p.add_argument(
        "--executor",
        default="process",
        metavar="SPEC",
        help="serial, process, process:N, dask (a local Dask cluster), dask:N or dask://HOST:PORT "
        "(Dask needs the extra `dist`) (default: %(default)s, one worker per core)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume", action="store_true", help="continue the store: skip finished tasks, re-run failed ones"
    )
    mode.add_argument("--fresh", action="store_true", help="delete an existing store of this name first")
    add_out_argument(p)
    p.add_argument("--store", metavar="PATH", help="the result store (default: DIR/NAME.sqlite)")
    p.add_argument(
        "--no-retry-failed", action="store_true", help="with --resume: leave failed tasks as they are"
    )
    p.add_argument(
        "--chunk",
        type=int_in(1, 1_000_000),
        metavar="N",
        help="tasks per executor call (default: automatic, about 0.25 s of work per call on a process "
        "pool, 1 s on Dask; 1 serially)",
    )
    p.add_argument(
        "--max-tasks",
        type=int_in(1, 10**9),
        metavar="N",
        help="refuse a config that expands to more than N tasks, counted before expanding "
        "(default: 1,000,000)",
    )
    add_no_progress_argument(p)


def handle(args: argparse.Namespace) -> int:
    """Run, resume or summarise a sweep."""
    from landscapes.io import atomic_write_text
    from verify.sweep.config import SweepAborted, load_config
    from verify.sweep.executors import parse_executor
    from verify.sweep.runner import run_sweep

    cfg = load_config(args.config)
    parse_executor(args.executor)
    out = out_dir(args.out)
    store = Path(args.store) if args.store else out / f"{cfg.name}.sqlite"
    config = Path(args.config)
    if config.parent.resolve() == store.parent.resolve() and re.fullmatch(
        rf"{re.escape(store.stem)}-phase(-\d+)?\.json", config.name
    ):  # a phase sweep writes STORE-phase.json beside the store
        raise BadInput(
            f"--store: a phase sweep writes {store.stem}-phase.json beside {str(store)!r}, which is the "
            f"config {args.config!r} itself; choose another --store or config name"
        )
    try:
        summary = run_sweep(
            cfg,
            store,
            executor=args.executor,
            resume=args.resume,
            fresh=args.fresh,
            retry_failed=not args.no_retry_failed,
            chunk=args.chunk,
            progress=False if args.no_progress else None,
            **({"max_tasks": args.max_tasks} if args.max_tasks is not None else {}),
        )
    except SweepAborted as exc:
        print(printable(f"loracheck: error: {exc}"), file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt as exc:
        print(
            printable(
                f"loracheck: {stopped(exc)}; finished tasks are in {str(store)!r} (--resume continues)"
            ),
            file=sys.stderr,
        )
        return exit_code(exc)
    print(summary.text())
    code = 2 if summary.failed_in_store or not summary.complete else 0
    if cfg.task == "phase":
        from verify.jlr.phase import phase_table
        from verify.sweep.phase_data import phase_data_from_store, phase_diagrams
        from verify.sweep.store import SweepStore

        with SweepStore.open(store, readonly=True) as st:  # opened (and checked) once
            diagrams = phase_diagrams(st)
            for i, sel in enumerate(diagrams):
                data = phase_data_from_store(st, select=sel if len(diagrams) > 1 else None)
                suffix = "" if len(diagrams) == 1 else f"-{i + 1}"
                path = store.with_name(f"{store.stem}-phase{suffix}.json")
                if path.exists() and os.path.samefile(path, args.config):
                    raise BadInput(
                        f"--store: the phase data would be written to {str(path)!r}, the config itself; "
                        "choose another --store name"
                    )
                atomic_write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")
                shown = ", ".join(f"{k} {v}" for k, v in sel.items())
                print(f"\nphase diagram ({shown}):\n{phase_table(data)}\nData: {path}")
                phase_code = phase_exit_code(data["summary"])
                code = 1 if phase_code == 1 else max(code, phase_code)
    return code
