"""Integer searches shared by the bounds and the measurements (no torch)."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["bisect_boundary"]


def bisect_boundary(ok: Callable[[int], bool], bad: int, good: int) -> int:
    """Bisect between ``bad < good`` (``ok(good)`` holds, ``ok(bad)`` not) until adjacent; return ``good``.

    The returned ``g`` satisfies ``ok(g)`` with ``ok(g - 1)`` false at the bracket it was found in
    (the smallest such ``g`` when ``ok`` is monotone).  ``ok`` is called only strictly between the
    ends, about ``log2(good - bad)`` times.
    """
    while good - bad > 1:
        mid = (bad + good) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good
