"""The thread policy (landscapes.threads) and the console script's OpenMP wait policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import landscapes.threads as threads
from landscapes.threads import CpuShare, ThreadChoice
from theory.errors import UserInputError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_policy(monkeypatch):
    """Each test starts with no user choice and no recorded choices; torch's count is restored."""
    before = torch.get_num_threads()
    for name in threads.USER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "_USER", None)
    monkeypatch.setattr(threads, "_PROCESS", None)
    monkeypatch.setattr(threads, "_CHOICES", type(threads._CHOICES)())
    yield
    torch.set_num_threads(before)


def _fake_proc(tmp_path: Path, procs_running: int, states: str, cgroup_line: str = "0::/job") -> Path:
    proc = tmp_path / "proc"
    (proc / "self" / "task").mkdir(parents=True)
    (proc / "stat").write_text(f"cpu  1 2 3 4\nprocs_running {procs_running}\nprocs_blocked 0\n")
    (proc / "self" / "cgroup").write_text(cgroup_line + "\n")
    for i, state in enumerate(states):  # a command name with a space and a parenthesis
        (proc / "self" / "task" / str(100 + i)).mkdir()
        (proc / "self" / "task" / str(100 + i) / "stat").write_text(f"{100 + i} (py (x) y) {state} 1 2 3\n")
    return proc


def _fake_cgroup(tmp_path: Path, cpu_max: str | None, where: str = "job") -> Path:
    root = tmp_path / "cgroup"
    (root / where).mkdir(parents=True)
    if cpu_max is not None:
        (root / where / "cpu.max").write_text(cpu_max + "\n")
    return root


# -- what the process may use ------------------------------------------------------------------
def test_share_arithmetic():
    assert CpuShare(allowed=8, quota=None, others_running=0).free == 8
    assert CpuShare(allowed=8, quota=2.5, others_running=0).usable == 2  # a quota of 2.5 CPUs: 2 threads
    assert CpuShare(allowed=8, quota=0.5, others_running=0).usable == 1
    assert CpuShare(allowed=2, quota=None, others_running=1).free == 1
    assert CpuShare(allowed=2, quota=None, others_running=5).free == 1  # never below one
    assert CpuShare(allowed=4, quota=None, others_running=None).free == 4  # unreadable: the whole share


def test_cpu_share_reads_proc_stat_less_own_running_threads(tmp_path):
    proc = _fake_proc(tmp_path, procs_running=5, states="RSR")  # two of ours running: 3 others
    share = threads.cpu_share(proc=proc, cgroup=_fake_cgroup(tmp_path, "max 100000"), samples=3)
    assert share.others_running == 3
    assert share.quota is None
    assert share.allowed == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "where", "quota"),
    [
        ("150000 100000", "job", 1.5),
        ("max 100000", "job", None),
        ("400000 100000", ".", 4.0),
        (None, "job", None),
    ],
)
def test_cgroup_quota(tmp_path, cpu_max, where, quota):
    proc = _fake_proc(tmp_path, procs_running=1, states="R")
    share = threads.cpu_share(proc=proc, cgroup=_fake_cgroup(tmp_path, cpu_max, where), samples=1)
    assert share.quota == quota


def test_unreadable_proc_means_unknown_load(tmp_path):
    share = threads.cpu_share(proc=tmp_path / "nothing", cgroup=tmp_path / "nothing", samples=2)
    assert share.others_running is None and share.quota is None and share.free == share.usable


def test_busy_processes_are_seen():
    """Two busy processes beside this one are counted (the reading that makes the policy back off)."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.5)
        seen = threads.cpu_share(samples=5).others_running
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert seen is not None and seen >= 2


# -- who decides --------------------------------------------------------------------------------
def test_small_work_is_single_threaded_and_large_work_takes_the_free_cores(monkeypatch):
    monkeypatch.setattr(threads, "cpu_share", lambda **_: CpuShare(allowed=6, quota=None, others_running=2))
    assert threads.threads_for(threads.LARGE_WORK - 1) == ThreadChoice(1, "policy")
    big = threads.threads_for(threads.LARGE_WORK)
    assert big.threads == 4 and big.source == "policy" and big.share is not None


def test_threads_option_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    threads.configure(2)
    assert threads.threads_for(0) == threads.threads_for(1e12) == ThreadChoice(2, "--threads")


def test_user_variable_wins_and_torch_is_left_alone(monkeypatch):
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    assert threads.configure() == ThreadChoice(3, "MKL_NUM_THREADS")
    torch.set_num_threads(1)
    with threads.work_threads(1e12) as choice:
        assert choice.source == "MKL_NUM_THREADS"
        assert torch.get_num_threads() == 1  # torch read the variable itself; the policy changes nothing


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_user_variable_is_refused(monkeypatch, value):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with pytest.raises(UserInputError, match=f"OMP_NUM_THREADS: expected a positive int, got '{value}'"):
        threads.configure()


@pytest.mark.parametrize("value", [0, -2, True, 1.5])
def test_bad_threads_option_is_refused(value):
    with pytest.raises(UserInputError, match="threads: expected a positive int"):
        threads.configure(value)


def test_work_threads_sets_and_restores_counts(monkeypatch):
    monkeypatch.setattr(threads, "cpu_share", lambda **_: CpuShare(allowed=2, quota=None, others_running=0))
    torch.set_num_threads(2)
    with threads.work_threads(10.0) as choice:
        assert choice.threads == 1 and torch.get_num_threads() == 1
        blas = [p["num_threads"] for p in threads._controller().info() if p["user_api"] == "blas"]
        assert all(n == 1 for n in blas)
    assert torch.get_num_threads() == 2
    with threads.work_threads(1e9):
        assert torch.get_num_threads() == 2
    assert threads.record()["choices"] == {"1": 1, "2": 1}


def test_single_threaded_restores():
    torch.set_num_threads(2)
    with threads.single_threaded():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


# -- the console script ------------------------------------------------------------------------
_HOOK = textwrap.dedent(
    """
    import os, sys
    os.environ.pop("OMP_WAIT_POLICY", None)
    seen = {}

    class Spy:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" and "torch" not in seen:
                seen["torch"] = os.environ.get("OMP_WAIT_POLICY")
            return None

    sys.meta_path.insert(0, Spy())
    ENTRY
    sys.stdout = sys.__stdout__
    print("SEEN", repr(seen.get("torch", "never")))
    """
)


def _wait_policy_when_torch_loads(entry: str) -> str:
    code = _HOOK.replace("ENTRY", entry)
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("SEEN ")]
    assert line, out.stdout + out.stderr
    return line[-1][5:]


def test_console_script_sets_the_wait_policy_before_torch_loads():
    """OpenMP reads OMP_WAIT_POLICY when torch loads it: the entry point must set it first."""
    assert _wait_policy_when_torch_loads("import _loracheck; _loracheck.main(['schema'])") == "'PASSIVE'"
    # the old entry (the command-line module itself) imports torch before any of its code runs
    assert _wait_policy_when_torch_loads("from verify.cli.main import main; main(['schema'])") == "None"


@pytest.mark.parametrize("others", [0, 1])
def test_the_report_records_the_choice(tmp_path, monkeypatch, others):
    """A small and a large problem: one thread, then the free cores (two idle, one beside a load).

    The threshold is lowered so that the suite's 24 x 256 problem counts as large (KN P = 6144 >= 5000)
    and its 20 x 120 one as small (2400).
    """
    from _loracheck import main

    share = CpuShare(allowed=2, quota=None, others_running=others)
    monkeypatch.setattr(threads, "cpu_share", lambda **_: share)
    monkeypatch.setattr(threads, "LARGE_WORK", 5000)
    out = tmp_path / "r"
    args = ["run", "--claims", "JLR-magnitude", "--problems", "gauss-sq-K1", "gauss-logistic-K1"]
    assert main([*args, "--out", str(out)]) == 0
    rec = json.loads((out / "report.json").read_text())["environment"]["threads"]
    assert rec["decided_by"] == "policy" and rec["large_work"] == 5000
    assert rec["choices"] == ({"1": 1, "2": 1} if others == 0 else {"1": 2})
    assert rec["process"]["source"] == "policy" and rec["process"]["share"]["free"] == 2 - others
    assert main([*args, "--out", str(out), "--fresh", "--threads", "3"]) == 0
    rec = json.loads((out / "report.json").read_text())["environment"]["threads"]
    assert rec["decided_by"] == "--threads" and rec["choices"] == {"3": 2} and rec["user_threads"] == 3
