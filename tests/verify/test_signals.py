"""A sweep stopped by SIGTERM or SIGHUP leaves no process behind, keeps what finished, and resumes.

``loracheck sweep`` runs as a subprocess (its own process group, so the signal reaches only the
coordinating process, as ``kill PID`` does) on tasks whose later ones are still running when the
signal arrives.  Asserted: the exit code ``128 + signal``, that every descendant of the sweep
(pool workers, the multiprocessing resource tracker, Dask nannies and workers) is gone, that the
finished tasks are in the store, and that ``--resume`` then completes the sweep with every task
recorded once.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verify.cli.main import main

psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[2]
TASKS = 6


def _config(tmp_path: Path, name: str, *, slow_from: int) -> Path:
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(
        f'[sweep]\nname = "{name}"\ntask = "tests.sweep_tasks:slow_unless"\n'
        f'[params]\nslow_from = {slow_from}\nslow = 120.0\nunless = "{tmp_path / "quick"}"\n'
        f"[grid]\nx = {list(range(TASKS))}\n"
    )
    return cfg


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "verify.cli", "sweep", *args, "--no-progress"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _finished(store: Path) -> list[int]:
    """Indices of the finished tasks (read while the sweep writes: the store is in WAL mode)."""
    if not store.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
        try:
            return [r[0] for r in con.execute("SELECT idx FROM tasks WHERE status = 'finished' ORDER BY idx")]
        finally:
            con.close()
    except sqlite3.OperationalError:  # created but the schema not committed yet
        return []


def _descendants(pid: int) -> list:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(p) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill(p) -> None:
    try:
        p.kill()
    except psutil.NoSuchProcess:
        pass


def _stop_midway(
    tmp_path: Path, name: str, executor: str, signum: int, *, children: int
) -> tuple[Path, list]:
    """Start the sweep, wait for a finished task (and ``children`` descendants), send ``signum``.

    Returns the store and the descendants seen before the signal; asserts the exit code and that
    none of them survives.
    """
    cfg = _config(tmp_path, name, slow_from=2)
    out = tmp_path / "out"
    store = out / f"{name}.sqlite"
    proc = subprocess.Popen(
        _cli(str(cfg), "--executor", executor, "--out", str(out)),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the signal goes to the sweep alone, not to a process group
    )
    seen: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            for p in _descendants(proc.pid):
                seen.setdefault(p.pid, p)
            if len(_finished(store)) >= 1 and len(seen) >= children:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        assert _finished(store), "no task finished within 120 s"
        time.sleep(0.3)  # the slow tasks are running now
        for p in _descendants(proc.pid):
            seen.setdefault(p.pid, p)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)  # before the fix: hung until the slow tasks ended
    finally:
        if proc.poll() is None:  # only when the test fails: leave nothing behind
            proc.kill()
            proc.wait()
            for p in seen.values():
                _kill(p)
    if signum == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL, err
    else:
        assert proc.returncode == 128 + signum, err
        assert f"stopped by {signal.Signals(signum).name}" in err and "--resume continues" in err
        assert "Traceback" not in err, err
    descendants = list(seen.values())
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in descendants) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [(p.pid, p.name()) for p in descendants if _alive(p)]
    for p in descendants:  # leave nothing behind even when the test fails
        _kill(p)
    assert not survivors, f"processes outlived the stopped sweep: {survivors}"
    return store, descendants


def _resume_completes(tmp_path: Path, name: str, store: Path, before: list[int], capsys) -> None:
    """``loracheck sweep --resume`` (in this process, serially: the store does not depend on the
    executor) runs the tasks that were abandoned and nothing else."""
    (tmp_path / "quick").touch()
    cfg = tmp_path / f"{name}.toml"
    rc = main(
        [
            "sweep",
            str(cfg),
            "--executor",
            "serial",
            "--out",
            str(tmp_path / "out"),
            "--resume",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"{len(before)} finished before, {TASKS - len(before)} finished now, 0 failed now" in out
    con = sqlite3.connect(store)
    try:
        rows = con.execute("SELECT idx, status, attempts FROM tasks ORDER BY idx").fetchall()
    finally:
        con.close()
    # every task once, finished, each run into the store once: nothing lost, nothing duplicated
    assert rows == [(i, "finished", 1) for i in range(TASKS)]


def test_sigterm_stops_a_process_pool_sweep_without_leftovers_and_resume_completes(tmp_path, capsys):
    # two workers plus the resource tracker, all descendants of the sweep
    store, descendants = _stop_midway(tmp_path, "term", "process:2", signal.SIGTERM, children=3)
    assert len(descendants) >= 3
    before = _finished(store)
    assert 1 <= len(before) < TASKS and set(before) <= {0, 1}  # the slow tasks were abandoned
    _resume_completes(tmp_path, "term", store, before, capsys)


def test_sighup_stops_a_serial_sweep_and_resume_completes(tmp_path, capsys):
    store, _ = _stop_midway(tmp_path, "hup", "serial", signal.SIGHUP, children=0)
    before = _finished(store)
    assert before in ([0], [0, 1])  # serially: task 2 (or 1) was running
    _resume_completes(tmp_path, "hup", store, before, capsys)


def test_sighup_stops_a_process_pool_sweep_without_leftovers(tmp_path):
    store, descendants = _stop_midway(tmp_path, "hup2", "process:1", signal.SIGHUP, children=2)
    assert 1 <= len(_finished(store)) <= 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_killed_coordinator_takes_its_pool_workers_along(tmp_path, capsys):
    """SIGKILL cannot be handled: the workers die with their parent (PR_SET_PDEATHSIG), the
    resource tracker follows, and the store holds every task that finished."""
    store, _ = _stop_midway(tmp_path, "kill", "process:2", signal.SIGKILL, children=3)
    before = _finished(store)
    assert 1 <= len(before) <= 2
    _resume_completes(tmp_path, "kill", store, before, capsys)


@pytest.mark.slow
def test_sigterm_stops_a_local_dask_sweep_without_leftovers(tmp_path, capsys):
    pytest.importorskip("distributed")
    store, descendants = _stop_midway(tmp_path, "dask", "dask:1", signal.SIGTERM, children=1)
    before = _finished(store)
    _resume_completes(tmp_path, "dask", store, before, capsys)


def _without_reader(*args: str, unbuffered: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m verify.cli ARGS`` with a standard output pipe whose read end is already closed.

    No race with the size of the pipe's buffer: the first write that reaches the pipe (every write
    when ``unbuffered``; else the first flush, or the one at the end when the whole output fits in
    the buffer) fails for certain.
    """
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {k: v for k, v in _env().items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    try:
        return subprocess.run(
            [sys.executable, "-m", "verify.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize("unbuffered", [False, True])
@pytest.mark.parametrize("args", [("claims",), ("--help",), ("schema", "report")])
def test_a_reader_that_goes_away_ends_the_command_quietly_with_128_plus_sigpipe(args, unbuffered):
    """``loracheck claims | head -1``: exit ``128 + SIGPIPE``, nothing on standard error.

    Before: "internal error (BrokenPipeError)" and exit 4 when the output overflowed the buffer,
    and "Exception ignored ... BrokenPipeError" at exit (code 120) when it did not.
    """
    proc = _without_reader(*args, unbuffered=unbuffered)
    assert proc.returncode == 128 + signal.SIGPIPE, proc.stderr
    assert proc.stderr == ""


def test_a_run_whose_reader_goes_away_keeps_the_verdict_it_was_printing(tmp_path):
    """The report is written before the verdict's line: the run stops at its first line, saved.

    (Standard output block-buffered, as Python has it on a pipe: the header waits in the buffer,
    and the verdict's line, flushed at once, is the first write to fail.)
    """
    out = tmp_path / "out"
    proc = _without_reader("run", "--claims", "JLR-rank-FT", "--problems", "gauss-sq-K1", "--out", str(out))
    assert proc.returncode == 128 + signal.SIGPIPE, proc.stderr
    import json

    report = json.loads((out / "report.json").read_text())
    assert [v["claim"] for v in report["verdicts"]] == ["JLR-rank-FT"]


def test_a_write_to_a_closed_pipe_in_process_is_exit_141(capsys, monkeypatch):
    """The same path in process: a standard output whose writes raise ``BrokenPipeError``."""

    class Closed:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["claims"]) == 128 + signal.SIGPIPE
    assert capsys.readouterr().err == ""


def test_a_broken_pipe_that_is_not_standard_output_stays_an_error(capsys, monkeypatch):
    """A FIFO given as an output whose reader left is a failure of the environment: exit 4, said."""
    import verify.cli.claims as claims

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(claims, "handle", broken)
    assert main(["claims"]) == 4
    assert "internal error (BrokenPipeError)" in capsys.readouterr().err
