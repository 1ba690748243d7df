"""Figures drawn from saved results (plain JSON); they never recompute the science.

This package reads saved data only and may import ``theory`` (e.g. for the curve
r(r+1)/2 = KN), never ``landscapes`` or ``verify``.  Each figure is a function
``plot_x(result, ax=None) -> Figure`` (matplotlib's object API: no global pyplot state).
"""

from figures.gallery import gallery_items, write_gallery
from figures.hsk import plot_hsk_ranks
from figures.kkr import plot_kkr
from figures.phase import plot_phase_diagram
from figures.slices import plot_hessian_spectrum, plot_slice_2d, plot_slices_1d
from figures.spectrum import plot_singular_values
from figures.speed import plot_speed
from figures.training import plot_training_curves

__all__ = [
    "plot_phase_diagram",
    "plot_singular_values",
    "plot_training_curves",
    "plot_slices_1d",
    "plot_slice_2d",
    "plot_hessian_spectrum",
    "plot_speed",
    "plot_kkr",
    "plot_hsk_ranks",
    "gallery_items",
    "write_gallery",
]
