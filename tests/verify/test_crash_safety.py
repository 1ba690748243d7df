"""Crash safety: a killed ``loracheck run`` / ``audit`` leaves whole files and resumes on re-run.

The commands are started as real subprocesses and killed with SIGKILL (no clean-up handlers run)
as soon as their JSON holds a first finished verdict.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from landscapes.io import save_problem
from landscapes.synthetic import gaussian_problem

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _start(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "verify.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_after_first_verdict(proc: subprocess.Popen, path: Path, timeout: float = 240.0) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"the command finished before it could be killed: {proc.stderr.read()}")
        if path.is_file():
            data = json.loads(path.read_text())  # never half-written: always parses
            if data["verdicts"]:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return data
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no verdict was written in time")


def _no_temp_files(d: Path) -> None:
    assert not [p for p in d.rglob("*.tmp")], list(d.rglob("*"))


def test_killed_run_keeps_finished_verdicts_and_resumes(tmp_path):
    out = tmp_path / "report"
    args = ["run", "--problems", "gauss-sq-K1", "--out", str(out), "--no-progress"]
    killed = _kill_after_first_verdict(_start(args), out / "report.json")
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["complete"] is False and len(on_disk["verdicts"]) >= len(killed["verdicts"]) >= 1
    # The kill may land while report.md is being replaced: then a hidden temporary file remains
    # (never a partial report.md); the resumed run below must remove it.
    finished = {(v["problem"]["name"], v["claim"]): v for v in on_disk["verdicts"]}
    r = subprocess.run(
        [sys.executable, "-m", "verify.cli", *args],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert f"{len(finished)} finished verdicts reused" in r.stdout
    final = json.loads((out / "report.json").read_text())
    assert final["complete"] is True
    for v in final["verdicts"]:
        key = (v["problem"]["name"], v["claim"])
        if key in finished:  # reused verbatim, not recomputed
            assert v["timings"] == finished[key]["timings"]
    _no_temp_files(out)


def test_killed_audit_resumes(tmp_path):
    P = gaussian_problem(K=1, N=14, blocks=[(12, 10)], lam=0.02, seed=3)
    save_problem(P, tmp_path / "p.npz")
    out = tmp_path / "audit.json"
    args = [
        "audit",
        str(tmp_path / "p.npz"),
        "--claims",
        "JLR-rank-NUC",
        "JLR-no-spurious",
        "JLR-gd",
        "--json",
        str(out),
        "--no-progress",
    ]
    _kill_after_first_verdict(_start(args), out)
    data = json.loads(out.read_text())
    assert data["complete"] is False and data["verdicts"]
    _no_temp_files(tmp_path)
    done = len(data["verdicts"])
    # resume only the cheap part: the same tasks are recognized, the rest is computed
    r = subprocess.run(
        [sys.executable, "-m", "verify.cli", *args[:4], "--json", str(out), "--no-progress"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stdout and "1 verdicts reused" in r.stdout and done >= 1
    assert json.loads(out.read_text())["complete"] is True


def test_a_write_removes_temporary_files_left_by_a_killed_writer(tmp_path):
    from verify.report import build_report, write_report

    stale = [tmp_path / ".report.md.x1y2.tmp", tmp_path / ".report.json.z3.tmp"]
    for p in stale:
        p.write_text("half a report")
    other = tmp_path / ".notes.txt.tmp"  # not ours: left alone
    other.write_text("x")
    write_report(build_report([], suite=[], seconds=0.0), tmp_path)
    assert not any(p.exists() for p in stale) and other.exists()
    assert json.loads((tmp_path / "report.json").read_text())["complete"] is True
