"""``loracheck experiment``: the [JLR24] real-model experiment on the review sentences."""

from __future__ import annotations

import argparse

from verify.cli.common import (
    BadInput,
    add_no_progress_argument,
    add_out_argument,
    add_seed_argument,
    check_real_extras,
    int_in,
    out_dir,
    positive_float,
)

NAME = "experiment"
HELP = "the [JLR24] real-model experiment: linearized MiniLM on review sentences (needs --real extras)"
DESCRIPTION = (
    "Linearized MiniLM (last layer W_q, W_v), K = 2, cross-entropy, lam 0.01, Adam lr 1e-3, "
    "batch 32: training curves of full fine-tuning and LoRA per rank, test accuracy, the certified "
    "rank of the NUC minimizer against r_max and against lam, certified SOSP verdicts.  Writes "
    "DIR/experiment.json after every stage."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the subcommand's arguments to its parser ``p``."""
    add_out_argument(p)
    p.add_argument(
        "--n",
        type=int_in(2, 100_000),
        nargs="+",
        default=[32],
        metavar="N",
        help="training-set sizes (default: 32)",
    )
    p.add_argument(
        "--ranks", type=int_in(1, 4096), nargs="+", default=[1, 2, 4, 8, 16], metavar="R", help="LoRA ranks"
    )
    p.add_argument(
        "--steps", type=int_in(1, 10**7), default=2000, help="Adam steps per training (default: %(default)s)"
    )
    p.add_argument(
        "--n-test", type=int_in(1, 10**6), default=1000, help="held-out sentences (default: %(default)s)"
    )
    p.add_argument(
        "--lams",
        type=positive_float,
        nargs="+",
        default=[1e-2, 1e-3, 1e-4, 1e-5],
        metavar="LAM",
        help="weight decays for the certified rank against lam",
    )
    p.add_argument(
        "--model", default=None, help="local model path or cached hub name (default: offline MiniLM)"
    )
    add_seed_argument(p)
    p.add_argument(
        "--no-head-variants", action="store_true", help="skip the rank check with other heads and CLS pooling"
    )
    add_no_progress_argument(p)


def handle(args: argparse.Namespace) -> int:
    """Run the [JLR24] real-model experiment."""
    from verify.jlr.experiment import jlr_real_experiment

    for opt, vals, low in (
        ("--n", args.n, 2),
        ("--ranks", args.ranks, 1),
        ("--steps", [args.steps], 1),
        ("--n-test", [args.n_test], 1),
    ):
        if any(v < low for v in vals):
            raise BadInput(f"{opt}: expected ints >= {low}, got {' '.join(map(str, vals))}")
    if any(not lam > 0 for lam in args.lams):
        raise BadInput(f"--lams: expected positive numbers, got {args.lams}")
    out = out_dir(args.out)
    check_real_extras("experiment", default_model=args.model is None)
    from landscapes.transformer.data import load_reviews

    available = len(load_reviews())
    if max(args.n) + args.n_test > available:
        raise BadInput(
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
