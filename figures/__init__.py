"""Figures drawn from saved reports (plain JSON); never recomputes the science.

The plotting functions arrive with the figures issue; this package reads reports only and may
import ``theory`` (e.g. for the curve r(r+1)/2 = KN), never ``landscapes`` or ``verify``.
"""

__all__: list[str] = []
