"""``loracheck phase``: the data of the [JLR24] phase diagram."""

from __future__ import annotations

import argparse

from verify.cli.common import (
    BadInput,
    add_no_progress_argument,
    add_out_argument,
    add_seed_argument,
    int_in,
    out_dir,
    parse_kn,
    phase_exit_code,
    positive_float,
)

NAME = "phase"
HELP = "phase-diagram data: fraction of LoRA runs that end at the global minimum per (r, K, N)"
DESCRIPTION = (
    "For each (K, N) a synthetic problem is solved to a certified NUC optimum; for "
    "each rank r, RUNS trainings (L-BFGS + negative-curvature escapes) from diverse starts are "
    "classified as global or not.  Writes DIR/phase.json after every cell."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the subcommand's arguments to its parser ``p``."""
    add_out_argument(p)
    p.add_argument("--ranks", type=int_in(1, 4096), nargs="+", metavar="R", help="LoRA ranks (default 1..8)")
    p.add_argument(
        "--kn", nargs="+", metavar="KxN", help="(K, N) pairs written KxN, e.g. 1x6 2x10 (default: KN = 3..28)"
    )
    p.add_argument(
        "--runs", type=int_in(1, 100_000), default=6, help="trainings per cell (default: %(default)s)"
    )
    p.add_argument(
        "--size", type=int_in(1, 4096), default=12, help="m = n of the adapted matrix (default: %(default)s)"
    )
    p.add_argument(
        "--loss", default="squared", help="squared, logistic or cross_entropy (default: %(default)s)"
    )
    p.add_argument("--lam", type=positive_float, default=1e-3, help="weight decay (default: %(default)s)")
    add_seed_argument(p)
    add_no_progress_argument(p)


def handle(args: argparse.Namespace) -> int:
    """Compute the phase-diagram data."""
    from landscapes.losses import LOSS_NAMES
    from verify.jlr.phase import DEFAULT_KN, DEFAULT_RANKS, phase_sweep, phase_table

    kn = parse_kn(args.kn) if args.kn else list(DEFAULT_KN)
    ranks = args.ranks or list(DEFAULT_RANKS)
    if any(r < 1 for r in ranks):
        raise BadInput(f"--ranks: expected positive ints, got {ranks}")
    if args.runs < 1 or args.size < 1:
        raise BadInput(f"--runs/--size: expected positive ints, got {args.runs} and {args.size}")
    if args.loss not in LOSS_NAMES:
        raise BadInput(f"--loss: expected one of {', '.join(LOSS_NAMES)}, got {args.loss!r}")
    if not args.lam > 0:
        raise BadInput(f"--lam: expected a positive number, got {args.lam}")
    if args.loss == "logistic" and any(K != 1 for K, _ in kn):
        raise BadInput("--kn: the logistic loss has K = 1")
    if args.loss == "cross_entropy" and any(K < 2 for K, _ in kn):
        raise BadInput("--kn: cross_entropy needs K >= 2 (e.g. --kn 2x4 2x8)")
    out = out_dir(args.out)
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
    return phase_exit_code(data["summary"])
