"""Sweep and phase sizes are counted and estimated before anything is expanded or allocated.

The hostile cases run in a subprocess whose address space is capped (``RLIMIT_AS``) at what its
imports took plus 512 MiB, with ``tracemalloc`` on: a refusal that came after expanding a 12^9
grid, or after allocating a 10^5 x 10^5 phase problem, fails there with ``MemoryError`` instead
of taking the machine down, and the peak of Python allocations shows that nothing big was built.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest

import verify.jlr.phase as vp
import verify.sweep.config as vs
from verify.cli.main import main
from verify.sweep.config import SweepConfigError, config_hash, expand, load_config, parse_config
from verify.sweep.runner import open_sweep_store, run_sweep
from verify.sweep.tasks import canonical_json

# (the names added with the limits are used as vs.NAME / vp.NAME: the tests then fail, not the
# module's import, on code without them)

ROOT = Path(__file__).resolve().parents[2]
SQUARE = "tests.sweep_tasks:square"

_PRELUDE = """
import json, os, resource, sys, tracemalloc
sys.path.insert(0, {root!r})
import verify.cli.main, verify.jlr.phase, verify.sweep.runner, tests.sweep_tasks  # the cap is on what follows
from verify.cli import main

def _vm():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))

_cap = _vm() + 512 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (_cap, _cap))
tracemalloc.start()
out = {{}}
"""


def _capped(body: str) -> dict:
    """Run ``body`` (which fills the dict ``out``) under the address-space cap; return ``out``."""
    code = (
        _PRELUDE.format(root=str(ROOT))
        + textwrap.dedent(body)
        + ("\nout['peak_mib'] = tracemalloc.get_traced_memory()[1] / 2**20\nprint(json.dumps(out))\n")
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _toml(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return p


GRID_12_9 = "[sweep]\ntask = '{task}'\n[grid]\n" + "".join(f"a{i} = {list(range(12))}\n" for i in range(9))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")
def test_huge_sweeps_are_refused_by_their_count_before_expanding(tmp_path):
    """A 12^9 grid, 10^9 replicates and 10^12 samples: counted, refused naming the count, the
    limit and --max-tasks, with no store written and a few MiB of Python allocations at most."""
    grid = _toml(tmp_path, "grid", GRID_12_9.format(task=SQUARE))
    _toml(tmp_path, "reps", f"[sweep]\ntask = '{SQUARE}'\nreplicates = 1000000000\n[grid]\nx = [1, 2]\n")
    _toml(
        tmp_path,
        "samples",
        f"[sweep]\ntask = '{SQUARE}'\nsamples = 1000000000000\n[random]\nx = {{low = 0, high = 9}}\n",
    )
    out = _capped(
        f"""
        from verify.sweep import SweepConfigError, expand, load_config, run_sweep
        for name in ("grid", "reps", "samples"):
            cfg = load_config({str(tmp_path)!r} + f"/{{name}}.toml")
            msgs = []
            for call in (
                lambda: run_sweep(cfg, {str(tmp_path)!r} + f"/{{name}}.sqlite", executor="serial"),
                lambda: expand(cfg),
            ):
                try:
                    call()
                    msgs.append(None)
                except SweepConfigError as exc:
                    msgs.append(str(exc))
            out[name] = msgs
            from verify.sweep import count_tasks, iter_tasks
            out[name + "_count"] = count_tasks(cfg)
            out[name + "_first"] = next(iter_tasks(cfg)).index  # streamed: the first task at once
            out[name + "_store"] = os.path.exists({str(tmp_path)!r} + f"/{{name}}.sqlite")
        out["api_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        out["cli"] = main(["sweep", {str(grid)!r}, "--executor", "serial", "--out", {str(tmp_path / "o")!r}])
        """
    )
    counts = {"grid": 12**9, "reps": 2 * 10**9, "samples": 10**12}
    for name, n in counts.items():
        assert out[f"{name}_count"] == n
        for msg in out[name]:
            assert msg is not None, name
            assert f"got {n} tasks" in msg and f"at most {vs.MAX_TASKS} tasks" in msg and "--max-tasks" in msg
        assert out[f"{name}_first"] == 0 and not out[f"{name}_store"]
    assert (
        "grid 12 (a0) x 12 (a1)" in out["grid"][0]
        and "1000000000000 samples x 1 replicates" in out["samples"][0]
    )
    assert out["cli"] == 3  # (the command's lazy imports take some 60 MiB: not counted below)
    assert out["api_peak_mib"] < 4, out  # the old expansion built ~1 KiB per task until MemoryError


def test_max_tasks_is_the_limit_and_can_be_raised(tmp_path, capsys):
    cfg = parse_config(
        {"sweep": {"task": SQUARE, "replicates": 3}, "grid": {"x": list(range(10))}}, source="c"
    )
    assert vs.count_tasks(cfg) == 30
    with pytest.raises(
        SweepConfigError, match=r"at most 29 tasks, got 30 tasks \(grid 10 \(x\) x 3 replicates\)"
    ):
        run_sweep(cfg, tmp_path / "a.sqlite", executor="serial", max_tasks=29)
    assert not (tmp_path / "a.sqlite").exists()
    s = run_sweep(cfg, tmp_path / "a.sqlite", executor="serial", max_tasks=30, progress=False)
    assert s.finished == 30 and s.complete
    for bad in (0, -1, True, 2.5, "10"):
        with pytest.raises(ValueError, match=r"max_tasks: expected None or a positive int, got"):
            run_sweep(cfg, tmp_path / "b.sqlite", executor="serial", max_tasks=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"max_tasks: expected None or a positive int, got"):
            expand(cfg, max_tasks=bad)  # type: ignore[arg-type]
    toml = _toml(
        tmp_path, "c", f"[sweep]\ntask = '{SQUARE}'\nreplicates = 3\n[grid]\nx = {list(range(10))}\n"
    )
    args = ["sweep", str(toml), "--executor", "serial", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main([*args, "--max-tasks", "29"]) == 3
    err = capsys.readouterr().err
    assert "got 30 tasks" in err and "--max-tasks 30" in err
    assert main([*args, "--max-tasks", "0"]) == 3
    err = capsys.readouterr().err
    assert "max-tasks" in err and ("got '0'" in err or "got 0" in err)
    assert main([*args, "--max-tasks", "30"]) == 0


def test_more_points_than_parse_checks_are_checked_before_any_task_runs(tmp_path, monkeypatch):
    """Above MAX_TASKS points, load_config leaves the task kind's check to run_sweep, which runs it
    on every point (in the pass that hashes the sweep) before the store exists or a task runs."""
    monkeypatch.setattr(vs, "MAX_TASKS", 4)
    text = "[sweep]\ntask = 'phase'\n[params]\nsize = 4\nK = 1\nN = 3\n[grid]\nr = [1, 2, 3, 4, 5, 1000]\n"
    cfg = load_config(_toml(tmp_path, "p", text))  # 6 points > 4: not checked here
    with pytest.raises(SweepConfigError, match=r"task 4 \(.*r=5.*\): r: expected at most size = 4, got 5"):
        run_sweep(cfg, tmp_path / "p.sqlite", executor="serial", max_tasks=10)
    assert not (tmp_path / "p.sqlite").exists()


def test_the_expansion_is_streamed_and_the_identity_unchanged(tmp_path):
    """config_hash keeps its definition (sha256 of the sorted task hashes, one per line: existing
    stores resume) and is computed from the stream at ~100 bytes a task, not ~1 KiB."""
    cfg = parse_config(
        {
            "sweep": {"task": SQUARE, "replicates": 4},
            "params": {"pad": "p" * 200},
            "grid": {"x": list(range(5000))},
        },
        source="big",
    )
    tasks = expand(cfg)
    old = hashlib.sha256("\n".join(sorted(t.hash for t in tasks)).encode("ascii")).hexdigest()
    assert config_hash(tasks) == config_hash(vs.iter_tasks(cfg)) == old
    del tasks
    tracemalloc.start()
    try:
        st = open_sweep_store(tmp_path / "s.sqlite", cfg, vs.iter_tasks(cfg))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    try:
        assert st.meta["config_hash"] == old and st.meta["tasks"] == "20000"
    finally:
        st.close()
    assert peak < 20000 * 200, peak  # the list of tasks alone: 20,000 x ~1 KiB


def test_a_repeated_task_is_found_per_axis_as_the_full_expansion_would(tmp_path):
    cfg_data = {"sweep": {"task": SQUARE, "replicates": 2}, "grid": {"x": [1, 2], "y": [5, 6, 5.0, 5]}}
    specs = []
    for x in (1, 2):
        for y in (5, 6, 5.0, 5):
            for rep in range(2):
                specs.append(canonical_json({"task": SQUARE, "seed": 0, "replicate": rep, "x": x, "y": y}))
    first = next(i for i, s in enumerate(specs) if s in specs[:i])  # the brute-force answer
    assert first == 6  # 5.0 is another JSON value than 5 for an unchecked task
    with pytest.raises(SweepConfigError, match=rf"task {first} repeats task {specs.index(specs[first])} "):
        parse_config(cfg_data, source="dup")


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        (
            "size = 100000\nK = 1\nN = 3",
            "K = 1, N = 3, size = 100000: its Jacobian (3 x 10000000000 float64)",
        ),
        ("size = 12\nK = 10000000\nN = 1000", "K = 10000000, N = 1000, size = 12"),
    ],
)
def test_a_phase_sweep_over_the_memory_budget_is_refused_at_parse_time(tmp_path, capsys, params, needle):
    toml = _toml(tmp_path, "big", f"[sweep]\ntask = 'phase'\n[params]\n{params}\n[grid]\nr = [1]\n")
    with pytest.raises(SweepConfigError) as exc:
        load_config(toml)
    assert needle in str(exc.value) and "phase memory budget of 4 GiB" in str(exc.value)
    assert main(["sweep", str(toml), "--executor", "serial", "--out", str(tmp_path / "o")]) == 3
    assert not (tmp_path / "o" / "big.sqlite").exists()
    assert vp.phase_memory_estimate(1, 3, 12) < vp.PHASE_MEMORY_BUDGET


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")
def test_loracheck_phase_refuses_sizes_and_run_counts_before_any_work(tmp_path):
    out = _capped(
        f"""
        from verify.jlr.phase import phase_sweep
        o = {str(tmp_path / "o")!r}
        out["size"] = main(["phase", "--size", "100000", "--kn", "1x3", "--ranks", "1", "--out", o])
        out["kn"] = main(["phase", "--kn", "100000x100000", "--ranks", "1", "--out", o])
        out["runs"] = main(["phase", "--runs", "1000000000", "--kn", "1x3", "--ranks", "1", "--out", o])
        try:
            phase_sweep(kn=[(1, 3)], ranks=[1], size=100000, runs=1, progress=False)
            out["api"] = None
        except ValueError as exc:
            out["api"] = str(exc)
        try:
            phase_sweep(kn=[(1, 3), (1, 6)], ranks=[1, 2], runs=10**9, progress=False)
            out["api_runs"] = None
        except ValueError as exc:
            out["api_runs"] = str(exc)
        out["written"] = os.path.exists(o + "/phase.json")
        """
    )
    assert out["size"] == out["kn"] == out["runs"] == 3
    assert "got K = 1, N = 3, size = 100000" in out["api"] and "GiB" in out["api"]
    assert "at most 1000000 trainings in all, got 4000000000 (2 (K, N) pairs x 2 ranks" in out["api_runs"]
    assert not out["written"] and out["peak_mib"] < 16, out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /dev/zero: Linux")
def test_config_files_that_are_not_small_regular_files_are_not_read(tmp_path):
    big = tmp_path / "big.toml"
    with open(big, "wb") as fh:  # sparse: 65 MiB of zeros on no disk
        fh.truncate(65 * 2**20)
    out = _capped(
        f"""
        from verify.sweep import SweepConfigError, load_config
        for name, path in (("zero", "/dev/zero"), ("dir", {str(tmp_path)!r}), ("big", {str(big)!r})):
            try:
                load_config(path)
                out[name] = None
            except SweepConfigError as exc:
                out[name] = str(exc)
        out["cli"] = main(["sweep", "/dev/zero"])
        """
    )
    assert "/dev/zero' (not a regular file)" in out["zero"] and "(not a regular file)" in out["dir"]
    assert f"at most {64 * 2**20} bytes" in out["big"] and out["cli"] == 3
    assert out["peak_mib"] < 80, out  # at most the 64 MiB + 1 read of the sparse file


def test_local_worker_counts_are_bounded_by_the_machine(tmp_path, capsys):
    """``process:100000`` would start an interpreter (importing torch) per task: refused, naming the
    limit, before the store or any process exists."""
    from verify.sweep.executors import default_workers

    limit = 4 * default_workers()
    cfg = parse_config({"sweep": {"task": SQUARE}, "grid": {"x": [1, 2]}}, source="c")
    for spec in (f"process:{limit + 1}", "process:100000", f"dask:{limit + 1}"):
        with pytest.raises(
            ValueError, match=rf"executor: expected at most {limit} local workers .*got '{spec}'"
        ):
            run_sweep(cfg, tmp_path / "a.sqlite", executor=spec, progress=False)
        assert not list(tmp_path.glob("a.sqlite*"))  # no store, no lock file
    toml = _toml(tmp_path, "c", f"[sweep]\ntask = '{SQUARE}'\n[grid]\nx = [1, 2]\n")
    assert main(["sweep", str(toml), "--executor", "process:100000", "--out", str(tmp_path / "o")]) == 3
    assert f"at most {limit} local workers" in capsys.readouterr().err


def test_an_executor_that_fails_to_start_leaves_no_store_and_no_lock(tmp_path, monkeypatch):
    import verify.sweep.runner as sweep_module

    def refuse(spec):
        raise RuntimeError("the cluster did not start")

    monkeypatch.setattr(sweep_module, "make_executor", refuse)
    cfg = parse_config({"sweep": {"task": SQUARE}, "grid": {"x": [1, 2]}}, source="c")
    with pytest.raises(RuntimeError, match="did not start"):
        run_sweep(cfg, tmp_path / "a.sqlite", executor="process:1", progress=False)
    assert not list(tmp_path.glob("a.sqlite*"))
