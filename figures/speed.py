r"""How fast each LoRA init closes the gap to the certified optimum ([WYL24] WYL-speed).

Reads the data of ``loracheck speed`` (format ``loracheck.speed``): for one problem and each
init, the remaining fraction of the way :math:`1 - p(t)`,
:math:`p(t) = (F(0) - F(t)) / (F(0) - F^\star)`, over Adam steps at the init's best learning
rate -- the median over seeds as a line, the seeds' range as a band.  The dotted lines are the
90 % and 99 % marks that the table counts steps to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from figures._axes import figure_and_axes
from figures.validate import SPEED_FORMAT, finished_entry

__all__ = ["plot_speed", "SPEED_FORMAT"]


#: One colour per init, the same in every figure.
_COLOURS = {
    "vanilla": "tab:blue",
    "gaussian": "tab:cyan",
    "loraga": "tab:red",
    "loraga-peft": "tab:orange",
    "pissa": "tab:green",
}
_FLOOR = 1e-6


def _entry(result: Mapping[str, Any], problem: str | None) -> tuple[str, Mapping[str, Any]]:
    return finished_entry(
        result,
        fmt=SPEED_FORMAT,
        what="the JSON data of `loracheck speed`",
        group="problems",
        arg="problem",
        chosen=problem,
    )


def plot_speed(result: Mapping[str, Any], problem: str | None = None, ax: Axes | None = None) -> Figure:
    """Remaining fraction of the way to the certified optimum over Adam steps, one line per init.

    Parameters
    ----------
    result
        The data of ``loracheck speed`` (``speed.json``).
    problem
        Which problem to draw (default: the first finished one).
    ax
        Axes to draw into (default: a new figure).
    """
    name, entry = _entry(result, problem)
    fig, ax = figure_and_axes(ax, (6.4, 4.2))
    for init, row in entry["table"].items():
        runs = [r for r in entry["runs"] if r["init"] == init and r["lr"] == row["lr"] and r["curve"]]
        if not runs:
            continue
        steps = np.array([t for t, _ in runs[0]["curve"]], dtype=float)
        rest = np.array(
            [
                [max(1.0 - float(p), _FLOOR) for _, p in r["curve"]]
                for r in runs
                if len(r["curve"]) == len(steps)
            ]
        )
        x = np.maximum(steps, 1.0)  # step 0 drawn at 1 on the log axis
        colour = _COLOURS.get(init, "0.3")
        ax.plot(x, np.median(rest, axis=0), color=colour, lw=1.8, label=f"{init} (lr {row['lr']:g})")
        if len(rest) > 1:
            ax.fill_between(x, rest.min(axis=0), rest.max(axis=0), color=colour, alpha=0.18, lw=0)
    for level, text in ((0.1, "90 %"), (0.01, "99 %")):
        ax.axhline(level, color="0.4", ls=":", lw=1)
        ax.text(1.02, level, text, transform=ax.get_yaxis_transform(), va="center", fontsize=7.5, color="0.3")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(bottom=_FLOOR)
    ax.set_xlabel("Adam step")
    ax.set_ylabel("remaining fraction of the way, 1 - p(t)")
    fp = entry.get("problem", {})
    seeds = len(result.get("config", {}).get("seeds", []))
    ax.set_title(
        f"{name}: {fp.get('loss', '')}, N = {fp.get('N')}, K = {fp.get('K')}, lam = {fp.get('lam')}, "
        f"r = {result.get('config', {}).get('rank')} ({seeds} seeds: median, range)",
        fontsize=9,
    )
    ax.legend(fontsize=7.5, loc="lower left")
    return fig
