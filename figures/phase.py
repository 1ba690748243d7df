r"""The [JLR24] phase diagram: how often LoRA training ends at the global minimum, per (r, KN).

Reads the data written by ``loracheck phase`` (format ``loracheck.phase``): for each LoRA rank
``r`` and each number of scalar predictions ``KN``, the fraction of trainings from diverse starts
that ended at the certified NUC optimum.  The curve :math:`r(r+1)/2 = KN` separates the region
where [JLR24] guarantee no spurious local minima (above the curve's rank, :math:`r(r+1)/2 > KN`)
from the region without a guarantee.  Below the rank of the NUC minimizer no rank-``r`` point can
reach the NUC optimum at all; those cells are marked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from figures._axes import figure_and_axes
from figures.validate import PHASE_FORMAT, check_format
from theory.errors import UserInputError

__all__ = ["plot_phase_diagram"]

def _check(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    check_format(result, PHASE_FORMAT, "the JSON data of `loracheck phase`")
    cells = result.get("cells")
    if not isinstance(cells, list) or not cells:
        raise UserInputError("result: expected a non-empty list 'cells'")
    need = ("r", "KN", "fraction_global", "above_bound", "nuc_rank", "runs", "global")
    for i, c in enumerate(cells):
        missing = [k for k in need if k not in c]
        if missing:
            raise UserInputError(f"result['cells'][{i}]: missing {', '.join(missing)}")
    return cells


def plot_phase_diagram(result: Mapping[str, Any], ax: Axes | None = None) -> Figure:
    r"""Fraction of trainings that reach the global minimum over (LoRA rank r, KN).

    One square per cell, coloured by the fraction (annotated ``global/runs``); cells above the
    bound :math:`r(r+1)/2 > KN` have a black edge; cells below the NUC minimizer's rank (where
    no rank-``r`` point attains the NUC optimum) are hatched.  The curve :math:`r(r+1)/2 = KN`
    is drawn across.

    Parameters
    ----------
    result
        The data of ``loracheck phase`` (``phase.json``).
    ax
        Axes to draw into (default: a new figure).

    Returns
    -------
    Figure
        The figure holding the axes.
    """
    cells = _check(result)
    fig, ax = figure_and_axes(ax, (7.0, 4.8))
    kns = sorted({int(c["KN"]) for c in cells})
    ranks = sorted({int(c["r"]) for c in cells})
    row = {kn: i for i, kn in enumerate(kns)}
    x = np.array([int(c["r"]) for c in cells], dtype=float)
    y = np.array([row[int(c["KN"])] for c in cells], dtype=float)
    frac = np.array([float(c["fraction_global"]) for c in cells])
    above = np.array([bool(c["above_bound"]) for c in cells])
    below_nuc = np.array([int(c["r"]) < int(c["nuc_rank"]) for c in cells])
    sc = ax.scatter(
        x,
        y,
        c=frac,
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
        marker="s",
        s=900,
        edgecolors=np.where(above, "black", "none").tolist(),
        linewidths=1.5,
        zorder=2,
    )
    if below_nuc.any():
        ax.scatter(
            x[below_nuc],
            y[below_nuc],
            marker="s",
            s=900,
            facecolors="none",
            edgecolors="0.3",
            hatch="///",
            linewidths=0,
            zorder=3,
        )
    for xi, yi, c in zip(x, y, cells):
        f = float(c["fraction_global"])
        ax.annotate(
            f"{int(c['global'])}/{int(c['runs'])}",
            (xi, yi),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if f < 0.6 else "black",
            zorder=4,
        )
    # the curve r(r+1)/2 = KN, in row coordinates (rows are the KN values, interpolated)
    rr = np.linspace(min(ranks) - 0.5, max(ranks) + 0.5, 400)
    curve_kn = rr * (rr + 1) / 2
    rows = np.interp(curve_kn, kns, np.arange(len(kns)), left=np.nan, right=np.nan)
    ax.plot(rr, rows, color="crimson", lw=2, zorder=3)
    ax.set_xticks(ranks)
    ax.set_yticks(range(len(kns)), [str(k) for k in kns])
    ax.set_xlim(min(ranks) - 0.6, max(ranks) + 0.6)
    ax.set_ylim(-0.6, len(kns) - 0.4)
    ax.set_xlabel("LoRA rank r")
    ax.set_ylabel("KN (scalar predictions)")
    cfg = result.get("config", {})
    ax.set_title(
        "Fraction of trainings ending at the global minimum"
        + (f"\n{cfg.get('loss', '')} loss, m = n = {cfg.get('size')}, lam = {cfg.get('lam')}" if cfg else ""),
        fontsize=10,
    )
    cb = fig.colorbar(sc, ax=ax, fraction=0.05, pad=0.02)
    cb.set_label("fraction global")
    handles = [
        Line2D([], [], color="crimson", lw=2, label="r(r+1)/2 = KN"),
        Line2D(
            [],
            [],
            ls="",
            marker="s",
            ms=10,
            mfc="0.85",
            mec="black",
            mew=1.5,
            label="above the bound: no spurious minima guaranteed",
        ),
        Patch(facecolor="white", edgecolor="0.3", hatch="///", label="r below the NUC minimizer's rank"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=7.5, frameon=False)
    return fig
