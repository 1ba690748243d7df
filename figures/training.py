r"""Training curves of full fine-tuning and of LoRA at several ranks (the [JLR24] experiment).

Reads the data of ``loracheck experiment`` (format ``loracheck.experiment``): for one training-set
size ``N``, the objective over Adam steps of LoRA at each rank,

.. math:: F(U, V) = L(UV^\top) + \tfrac{\lambda}{2}(\|U\|_F^2 + \|V\|_F^2),

with the certified optimum of the NUC problem :math:`\min_D L(D) + \lambda\|D\|_*` (the value LoRA
reaches at a global minimum) drawn as a line, and full fine-tuning's own objective (ridge:
:math:`L(D) + \tfrac{\lambda}{2}\|D\|_F^2`, a different problem, so a different final value).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from figures._axes import figure_and_axes
from figures.validate import EXPERIMENT_FORMAT, check_format
from theory.errors import UserInputError

__all__ = ["plot_training_curves"]

def _run(result: Mapping[str, Any], N: int | None) -> Mapping[str, Any]:
    check_format(result, EXPERIMENT_FORMAT, "the JSON data of `loracheck experiment`")
    runs = [r for r in result.get("runs", []) if r.get("lora")]
    if not runs:
        raise UserInputError("result: expected at least one run with LoRA training curves")
    if N is None:
        return runs[0]
    hit = [r for r in runs if r.get("N") == N]
    if not hit:
        raise UserInputError(f"N: expected one of {[r.get('N') for r in runs]}, got {N!r}")
    return hit[0]


def plot_training_curves(result: Mapping[str, Any], N: int | None = None, ax: Axes | None = None) -> Figure:
    """Objective over Adam steps: LoRA per rank, full fine-tuning, and the certified NUC optimum.

    Solid lines: ranks above the bound :math:`r(r+1)/2 > KN`; dashed: at or below it.

    Parameters
    ----------
    result
        The data of ``loracheck experiment`` (``experiment.json``).
    N
        Which training-set size to draw (default: the first run with LoRA curves).
    ax
        Axes to draw into (default: a new figure).
    """
    run = _run(result, N)
    fig, ax = figure_and_axes(ax, (6.4, 4.2))
    ft = run.get("full_ft", {})
    if ft.get("curve"):
        steps = [p["step"] for p in ft["curve"]]
        ax.plot(
            steps,
            [p["objective"] for p in ft["curve"]],
            color="0.45",
            lw=2,
            label="full FT (ridge objective)",
        )
    n = len(run["lora"])
    cmap = colormaps["plasma"]
    for i, e in enumerate(run["lora"]):
        steps = [p["step"] for p in e["curve"]]
        vals = [p["objective"] for p in e["curve"]]
        ax.plot(
            steps,
            vals,
            color=cmap(0.1 + 0.75 * i / max(1, n - 1)),
            ls="-" if e["above_bound"] else "--",
            lw=1.6,
            label=f"LoRA r = {e['r']}" + (" (above bound)" if e["above_bound"] else ""),
        )
    nuc = run["nuc"]["objective"]
    ax.axhline(nuc, color="black", ls=":", lw=1.5, label="certified NUC optimum")
    all_vals = np.array(
        [p["objective"] for e in run["lora"] for p in e["curve"]]
        + [p["objective"] for p in ft.get("curve", [])]
    )
    lo, hi = float(all_vals.min()), float(all_vals.max())
    ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    ax.set_xlabel("Adam step")
    ax.set_ylabel("training objective")
    setup = result.get("setup", {})
    sizes = f"N = {run['N']} (KN = {run['KN']}, r_max = {run['r_max']})"
    ax.set_title(f"{sizes}, {setup.get('loss', '')}, lam = {setup.get('lam')}", fontsize=10)
    ax.legend(fontsize=7.5, loc="upper right")
    return fig
