"""Running a sweep: the result store opened for a configuration, tasks run on an executor and recorded."""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import BrokenExecutor, Executor, Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from theory.errors import UserInputError
from verify.sweep.config import (
    CHUNK_SECONDS,
    MAX_CHUNK,
    SweepAborted,
    SweepConfig,
    SweepSummary,
    Task,
    _hash_of_hashes,
    check_task_count,
    iter_tasks,
    load_config,
)
from verify.sweep.executors import make_executor
from verify.sweep.store import StoreError, StoreWriteError, SweepStore
from verify.sweep.tasks import canonical_json, run_tasks

__all__ = [
    "open_sweep_store",
    "run_sweep",
]


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------
def open_sweep_store(
    path: str | os.PathLike[str],
    cfg: SweepConfig,
    tasks: Iterable[Task],
    *,
    resume: bool = False,
    fresh: bool = False,
) -> SweepStore:
    """Open the store for ``cfg`` (creating it), following the ``resume``/``fresh`` rules.

    ``tasks`` are the sweep's tasks (a list or :func:`iter_tasks`).  A new path gets a new store.
    An existing one is refused unless ``resume`` (continue it; it must belong to the same sweep) or
    ``fresh`` (it must be a loracheck store; it is deleted and started over).
    """
    h, n = _hash_of_hashes(t.hash for t in tasks)
    return _open_store(path, cfg, h, n, resume=resume, fresh=fresh)


def _open_store(
    path: str | os.PathLike[str], cfg: SweepConfig, h: str, n: int, *, resume: bool, fresh: bool
) -> SweepStore:
    if resume and fresh:
        raise UserInputError("resume, fresh: expected at most one of them, got both")
    p = Path(path)
    if p.exists():
        if fresh:
            SweepStore.open(p).close()  # refuse to delete a file that is not ours, or one in use
            for q in (p, p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")):
                q.unlink(missing_ok=True)
        else:
            st = SweepStore.open(p, readonly=not resume)
            try:
                meta = st.meta
                if meta.get("config_hash") != h:
                    raise StoreError(
                        f"store: {str(p)!r} belongs to another sweep configuration (sweep "
                        f"{meta.get('name')!r}, config hash {meta.get('config_hash', '?')[:12]}, this "
                        f"configuration {h[:12]}); pass --fresh to delete it and start over, or write "
                        "to another store"
                    )
                if not resume:
                    c = st.counts()
                    raise StoreError(
                        f"store: {str(p)!r} exists ({c['finished']} finished and {c['failed']} failed tasks "
                        f"of sweep {meta.get('name')!r}); pass --resume to continue it or --fresh to delete "
                        "it and start over"
                    )
            except BaseException:
                st.close()
                raise
            return st
    return SweepStore.create(
        p,
        meta={
            "config_hash": h,
            "config": canonical_json(cfg.to_dict()),
            "name": cfg.name,
            "task": cfg.task,
            "tasks": str(n),
        },
    )


def run_sweep(
    config: SweepConfig | str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    executor: str | Executor = "process",
    resume: bool = False,
    fresh: bool = False,
    retry_failed: bool = True,
    max_in_flight: int | None = None,
    chunk: int | None = None,
    progress: bool | None = None,
    max_tasks: int | None = None,
) -> SweepSummary:
    """Run a sweep into ``store``; return what this call did.

    Stopped by ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM/SIGHUP turned into
    :class:`verify.signals.Terminated` by the ``loracheck`` command), it abandons the tasks in
    flight, commits the outcomes that had arrived, stops an executor it made (the workers of a
    process pool are terminated, also in the middle of a task; a local Dask cluster is closed) and
    re-raises; ``resume=True`` continues.

    Parameters
    ----------
    config
        A :class:`SweepConfig` or the path of a TOML file.
    store
        The SQLite result store (see :mod:`verify.sweep.store`); created if missing.
    executor
        A spec for :func:`verify.sweep.executors.make_executor` (``"serial"``, ``"process"``,
        ``"process:N"``, ``"dask"``, ``"dask://HOST:PORT"``) or any
        ``concurrent.futures.Executor`` (not shut down here).
    resume
        Continue an existing store of the same sweep: finished tasks are skipped.
    fresh
        Delete an existing store first (it must be a loracheck sweep store).
    retry_failed
        With ``resume``: run the tasks that failed before again (default) or leave them.
    max_in_flight
        Executor calls submitted and not yet recorded, at most (default: 1 for the serial
        executor, twice the executor's workers otherwise).  A killed sweep loses at most these
        calls' tasks.
    chunk
        Tasks per executor call (consecutive tasks of the expansion, run one after the other on
        one worker; their outcomes are recorded together).  Above 1 it amortizes the per-call cost
        of the executor (for Dask a few milliseconds of scheduler and client work, which would
        otherwise bound a cluster's throughput) over several short tasks.  ``None`` (default):
        1 for the serial executor; otherwise 1 at first, then, from the mean task time ``t`` so
        far, about ``c`` seconds of work per call (``round(c / t)``, at most :data:`MAX_CHUNK`, and
        small enough that every worker still gets calls at the end), where ``c`` is the
        executor's ``chunk_seconds`` if it has one (1 s for
        :class:`~verify.sweep.executors.DaskExecutor`, the ``dask`` specs, whose per-call messages cost
        more) or else :data:`CHUNK_SECONDS` (0.25 s; a process pool).
    progress
        tqdm bar (``None``: only on a terminal).
    max_tasks
        Largest number of tasks (``None``: :data:`MAX_TASKS`); a larger sweep is refused with
        :class:`SweepConfigError` before it is expanded.
    """
    cfg = config if isinstance(config, SweepConfig) else load_config(config)
    n_tasks = check_task_count(cfg, max_tasks)
    if max_in_flight is not None and (
        isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1
    ):
        raise UserInputError(f"max_in_flight: expected None or a positive int, got {max_in_flight!r}")
    if resume and fresh:
        raise UserInputError("resume, fresh: expected at most one of them, got both")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise UserInputError(f"chunk: expected None or a positive int, got {chunk!r}")
    t0 = time.perf_counter()
    own = isinstance(executor, str)
    if isinstance(executor, str):
        from verify.sweep.executors import parse_executor

        parse_executor(executor)  # a bad spec fails before the store is touched
    p = Path(store)
    new_store = not p.exists()
    # one streamed pass: every task checked and hashed (the sweep's identity), before any runs
    h, _ = _hash_of_hashes(t.hash for t in iter_tasks(cfg))
    st = _open_store(p, cfg, h, n_tasks, resume=resume, fresh=fresh)
    try:
        try:
            ex: Executor = make_executor(executor) if isinstance(executor, str) else executor
        except BaseException:
            if new_store or fresh:  # nothing was run: leave no empty store behind
                st.close()
                for q in (p, *(p.with_name(p.name + end) for end in ("-wal", "-shm", ".lock"))):
                    q.unlink(missing_ok=True)
            raise
        try:
            summary = _run(
                cfg,
                n_tasks,
                st,
                ex,
                t0=t0,
                retry_failed=retry_failed,
                window=max_in_flight,
                chunk=chunk,
                progress=progress,
                abandon=(lambda: _abandon(ex)) if own else None,
            )
            if own:
                ex.shutdown(wait=True)
        except BaseException:
            if own:  # (again, if _run did: stopping is idempotent) also when stopped outside _run
                with _signals_held():
                    _abandon(ex)
            raise
    finally:
        st.close()
    return replace(summary, wall_seconds=time.perf_counter() - t0)


def _record(st: SweepStore, t: Task, out: Mapping[str, Any]) -> None:
    """Store one task's outcome (a ``run_task`` dict) under its hash."""
    st.record(
        key=t.hash,
        index=t.index,
        spec=t.spec_json,
        status=out["status"],
        result=out["result"],
        error=out["error"],
        seconds=out["seconds"],
        worker=out["worker"],
    )


def _commit_arrived(st: SweepStore, pending: Mapping[Future[Any], list[Task]]) -> None:
    """Commit the outcomes of the calls that had arrived when the sweep was stopped."""
    arrived = [
        (fut, group)
        for fut, group in pending.items()
        if fut.done() and not fut.cancelled() and fut.exception() is None
    ]
    if not arrived:
        return
    with st.transaction():
        for fut, group in arrived:
            for t, out in zip(group, fut.result(), strict=True):
                _record(st, t, out)


def _abandon(ex: Executor) -> None:
    """Stop an executor this module made, now: its own ``terminate`` if it has one."""
    stop: Callable[[], None] | None = getattr(ex, "terminate", None)
    if stop is not None:
        stop()
    else:
        ex.shutdown(wait=False, cancel_futures=True)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold off SIGINT, SIGTERM and SIGHUP for the body (the clean-up after an interrupt).

    A second Ctrl-C or ``kill`` while the workers are being stopped and the arrived outcomes
    committed would otherwise leave workers running or outcomes uncommitted; the clean-up is
    bounded (a few seconds) and the process is stopping anyway, so signals that arrive meanwhile
    are dropped.  Only in the main thread (where Python handles signals).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old: dict[int, Any] = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        num = getattr(signal, name, None)
        if num is None:
            continue
        try:
            old[num] = signal.signal(num, lambda *_: None)
        except (ValueError, OSError):  # pragma: no cover - not settable here
            pass
    try:
        yield
    finally:
        for num, handler in old.items():
            signal.signal(num, handler)


def _run(
    cfg: SweepConfig,
    n_tasks: int,
    st: SweepStore,
    ex: Executor,
    *,
    t0: float,
    retry_failed: bool,
    window: int | None,
    chunk: int | None,
    progress: bool | None,
    abandon: Callable[[], None] | None = None,
) -> SweepSummary:
    from tqdm.auto import tqdm

    done = st.hashes("finished")
    if not retry_failed:
        done |= st.hashes("failed")
    # every record of the store is a task of this sweep (its config hash was checked)
    skipped = min(len(done), n_tasks)
    n_todo = n_tasks - skipped
    todo = (t for t in iter_tasks(cfg) if t.hash not in done)
    tally = _Tally()
    first: float | None = None
    description = str(getattr(ex, "description", type(ex).__name__))
    in_flight = window or int(getattr(ex, "in_flight", 0) or 2 * (os.cpu_count() or 1))
    bar = tqdm(
        total=n_tasks,
        initial=skipped,
        desc=f"sweep {cfg.name}",
        unit="task",
        disable=None if progress is None else not progress,
        file=sys.stderr,
    )
    pending: dict[Future[Any], list[Task]] = {}
    # Finished futures arrive through a queue (their done-callbacks put them there): O(1) per call
    # however many are in flight, and everything that arrived together is committed together.
    arrived: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
    workers = int(getattr(ex, "workers", 0) or max(1, in_flight // 2))
    serial = workers == 1 and in_flight == 1
    size = chunk or 1
    target = float(getattr(ex, "chunk_seconds", CHUNK_SECONDS))
    pos = calls = 0

    def submit(n: int) -> None:
        nonlocal pos, calls
        for _ in range(n):
            group = list(itertools.islice(todo, size))
            if not group:
                return
            pos += len(group)
            calls += 1
            fut = ex.submit(run_tasks, [t.spec_json for t in group])
            pending[fut] = group
            fut.add_done_callback(arrived.put)

    try:
        submit(in_flight)
        while pending:
            batch = [_get(arrived)]
            while True:
                try:
                    batch.append(arrived.get_nowait())
                except queue.Empty:
                    break
            before = tally.n_fin + tally.n_fail
            broken = _record_batch(st, batch, pending, tally)
            n_done = tally.n_fin + tally.n_fail - before
            for fut in batch:  # committed (an interrupt before this line records them again: a no-op)
                del pending[fut]
            if first is None and n_done:
                first = time.perf_counter() - t0
            if tally.n_fail:
                bar.set_postfix(failed=tally.n_fail, refresh=False)
            bar.update(n_done)
            if chunk is None and not serial and tally.n_fin + tally.n_fail:
                mean = tally.task_seconds / (tally.n_fin + tally.n_fail)
                left = (n_todo - pos) // (2 * workers)  # every worker still gets two calls
                size = max(1, min(MAX_CHUNK, round(target / max(mean, 1e-6)), left))
            if broken is not None:
                raise SweepAborted(
                    f"the executor broke ({type(broken).__name__}: {broken}): a worker process died "
                    f"(killed, out of memory, or a crash in native code); {skipped + tally.n_fin} finished "
                    f"tasks are in {str(st.path)!r}; run the sweep again with --resume to continue"
                )
            submit(len(batch))
    except BaseException as exc:
        with _signals_held():
            for fut in pending:
                fut.cancel()
            if abandon is not None:
                abandon()  # workers stopped, also mid-task: no process outlives the sweep
            store_failed = isinstance(exc, (StoreError, StoreWriteError))
            if isinstance(exc, (Exception, KeyboardInterrupt)) and not store_failed:
                try:
                    _commit_arrived(st, pending)
                except Exception:  # the store failing now: those tasks run again on resume
                    pass
        raise
    finally:
        bar.close()
    return SweepSummary(
        name=cfg.name,
        store=str(st.path),
        executor=description,
        tasks=n_tasks,
        skipped=skipped,
        finished=tally.n_fin,
        failed=tally.n_fail,
        failed_in_store=st.counts()["failed"],
        wall_seconds=time.perf_counter() - t0,
        first_result_seconds=first,
        task_seconds=tally.task_seconds,
        errors=tuple(tally.errors),
        calls=calls,
    )


@dataclass
class _Tally:
    """What the tasks recorded so far came to."""

    n_fin: int = 0
    n_fail: int = 0
    task_seconds: float = 0.0
    errors: list[tuple[int, str]] = field(default_factory=list)


def _record_batch(
    st: SweepStore, batch: list[Future[Any]], pending: Mapping[Future[Any], list[Task]], tally: _Tally
) -> BaseException | None:
    """Record the outcomes of finished calls in one transaction; the executor's breakage, if any."""
    broken: BaseException | None = None
    with st.transaction():  # one commit (one fsync) for the batch
        for fut in batch:
            group = pending[fut]
            exc = fut.exception()
            if isinstance(exc, BrokenExecutor):
                broken = exc
                continue
            outs: list[dict[str, Any]]
            if exc is not None:
                err = f"{type(exc).__name__}: {exc} (raised by the executor, not the task)"
                outs = [
                    {"status": "failed", "result": None, "error": err, "seconds": 0.0, "worker": "?"}
                ] * len(group)
            else:
                outs = fut.result()
            for t, out in zip(group, outs, strict=True):
                _record(st, t, out)
                tally.task_seconds += float(out["seconds"])
                if out["status"] == "finished":
                    tally.n_fin += 1
                else:
                    tally.n_fail += 1
                    tally.errors.append((t.index, str(out["error"]).splitlines()[0]))
    return broken


def _get(q: queue.SimpleQueue[Future[Any]]) -> Future[Any]:
    # A blocking get with a timeout, in a loop: Ctrl-C is noticed within a second on every platform.
    while True:
        try:
            return q.get(timeout=1.0)
        except queue.Empty:
            continue
