"""How many threads the numerical work uses: one policy, decided in one place.

Threads help only when there are free cores to run them.  torch's OpenMP pool and the BLAS
libraries default to one thread per core; beside other busy processes those threads wait at every
barrier for a core the scheduler gave away (measured on 2 cores, the default suite beside two busy
processes: 14.7x its idle time with torch's default threads, 1.6x with one thread).  Small work
gains nothing from a second thread either (torch does not split small operations; the suite's
20,000-step gradient descent on a 6 x 5 problem ran in 32.3 s with one thread, 33.0 s with two).

The policy:

* **Who decides.**  A thread count the user gave wins: ``--threads N`` (:func:`configure`), else
  ``MKL_NUM_THREADS`` or ``OMP_NUM_THREADS`` (:data:`TORCH_VARIABLES`, which torch reads itself,
  MKL's first; then the policy changes no count).  ``OPENBLAS_NUM_THREADS`` keeps the policy from
  changing the BLAS libraries' count.  Otherwise the policy below.  Inside :func:`single_threaded`
  (a sweep's task) everything runs on one thread.
* **How many cores are free** (:func:`cpu_share`): the CPUs this process may run on
  (``os.sched_getaffinity``), capped by the CPU quota of its cgroup and the cgroup's ancestors (v2
  ``cpu.max``, v1 ``cpu.cfs_quota_us``), less the other processes' runnable tasks that fall on
  them (``procs_running`` of ``/proc/stat`` less this process's running threads, the median of a
  few reads a millisecond apart, in proportion to the share of the machine's CPUs this process may
  use: ``/proc/stat`` counts the whole machine).  At most torch's default count (the physical
  cores), at least one.
* **By size** (:func:`threads_for`): work below :data:`LARGE_WORK` multiply-adds per gradient
  evaluation runs on one thread; larger work on the free cores, read again when it starts, so a
  long run follows the machine's load from one piece of work to the next.

How long an idle OpenMP thread spins before it sleeps is read once, when torch loads its OpenMP
runtime; the ``loracheck`` command sets it before anything imports torch (:mod:`_loracheck`), and
reports record the settings as they were when this module loaded (:func:`record`).
The BLAS libraries of NumPy/SciPy follow the same count, except around SciPy's optimizers and
eigensolvers, whose share of the work is vector bookkeeping (:func:`scipy_blas_single_thread`:
when OpenBLAS threads spun between torch kernels, the factored NUC solver ran 20x slower on 2 cores,
1.9 s against 0.09 s at m = n = 64).
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from theory.errors import UserInputError

__all__ = [
    "BLAS_VARIABLES",
    "LARGE_WORK",
    "WAIT_VARIABLES",
    "TORCH_VARIABLES",
    "CpuShare",
    "ThreadChoice",
    "command_threads",
    "configure",
    "cpu_share",
    "gradient_work",
    "pin_process",
    "record",
    "scipy_blas_single_thread",
    "single_threaded",
    "threads_for",
    "work_threads",
]

#: Variables that set torch's thread count, in the order torch honours them (MKL's wins).
TORCH_VARIABLES = ("MKL_NUM_THREADS", "OMP_NUM_THREADS")
#: Variables that set the BLAS libraries' count (NumPy/SciPy's OpenBLAS); torch does not read them.
BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS",)

#: Multiply-adds per gradient evaluation from which work runs on more than one thread.  The suite's
#: problems have J with at most 2.6e5 entries (single-threaded); the MiniLM-sized ones 9.4e6.
LARGE_WORK = 1_000_000

#: The variables that set how idle OpenMP threads wait (GNU OpenMP reads the first two, LLVM and
#: Intel OpenMP the first and the last); the ``loracheck`` command sets them (:mod:`_loracheck`).
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
#: Their values when this module loaded (torch, and with it OpenMP, is loaded by then).
_WAIT_AT_LOAD = {v: os.environ.get(v) for v in WAIT_VARIABLES}


@dataclass(frozen=True)
class CpuShare:
    """The CPUs this process may use and how busy the machine is now.

    ``allowed``: CPUs in the affinity mask; ``quota``: the CPU quota of the process's cgroup in CPUs
    (``None``: none set); ``others_running``: runnable tasks of other processes on the whole machine
    (``None``: not readable here); ``machine``: the machine's CPUs.
    """

    allowed: int
    quota: float | None
    others_running: int | None
    machine: int

    @property
    def usable(self) -> int:
        """CPUs this process may use: the affinity mask capped by the quota (at least one)."""
        cap = self.allowed if self.quota is None else min(self.allowed, math.floor(self.quota))
        return max(1, cap)

    @property
    def free(self) -> int:
        """Usable CPUs not taken by other runnable tasks (at least one).

        The other tasks are taken as spread over the machine: those on this process's CPUs are
        ``others_running * allowed / machine`` (all of them when it may use every CPU).
        """
        others = (self.others_running or 0) * self.allowed / max(self.machine, self.allowed)
        return max(1, min(self.usable, math.floor(self.allowed - others + 1e-9)))


@dataclass(frozen=True)
class ThreadChoice:
    """A thread count and who chose it.

    ``source``: ``"--threads"``, a variable of :data:`TORCH_VARIABLES`, ``"policy"``, ``"pinned"``
    (inside :func:`single_threaded`) or what pinned the process (:func:`pin_process`); ``share``:
    the CPU share the policy read (``None`` when it read none).
    """

    threads: int
    source: str
    share: CpuShare | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a report (the share with its ``usable`` and ``free`` counts)."""
        out = asdict(self)
        if self.share is not None:
            out["share"].update(usable=self.share.usable, free=self.share.free)
        return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _v2_quota(d: Path) -> float | None:
    text = _read(d / "cpu.max")
    if text is None or len(text.split()) < 2 or text.split()[0] == "max":
        return None
    try:
        q, p = (float(x) for x in text.split()[:2])
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _v1_quota(d: Path) -> float | None:
    q, p = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
    try:
        quota, period = float(q or ""), float(p or "")
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _quota(cgroup_root: Path, proc_self_cgroup: Path) -> float | None:
    """The smallest CPU quota, in CPUs, of this process's cgroup and its ancestors.

    cgroup v2 (``0::PATH`` in ``/proc/self/cgroup``): ``cpu.max`` (``"QUOTA PERIOD"`` or
    ``"max PERIOD"``) from ``ROOT/PATH`` up to ``ROOT``; cgroup v1 (a line naming the ``cpu``
    controller): ``cpu.cfs_quota_us / cpu.cfs_period_us`` from the controller's mount down its path.
    ``None`` when no quota is set or none can be read.
    """
    quotas: list[float] = []
    for line in (_read(proc_self_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        path = parts[2].removesuffix(" (deleted)").strip("/")
        if parts[0] == "0" and parts[1] == "":
            mounts, read = [cgroup_root], _v2_quota
        elif "cpu" in parts[1].split(","):
            mounts = [cgroup_root / parts[1], cgroup_root / "cpu,cpuacct", cgroup_root / "cpu"]
            read = _v1_quota
        else:
            continue
        for mount in dict.fromkeys(mounts):
            if not mount.is_dir():
                continue
            d = mount / path if path else mount
            while True:
                if (q := read(d)) is not None:
                    quotas.append(q)
                if d == mount or mount not in d.parents:
                    break
                d = d.parent
    return min(quotas) if quotas else None


def _procs_running(proc_stat: Path) -> int | None:
    """``procs_running`` of ``/proc/stat``: runnable tasks (threads) on the whole machine."""
    try:
        for line in proc_stat.read_text().splitlines():
            if line.startswith("procs_running "):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _own_running(task_dir: Path) -> int:
    """The threads of this process in state R (running or runnable), at least one (the caller)."""
    n = 0
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return 1
    for t in tasks:
        stat = _read(t / "stat")
        if stat is None:
            continue  # a thread that ended
        # the state follows the command name, which is in parentheses and may hold any character
        if stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] == "R":
            n += 1
    return max(1, n)


def cpu_share(
    *, samples: int = 5, proc: Path = Path("/proc"), cgroup: Path = Path("/sys/fs/cgroup")
) -> CpuShare:
    """Read what this process may use now (module docstring); ``proc``/``cgroup`` for tests."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    counts = []
    for i in range(samples):
        running = _procs_running(proc / "stat")
        if running is None:
            break
        counts.append(max(0, running - _own_running(proc / "self" / "task")))
        if i + 1 < samples:
            time.sleep(0.001)
    return CpuShare(
        allowed=max(1, allowed),
        quota=_quota(cgroup, proc / "self" / "cgroup"),
        others_running=int(statistics.median_low(counts)) if counts else None,
        machine=max(1, os.cpu_count() or allowed),
    )


#: This process's threadpoolctl controller and the ``len(sys.modules)`` it was built at.
_CONTROLLER: tuple[int, Any] | None = None


def _controller() -> Any:
    """A ``threadpoolctl.ThreadpoolController`` of the native thread pools loaded in this process.

    Building one scans every loaded shared library (about 1.7 ms here, more than a small piece of
    work); it is kept and rebuilt whenever the number of modules in ``sys.modules`` has changed (an
    import may have loaded a new BLAS library).  Not thread-safe, like the limits themselves,
    which are global to the process.
    """
    global _CONTROLLER
    n = len(sys.modules)
    if _CONTROLLER is None or _CONTROLLER[0] != n:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = (n, ThreadpoolController())
    return _CONTROLLER[1]


def _blas_limit(threads: int) -> Any:
    """The BLAS libraries loaded by NumPy/SciPy limited to ``threads`` (a limiter: ``with`` restores)."""
    return _controller().limit(limits=threads, user_api="blas")


class _State:
    """The process's thread decisions (module-level, like the thread pools they govern)."""

    def __init__(self) -> None:
        self.user: ThreadChoice | None = None
        self.configured = False  # False: the user's variables are read at the first decision
        self.process: ThreadChoice | None = None
        self.checks: list[tuple[str, int, str]] = []
        self.pinned = 0
        self.torch_default: int | None = None


_STATE = _State()


def _torch_default() -> int:
    """The torch thread count before this module first changed it (its default: the physical cores)."""
    import torch

    if _STATE.torch_default is None:
        _STATE.torch_default = torch.get_num_threads()
    return _STATE.torch_default


def _positive(name: str, text: str) -> int:
    try:
        n = int(text.split(",")[0])  # OpenMP's "4,2": the outer level's count
    except ValueError:
        raise UserInputError(f"{name}: expected a positive int, got {text!r}") from None
    if n < 1:
        raise UserInputError(f"{name}: expected a positive int, got {text!r}")
    return n


def _from_environment() -> ThreadChoice | None:
    for name in TORCH_VARIABLES:
        text = os.environ.get(name, "").strip()
        if text:
            return ThreadChoice(_positive(name, text), name)
    return None


def _blas_by_user() -> bool:
    """The user set the BLAS libraries' count (:data:`BLAS_VARIABLES`, checked to be a positive int)."""
    set_ = [(n, t) for n in BLAS_VARIABLES if (t := os.environ.get(n, "").strip())]
    for name, text in set_:
        _positive(name, text)
    return bool(set_)


def configure(threads: int | None = None) -> ThreadChoice | None:
    """Fix the thread count for this process (``--threads``), or read the user's variables.

    ``threads=None``: a count set in :data:`TORCH_VARIABLES` wins, else the policy decides per
    piece of work.  Returns the user's choice (``None``: the policy decides).  A library caller
    need not call it: the variables are read at the first decision.
    """
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise UserInputError(f"threads: expected a positive int, got {threads!r}")
        _STATE.user = ThreadChoice(threads, "--threads")
    else:
        _STATE.user = _from_environment()
    _blas_by_user()  # refuse a malformed OPENBLAS_NUM_THREADS here, at the input boundary
    _STATE.configured = True
    return _STATE.user


def _user() -> ThreadChoice | None:
    if not _STATE.configured:
        configure()
    return _STATE.user


def gradient_work(problem: Any) -> float:
    r"""Multiply-adds of one gradient evaluation of ``problem``, roughly: :math:`KN \cdot P`.

    ``P`` is the number of adapted parameters (:math:`\sum_j m_j n_j` over ``problem.blocks``); a
    problem without ``KN`` (not linearized) counts ``P`` alone.  The measure of size of
    :func:`threads_for`.
    """
    P = sum(m * n for m, n in problem.blocks)
    return float(getattr(problem, "KN", 1) * P)


def _free_now() -> ThreadChoice:
    share = cpu_share()
    return ThreadChoice(min(share.free, _torch_default()), "policy", share)


def threads_for(work: float) -> ThreadChoice:
    """The thread count for a piece of work of ``work`` multiply-adds per gradient evaluation."""
    if _STATE.pinned:
        return ThreadChoice(1, "pinned")
    user = _user()
    if user is not None:
        return user
    if work < LARGE_WORK:
        return ThreadChoice(1, "policy")
    return _free_now()


@contextmanager
def _counts(threads: int | None, blas: bool = True) -> Iterator[None]:
    """The torch count (``None``: unchanged) and, with ``blas``, the BLAS libraries' for the body."""
    import torch

    _torch_default()
    before = torch.get_num_threads()
    limiter = _blas_limit(threads) if blas and threads is not None else None
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if limiter is not None:
            limiter.restore_original_limits()


@contextmanager
def work_threads(work: float, *, label: str | None = None) -> Iterator[ThreadChoice]:
    """Run the body with :func:`threads_for`'s count in torch and the BLAS libraries; restore them.

    With a count from :data:`TORCH_VARIABLES` no count is changed (torch honours the variable).
    ``label`` names the piece of work in :func:`record` (unlabelled work is not recorded).
    """
    choice = threads_for(work)
    if label is not None:
        _STATE.checks.append((label, choice.threads, choice.source))
    with _counts(None if choice.source in TORCH_VARIABLES else choice.threads, blas=not _blas_by_user()):
        yield choice


@contextmanager
def command_threads(threads: int | None = None) -> Iterator[ThreadChoice]:
    """The thread decisions of one command: :func:`configure`, the process-wide count, a new record.

    The body runs with the user's count, else the free cores now (the count for work that does not
    choose its own; :func:`work_threads` narrows it per piece of work).  Afterwards every count and
    decision is as before, so commands run one after another in one process do not see each
    other's choices.
    """
    saved = vars(_STATE).copy()
    try:
        _STATE.checks = []
        user = configure(threads)
        choice = user if user is not None else _free_now()
        _STATE.process = choice
        with _counts(None if choice.source in TORCH_VARIABLES else choice.threads, blas=not _blas_by_user()):
            yield choice
    finally:
        vars(_STATE).update(saved)


def pin_process(threads: int, source: str) -> None:
    """Set torch's and the BLAS libraries' counts to ``threads`` for the rest of the process.

    For a process that does nothing else (a sweep's worker); ``source`` says who pinned it.
    """
    import torch

    _torch_default()
    _STATE.user, _STATE.configured = ThreadChoice(threads, source), True
    torch.set_num_threads(threads)
    _blas_limit(threads)  # not a ``with``: the limit stays for the process


def record() -> dict[str, Any]:
    """What the policy chose in this command, for a report.

    ``decided_by`` (``"policy"``, ``"--threads"``, a variable's name), ``user_threads``, ``process``
    (the command's count and the CPU share it was read from), ``large_work``, ``per_check``
    (``[label, threads, source]`` per labelled piece of work), ``choices`` (checks per count) and
    ``openmp_wait`` (:data:`WAIT_VARIABLES` as they were when this module loaded, just after the
    package loaded torch and its OpenMP runtime, which reads them then; ``None`` when unset).
    """
    user = _STATE.user if _STATE.configured else None
    counts: dict[str, int] = {}
    for _, n, _ in _STATE.checks:
        counts[str(n)] = counts.get(str(n), 0) + 1
    return {
        "decided_by": "policy" if user is None else user.source,
        "user_threads": None if user is None else user.threads,
        "process": None if _STATE.process is None else _STATE.process.to_dict(),
        "large_work": LARGE_WORK,
        "per_check": [list(c) for c in _STATE.checks],
        "choices": dict(sorted(counts.items(), key=lambda kv: int(kv[0]))),
        "openmp_wait": dict(_WAIT_AT_LOAD),
    }


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the body with one torch thread and one BLAS thread; restore both afterwards.

    Parallel reductions sum in an order that depends on the thread count, so pinning the count
    is what makes a sweep task's floating-point result independent of the executor; a sweep gets
    its parallelism from running tasks side by side instead.  Work inside asks for threads in vain
    (:func:`threads_for` gives one).  The BLAS libraries limited are those loaded when the body
    starts.  Pinned whatever the user's variables say: the result must not depend on them.
    """
    _STATE.pinned += 1
    try:
        with _counts(1, blas=True):
            yield
    finally:
        _STATE.pinned -= 1


def scipy_blas_single_thread() -> AbstractContextManager[object]:
    """Context manager limiting the BLAS libraries loaded by NumPy/SciPy to one thread."""
    return _blas_limit(1)  # type: ignore[no-any-return]
