r"""Singular values of a certified solution against the rank bound ``r_max``.

Reads one verdict of a rank claim (``JLR-rank-NUC``, ``JLR-rank-blocks`` or ``JLR-rank-FT``) from
a saved report: its certificate lists the singular values of the (rank-reduced) certified
solution per adapted block, its ranks and :math:`r_{\max}`, the largest ``r`` with
:math:`r(r+1)/2 \le KN` [JLR24].  The figure shows where the spectrum drops to round-off
relative to that bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from figures._axes import figure_and_axes
from theory.errors import InputTypeError, UserInputError

__all__ = ["plot_singular_values"]

RANK_CLAIMS = ("JLR-rank-NUC", "JLR-rank-blocks", "JLR-rank-FT")
#: Relative level below which a singular value is drawn as round-off (open marker at the floor).
ROUNDOFF = 1e-12


def _check(verdict: Mapping[str, Any]) -> tuple[list[list[float]], list[int], int]:
    if not isinstance(verdict, Mapping):
        raise InputTypeError(
            f"verdict: expected a verdict of a saved report (a dict), got {type(verdict).__name__}"
        )
    if verdict.get("claim") not in RANK_CLAIMS:
        raise UserInputError(
            f"verdict: expected a verdict of {', '.join(RANK_CLAIMS)}, got {verdict.get('claim')!r}"
        )
    c = verdict.get("certificate", {})
    for k in ("singular_values", "ranks", "r_max"):
        if k not in c:
            raise UserInputError(f"verdict['certificate']: missing {k!r} (status {verdict.get('status')!r})")
    svs = [[float(s) for s in block] for block in c["singular_values"]]
    return svs, [int(r) for r in c["ranks"]], int(c["r_max"])


def plot_singular_values(verdict: Mapping[str, Any], ax: Axes | None = None) -> Figure:
    r"""Singular values per block (log scale) with the rank bound :math:`r_{\max}` marked.

    Values below ``ROUNDOFF`` times the largest one are round-off of a rank-deficient matrix and
    are drawn as open markers at that floor.

    Parameters
    ----------
    verdict
        One verdict (a dict) of a rank claim from a report's ``verdicts``.
    ax
        Axes to draw into (default: a new figure).
    """
    svs, ranks, rmax = _check(verdict)
    fig, ax = figure_and_axes(ax, (6.0, 4.0))
    top = max((max(b) for b in svs if b), default=1.0) or 1.0
    floor = ROUNDOFF * top
    markers = "osD^v<>"
    for j, block in enumerate(svs):
        if not block:
            continue
        idx = np.arange(1, len(block) + 1)
        vals = np.array(block)
        small = vals < floor
        color = f"C{j}"
        ax.plot(
            idx[~small],
            vals[~small],
            marker=markers[j % len(markers)],
            ls="-",
            color=color,
            label=f"block {j}: rank {ranks[j]}" if len(svs) > 1 else f"rank {ranks[j]}",
        )
        if small.any():
            ax.plot(
                idx[small],
                np.full(int(small.sum()), floor),
                ls="",
                marker=markers[j % len(markers)],
                mfc="none",
                color=color,
            )
    ax.axvline(rmax + 0.5, color="crimson", ls="--", lw=1.5, label=f"r_max = {rmax}")
    ax.set_yscale("log")
    ax.set_ylim(floor / 3, top * 3)
    n = max(max((len(b) for b in svs), default=1), rmax + 1)
    ax.set_xlim(0.4, n + 0.6)
    if n <= 40:
        ax.set_xticks(range(1, n + 1))
    else:  # a long spectrum or a large r_max: a tick per index would be thousands of labels
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("index i")
    ax.set_ylabel("singular value σ_i")
    p = verdict.get("problem", {})
    title = f"{verdict['claim']} on {p.get('name', 'problem')}: KN = {p.get('KN')}"
    ax.set_title(f"{title}, status {verdict.get('status')}", fontsize=10)
    handles, _ = ax.get_legend_handles_labels()
    handles.append(
        Line2D([], [], ls="", marker="o", mfc="none", color="0.4", label=f"round-off (< {ROUNDOFF:g} σ_1)")
    )
    ax.legend(handles=handles, loc="center left", fontsize=8)
    return fig
