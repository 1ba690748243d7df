"""``loracheck speed``: WYL-speed, how fast each LoRA init reaches the certified optimum."""

from __future__ import annotations

import argparse
import math
from typing import Any

from verify.cli.common import (
    BadInput,
    add_no_progress_argument,
    add_out_argument,
    add_problems_argument,
    add_seeds_argument,
    int_in,
    out_dir,
    positive_float,
)

NAME = "speed"
HELP = "WYL-speed: steps of Adam from each LoRA init (vanilla, gaussian, LoRA-GA, ...) to the optimum"
DESCRIPTION = (
    "Each init trains the problem of its weight offset with Adam (weight decay lam) "
    "from its LoRA point; progress (F(0) - F(t)) / (F(0) - F*) is measured against the certified "
    "NUC optimum F*.  Per init the learning rate with the fewest median steps is kept.  Writes "
    "DIR/speed.json after every run (an interrupted run resumes)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the subcommand's arguments to its parser ``p``."""
    add_problems_argument(
        p,
        default=["teacher", "features"],
        help="teacher, features (synthetic) and minilm (the linearized MiniLM with N = 32 review "
        "sentences: needs the models extra and the review data, ~20 ms per Adam step) "
        "(default: teacher features)",
    )
    p.add_argument("--inits", nargs="+", metavar="INIT", help="inits (default: all five)")
    p.add_argument("--rank", type=int_in(1, 4096), default=4, help="LoRA rank (default: %(default)s)")
    add_seeds_argument(p, default=5)
    p.add_argument(
        "--lrs",
        type=positive_float,
        nargs="+",
        metavar="LR",
        help="Adam learning rates (default: 3e-3 1e-2 3e-2 1e-1 3e-1)",
    )
    p.add_argument(
        "--steps", type=int_in(1, 10**7), default=2000, help="Adam steps per run (default: %(default)s)"
    )
    add_out_argument(p)
    p.add_argument(
        "--gradient",
        choices=["sampled", "full"],
        default="sampled",
        help="G of the LoRA-GA inits: the reference code's estimate (64 batches of 2 examples, each "
        "once: the full gradient when N <= 128) or the full gradient (default: %(default)s)",
    )
    p.add_argument("--fresh", action="store_true", help="ignore an earlier speed.json in DIR")
    add_no_progress_argument(p)


def handle(args: argparse.Namespace) -> int:
    """Run the WYL-speed comparison."""
    from landscapes.inits import INIT_NAMES
    from verify.wyl.speed import DEFAULT_LRS, SPEED_PROBLEMS, speed_experiment

    for name in args.problems:
        if name not in SPEED_PROBLEMS:
            raise BadInput(f"--problems: expected names from {', '.join(SPEED_PROBLEMS)}, got {name!r}")
    inits = args.inits or list(INIT_NAMES)
    for name in inits:
        if name not in INIT_NAMES:
            raise BadInput(f"--inits: expected names from {', '.join(INIT_NAMES)}, got {name!r}")
    for opt, v in (("--rank", args.rank), ("--seeds", args.seeds), ("--steps", args.steps)):
        if v < 1:
            raise BadInput(f"{opt}: expected a positive int, got {v}")
    lrs = args.lrs or list(DEFAULT_LRS)
    if any(not (lr > 0 and math.isfinite(lr)) for lr in lrs):
        raise BadInput(f"--lrs: expected positive finite learning rates, got {lrs}")
    out = out_dir(args.out)
    path = out / "speed.json"
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
