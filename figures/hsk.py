r"""The phase transition of [HSK24]: numerical rank of the attention matrix against ``L`` per entry bound.

Reads one HSK-above verdict (a dict from a report's ``verdicts``): its certificate's ``grid`` holds,
for each ratio :math:`c = \Gamma/\sqrt{\log L}` and length ``L``, the numerical rank (max-entry
relative error fixed) of the row-softmax matrix and of :math:`\exp(\beta Q K^\top)`.  One line per
ratio on log-log axes, labelled with :math:`\Gamma^2/\log L = c^2` and the fitted exponent of
``rank ~ L^s``; the line ``rank = L`` is the ceiling.  Flat lines: the fast route's rank does not
grow (below the threshold); lines parallel to the ceiling: it grows like a power (above it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from figures._axes import figure_and_axes

__all__ = ["plot_hsk_ranks"]


def plot_hsk_ranks(verdict: Mapping[str, Any], ax: Axes | None = None, *, matrix: str = "softmax") -> Figure:
    """Numerical rank against ``L``, one line per ``Gamma / sqrt(log L)`` (see the module docstring).

    Parameters
    ----------
    verdict
        An HSK-above verdict (dict) whose certificate has the ``grid``.
    ax
        Axes to draw into (default: a new figure).
    matrix
        ``"softmax"`` (the attention matrix) or ``"exp"`` (its unnormalized exponential).
    """
    if not isinstance(verdict, Mapping) or verdict.get("claim") != "HSK-above":
        raise ValueError("verdict: expected an HSK-above verdict (a dict from a report)")
    grid = verdict.get("certificate", {}).get("grid")
    if not grid:
        raise ValueError("verdict: its certificate has no 'grid' of ranks")
    if matrix not in ("softmax", "exp"):
        raise ValueError(f"matrix: expected 'softmax' or 'exp', got {matrix!r}")
    key = f"rank_{matrix}"
    fig, ax = figure_and_axes(ax, (6.4, 4.4))
    ratios = sorted({row["ratio"] for row in grid})
    cmap = [f"C{i}" for i in range(10)]
    Ls_all: list[int] = []
    for i, c in enumerate(ratios):
        rows = sorted((r for r in grid if r["ratio"] == c), key=lambda r: r["L"])
        Ls = np.array([r["L"] for r in rows], float)
        ranks = np.array([max(r[key], 1) for r in rows], float)
        Ls_all += [int(x) for x in Ls]
        s = float(np.polyfit(np.log(Ls), np.log(ranks), 1)[0]) if len(Ls) > 1 else float("nan")
        ax.plot(
            Ls,
            ranks,
            marker="o",
            color=cmap[i % 10],
            label=f"Γ²/log L = {c * c:.3g}: rank ~ L^{s:.2f}",
        )
    lo, hi = min(Ls_all), max(Ls_all)
    ax.plot([lo, hi], [lo, hi], ls="--", color="0.5", lw=1, label="rank = L")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length L")
    err = verdict.get("options", {}).get("rel_err", "?")
    what = "softmax(βQKᵀ)" if matrix == "softmax" else "exp(βQKᵀ)"
    ax.set_ylabel(f"numerical rank of {what} at max-entry error {err}")
    ds = [r.get("d") for r in grid if r.get("d") is not None]
    dims = f", d = {min(ds)}..{max(ds)}" if ds and min(ds) != max(ds) else (f", d = {ds[0]}" if ds else "")
    case = verdict.get("problem", {}).get("case", "?")
    ax.set_title(f"HSK-above, case {case}{dims}: {verdict.get('status', '')}")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    return fig
