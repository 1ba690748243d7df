"""``loracheck audit``: a user's problem file (or a saved counterexample), optionally a trained point."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from theory.errors import UserInputError
from verify.cli.common import BadInput, add_no_progress_argument

NAME = "audit"
HELP = "audit a problem file (your own, or a saved counterexample) and optionally a LoRA point"
DESCRIPTION = (
    "Run the applicable checkers on the problem in FILE (.npz or .safetensors; see "
    "docs/problem-format.md) and print a table.  A counterexample file saved by a checker replays "
    "its claim with the stored options.  --point certifies a trained LoRA point: is it a "
    "second-order stationary point, is it global.  With --json the audit is written after every "
    "verdict, and re-running the same command resumes from it."
)
EPILOG = "Exit codes: 0 all hold, 1 some violated, 2 some inconclusive, 3 bad input, 4 internal error."


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the subcommand's arguments to its parser ``p``."""
    p.add_argument("file", metavar="FILE", help="problem file (.npz or .safetensors)")
    p.add_argument(
        "--claims",
        nargs="+",
        metavar="ID",
        help="claim ids to check (default: those that apply; `none`: only the --point audit)",
    )
    p.add_argument(
        "--rank",
        dest="ranks",
        nargs="+",
        metavar="R",
        help="LoRA rank assignments, each R (every block) or R1,R2,... (one per block): JLR-no-spurious "
        "where every block is above the bound r_j(r_j+1)/2 > KN, JLR-spurious-below otherwise",
    )
    p.add_argument(
        "--point",
        metavar="PATH",
        help="a LoRA point: .npz/.safetensors with U0, V0, ... (D = U V^T) or B0, A0, ... (D = s B A), "
        "or a PEFT adapter directory; a certified spurious point (not global, an exact local minimizer "
        "certified nearby) makes the exit code 1, any other 'not global' or 'undecided' point 2.  "
        "(With D = s B A, weight decay wd on (B, A) corresponds to lam = wd / s here.)",
    )
    p.add_argument(
        "--scale",
        metavar="S",
        help="scale s of B A factors (default: lora_alpha / r of a PEFT adapter, else 1)",
    )
    p.add_argument(
        "--json",
        metavar="OUT",
        help="write the audit as JSON after every verdict (an interrupted audit resumes)",
    )
    p.add_argument("--fresh", action="store_true", help="with --json: start over instead of resuming")
    p.add_argument("--save-dir", metavar="DIR", help="directory for counterexamples found by the checkers")
    add_no_progress_argument(p)


def _rank_assignments(items: Sequence[str]) -> list[int | tuple[int, ...]]:
    """``--rank 7 12,3``: each value one rank assignment, a comma list one rank per block."""
    out: list[int | tuple[int, ...]] = []
    for it in items:
        parts = it.split(",")
        if not all(p.isascii() and p.isdigit() for p in parts):
            raise BadInput(
                f"--rank: expected positive ints, R or comma-separated per-block ranks R1,R2,..., got {it!r}"
            )
        vals = tuple(int(p) for p in parts)
        if any(v < 1 for v in vals):
            raise BadInput(f"--rank: expected positive ints (ranks >= 1), got {it!r}")
        out.append(vals[0] if len(parts) == 1 else vals)
    return out


def handle(args: argparse.Namespace) -> int:
    """Audit a problem file against the claims; exit 0/1/2 by the verdicts (raw semantics)."""
    from landscapes.io import load_problem
    from verify.run.audits import audit, write_audit

    path = Path(args.file)
    if not path.is_file():
        raise BadInput(f"FILE: expected an existing problem file, got {args.file!r}")
    _refuse_older_counterexample(path)
    if _counterexample_without_problem(path):
        return _replay(args, path)
    _check_problem_counterexample(path)
    ranks = _rank_assignments(args.ranks) if args.ranks else None
    scale = _scale(args)
    out = _json_path(args, path)
    save_dir = _save_dir(args)
    try:
        problem, extras = load_problem(path)
    except UserInputError as exc:
        raise BadInput(f"FILE: {exc}") from None
    claims: list[str] | None = None
    if args.claims:
        claims = [] if [c.lower() for c in args.claims] == ["none"] else list(args.claims)
    if (
        save_dir is not None
        and "claim" in extras
        and save_dir.is_dir()
        and os.path.samefile(save_dir, path.parent)
    ):
        # a replayed counterexample found again is saved under its own name: it would replace FILE
        raise BadInput(
            f"--save-dir: expected a directory other than the one holding FILE (a saved counterexample, "
            f"which the replay would write over), got {args.save_dir!r}"
        )
    replay, plan, point, point_source, resume = _plan(args, problem, extras, path, claims, ranks, scale, out)
    _check_plan(args, problem, plan, point, ranks, replay)
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
            raise BadInput(f"--json: {exc}; pass --fresh to start over") from None
        raise
    print(result.table())
    if result.resumed:
        print(f"({result.resumed} verdicts reused from {out})")
    if out is not None:
        print(f"JSON: {out}")
    return result.exit_code


def _counterexample_without_problem(path: Path) -> bool:
    """Whether ``path`` is a saved counterexample that is not a problem file (an .npz of arrays only)."""
    import zipfile

    from verify.counterexample import META_KEY

    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False  # not an .npz: the problem reader says what it is
    return f"{META_KEY}.npy" in names and "format.npy" not in names


def _replay(args: argparse.Namespace, path: Path) -> int:
    """Recompute a ``nonlinear`` or ``attention`` counterexample (:mod:`verify.run.replay`); exit 1 or 2."""
    from verify.counterexample import load_counterexample
    from verify.run.replay import replay_counterexample

    try:
        cx = load_counterexample(path)
    except UserInputError as exc:
        raise BadInput(f"FILE: {exc}") from None
    given = [
        flag
        for flag, v in (("--claims", args.claims), ("--rank", args.ranks), ("--point", args.point),
                        ("--json", args.json), ("--save-dir", args.save_dir), ("--scale", args.scale),
                        ("--fresh", args.fresh))
        if v
    ]  # fmt: skip
    if given:
        raise BadInput(
            f"{given[0]}: FILE is a {cx.kind!r} counterexample of {cx.claim} (not a problem file): its saved "
            "numbers are recomputed, and no other audit applies; read it with "
            "verify.counterexample.load_counterexample"
        )
    print(f"{path}: a {cx.kind!r} counterexample of {cx.claim}")
    shown = ", ".join(f"{k}={v}" for k, v in cx.options.items())
    print(f"recomputing the saved numbers (options: {shown})")
    result = replay_counterexample(cx)
    print(result.table())
    return result.exit_code


def _refuse_older_counterexample(path: Path) -> None:
    """Refuse a counterexample of an older format (a KKR ``.json``, an HSK ``.npz`` with ``info``)."""
    import json
    import zipfile

    older = None
    if path.suffix == ".json":
        try:
            with open(path, "rb") as fh:
                text = fh.read(1 << 20)
            data = json.loads(text) if len(text) < 1 << 20 else None
        except (OSError, ValueError, RecursionError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("claim"), str) and "format" not in data:
            older = f"a KKR counterexample .json of {data['claim'][:40]!r}"
    else:
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
        except (zipfile.BadZipFile, OSError):
            return
        if {"info.npy", "X.npy"} <= names and not names & {"format.npy", "counterexample_json.npy"}:
            older = "an HSK counterexample .npz with an 'info' array"
    if older is not None:
        raise BadInput(
            f"FILE: {str(path)!r} is {older}, a counterexample of an older format that this version does not "
            "replay (loracheck.counterexample version 1 files only); run the checker again with --save-dir "
            "to save it in the current format"
        )


def _check_problem_counterexample(path: Path) -> None:
    """A problem file holding counterexample metadata: its extras must agree with it (claim, kind, arrays)."""
    import zipfile

    from verify.counterexample import META_KEY, load_counterexample

    try:
        with zipfile.ZipFile(path) as zf:
            has_meta = f"extra__{META_KEY}.npy" in zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return  # not an .npz: the problem reader says what it is
    if has_meta:
        try:
            load_counterexample(path)
        except UserInputError as exc:
            raise BadInput(f"FILE: {exc}") from None


def _scale(args: argparse.Namespace) -> float | None:
    """``--scale`` as a positive number, only with ``--point``."""
    if args.scale is None:
        return None
    if not args.point:
        raise BadInput("--scale: applies to a --point (B, A factors or a PEFT adapter), and none was given")
    try:
        scale = float(args.scale)
    except ValueError:
        raise BadInput(f"--scale: expected a positive number, got {args.scale!r}") from None
    if not (math.isfinite(scale) and scale > 0):
        raise BadInput(f"--scale: expected a positive number, got {args.scale!r}")
    return scale


def _json_path(args: argparse.Namespace, path: Path) -> Path | None:
    """``--json``: a file path that is not one of the inputs (it would be overwritten)."""
    out = Path(args.json) if args.json else None
    if out is None or not out.exists():
        return out
    if not out.is_file():
        raise BadInput(f"--json: expected a file path, got an existing directory {args.json!r}")
    inputs = [("FILE", path)] + ([("--point", Path(args.point))] if args.point else [])
    for flag, src in inputs:
        srcs = [src] if not src.is_dir() else [p for p in src.iterdir() if p.is_file()]
        if flag == "--point" and src.name == "adapter_model.safetensors":
            srcs.append(src.parent / "adapter_config.json")  # load_point reads it too
        if any(p.exists() and os.path.samefile(out, p) for p in srcs):
            raise BadInput(
                f"--json: expected a new or audit file, got {args.json!r}, the {flag} input itself "
                "(it would be overwritten)"
            )
    return out


def _save_dir(args: argparse.Namespace) -> Path | None:
    save_dir = Path(args.save_dir) if args.save_dir else None
    if save_dir is not None and save_dir.exists() and not save_dir.is_dir():
        raise BadInput(f"--save-dir: expected a directory, got an existing file {args.save_dir!r}")
    return save_dir


def _plan(
    args: argparse.Namespace,
    problem: Any,
    extras: Mapping[str, Any],
    path: Path,
    claims: list[str] | None,
    ranks: list[int | tuple[int, ...]] | None,
    scale: float | None,
    out: Path | None,
) -> tuple[Any, tuple[Any, ...], Any, str | None, dict[str, Any] | None]:
    """What to audit: the replayed counterexample or the planned claims, the point, the resume data."""
    from verify.run.audits import load_point, plan_audit, point_from_extras, read_audit, replay_options

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
            # the library names the argument "json" (and the file): say it as the option is spelled
            msg = str(exc)
            msg = f"--json{msg[4:]}" if msg.startswith("json") else f"--json: {msg}"
            raise BadInput(f"{msg}; pass --fresh to overwrite it") from None
        if resume.get("complete") is not False:
            resume = None  # a finished audit is recomputed; only an interrupted one resumes
    plan = (replay,) if replay is not None else tuple(plan_audit(problem, claims=claims, ranks=ranks))
    if not plan and point is None:
        raise BadInput("--claims: nothing to audit (no claims and no --point)")
    return replay, plan, point, point_source, resume


def _check_plan(
    args: argparse.Namespace,
    problem: Any,
    plan: tuple[Any, ...],
    point: Any,
    ranks: list[int | tuple[int, ...]] | None,
    replay: Any,
) -> None:
    """Refuse a plan the problem cannot serve: lam = 0 for NUC claims, a float32 point audit, idle --rank."""
    import torch

    from verify.registry import NUC_CLAIMS

    needs_nuc = point is not None or any(t.claim in NUC_CLAIMS for t in plan)
    if needs_nuc and not all(lam > 0 for lam in problem.lam):
        raise BadInput(
            "FILE: expected lam > 0 on every block for the NUC-based claims and point audits, "
            f"got {list(problem.lam)}"
        )
    if point is not None and problem.dtype != torch.float64:
        raise BadInput(f"FILE: point audits need a float64 problem (certificates), got {problem.dtype}")
    if ranks is not None and replay is None and not any("rank" in t.options for t in plan):
        raise BadInput(
            "--rank: none of the selected claims takes a LoRA rank (JLR-no-spurious, JLR-spurious-below)"
        )
