"""``loracheck figures``: PNG/SVG figures and an HTML gallery from saved results."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from theory.errors import UserInputError
from verify.cli.common import BadInput, add_no_progress_argument, add_out_argument, out_dir
from verify.jsonfile import read_json

NAME = "figures"
HELP = "draw the figures (PNG, SVG and an index.html gallery) from saved results"
DESCRIPTION = (
    "Draw every figure the given results support (phase.json of `loracheck phase`, "
    "report.json of `loracheck run`, experiment.json of `loracheck experiment`, slices.json) into DIR, "
    "as PNG and SVG, with DIR/index.html.  Without --from, the default jobs run first (the phase "
    "sweep, the default suite, landscape slices and training curves of small problems, about 2 "
    "minutes on 2 cores) and their data are saved in DIR too."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the subcommand's arguments to its parser ``p``."""
    p.add_argument("--from", dest="sources", nargs="+", metavar="FILE", help="saved JSON results to draw")
    add_out_argument(p, default="loracheck-figures")
    p.add_argument(
        "--normalization",
        choices=["lora", "filter", "none"],
        default="lora",
        help="direction normalization of the landscape slices (default jobs only): LoRA-aware per "
        "factor, filter (per column, Li et al. 2018) or none (default: %(default)s)",
    )
    add_no_progress_argument(p)


def handle(args: argparse.Namespace) -> int:
    """Draw figures from saved results."""
    from figures.gallery import result_kind, write_gallery

    out = out_dir(args.out)
    results = []
    if args.sources and args.normalization != "lora":
        raise BadInput("--normalization: applies to the default jobs only (without --from)")
    if args.sources:
        for src in args.sources:
            path = Path(src)
            if not path.is_file():
                raise BadInput(f"--from: expected an existing JSON file, got {src!r}")
            if path.suffix in (".sqlite", ".db"):  # a sweep's result store: its phase diagram
                from verify.sweep.phase_data import phase_data_from_store

                try:
                    results.append(json.loads(json.dumps(phase_data_from_store(path))))
                except UserInputError as exc:
                    raise BadInput(f"--from: {src}: {exc}") from None
                continue
            results.append(read_json(path, what="--from"))
        for src, res in zip(args.sources, results):
            try:
                result_kind(res)
            except (TypeError, ValueError) as exc:  # result_kind reads any JSON data: all of it is input
                raise BadInput(f"--from: {src}: {exc}") from None
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
