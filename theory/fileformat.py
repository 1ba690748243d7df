"""The two keys that say what a saved results file is: ``format`` (a text id) and ``version``.

Every JSON file the commands write starts with ``"format": "loracheck.<kind>"`` and
``"version": <int>``.  Files written before the ``version`` key spelled the version inside the
id (``"format": "loracheck.kkr/1"``, ``"loracheck.kkr/1-recertified"``) and some named the key
``schema`` (``"schema": "loracheck.phase/1"``); :func:`saved_format` reads every spelling.  It
lives here because both ``verify`` (resuming) and ``figures`` (drawing) read saved files, and
``figures`` imports ``theory`` only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["saved_format"]

#: A version inside the text id, as written before the ``version`` key: ``loracheck.kkr/1``,
#: ``loracheck.kkr/1-recertified`` (the kind ``loracheck.kkr-recertified``).
_LEGACY = re.compile(
    r"(?P<kind>loracheck\.[A-Za-z0-9_.-]+)/(?P<version>[0-9]{1,6})(?P<suffix>-[A-Za-z0-9_-]+)?"
)


def saved_format(data: Any) -> tuple[Any, Any]:
    """``(format, version)`` of saved data, in the current spelling or an earlier one.

    ``{"format": "loracheck.kkr", "version": 1}``, ``{"format": "loracheck.kkr/1"}`` and
    ``{"schema": "loracheck.phase/1"}`` give ``("loracheck.kkr", 1)`` and ``("loracheck.phase", 1)``.
    Whatever is found is returned as it is (``None`` for a missing field, or for data that is not a
    JSON object), for the caller to compare and to quote.
    """
    if not isinstance(data, Mapping):
        return None, None
    fmt = data.get("format", data.get("schema"))
    version = data.get("version")
    if version is None and isinstance(fmt, str):
        m = _LEGACY.fullmatch(fmt)
        if m is not None:
            return m["kind"] + (m["suffix"] or ""), int(m["version"])
    return fmt, version
