r"""The threshold of [HSK24]: certified bounds on the eps-rank of the attention matrix against ``L``.

Reads one HSK-above verdict (a dict from a report's ``verdicts``): its certificate's ``grid`` holds,
for each instance family (``"random"`` heads, ``"ov"`` orthogonal-vectors instances), ratio
:math:`c = \Gamma/\sqrt{\log L}` and length ``L``, certified lower and upper bounds on the
max-entry eps-rank of :math:`\exp(\beta Q K^\top)` (and of the row softmax, when measured).  One
colour per ratio on log-log axes, labelled with :math:`\Gamma^2/\log L = c^2` and the fitted
exponents of the lower and upper bounds; solid lines and filled markers are the lower bounds,
dashed lines the upper ones (the eps-rank lies between); the line ``rank = L`` is the ceiling.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from figures._axes import figure_and_axes
from theory.errors import UserInputError

__all__ = ["plot_hsk_ranks"]


def plot_hsk_ranks(
    verdict: Mapping[str, Any],
    ax: Axes | None = None,
    *,
    matrix: str | None = None,
    family: str | None = None,
) -> Figure:
    r"""Certified eps-rank bounds against ``L``, one colour per ``Gamma / sqrt(log L)`` (module docstring).

    Parameters
    ----------
    verdict
        An HSK-above verdict (dict) whose certificate has the ``grid``.
    ax
        Axes to draw into (default: a new figure).
    matrix
        ``"exp"`` (:math:`\exp(\beta QK^\top)`) or ``"softmax"`` (the attention matrix); default:
        the matrix the verdict used.
    family
        ``"ov"`` or ``"random"``; default: ``"ov"`` when the grid has it (the worst case).
    """
    if not isinstance(verdict, Mapping) or verdict.get("claim") != "HSK-above":
        raise UserInputError("verdict: expected an HSK-above verdict (a dict from a report)")
    cert = verdict.get("certificate", {})
    grid = cert.get("grid")
    if not grid:
        raise UserInputError("verdict: its certificate has no 'grid' of eps-rank bounds")
    legacy = "family" not in grid[0]
    if legacy:  # reports written before the eps-rank bounds: truncated-SVD ranks (upper bounds) only
        grid = [
            {
                **{k: r[k] for k in ("ratio", "L", "d") if k in r},
                "family": "random",
                **{
                    m: {"lower": None, "upper": r[f"rank_{m}"]}
                    for m in ("exp", "softmax")
                    if f"rank_{m}" in r
                },
            }
            for r in grid
        ]
    default = "softmax" if legacy else "exp"
    matrix = matrix if matrix is not None else str(cert.get("matrix", default))
    if matrix not in ("softmax", "exp") or matrix not in grid[0]:
        raise UserInputError(f"matrix: expected 'softmax' or 'exp' (measured in the grid), got {matrix!r}")
    families = sorted({row["family"] for row in grid})
    family = family if family is not None else ("ov" if "ov" in families else families[0])
    if family not in families:
        raise UserInputError(f"family: expected one of {families}, got {family!r}")
    fig, ax = figure_and_axes(ax, (6.4, 4.4))
    rows_f = [r for r in grid if r["family"] == family]
    ratios = sorted({row["ratio"] for row in rows_f})
    Ls_all: list[int] = []
    for i, c in enumerate(ratios):
        rows = sorted((r for r in rows_f if r["ratio"] == c), key=lambda r: r["L"])
        Ls = np.array([r["L"] for r in rows], float)
        upper = np.array([max(r[matrix]["upper"], 1) for r in rows], float)
        lower = upper if legacy else np.array([max(r[matrix]["lower"], 1) for r in rows], float)
        Ls_all += [int(x) for x in Ls]
        if len(Ls) > 1:
            s_lo = float(np.polyfit(np.log(Ls), np.log(lower), 1)[0])
            s_up = float(np.polyfit(np.log(Ls), np.log(upper), 1)[0])
        else:
            s_lo = s_up = float("nan")
        color = f"C{i % 10}"
        if legacy:
            ax.plot(
                Ls,
                upper,
                marker="o",
                mfc="none",
                ls="--",
                color=color,
                label=f"Γ²/log L = {c * c:.3g}: upper L^{s_up:.2f}",
            )
            continue
        label = f"Γ²/log L = {c * c:.3g}: L^{s_lo:.2f} .. L^{s_up:.2f}"
        ax.plot(Ls, lower, marker="o", color=color, label=label)
        ax.plot(Ls, upper, marker="o", mfc="none", ls="--", color=color, label=f"upper, {label}")
    lo, hi = min(Ls_all), max(Ls_all)
    ax.plot([lo, hi], [lo, hi], ls=":", color="0.5", lw=1, label="rank = L")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length L")
    err = verdict.get("options", {}).get("rel_err", "?")
    what = "softmax(βQKᵀ)" if matrix == "softmax" else "exp(βQKᵀ)"
    ax.set_ylabel(f"eps-rank of {what}, max-entry error {err}")
    ds = [r.get("d") for r in rows_f if r.get("d") is not None]
    dims = f", d = {min(ds)}..{max(ds)}" if ds and min(ds) != max(ds) else (f", d = {ds[0]}" if ds else "")
    case = verdict.get("problem", {}).get("case", "?")
    what_lines = (
        "truncated-SVD ranks (upper bounds only)" if legacy else "certified lower (solid), upper (dashed)"
    )
    ax.set_title(f"HSK-above, {family} instances, case {case}{dims}\n{what_lines}")
    handles = [h for h in ax.get_lines() if not str(h.get_label()).startswith("upper")]
    ax.legend(handles=handles, fontsize=8, loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    return fig
