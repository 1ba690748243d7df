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

import _loracheck
import landscapes.threads as threads
from landscapes.threads import CpuShare, ThreadChoice
from theory.errors import UserInputError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_policy(monkeypatch):
    """Each test starts with no decision taken and none of the user's variables; counts restored."""
    before = torch.get_num_threads()
    blas = [p["num_threads"] for p in threads._controller().info() if p["user_api"] == "blas"]
    for name in (*threads.TORCH_VARIABLES, *threads.BLAS_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "_STATE", threads._State())
    threads._STATE.torch_default = 64  # torch's default count caps the policy; tested on its own
    yield
    torch.set_num_threads(before)
    if blas:
        threads._controller().limit(limits=max(blas), user_api="blas")


def _blas() -> list[int]:
    return [p["num_threads"] for p in threads._controller().info() if p["user_api"] == "blas"]


def _fake_proc(tmp_path: Path, procs_running: int, states: str, cgroup_line: str = "0::/job") -> Path:
    proc = tmp_path / "proc"
    (proc / "self" / "task").mkdir(parents=True)
    (proc / "stat").write_text(f"cpu  1 2 3 4\nprocs_running {procs_running}\nprocs_blocked 0\n")
    (proc / "self" / "cgroup").write_text(cgroup_line + "\n")
    for i, state in enumerate(states):  # a command name with a space and a parenthesis
        (proc / "self" / "task" / str(100 + i)).mkdir()
        (proc / "self" / "task" / str(100 + i) / "stat").write_text(f"{100 + i} (py (x) y) {state} 1 2 3\n")
    return proc


def _fake_cgroup(tmp_path: Path, cpu_max: str) -> Path:
    root = tmp_path / "cgroup"
    (root / "job").mkdir(parents=True)
    (root / "job" / "cpu.max").write_text(cpu_max + "\n")
    return root


# -- what the process may use ------------------------------------------------------------------
def test_share_arithmetic():
    assert CpuShare(allowed=8, quota=None, others_running=0, machine=8).free == 8
    assert CpuShare(allowed=8, quota=2.5, others_running=0, machine=8).usable == 2  # 2.5 CPUs: 2 threads
    assert CpuShare(allowed=8, quota=0.5, others_running=0, machine=8).usable == 1
    assert CpuShare(allowed=2, quota=None, others_running=1, machine=2).free == 1
    assert CpuShare(allowed=2, quota=None, others_running=5, machine=2).free == 1  # never below one
    assert CpuShare(allowed=4, quota=None, others_running=None, machine=4).free == 4  # unreadable: all
    # the machine's other tasks spread over its CPUs: few of them fall on a small share
    assert CpuShare(allowed=4, quota=None, others_running=6, machine=64).free == 3
    assert CpuShare(allowed=64, quota=4.0, others_running=30, machine=64).free == 4  # a quota, a busy host


def test_cpu_share_reads_proc_stat_less_own_running_threads(tmp_path):
    proc = _fake_proc(tmp_path, procs_running=5, states="RSR")  # two of ours running: 3 others
    share = threads.cpu_share(proc=proc, cgroup=_fake_cgroup(tmp_path, "max 100000"), samples=3)
    assert share.others_running == 3
    assert share.quota is None
    assert share.allowed == len(os.sched_getaffinity(0)) and share.machine == os.cpu_count()


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"job/cpu.max": "150000 100000"}, 1.5),
        ({"job/cpu.max": "max 100000"}, None),
        ({"cpu.max": "400000 100000"}, 4.0),  # on the root (as some container runtimes show it)
        ({"job/cpu.max": "max 100000", "cpu.max": "200000 100000"}, 2.0),  # an ancestor's quota
        ({"job/cpu.max": "300000 100000", "cpu.max": "200000 100000"}, 2.0),  # the smallest one
        ({}, None),
    ],
)
def test_cgroup_v2_quota(tmp_path, files, quota):
    proc = _fake_proc(tmp_path, procs_running=1, states="R", cgroup_line="0::/job (deleted)")
    root = tmp_path / "cgroup"
    (root / "job").mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text + "\n")
    assert threads.cpu_share(proc=proc, cgroup=root, samples=1).quota == quota


def test_cgroup_v1_quota(tmp_path):
    proc = _fake_proc(tmp_path, procs_running=1, states="R", cgroup_line="5:cpu,cpuacct:/a/b\n3:memory:/a/b")
    mount = tmp_path / "cgroup" / "cpu,cpuacct"
    (mount / "a" / "b").mkdir(parents=True)
    (mount / "a" / "b" / "cpu.cfs_quota_us").write_text("-1\n")  # none on our own cgroup
    (mount / "a" / "cpu.cfs_quota_us").write_text("50000\n")  # half a CPU on its parent
    (mount / "a" / "cpu.cfs_period_us").write_text("100000\n")
    share = threads.cpu_share(proc=proc, cgroup=tmp_path / "cgroup", samples=1)
    assert share.quota == 0.5 and share.usable == 1


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
def _share(allowed: int, others: int) -> CpuShare:
    return CpuShare(allowed=allowed, quota=None, others_running=others, machine=allowed)


def test_small_work_is_single_threaded_and_large_work_takes_the_free_cores(monkeypatch):
    monkeypatch.setattr(threads, "cpu_share", lambda **_: _share(6, 2))
    assert threads.threads_for(threads.LARGE_WORK - 1) == ThreadChoice(1, "policy")
    big = threads.threads_for(threads.LARGE_WORK)
    assert big.threads == 4 and big.source == "policy" and big.share is not None
    threads._STATE.torch_default = 3  # never more than torch's default count (the physical cores)
    assert threads.threads_for(threads.LARGE_WORK).threads == 3


def test_threads_option_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    threads.configure(2)
    assert threads.threads_for(0) == threads.threads_for(1e12) == ThreadChoice(2, "--threads")


def test_user_variable_wins_and_torch_is_left_alone(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # torch reads MKL's over OpenMP's
    assert threads.configure() == ThreadChoice(3, "MKL_NUM_THREADS")
    torch.set_num_threads(1)
    with threads.work_threads(1e12) as choice:
        assert choice.source == "MKL_NUM_THREADS"
        assert torch.get_num_threads() == 1  # torch read the variable itself; the policy changes nothing


def test_a_library_caller_gets_the_users_variable_too(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.threads_for(10.0) == ThreadChoice(2, "OMP_NUM_THREADS")  # no configure() call


def test_an_openblas_variable_leaves_blas_alone_but_not_torch(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    monkeypatch.setattr(threads, "cpu_share", lambda **_: _share(2, 0))
    assert threads.configure() is None  # torch's count: the policy's
    blas = _blas()
    torch.set_num_threads(2)
    with threads.work_threads(10.0) as choice:
        assert choice == ThreadChoice(1, "policy") and torch.get_num_threads() == 1
        assert _blas() == blas  # the user's BLAS count stays


@pytest.mark.parametrize("name", ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"])
@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_user_variable_is_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(UserInputError, match=f"{name}: expected a positive int, got '{value}'"):
        threads.configure()


@pytest.mark.parametrize("value", [0, -2, True, 1.5])
def test_bad_threads_option_is_refused(value):
    with pytest.raises(UserInputError, match="threads: expected a positive int"):
        threads.configure(value)


def test_work_threads_sets_and_restores_counts(monkeypatch):
    monkeypatch.setattr(threads, "cpu_share", lambda **_: _share(2, 0))
    torch.set_num_threads(2)
    with threads.work_threads(10.0, label="small") as choice:
        assert choice.threads == 1 and torch.get_num_threads() == 1
        assert all(n == 1 for n in _blas())
    assert torch.get_num_threads() == 2
    with threads.work_threads(1e9, label="large"):
        assert torch.get_num_threads() == 2
    with pytest.raises(ZeroDivisionError), threads.work_threads(10.0):
        1 / 0  # noqa: B018
    assert torch.get_num_threads() == 2
    rec = threads.record()
    assert rec["choices"] == {"1": 1, "2": 1}
    assert rec["per_check"] == [["small", 1, "policy"], ["large", 2, "policy"]]


def test_a_pinned_body_stays_on_one_thread(monkeypatch):
    """Work inside single_threaded (a sweep task) asks for the free cores in vain."""
    monkeypatch.setattr(threads, "cpu_share", lambda **_: _share(2, 0))
    with threads.single_threaded(), threads.work_threads(1e12) as choice:
        assert choice == ThreadChoice(1, "pinned") and torch.get_num_threads() == 1
    assert threads.threads_for(1e12).threads == 2


def test_a_command_leaves_no_trace(monkeypatch):
    """Counts, BLAS limits and decisions are as before once a command ends (tests run many in one process)."""
    monkeypatch.setattr(threads, "cpu_share", lambda **_: _share(2, 0))
    torch.set_num_threads(1)
    blas = _blas()
    with threads.command_threads(3) as choice:
        assert choice == ThreadChoice(3, "--threads") and torch.get_num_threads() == 3
        # (inside, OpenBLAS may cap the count at the cores it was built or started for)
        with threads.work_threads(1.0, label="x"):
            pass
        assert threads.record()["per_check"] == [["x", 3, "--threads"]]
    assert torch.get_num_threads() == 1 and _blas() == blas
    assert threads.record()["decided_by"] == "policy" and threads.record()["per_check"] == []


def test_single_threaded_restores():
    torch.set_num_threads(2)
    with threads.single_threaded():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


# -- the console script ------------------------------------------------------------------------
_HOOK = textwrap.dedent(
    """
    import os, sys
    for v in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
        os.environ.pop(v, None)
    seen = {}

    class Spy:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" and "torch" not in seen:
                seen["torch"] = os.environ.get("GOMP_SPINCOUNT")
            return None

    sys.meta_path.insert(0, Spy())
    ENTRY
    sys.stdout = sys.__stdout__
    print("SEEN", repr(seen.get("torch", "never")))
    """
)


def _spin_count_when_torch_loads(entry: str) -> str:
    code = _HOOK.replace("ENTRY", entry)
    env = {k: v for k, v in os.environ.items() if k not in threads.WAIT_VARIABLES}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("SEEN ")]
    assert line, out.stdout + out.stderr
    return line[-1][5:]


def test_console_script_sets_the_spin_count_before_torch_loads():
    """OpenMP reads GOMP_SPINCOUNT when torch loads it: the entry point must set it first."""
    seen = _spin_count_when_torch_loads("import _loracheck; _loracheck.main(['schema'])")
    assert seen == repr(str(_loracheck.SPIN_COUNT))
    # the old entry (the command-line module itself) imports torch before any of its code runs
    assert _spin_count_when_torch_loads("from verify.cli.main import main; main(['schema'])") == "None"


_CHOSEN = {"GOMP_SPINCOUNT": str(_loracheck.SPIN_COUNT), "KMP_BLOCKTIME": "0"}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, _CHOSEN),
        ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"}),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "ACTIVE"}),  # a spin count would cap it
        ({"GOMP_SPINCOUNT": "infinite"}, {"GOMP_SPINCOUNT": "infinite"}),
        ({"KMP_BLOCKTIME": "200"}, {"KMP_BLOCKTIME": "200"}),
    ],
)
def test_a_users_wait_setting_is_kept(given, expected):
    env = {"PATH": "/bin", **given}
    set_now = _loracheck.openmp_wait_defaults(env)
    assert env == {"PATH": "/bin", **expected}
    assert set_now == ({} if given else expected)


def test_the_entry_point_and_the_report_name_the_same_wait_variables():
    assert _loracheck.USER_WAIT_VARIABLES == threads.WAIT_VARIABLES


def test_the_report_records_the_wait_settings_as_they_were_when_torch_loaded(monkeypatch):
    """Set by the test configuration (as by the command) before torch loaded; a later change, which
    OpenMP would not see, is not what the report shows."""
    before = {v: os.environ.get(v) for v in threads.WAIT_VARIABLES}
    monkeypatch.setenv("GOMP_SPINCOUNT", "99")
    assert threads.record()["openmp_wait"] == before


@pytest.mark.parametrize("others", [0, 1])
def test_the_report_records_the_choice(tmp_path, monkeypatch, others):
    """A small and a large problem: one thread, then the free cores (two idle, one beside a load).

    The threshold is lowered so that the suite's 24 x 256 problem counts as large (KN P = 6144 >= 5000)
    and its 20 x 120 one as small (2400).
    """
    from _loracheck import main

    share = _share(2, others)
    monkeypatch.setattr(threads, "cpu_share", lambda **_: share)
    monkeypatch.setattr(threads, "LARGE_WORK", 5000)
    out = tmp_path / "r"
    args = ["run", "--claims", "JLR-magnitude", "--problems", "gauss-sq-K1", "gauss-logistic-K1"]
    assert main([*args, "--out", str(out)]) == 0
    rec = json.loads((out / "report.json").read_text())["environment"]["threads"]
    assert rec["decided_by"] == "policy" and rec["large_work"] == 5000
    assert rec["choices"] == ({"1": 1, "2": 1} if others == 0 else {"1": 2})
    assert [c[0] for c in rec["per_check"]] == [
        "gauss-sq-K1: JLR-magnitude",
        "gauss-logistic-K1: JLR-magnitude",
    ]
    assert rec["process"]["source"] == "policy" and rec["process"]["share"]["free"] == 2 - others
    assert main([*args, "--out", str(out), "--fresh", "--threads", "3"]) == 0
    rec = json.loads((out / "report.json").read_text())["environment"]["threads"]
    assert rec["decided_by"] == "--threads" and rec["choices"] == {"3": 2} and rec["user_threads"] == 3


@pytest.mark.parametrize(("quota", "expected"), [(None, None), (1.5, 1), (0.2, 1), (64.0, None)])
def test_a_sweeps_default_worker_count_is_capped_by_the_cgroup_quota(monkeypatch, quota, expected):
    """``default_workers`` = the affinity mask capped by the quota: a 1.5-CPU container gets 1 worker."""
    from verify.sweep.executors import default_workers

    allowed = len(os.sched_getaffinity(0))
    monkeypatch.setattr(threads, "_quota", lambda *a: quota)
    assert default_workers() == (allowed if expected is None else min(allowed, expected))
