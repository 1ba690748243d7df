"""How many threads the numerical work uses: one policy, decided in one place.

Threads help only when there are free cores to run them.  torch's OpenMP pool and the BLAS
libraries default to one thread per core; beside other busy processes those threads wait at every
barrier for a core the scheduler gave away (measured on 2 cores, the default suite beside two busy
processes: 14.7x its idle time with torch's default threads, 1.6x with one thread).  Small work
gains nothing from a second thread either (torch does not split small operations; the suite's
20,000-step gradient descent on a 6 x 5 problem ran in 32.3 s with one thread, 33.0 s with two).

The policy:

* **Who decides.**  A thread count the user gave wins: ``--threads N`` (:func:`configure`), else
  one of :data:`USER_VARIABLES` in the environment (then torch's own count, which honours it, is
  left alone).  Otherwise the policy below.
* **How many cores are free** (:func:`cpu_share`): the CPUs this process may run on
  (``os.sched_getaffinity``), capped by the cgroup's CPU quota (``cpu.max``), less the runnable
  tasks of other processes (``procs_running`` of ``/proc/stat``, less this process's own running
  threads; the median of a few reads a millisecond apart).  At least one.
* **By size** (:func:`threads_for`): work below :data:`LARGE_WORK` multiply-adds per gradient
  evaluation runs on one thread; larger work on the free cores, read again when it starts, so a
  long run follows the machine's load from one piece of work to the next.

OpenMP's wait policy (idle pool threads sleep instead of spinning) is read once, when torch loads
its OpenMP runtime; the ``loracheck`` command sets it before anything imports torch (:mod:`_loracheck`).
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
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from theory.errors import UserInputError

__all__ = [
    "LARGE_WORK",
    "USER_VARIABLES",
    "CpuShare",
    "ThreadChoice",
    "configure",
    "configure_process",
    "gradient_work",
    "cpu_share",
    "record",
    "scipy_blas_single_thread",
    "single_threaded",
    "threads_for",
    "work_threads",
]

#: Environment variables by which a user sets the thread count (torch reads the first two).
USER_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

#: Multiply-adds per gradient evaluation from which work runs on more than one thread.  The suite's
#: problems have J with at most 2.6e5 entries (single-threaded); the MiniLM-sized ones 9.4e6.
LARGE_WORK = 1_000_000


@dataclass(frozen=True)
class CpuShare:
    """The CPUs this process may use and how many of them other processes are using now.

    ``allowed``: CPUs in the affinity mask; ``quota``: the cgroup's CPU quota in CPUs (``None``:
    none set); ``others_running``: runnable tasks of other processes (``None``: not readable here).
    """

    allowed: int
    quota: float | None
    others_running: int | None

    @property
    def usable(self) -> int:
        """CPUs this process may use: the affinity mask capped by the quota (at least one)."""
        cap = self.allowed if self.quota is None else min(self.allowed, max(1, math.floor(self.quota)))
        return max(1, cap)

    @property
    def free(self) -> int:
        """Usable CPUs not taken by other runnable tasks (at least one)."""
        return max(1, self.usable - (self.others_running or 0))


@dataclass(frozen=True)
class ThreadChoice:
    """A thread count and who chose it.

    ``source``: ``"--threads"``, a variable of :data:`USER_VARIABLES` or ``"policy"``; ``share``:
    the CPU share the policy read (``None`` when the user decided or the work was small).
    """

    threads: int
    source: str
    share: CpuShare | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a report."""
        return {
            "threads": self.threads,
            "source": self.source,
            "share": None if self.share is None else {**asdict(self.share), "free": self.share.free},
        }


def _quota(cgroup_root: Path, proc_self_cgroup: Path) -> float | None:
    """The cgroup v2 CPU quota of this process in CPUs (``cpu.max``: ``"quota period"`` or ``"max ..."``)."""
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    own = next((ln.split(":", 2)[2] for ln in lines if ln.startswith("0::")), "/")
    for d in (cgroup_root / own.lstrip("/"), cgroup_root):
        try:
            quota, period = (d / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota == "max":
            return None
        try:
            q, p = float(quota), float(period)
        except ValueError:
            return None
        return q / p if q > 0 and p > 0 else None
    return None


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
        try:
            stat = (t / "stat").read_text()
        except OSError:
            continue  # a thread that ended
        # the state follows the command name, which is in parentheses and may hold spaces
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
    others = int(statistics.median_low(counts)) if counts else None
    return CpuShare(
        allowed=max(1, allowed), quota=_quota(cgroup, proc / "self" / "cgroup"), others_running=others
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


def _blas_limit(threads: int) -> AbstractContextManager[object]:
    """The BLAS libraries loaded by NumPy/SciPy limited to ``threads`` for the ``with`` body."""
    return _controller().limit(limits=threads, user_api="blas")  # type: ignore[no-any-return]


_USER: ThreadChoice | None = None
_PROCESS: ThreadChoice | None = None
_CHOICES: Counter[int] = Counter()


def _from_environment() -> ThreadChoice | None:
    for name in USER_VARIABLES:
        text = os.environ.get(name, "").strip()
        if text:
            try:
                n = int(text.split(",")[0])
            except ValueError:
                raise UserInputError(f"{name}: expected a positive int, got {text!r}") from None
            if n < 1:
                raise UserInputError(f"{name}: expected a positive int, got {text!r}")
            return ThreadChoice(n, name)
    return None


def configure(threads: int | None = None) -> ThreadChoice | None:
    """Fix the thread count for this process (``--threads``), or read the user's variables.

    ``threads=None``: a count set in :data:`USER_VARIABLES` wins, else the policy decides per
    piece of work.  Returns the user's choice (``None``: the policy decides).
    """
    global _USER
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise UserInputError(f"threads: expected a positive int, got {threads!r}")
        _USER = ThreadChoice(threads, "--threads")
    else:
        _USER = _from_environment()
    return _USER


def configure_process(threads: int | None = None) -> ThreadChoice:
    """:func:`configure`, then set the process-wide count: the user's, else the free cores now.

    The count for work that does not choose its own (:func:`work_threads` narrows it per piece of
    work).  With a count from :data:`USER_VARIABLES` nothing is changed (torch honours it).
    """
    import torch

    _CHOICES.clear()  # a new command: a new record
    choice = configure(threads)
    if choice is None:
        share = cpu_share()
        choice = ThreadChoice(share.free, "policy", share)
    if choice.source not in USER_VARIABLES:
        torch.set_num_threads(choice.threads)
        _blas_limit(choice.threads)  # not a ``with``: the limit stays for the process
    global _PROCESS
    _PROCESS = choice
    return choice


def gradient_work(problem: Any) -> float:
    r"""Multiply-adds of one gradient evaluation of ``problem``, roughly: :math:`KN \cdot P`.

    ``P`` is the number of adapted parameters (:math:`\sum_j m_j n_j` over ``problem.blocks``); a
    problem without ``KN`` (not linearized) counts ``P`` alone.  The measure of size of
    :func:`threads_for`.
    """
    P = sum(m * n for m, n in problem.blocks)
    return float(getattr(problem, "KN", 1) * P)


def threads_for(work: float) -> ThreadChoice:
    """The thread count for a piece of work of ``work`` multiply-adds per gradient evaluation."""
    if _USER is not None:
        return _USER
    if work < LARGE_WORK:
        return ThreadChoice(1, "policy")
    share = cpu_share()
    return ThreadChoice(share.free, "policy", share)


@contextmanager
def work_threads(work: float) -> Iterator[ThreadChoice]:
    """Run the body with :func:`threads_for`'s count in torch and the BLAS libraries; restore them.

    With a count from the user's environment variables torch's own count (which honours them) is
    kept as it is.
    """
    import torch

    choice = threads_for(work)
    _CHOICES[choice.threads] += 1
    before = torch.get_num_threads()
    if choice.source in USER_VARIABLES:
        yield choice
        return
    torch.set_num_threads(choice.threads)
    try:
        with _blas_limit(choice.threads):
            yield choice
    finally:
        torch.set_num_threads(before)


def record() -> dict[str, Any]:
    """What the policy chose in this process so far, for a report: who decided and the counts used."""
    import torch

    return {
        "decided_by": "policy" if _USER is None else _USER.source,
        "user_threads": None if _USER is None else _USER.threads,
        "process": None if _PROCESS is None else _PROCESS.to_dict(),
        "large_work": LARGE_WORK,
        "choices": {str(k): v for k, v in sorted(_CHOICES.items())},
        "torch_threads_now": torch.get_num_threads(),
    }


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the body with one torch thread and one BLAS thread; restore both afterwards.

    Parallel reductions sum in an order that depends on the thread count, so pinning the count
    is what makes a sweep task's floating-point result independent of the executor; a sweep gets
    its parallelism from running tasks side by side instead.  The BLAS libraries limited are those
    loaded when the body starts.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _blas_limit(1):
            yield
    finally:
        torch.set_num_threads(before)


def scipy_blas_single_thread() -> AbstractContextManager[object]:
    """Context manager limiting the BLAS libraries loaded by NumPy/SciPy to one thread."""
    return _blas_limit(1)
