"""The [JLR24] phase diagram read back from a sweep store: diagrams, records checked, cell data."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from theory.bounds import r_max
from theory.errors import UserInputError, finite_number, shown
from verify.jlr.phase import DIAGRAM_KEYS, PHASE_FORMAT, PHASE_VERSION, phase_cell, phase_summary

__all__ = ["phase_diagrams", "phase_data_from_store"]


def phase_diagrams(store: Any) -> list[dict[str, Any]]:
    """The distinct diagrams in a sweep store: one dict of :data:`DIAGRAM_KEYS` values each.

    ``store`` is a path or an open :class:`verify.sweep.store.SweepStore`.
    """
    seen: dict[str, dict[str, Any]] = {}
    for rec in _phase_records(store):
        key = {k: rec.spec[k] for k in DIAGRAM_KEYS}
        seen.setdefault(json.dumps(key, sort_keys=True), key)
    return list(seen.values())


_INT_LIMIT = 2**53  # every int of a record is exact as a float and prints in a few digits


def _record_int(value: Any, where: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= _INT_LIMIT:
        raise UserInputError(f"{where}: expected an int in [{low}, 2**53], got {shown(value)}")
    return value


def _record_number(value: Any, where: str, *, none: bool = False) -> None:
    if none and value is None:
        return
    if not finite_number(value):
        raise UserInputError(
            f"{where}: expected a finite number{' or null' if none else ''}, got {shown(value)}"
        )


def _record_bool(value: Any, where: str, *, none: bool = False) -> None:
    if not (isinstance(value, bool) or (none and value is None)):
        raise UserInputError(
            f"{where}: expected true or false{' or null' if none else ''}, got {shown(value)}"
        )


def _check_phase_record(rec: Any, where: str) -> None:
    """Refuse a finished phase record whose spec or result is not what :func:`phase_task` writes.

    A store is input (it may be forged or damaged): every field that the phase data, its table
    and its figure read is checked here, before any of them is computed.
    """
    at = f"{where}: task {rec.index}"
    spec, result = rec.spec, rec.result
    for k in ("K", "N", "size"):
        _record_int(spec.get(k), f"{at}: spec {k!r}", 1)
    for k in ("seed", "problem_seed"):
        seed = spec.get(k)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed.bit_length() > 64:
            raise UserInputError(f"{at}: spec {k!r}: expected an int of at most 64 bits, got {shown(seed)}")
    for k in ("lam", "gap_rtol"):
        _record_number(spec.get(k), f"{at}: spec {k!r}")
    if not isinstance(spec.get("loss"), str):
        raise UserInputError(f"{at}: spec 'loss': expected a str, got {shown(spec.get('loss'))}")
    if not isinstance(result, Mapping):
        raise UserInputError(f"{at}: result: expected a JSON object (a dict), got {shown(result)}")
    _record_int(result.get("r"), f"{at}: result 'r'", 1)
    if not isinstance(result.get("init"), str):
        raise UserInputError(f"{at}: result 'init': expected a str, got {shown(result.get('init'))}")
    nuc = result.get("nuc")
    if not isinstance(nuc, Mapping):
        raise UserInputError(f"{at}: result 'nuc': expected a JSON object (a dict), got {shown(nuc)}")
    _record_int(nuc.get("rank"), f"{at}: result 'nuc' 'rank'", 0)
    for k in ("primal", "dual", "rel_gap"):
        _record_number(nuc.get(k), f"{at}: result 'nuc' {k!r}", none=k != "rel_gap")
    _record_bool(nuc.get("converged"), f"{at}: result 'nuc' 'converged'", none=True)
    for k in ("objective_minus_nuc", "S_op_over_lam"):
        _record_number(result.get(k), f"{at}: result {k!r}", none=True)
    for k in ("global", "certified_sosp"):
        _record_bool(result.get(k), f"{at}: result {k!r}")
    _record_bool(result.get("spurious"), f"{at}: result 'spurious'", none=True)
    if result.get("product_rank") is not None:
        _record_int(result.get("product_rank"), f"{at}: result 'product_rank'", 0)


def _phase_records(store: Any) -> list[Any]:
    from verify.sweep.store import SweepStore

    if isinstance(store, SweepStore):
        st, recs = store, store.records("finished")
    else:
        with SweepStore.open(store, readonly=True) as st:
            recs = st.records("finished")
    where = f"store {str(st.path)!r}"
    out = []
    for rec in recs:
        if not isinstance(rec.spec, Mapping):
            raise UserInputError(
                f"{where}: task {rec.index}: spec: expected a JSON object, got {shown(rec.spec)}"
            )
        if rec.spec.get("task") == "phase":
            _check_phase_record(rec, where)
            out.append(rec)
    return out


def phase_data_from_store(store: Any, *, select: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The phase data (``loracheck.phase``) of a phase sweep, read from its result store.

    Cells are the ``(K, N, r)`` of the finished ``phase`` tasks; a cell's ``ends`` are its runs in
    the sweep's order and its counts follow :func:`phase_cell`, so the data has the fields that
    :func:`phase_sweep` writes and the ``figures`` code draws.  ``select`` keeps the tasks whose
    parameters have the given values; the tasks kept must form one diagram (equal
    :data:`DIAGRAM_KEYS`), else ``ValueError`` lists the diagrams (see :func:`phase_diagrams`).
    ``complete`` is true when every task of the sweep is finished; ``seconds`` is the sum of the
    tasks' own wall times; ``source`` names the store.

    Raises ``ValueError`` when the store has no such tasks, or when two tasks of one problem
    report different NUC optima (the results would not be reproducible).
    """
    from verify.sweep.store import SweepStore

    own = not isinstance(store, SweepStore)
    st = SweepStore.open(store, readonly=True) if own else store
    try:
        recs = _phase_records(st)
        meta, counts = st.meta, st.counts()
    finally:
        if own:
            st.close()
    sel = dict(select or {})
    recs = [r for r in recs if all(r.spec.get(k) == v for k, v in sel.items())]
    if not recs:
        raise UserInputError(f"store: {str(st.path)!r} has no finished phase tasks matching select = {sel!r}")
    diagrams = {json.dumps({k: r.spec[k] for k in DIAGRAM_KEYS}, sort_keys=True) for r in recs}
    if len(diagrams) > 1:
        raise UserInputError(
            f"select: the tasks form {len(diagrams)} diagrams ({'; '.join(sorted(diagrams))}); pass select "
            f"with values of {', '.join(DIAGRAM_KEYS)} to pick one"
        )
    first = recs[0].spec
    kn: list[tuple[int, int]] = []
    refs: dict[tuple[int, int], str] = {}
    cells: dict[tuple[int, int, int], list[Any]] = {}
    for rec in recs:
        K, N, r = int(rec.spec["K"]), int(rec.spec["N"]), int(rec.result["r"])
        nuc = json.dumps(rec.result["nuc"], sort_keys=True)
        if (K, N) not in refs:
            kn.append((K, N))
            refs[(K, N)] = nuc
        elif refs[(K, N)] != nuc:
            raise UserInputError(
                f"store: tasks of the problem K = {K}, N = {N} report different NUC optima "
                f"({refs[(K, N)]} and {nuc}, task {rec.index}): "
                "the results are not reproducible (different hardware or software stacks?)"
            )
        cells.setdefault((K, N, r), []).append(rec)
    gap_rtol = float(first["gap_rtol"])
    out_cells = []
    for K, N in kn:
        for K2, N2, r in sorted(k for k in cells if k[:2] == (K, N)):
            group = cells[(K2, N2, r)]
            out_cells.append(
                phase_cell(
                    K=K,
                    N=N,
                    r=r,
                    reference=json.loads(refs[(K, N)]),
                    ends=[_end(rec.result) for rec in group],
                    gap_rtol=gap_rtol,
                )
            )
    inits: list[str] = []
    for rec in recs:
        if rec.result["init"] not in inits:
            inits.append(rec.result["init"])
    return {
        "format": PHASE_FORMAT,
        "version": PHASE_VERSION,
        "config": {
            "kn": [list(p) for p in kn],
            "ranks": sorted({c["r"] for c in out_cells}),
            "size": int(first["size"]),
            "runs": max(c["runs"] for c in out_cells),
            "loss": first["loss"],
            "lam": first["lam"],
            "inits": inits,
            "gap_rtol": gap_rtol,
            "seed": first["seed"],
            "problem_seed": first["problem_seed"],
        },
        "curve": [{"KN": K * N, "r_max": r_max(K, N)} for K, N in kn],
        "cells": out_cells,
        "complete": counts["failed"] == 0 and counts["finished"] == int(meta.get("tasks", -1)),
        "seconds": sum(rec.seconds for rec in recs),
        "summary": phase_summary(out_cells),
        "source": {
            "store": os.fspath(st.path),
            "sweep": meta.get("name"),
            "config_hash": meta.get("config_hash"),
            "tasks": int(meta.get("tasks", 0)),
            "finished": counts["finished"],
            "failed": counts["failed"],
            "select": sel,
        },
    }


def _end(result: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("init", "objective_minus_nuc", "global", "certified_sosp", "product_rank", "S_op_over_lam")
    return {**{k: result[k] for k in keys}, "spurious": result.get("spurious")}
