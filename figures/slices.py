r"""Loss-landscape slices of the LoRA objective (data of :func:`verify.jlr.slices.landscape_slices`).

1-D slices: :math:`F` along each direction with the certified NUC optimum (the value of a global
minimum of LoRA) as a dashed line.  2-D slices: filled contours of :math:`F - F^\star` (log
scale) around the zero point or the trained point; the centre is marked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from figures._axes import figure_and_axes
from figures.validate import SLICES_FORMAT, check_format
from theory.errors import UserInputError

__all__ = ["plot_slices_1d", "plot_slice_2d", "plot_hessian_spectrum"]

def _check(result: Mapping[str, Any]) -> None:
    check_format(result, SLICES_FORMAT, "slice data")
    for k in ("slices_1d", "slices_2d", "nuc_optimum"):
        if k not in result:
            raise UserInputError(f"result: missing {k!r}")


def plot_slices_1d(result: Mapping[str, Any], ax: Axes | None = None) -> Figure:
    r"""All 1-D slices as :math:`F - F^\star` (log scale), :math:`F^\star` the certified optimum."""
    _check(result)
    fig, ax = figure_and_axes(ax, (6.4, 4.4))
    opt = float(result["nuc_optimum"])
    allv = np.concatenate([np.asarray(s["values"], dtype=float) - opt for s in result["slices_1d"]])
    floor = max(float(np.abs(allv).max()) * 1e-12, 1e-15)
    for i, s in enumerate(result["slices_1d"]):
        y = np.maximum(np.asarray(s["values"], dtype=float) - opt, floor)
        ax.plot(s["alphas"], y, color=f"C{i}", lw=1.8, label=s["label"])
    ax.set_yscale("log")
    unit = {
        "lora": "normalized: 1 = each factor's size",
        "filter": "filter-normalized: 1 = each column's size",
    }.get(str(result.get("normalization")), "not normalized")
    ax.set_xlabel(f"step along the direction ({unit})")
    ax.set_ylabel("F − certified global optimum")
    p = result.get("problem", {})
    ax.set_title(
        f"1-D slices, {p.get('name', '')}: rank {result.get('rank')}, KN = {p.get('KN')}", fontsize=10
    )
    fig.legend(loc="outside lower center", fontsize=7, ncols=1, frameon=False)
    return fig


def plot_slice_2d(result: Mapping[str, Any], index: int = 0, ax: Axes | None = None) -> Figure:
    """One 2-D slice as filled contours of F minus the certified optimum (log colour scale)."""
    _check(result)
    slices = result["slices_2d"]
    if not (isinstance(index, int) and 0 <= index < len(slices)):
        raise UserInputError(f"index: expected 0 <= index < {len(slices)}, got {index!r}")
    s = slices[index]
    fig, ax = figure_and_axes(ax, (5.2, 4.4))
    a, b = np.array(s["alphas"]), np.array(s["betas"])
    z = np.array(s["values"]) - float(result["nuc_optimum"])
    lo, hi = float(z.min()), float(z.max())
    if lo > 0 and hi / lo > 10:  # a wide range: log colours over four decades below the top
        lo = max(lo, hi * 1e-4)
        z = np.maximum(z, lo)
        cs = ax.contourf(b, a, z, levels=np.geomspace(lo, hi, 17), norm=LogNorm(), cmap="viridis")
    else:
        cs = ax.contourf(b, a, z, levels=16, cmap="viridis")
    ax.plot([0.0], [0.0], marker="*", ms=12, color="white", mec="black", ls="", label="centre")
    d1, d2 = s.get("directions", ["direction 1", "direction 2"])
    ax.set_xlabel(f"{d2} direction")
    ax.set_ylabel(f"{d1} direction")
    ax.set_title(s["label"], fontsize=9)
    cb = fig.colorbar(cs, ax=ax, format="%.3g")
    cb.set_label("F − certified optimum")
    ax.legend(fontsize=7, loc="upper right")
    return fig


def plot_hessian_spectrum(result: Mapping[str, Any], ax: Axes | None = None) -> Figure:
    r"""Histogram of the Hessian eigenvalues of :math:`F` at the zero point and at the trained point.

    Negative eigenvalues are drawn in red (at zero: the strict-saddle directions); the closed form
    :math:`\lambda_{\min}(0) = \lambda - \|\nabla L(0)\|_{op}` is the dashed line.  With ``ax``
    given, both spectra share those axes; otherwise one panel each.
    """
    _check(result)
    spectra = result.get("hessian_spectra")
    if not spectra:
        raise UserInputError("result: missing 'hessian_spectra'")
    if ax is None:
        fig = Figure(figsize=(6.4, 2.3 * len(spectra) + 0.6), layout="constrained")
        axes = list(fig.subplots(len(spectra), 1, sharex=True, squeeze=False)[:, 0])
    else:
        fig, axes = ax.get_figure(), [ax] * len(spectra)  # type: ignore[assignment]
    allv = np.concatenate([np.asarray(s["eigenvalues"], dtype=float) for s in spectra])
    lo, hi = float(allv.min()), float(allv.max())
    pad = 0.05 * (hi - lo if hi > lo else 1.0)
    bins = np.linspace(lo - pad, hi + pad, 61)
    for a, s in zip(axes, spectra):
        ev = np.asarray(s["eigenvalues"], dtype=float)
        tol = 1e-9 * max(1.0, float(np.abs(ev).max()))
        neg = ev[ev < -tol]
        a.hist(ev[ev >= -tol], bins=bins, color="C0", label=f"{int((ev >= -tol).sum())} eigenvalues >= 0")
        if neg.size:
            a.hist(neg, bins=bins, color="crimson", label=f"{neg.size} negative (min {neg.min():.3g})")
        if s["center"] == "zero" and "zero_lambda_min_closed_form" in result:
            a.axvline(
                result["zero_lambda_min_closed_form"],
                color="black",
                ls="--",
                lw=1.2,
                label="lam − ||grad L(0)||_op",
            )
        a.set_ylabel("count")
        a.set_title(f"Hessian of F at the {s['center']} point ({ev.size} parameters)", fontsize=9)
        a.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("eigenvalue")
    return fig
