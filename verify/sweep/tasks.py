r"""Sweep tasks: canonical specs, hashes, derived seeds, parameter schemas and the worker entry.

A *task* is one independent unit of a sweep, described completely by its **spec**: a JSON object
``{"task": KIND, "seed": S, "replicate": i, ...parameters}``.  Everything about a task is a
function of its spec:

* its **hash** :math:`h = \operatorname{sha256}(\operatorname{canon}(\text{spec}))` (hex), where
  ``canon`` is JSON with sorted keys, no whitespace, ASCII only and ``repr``-exact floats
  (:func:`canonical_json`); the result store is keyed by it;
* its **seeds**: :func:`derive_seed` maps any JSON-able tuple of parts to the first 63 bits of
  its sha256, so seeds are stable across machines, Python versions and processes (unlike
  ``hash()``), independent of the order in which tasks run and of which worker runs them, and
  distinct tasks get unrelated streams;
* its **result**: the task function is called under :func:`single_thread` (one torch thread and
  one BLAS thread for its duration), so the serial executor, a process pool and Dask workers
  compute bit-identical numbers on the same hardware and software stack.

A *task kind* names the function and its parameter schema (:class:`TaskKind`, :class:`Param`):
the built-in ``"phase"`` (one LoRA training of the [JLR24] phase diagram,
:data:`verify.jlr.phase.PHASE_TASK`), or any ``"package.module:function"`` a user writes (a function
``spec -> dict`` of JSON values; its parameters are not checked against a schema).
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import time
import traceback
from collections.abc import Mapping
from typing import Any

from landscapes.threads import single_threaded as single_thread
from theory.errors import InputTypeError, UserInputError
from verify.taskkind import REQUIRED, Param, TaskKind, canonical_json, derive_seed, task_hash

__all__ = [
    "BUILTIN_TASKS",
    "REQUIRED",
    "Param",
    "TaskKind",
    "canonical_json",
    "derive_seed",
    "resolve_task",
    "run_task",
    "run_tasks",
    "single_thread",
    "task_hash",
]

#: Built-in task kinds: name -> ``"module:attribute"`` of their :class:`TaskKind`.
BUILTIN_TASKS: dict[str, str] = {"phase": "verify.jlr.phase:PHASE_TASK"}


_RESOLVED: dict[str, TaskKind] = {}


def resolve_task(name: str) -> TaskKind:
    """The :class:`TaskKind` named ``name``: a built-in (``"phase"``) or ``"package.module:function"``.

    A reference to a plain function gives a kind without a schema; a reference to a
    :class:`TaskKind` gives that kind.  Raises ``ValueError`` naming ``task`` when it cannot be
    found or is not callable.
    """
    if not isinstance(name, str) or not name:
        raise UserInputError(
            f"task: expected a task kind ({', '.join(BUILTIN_TASKS)}) or 'module:function', got {name!r}"
        )
    if name in _RESOLVED:
        return _RESOLVED[name]
    ref = BUILTIN_TASKS.get(name, name)
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise UserInputError(
            f"task: expected a built-in task kind ({', '.join(BUILTIN_TASKS)}) or a reference "
            f"'package.module:function', got {name!r}"
        )
    if module.startswith("."):
        raise UserInputError(f"task: expected an absolute module name in 'module:function', got {name!r}")
    # Importing a module the config names runs its code: whatever that raises (a SyntaxError, an
    # error at import time) is a fault of the module named, reported as bad input; the package's
    # own built-in tasks are not caught this way.
    expected: tuple[type[Exception], ...] = (
        (ImportError, AttributeError) if name in BUILTIN_TASKS else (Exception,)
    )
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except expected as exc:
        raise UserInputError(f"task: cannot import {ref!r} ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, TaskKind):
        kind = obj
    elif callable(obj):
        kind = TaskKind(name=name, function=obj)
    else:
        raise UserInputError(
            f"task: expected {ref!r} to be a function or a TaskKind, got {type(obj).__name__}"
        )
    _RESOLVED[name] = kind
    return kind


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_task(spec_json: str) -> dict[str, Any]:
    """Run one task (the function that executors call; importable, picklable arguments).

    Takes the spec as canonical JSON and returns ``{"status": "finished" | "failed", "result":
    canonical JSON text or None, "error": None or the exception with a traceback summary,
    "seconds": wall time of the task, "worker": "host:pid"}``.  An exception raised by the task
    (or a result that is not JSON) is returned as a failure, never raised, so one bad task
    cannot stop a sweep; ``KeyboardInterrupt`` and ``SystemExit`` still propagate.
    """
    t0 = time.perf_counter()
    result: str | None = None
    error: str | None = None
    try:
        spec = json.loads(spec_json)
        kind = resolve_task(spec["task"])
        with single_thread():
            out = kind.function(spec)
        if not isinstance(out, Mapping):
            raise InputTypeError(f"task {spec['task']!r} returned {type(out).__name__}, expected a dict")
        result = canonical_json(dict(out))
    except Exception as exc:
        tb = traceback.extract_tb(exc.__traceback__)
        where = "".join(traceback.format_list(tb[-4:]))
        error = f"{type(exc).__name__}: {exc}\n{where}".rstrip()
    return {
        "status": "failed" if error is not None else "finished",
        "result": result,
        "error": error,
        "seconds": time.perf_counter() - t0,
        "worker": _worker_name(),
    }


def run_tasks(spec_jsons: list[str]) -> list[dict[str, Any]]:
    """Run several tasks one after the other in this worker: :func:`run_task` of each, in order.

    One executor call for a *chunk* of tasks: the per-call cost of the executor (a Dask
    scheduler's bookkeeping and round trip, a few milliseconds) is paid once per chunk.
    """
    return [run_task(s) for s in spec_jsons]
