"""The one way a figure function gets its axes: the caller's, or a new figure's."""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.figure import Figure


def figure_and_axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    """``ax`` and its figure, or a new constrained-layout figure of ``size`` inches with one axes."""
    if ax is None:
        fig = Figure(figsize=size, layout="constrained")
        return fig, fig.add_subplot()
    return ax.get_figure(), ax  # type: ignore[return-value]
