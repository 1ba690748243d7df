"""Task functions for the sweep tests, importable by reference ("tests.sweep_tasks:NAME") in workers."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from verify.sweep.tasks import derive_seed


def square(spec: dict[str, Any]) -> dict[str, Any]:
    """x**2 and a seed derived from the spec (no torch)."""
    return {"y": spec["x"] ** 2, "draw": derive_seed("square", spec) % 1000}


def fails_on(spec: dict[str, Any]) -> dict[str, Any]:
    """Raises for x == spec["bad"] unless the file spec["unless"] exists."""
    if spec["x"] == spec["bad"] and not Path(spec["unless"]).exists():
        raise ValueError(f"planted failure at x = {spec['x']}")
    return {"y": spec["x"]}


def crashes_on(spec: dict[str, Any]) -> dict[str, Any]:
    """Kills its own worker process at x == spec["bad"] (after the others had time to finish)."""
    if spec["x"] == spec["bad"]:
        time.sleep(0.5)
        os._exit(1)
    return {"y": spec["x"]}


def not_json(spec: dict[str, Any]) -> dict[str, Any]:
    return {"y": float("nan")}


def slow_unless(spec: dict[str, Any]) -> dict[str, Any]:
    """Sleeps ``spec["slow"]`` seconds for x >= spec["slow_from"] unless the file spec["unless"] exists.

    The signal tests: the first tasks finish at once, the later ones are still running when the
    sweep is stopped; once the file exists (a resumed sweep) every task is quick.
    """
    if spec["x"] >= spec["slow_from"] and not Path(spec["unless"]).exists():
        time.sleep(spec["slow"])
    return {"y": spec["x"], "pid": os.getpid()}
