"""``loracheck kkr``: the [KKR25] experiment, its tables and re-certification."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from verify.cli.common import (
    BadInput,
    add_no_progress_argument,
    add_out_argument,
    add_problems_argument,
    add_seeds_argument,
    int_in,
    nonnegative_float,
    out_dir,
)

NAME = "kkr"
HELP = "[KKR25] without linearization: LoRA training at scale of seeds, end points classified"
DESCRIPTION = (
    "For each problem (and weight decay): a reference minimum of the penalized problem "
    "(certified for convex risks), Monte-Carlo restricted constants about it, and LoRA training "
    "runs from each init and seed (Adam with weight decay, then L-BFGS), each end point certified "
    "as an SOSP or not and classified global / spurious.  Prints the table per configuration and "
    "the KKR verdicts; writes DIR/kkr.json after every run (an interrupted run resumes)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the subcommand's arguments to its parser ``p``."""
    add_problems_argument(
        p,
        default=["sensing-special", "sensing-illcond", "tanh-sensing", "two-layer", "attention"],
        help="named configurations: sensing-special, sensing-illcond, tanh-sensing, two-layer, attention, "
        "double-well, minilm-qv (the real MiniLM without linearization; needs the models extra) "
        "(default: the five synthetic families)",
    )
    p.add_argument(
        "--inits",
        nargs="+",
        metavar="INIT",
        help="zero, small, large, loraga, adversarial (the designed start of the spurious-* problems; "
        "seeds > 0 perturb it by 10%%) (default: zero small large)",
    )
    add_seeds_argument(p, default=10)
    p.add_argument(
        "--lams",
        type=nonnegative_float,
        nargs="+",
        metavar="LAM",
        help="weight decays (default: each problem's own)",
    )
    p.add_argument(
        "--samples",
        type=int_in(1, 10**7),
        default=200,
        help="Monte-Carlo samples of the constants (default: %(default)s)",
    )
    add_out_argument(p)
    p.add_argument(
        "--tables",
        action="store_true",
        help="instead of training: [KKR25]'s Tables 1-2 in shape per problem (rank of the penalized "
        "minimizer vs weight decay; alpha^, beta^ vs LoRA rank) into DIR/kkr-tables-PROBLEM.json",
    )
    p.add_argument(
        "--recertify",
        nargs="+",
        metavar="INIT:SEED",
        help="instead of training: re-certify saved end points of DIR/kkr.json (truncated to their rank, "
        "polished on the non-zero columns, lambda_min with the zero columns in closed form and the rest "
        "from a dense Hessian) into DIR/kkr-recertified.json, with the configuration's table and "
        "verdicts recomputed on them (a re-run skips finished runs)",
    )
    p.add_argument(
        "--dense-max",
        type=int_in(0, 100_000),
        default=4000,
        help="with --recertify: largest reduced Hessian built densely, one HVP per parameter "
        "(default: %(default)s; above it, Lanczos)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start over: ignore an earlier kkr.json in DIR (with --recertify: kkr-recertified.json)",
    )
    add_no_progress_argument(p)


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


def handle(args: argparse.Namespace) -> int:
    """Run, tabulate or re-certify the [KKR25] experiment."""
    from verify.kkr.experiment import kkr_experiment
    from verify.kkr.training import KKR_INITS, KKR_PROBLEMS

    for name in args.problems:
        if name not in KKR_PROBLEMS:
            raise BadInput(f"--problems: expected names from {', '.join(KKR_PROBLEMS)}, got {name!r}")
    inits = args.inits or ["zero", "small", "large"]
    for name in inits:
        if name not in KKR_INITS:
            raise BadInput(f"--inits: expected names from {', '.join(KKR_INITS)}, got {name!r}")
    for opt, v in (("--seeds", args.seeds), ("--samples", args.samples)):
        if v < 1:
            raise BadInput(f"{opt}: expected a positive int, got {v}")
    if args.lams is not None and any(not (x >= 0 and x < float("inf")) for x in args.lams):
        raise BadInput(f"--lams: expected finite weight decays >= 0, got {args.lams}")
    out = out_dir(args.out)
    if args.tables:
        return _kkr_tables(args, out)
    if args.recertify:
        return _kkr_recertify(args, out)
    path = out / "kkr.json"
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
            raise BadInput(f"--recertify: expected INIT:SEED (e.g. zero:0), got {spec!r}")
        if (init, int(seed)) in runs:
            raise BadInput(f"--recertify: expected distinct INIT:SEED runs, got {spec!r} twice")
        runs.append((init, int(seed)))
    if args.dense_max < 0:
        raise BadInput(f"--dense-max: expected an int >= 0, got {args.dense_max}")
    path = out / "kkr-recertified.json"
    data = kkr_recertify(out / "kkr.json", runs, out=path, dense_max=args.dense_max, fresh=args.fresh)
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
        kw: dict[str, Any] = {
            "samples": args.samples,
            "fresh": args.fresh,
            "progress": False if args.no_progress else None,
        }
        if args.lams:
            kw["lams"] = args.lams
        data = kkr_paper_tables(name, out=path, **kw)
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
