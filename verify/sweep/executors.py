"""Executors that run sweep tasks: serial, a local process pool, or Dask (local or remote).

Every executor is a :class:`concurrent.futures.Executor`, so a sweep runs on anything that
speaks that protocol.  A sweep also reads these attributes where an executor has them (a plain
``concurrent.futures`` executor has none and gets the defaults in brackets): ``workers``, how many
tasks run at once (``in_flight // 2``); ``in_flight``, how many calls to keep submitted (twice the
CPU count); ``chunk_seconds``, the seconds of work an automatic chunk of tasks aims at
(:data:`verify.sweep.config.CHUNK_SECONDS`); ``description``, what it is (the class name).
:func:`make_executor` builds one from a short spec:

=====================  ==========================================================================
``serial``             :class:`SerialExecutor`: each task runs in the calling process inside
                       ``submit`` (no parallelism; for debugging and as the reference).
``process``            a :class:`ProcessExecutor` (``ProcessPoolExecutor``, ``spawn`` start
``process:N``          method) with one worker per usable core, or ``N`` workers.  Each worker
                       starts with one torch thread and one BLAS thread, so ``N`` workers use
                       ``N`` cores (never ``N`` times torch's default pool).  Workers ignore
                       SIGINT and SIGHUP (the coordinating process stops them:
                       :meth:`ProcessExecutor.terminate`) and, on Linux, die with it.
``dask``, ``dask:N``   a local Dask cluster: ``N`` (default: one per core) worker processes with
                       one thread each (``LocalCluster(processes=True, threads_per_worker=1)``).
``dask://HOST:PORT``   the Dask scheduler at ``tcp://HOST:PORT`` (an existing cluster; its
                       workers need loracheck installed).
=====================  ==========================================================================

Dask needs the optional extra ``dist`` (``pip install 'loracheck[dist]'``).  Whatever the
executor, a task pins its own torch and BLAS threads to one for its duration
(:func:`verify.sweep.tasks.single_thread`), which is what makes results identical across executors.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from theory.errors import UserInputError

__all__ = [
    "DaskExecutor",
    "ExecutorSpec",
    "LOCAL_DASK_CONFIG",
    "ProcessExecutor",
    "SerialExecutor",
    "default_workers",
    "make_executor",
    "max_local_workers",
    "parse_executor",
]

_SPEC_HELP = "'serial', 'process', 'process:N', 'dask', 'dask:N' or 'dask://HOST:PORT'"


def default_workers() -> int:
    """CPUs this process may use: its affinity mask capped by its cgroup's CPU quota (at least 1).

    A container limited to 2 CPUs on a 64-core host gets 2 workers, not 64
    (:attr:`landscapes.threads.CpuShare.usable`).  Other processes' load is not subtracted: the
    workers are processes, each on one thread, and share busy cores without the barrier waits that
    make threads slow there.
    """
    from landscapes.threads import cpu_share  # imports torch: not at the coordinator's start

    return cpu_share(samples=0).usable


def max_local_workers() -> int:
    """Most worker processes a local executor starts: 4 per usable core (each task uses one core).

    More only add memory (every worker imports torch) and start-up time; ``process:100000`` would
    try to start a hundred thousand interpreters.
    """
    return 4 * default_workers()


@dataclass(frozen=True)
class ExecutorSpec:
    """A parsed executor spec: ``kind``, ``workers`` (``None``: default) and a Dask ``address``."""

    kind: Literal["serial", "process", "dask-local", "dask"]
    workers: int | None = None
    address: str | None = None

    def __str__(self) -> str:
        if self.kind == "dask":
            return f"dask://{self.address}"
        base = {"serial": "serial", "process": "process", "dask-local": "dask"}[self.kind]
        return base if self.workers is None else f"{base}:{self.workers}"


def parse_executor(spec: str) -> ExecutorSpec:
    """Parse an executor spec (see the module docstring); ``ValueError`` naming ``executor`` if invalid."""
    if not isinstance(spec, str):
        raise UserInputError(f"executor: expected {_SPEC_HELP}, got {spec!r}")
    s = spec.strip()
    if s == "serial":
        return ExecutorSpec("serial")
    m = re.fullmatch(r"(process|dask)(?::(\d{1,18}))?", s)
    if m:
        n = None if m.group(2) is None else int(m.group(2))
        if n is not None and n < 1:
            raise UserInputError(f"executor: expected a positive number of workers, got {spec!r}")
        if n is not None and n > max_local_workers():
            raise UserInputError(
                f"executor: expected at most {max_local_workers()} local workers (4 per usable core: a task "
                f"uses one), got {spec!r}"
            )
        return ExecutorSpec("process" if m.group(1) == "process" else "dask-local", workers=n)
    m = re.fullmatch(r"dask://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})", s)
    if m:
        port = int(m.group(2))
        if not 0 < port < 65536:
            raise UserInputError(f"executor: expected a port in 1..65535, got {spec!r}")
        return ExecutorSpec("dask", address=f"{m.group(1)}:{port}")
    raise UserInputError(f"executor: expected {_SPEC_HELP}, got {spec!r}")


def make_executor(spec: str | ExecutorSpec) -> SerialExecutor | ProcessExecutor | DaskExecutor:
    """Build the executor a spec names (use it as a context manager: it shuts down on exit)."""
    es = parse_executor(spec) if isinstance(spec, str) else spec
    if es.kind == "serial":
        return SerialExecutor()
    if es.kind == "process":
        return ProcessExecutor(es.workers or default_workers())
    return DaskExecutor(address=es.address, workers=es.workers)


def init_worker() -> None:
    """Initialize a worker process: one torch thread and one BLAS thread for the process.

    Runs in every process-pool worker (its ``initializer``) and on every Dask worker.  Local
    workers inherit the OpenMP wait settings of the ``loracheck`` command that started the sweep
    (:mod:`_loracheck`); set here they would come too late, torch being loaded by the import of
    this module.  Workers of a remote Dask cluster keep their own, which matters little: with one
    thread a worker has no idle pool threads.
    """
    from landscapes.threads import pin_process

    pin_process(1, "sweep worker")
    import verify.sweep.tasks  # noqa: F401  - import the worker entry before the first task arrives


class SerialExecutor(Executor):
    """Runs each task in the calling process, inside :meth:`submit`; returns a finished future.

    An exception of the function is set on the future (as a pool would), except
    ``KeyboardInterrupt``/``SystemExit``, which propagate.
    """

    workers = 1
    #: Tasks a sweep keeps submitted: one, recorded before the next runs.
    in_flight = 1
    description = "serial (in this process)"

    def __init__(self) -> None:
        self._shutdown = False
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Call ``fn(*args, **kwargs)`` now; its outcome is on the returned future."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
        fut: Future[Any] = Future()
        fut.set_running_or_notify_cancel()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as exc:
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse further submissions (nothing is ever pending)."""
        with self._lock:
            self._shutdown = True


def _init_pool_worker(parent: int) -> None:
    """:func:`init_worker`, plus the signal set-up of a process-pool worker.

    SIGINT and SIGHUP are ignored: a Ctrl-C or a hang-up reaches the whole process group, and the
    coordinating process (which gets it too) stops the workers itself, in order, instead of each
    worker printing a traceback or dying before the coordinator has committed what arrived.
    SIGTERM keeps its default action (it is how :meth:`ProcessExecutor.terminate` stops a worker).
    On Linux the worker also gets SIGKILL when its parent dies (``PR_SET_PDEATHSIG``), so a
    coordinator killed outright (SIGKILL, the out-of-memory killer) leaves no worker behind.
    """
    for name in ("SIGINT", "SIGHUP"):
        num = getattr(signal, name, None)
        if num is not None:
            signal.signal(num, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no prctl
            pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    init_worker()


class ProcessExecutor(ProcessPoolExecutor):
    """A ``ProcessPoolExecutor`` of ``workers`` spawned processes initialized by :func:`init_worker`.

    ``spawn`` (not ``fork``): a forked child of a process whose OpenMP pool has run can hang in
    its first parallel region; spawned workers start clean on every platform.  Workers ignore
    SIGINT and SIGHUP and die with their parent on Linux (``_init_pool_worker``);
    :meth:`terminate` stops them at once, also in the middle of a task.
    """

    def __init__(self, workers: int) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise UserInputError(f"workers: expected a positive int, got {workers!r}")
        if workers > max_local_workers():
            raise UserInputError(
                f"workers: expected at most {max_local_workers()} (4 per usable core), got {workers!r}"
            )
        super().__init__(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_pool_worker,
            initargs=(os.getpid(),),
        )
        self.workers = workers
        #: Tasks a sweep keeps submitted: two per worker, so none idles while results are recorded.
        self.in_flight = 2 * workers
        self.description = f"process pool ({workers} workers, 1 thread each)"

    def terminate(self, timeout: float = 5.0) -> None:
        """Shut down now: cancel the calls not started, stop every worker, wait for them.

        Python 3.11's pool has no way to stop a worker in the middle of a call (``shutdown``
        waits for the running calls, or with ``wait=False`` leaves them running past the end of
        the program).  Each worker gets SIGTERM, then SIGKILL if it is still alive after
        ``timeout`` seconds; then the pool's manager thread, which sees its workers gone, is
        joined, so the interpreter can exit.  Futures of calls that were running get
        ``BrokenProcessPool``.  Idempotent.
        """
        procs = list((getattr(self, "_processes", None) or {}).values())
        manager = getattr(self, "_executor_manager_thread", None)
        self.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.exitcode is None:
                try:
                    p.terminate()
                except (OSError, ValueError):  # already gone, or closed
                    pass
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.join(max(0.0, deadline - time.monotonic()))
                if p.exitcode is None:
                    p.kill()
                    p.join(timeout)
            except (OSError, ValueError):  # pragma: no cover - closed meanwhile
                pass
        if manager is not None and manager is not threading.current_thread():
            manager.join(timeout)


#: Dask settings of the local clusters this module starts (a cluster of your own keeps its own).
#: Every periodic callback of a worker wakes its event loop, which then competes with the running
#: task for the GIL and, on a small machine, for the core.  The statistical profiler is the big
#: one: it samples every thread's stack every 10 ms; on 2 cores it made the phase-diagram tasks
#: ~15% slower.  The event-loop health check (20 ms), the memory monitor (100 ms) and the system
#: monitor (500 ms) run less often here; a memory limit is then enforced within a second.
LOCAL_DASK_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
}


class DaskExecutor(Executor):
    """Tasks on a Dask cluster: a new local one (``address=None``) or the scheduler at ``address``.

    A local cluster has ``workers`` (default: one per core) worker processes with one thread
    each and the settings :data:`LOCAL_DASK_CONFIG`; it is closed by :meth:`shutdown`.  A remote
    cluster is only disconnected from.  Futures are ``concurrent.futures`` futures
    (``distributed.Client.get_executor``), submitted with ``pure=False`` (a re-submitted task
    runs again).
    """

    #: Seconds of task work an automatic chunk aims at (a process pool gets the default,
    #: :data:`verify.sweep.config.CHUNK_SECONDS` = 0.25 s).  A call costs the scheduler, the client and
    #: the worker's event loop several messages -- a few ms, about ten times a pool's per-call cost
    #: (``benchmarks/bench_sweep.py`` measures both) -- and on a small machine those processes
    #: take CPU from the tasks.  Larger calls pay that less often; at the end of a sweep the
    #: chunks shrink anyway, so that every worker still gets calls.
    chunk_seconds: float = 1.0

    def __init__(self, *, address: str | None = None, workers: int | None = None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise UserInputError(
                "executor: Dask needs the optional extra `dist`: pip install 'loracheck[dist]' "
                "(that is dask[distributed])"
            ) from None
        self._cluster: Any = None
        if address is None:
            import dask

            n = workers or default_workers()
            with dask.config.set(LOCAL_DASK_CONFIG):  # the nannies pass it on to their workers
                self._cluster = LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            try:
                self._client = Client(self._cluster)
            except BaseException:  # e.g. Ctrl-C or SIGTERM while connecting: no cluster left running
                self._cluster.close()
                raise
            where = f"local Dask cluster ({n} worker processes, 1 thread each)"
        else:
            try:
                self._client = Client(f"tcp://{address}", timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise UserInputError(
                    f"executor: could not connect to the Dask scheduler at tcp://{address} ({exc})"
                ) from None
            where = f"Dask cluster at tcp://{address}"
        try:
            self._client.run(init_worker)
            self.workers = max(1, sum(self._client.nthreads().values()))
        except BaseException:
            self.shutdown()
            raise
        #: Tasks a sweep keeps submitted: two per worker thread (hides the scheduler round trip).
        self.in_flight = 2 * self.workers
        self.description = f"{where}, {self.workers} threads"
        self._executor = self._client.get_executor(pure=False)

    @property
    def client(self) -> Any:
        """The ``distributed.Client``."""
        return self._client

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Submit ``fn(*args, **kwargs)`` to the cluster."""
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Disconnect; close the cluster if it is a local one this executor started."""
        ex = getattr(self, "_executor", None)
        if ex is not None:
            ex.shutdown(wait=wait and not cancel_futures)
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def terminate(self, timeout: float = 10.0) -> None:
        """Shut down now: drop every call and close a local cluster.

        Closing a local cluster stops its worker processes, also in the middle of a task (each
        nanny terminates its worker).  From a remote cluster the client disconnects: the tasks
        not started are dropped, a running one finishes on its worker (Dask cannot stop a thread).
        """
        ex = getattr(self, "_executor", None)
        if ex is not None:
            ex.shutdown(wait=False)
        self._client.close(timeout=timeout)  # releases the futures: the scheduler drops their tasks
        if self._cluster is not None:
            self._cluster.close(timeout=timeout)
            self._cluster = None
