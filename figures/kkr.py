r"""Where LoRA training ends, without linearization ([KKR25]): norm against excess over the minimum.

Reads the data of ``loracheck kkr`` (format ``loracheck.kkr``).  For one configuration, every
end point is a marker at :math:`(\|X\|_F,\ F(X) - F_{\mathrm{ref}})`: the penalized value above
the reference minimum (floored for the log axis).  The marker's shape is the init; its colour the
class: global (at the reference value), spurious (a certified SOSP above it), rank-limited (an
SOSP of a problem whose minimizer has rank above r: LoRA-GA's own problem), or no SOSP
certificate.  The star is the reference minimizer.  "Fails loudly" shows as red markers far to
the right of the green ones.  Open markers have no SOSP certificate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from figures._axes import figure_and_axes
from figures.validate import KKR_FORMAT, finished_entry
from theory.errors import finite_number

__all__ = ["plot_kkr", "KKR_FORMAT"]


_CLASS_COLOURS = {
    "global": "tab:green",
    "spurious": "tab:red",
    "rank-limited": "tab:orange",
    "not-sosp": "0.55",
}
_MARKERS = {"zero": "o", "small": "s", "large": "^", "loraga": "D", "adversarial": "P"}
_FLOOR = 1e-12


def _class(run: Mapping[str, Any], rtol: float = 1e-6) -> str:
    # The rule of verify.kkr.training.classify, on the stored numbers (figures import no verify code).
    if run.get("status") != "finished" or not run.get("sosp"):
        return "not-sosp"
    if int(run.get("reference_rank", 0)) > int(run.get("lora_rank", 1 << 30)):
        return "rank-limited"
    ref = float(run["reference_value"])
    return "global" if float(run["penalized"]) - ref <= rtol * max(1.0, abs(ref)) else "spurious"


def _entry(result: Mapping[str, Any], configuration: str | None) -> tuple[str, Mapping[str, Any]]:
    return finished_entry(
        result,
        fmt=KKR_FORMAT,
        what="the JSON data of `loracheck kkr`",
        group="configurations",
        arg="configuration",
        chosen=configuration,
    )


def plot_kkr(result: Mapping[str, Any], configuration: str | None = None, ax: Axes | None = None) -> Figure:
    """End points of one configuration: Frobenius norm against excess over the reference minimum.

    Parameters
    ----------
    result
        The data of ``loracheck kkr`` (``kkr.json``).
    configuration
        Which configuration to draw (default: the first finished one).
    ax
        Axes to draw into (default: a new figure).
    """
    name, entry = _entry(result, configuration)
    fig, ax = figure_and_axes(ax, (6.4, 4.2))
    seen_classes: dict[str, int] = {}
    seen_inits: set[str] = set()
    for run in entry["runs"]:
        if run.get("status") != "finished":
            continue
        c = _class(run)
        seen_classes[c] = seen_classes.get(c, 0) + 1
        seen_inits.add(run["init"])
        excess = max(float(run["penalized"]) - float(run["reference_value"]), _FLOOR)
        ax.scatter(
            float(run["frobenius"]),
            excess,
            marker=_MARKERS.get(run["init"], "x"),
            s=36,
            facecolor="none" if c == "not-sosp" else _CLASS_COLOURS[c],
            edgecolor=_CLASS_COLOURS[c],
            alpha=0.8,
            lw=1.0,
        )
    ref = entry["reference"]
    # The reference sits one decade below the floor, so that global end points (at the floor) stay
    # visible above it.
    ax.scatter(float(ref["frobenius"]), _FLOOR / 10, marker="*", s=140, color="k", zorder=3)
    ax.set_yscale("log")
    ax.set_ylim(bottom=_FLOOR / 40)
    ax.set_xlabel("||X||_F of the end point")
    ax.set_ylabel(f"penalized value above the reference (floor {_FLOOR:g})")
    handles = [
        Line2D([], [], ls="", marker=_MARKERS.get(i, "x"), color="0.3", mfc="none", label=i)
        for i in list(_MARKERS) + sorted(set(seen_inits) - set(_MARKERS))
        if i in seen_inits
    ]
    handles += [
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            color=_CLASS_COLOURS[c],
            mfc="none" if c == "not-sosp" else None,
            label=f"{c} ({n})",
        )
        for c, n in seen_classes.items()
    ]
    handles.append(
        Line2D([], [], ls="", marker="*", color="k", ms=10, label="reference (drawn below the floor)")
    )
    ax.legend(handles=handles, fontsize=7.5, loc="best")
    consts = entry.get("constants") or {}
    regime = consts.get("regime", "n/a")
    how = "certified" if ref.get("certified") else "best found"
    lam = entry.get("fingerprint", {}).get("lam")
    alpha: Any = consts.get("alpha")
    beta: Any = consts.get("beta")
    ab = (
        f", alpha^ {float(alpha):.2g}, beta^ {float(beta):.2g} ({regime})"
        if finite_number(alpha) and finite_number(beta)  # ints of any size: no OverflowError
        else ""
    )
    ax.set_title(
        f"{name}: lam = {lam}, reference {how}, r* = {ref.get('rank')}\n{ab.lstrip(', ')}", fontsize=9
    )
    return fig
