"""The sweep result store: guarantees, clear errors on foreign or damaged files, resume, failures, kills."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verify.cli.main import main
from verify.sweep.config import SweepAborted, expand, load_config
from verify.sweep.runner import run_sweep
from verify.sweep.store import FORMAT, StoreError, SweepStore

ROOT = Path(__file__).resolve().parents[2]

SQUARES = """
[sweep]
name = "squares"
task = "tests.sweep_tasks:square"

[grid]
x = [1, 2, 3, 4, 5]
"""


def _cfg(tmp_path: Path, text: str, name: str = "cfg.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _rows(path: Path) -> list[tuple]:
    """Every stored column that must not depend on the executor or on the timing."""
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT hash, idx, spec, status, result, error FROM tasks ORDER BY idx").fetchall()
    finally:
        con.close()


def _store_with_records(path: Path, n: int = 60) -> None:
    st = SweepStore.create(path, meta={"config_hash": "x"})
    for i in range(n):
        st.record(
            key=f"{i:064x}",
            index=i,
            spec=json.dumps({"i": i}),
            status="finished",
            result=json.dumps({"y": "a" * 500}),
            error=None,
            seconds=0.1,
            worker="w",
        )
    st.close()


# ---------------------------------------------------------------------------------------------
# The store itself
# ---------------------------------------------------------------------------------------------
def test_store_schema_meta_and_append_only_records(tmp_path):
    p = tmp_path / "s.sqlite"
    st = SweepStore.create(p, meta={"config_hash": "abc", "name": "demo"})
    args = dict(index=0, spec='{"x":1}', seconds=0.5, worker="h:1")
    assert st.record(key="h1", status="failed", result=None, error="ValueError: no", **args)
    assert st.record(
        key="h1", status="finished", result='{"y":1}', error=None, **args
    )  # replaces the failure
    # a finished record is never replaced
    assert not st.record(key="h1", status="failed", result=None, error="late", **args)
    assert not st.record(key="h1", status="finished", result='{"y":2}', error=None, **args)
    with pytest.raises(ValueError, match="result: expected a JSON text for a finished task"):
        st.record(key="h2", status="finished", result=None, error=None, **args)
    st.close()
    with SweepStore.open(p, readonly=True) as ro:
        assert ro.meta["format"] == FORMAT and ro.meta["name"] == "demo" and ro.config_hash == "abc"
        (rec,) = ro.records()
        assert (rec.status, rec.result, rec.error, rec.attempts) == ("finished", {"y": 1}, None, 2)
        assert ro.counts() == {"finished": 1, "failed": 0}
        with pytest.raises(StoreError, match="opened read-only"):
            ro.record(key="h3", status="failed", result=None, error="e", **args)
    # a closed store is one file (the write-ahead log is folded in)
    assert not (tmp_path / "s.sqlite-wal").exists()
    con = sqlite3.connect(p)
    assert con.execute("PRAGMA application_id").fetchone()[0] == 0x4C435357
    con.close()


def test_a_transaction_commits_all_its_records_or_none(tmp_path):
    p = tmp_path / "s.sqlite"
    args = dict(spec="{}", status="finished", result="{}", error=None, seconds=0.1, worker="w")
    with SweepStore.create(p, meta={"config_hash": "abc"}) as st:
        with pytest.raises(RuntimeError, match="interrupted"):
            with st.transaction():
                st.record(key="a", index=0, **args)
                st.record(key="b", index=1, **args)
                raise RuntimeError("interrupted")
        assert st.counts()["finished"] == 0
        with st.transaction():
            st.record(key="a", index=0, **args)
            st.record(key="b", index=1, **args)
    with SweepStore.open(p, readonly=True) as ro:
        assert ro.hashes() == {"a", "b"}


def test_one_writer_at_a_time(tmp_path):
    p = tmp_path / "s.sqlite"
    st = SweepStore.create(p, meta={"config_hash": "abc"})
    with pytest.raises(StoreError, match="is being written by another running sweep"):
        SweepStore.open(p)
    with SweepStore.open(p, readonly=True) as ro:  # readers are welcome
        assert ro.counts()["finished"] == 0
    st.close()
    SweepStore.open(p).close()  # the lock went with the writer


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "is not a loracheck sweep store (an empty file)"),
        (
            lambda p: p.write_text('{"schema": "loracheck.phase/1"}'),
            "is not a loracheck sweep store (not an SQLite",
        ),
        (
            lambda p: sqlite3.connect(p).executescript("CREATE TABLE t (a); INSERT INTO t VALUES (1);"),
            "is not a loracheck sweep store (an SQLite database of another application",
        ),
    ],
)
def test_foreign_files_are_refused_by_name(tmp_path, make, message):
    p = tmp_path / "s.sqlite"
    make(p)
    for readonly in (True, False):
        with pytest.raises(StoreError) as exc:
            SweepStore.open(p, readonly=readonly)
        assert message in str(exc.value) and str(p) in str(exc.value)


def test_another_format_version_is_refused(tmp_path):
    p = tmp_path / "s.sqlite"
    SweepStore.create(p, meta={"config_hash": "abc"}).close()
    con = sqlite3.connect(p)
    with con:
        con.execute("UPDATE meta SET value = 'loracheck.sweep-store/9' WHERE key = 'format'")
    con.close()
    with pytest.raises(StoreError, match=r"has format 'loracheck.sweep-store/9'; this loracheck reads"):
        SweepStore.open(p)


@pytest.mark.parametrize("damage", ["page", "truncate"])
def test_corrupted_stores_get_a_clear_error(tmp_path, damage):
    p = tmp_path / "s.sqlite"
    _store_with_records(p)
    data = bytearray(p.read_bytes())
    assert len(data) > 6 * 4096
    if damage == "page":  # one b-tree page overwritten with noise
        data[4 * 4096 : 5 * 4096] = bytes((i * 37 + 11) % 256 for i in range(4096))
    else:  # a copy cut short
        data = data[: len(data) // 2]
    p.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="is corrupted") as exc:
        SweepStore.open(p, readonly=True)
    assert str(p) in str(exc.value)
    assert not isinstance(exc.value, sqlite3.Error)


def test_cli_reports_store_errors_as_bad_input(tmp_path, capsys):
    cfg = _cfg(tmp_path, SQUARES)
    store = tmp_path / "out" / "squares.sqlite"
    store.parent.mkdir()
    store.write_text("not a store")
    assert (
        main(["sweep", str(cfg), "--executor", "serial", "--out", str(tmp_path / "out"), "--no-progress"])
        == 3
    )
    assert "is not a loracheck sweep store" in capsys.readouterr().err
    # --fresh never deletes a file that is not a store
    rc = main(
        [
            "sweep",
            str(cfg),
            "--executor",
            "serial",
            "--out",
            str(tmp_path / "out"),
            "--fresh",
            "--no-progress",
        ]
    )
    assert rc == 3 and store.read_text() == "not a store"
    assert main(["sweep", str(tmp_path / "nope.toml")]) == 3
    assert "expected an existing TOML file" in capsys.readouterr().err
    assert main(["sweep", str(cfg), "--executor", "threads"]) == 3
    assert "executor: expected 'serial', 'process'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Existing stores: refuse, resume, fresh, another configuration
# ---------------------------------------------------------------------------------------------
def test_existing_store_needs_resume_or_fresh_and_must_match(tmp_path):
    cfg = _cfg(tmp_path, SQUARES)
    store = tmp_path / "squares.sqlite"
    s1 = run_sweep(cfg, store, executor="serial", progress=False)
    assert (s1.tasks, s1.finished, s1.skipped, s1.failed) == (5, 5, 0, 0) and s1.complete
    first = _rows(store)
    with pytest.raises(
        StoreError, match=r"exists \(5 finished and 0 failed tasks .*pass --resume .* or --fresh"
    ):
        run_sweep(cfg, store, executor="serial", progress=False)
    s2 = run_sweep(cfg, store, executor="serial", resume=True, progress=False)
    assert (s2.finished, s2.skipped) == (0, 5) and _rows(store) == first
    other = _cfg(tmp_path, SQUARES.replace("x = [1, 2, 3, 4, 5]", "x = [1, 2, 3]"), "other.toml")
    with pytest.raises(StoreError, match="belongs to another sweep configuration .* pass --fresh"):
        run_sweep(other, store, executor="serial", resume=True, progress=False)
    s3 = run_sweep(other, store, executor="serial", fresh=True, progress=False)
    assert (s3.tasks, s3.finished) == (3, 3) and len(_rows(store)) == 3
    with pytest.raises(ValueError, match="at most one of them"):
        run_sweep(other, store, resume=True, fresh=True)


def test_results_are_the_task_functions_and_seeds_derive_from_specs(tmp_path):
    cfg = _cfg(tmp_path, SQUARES.replace('name = "squares"', 'name = "squares"\nreplicates = 2'))
    store = tmp_path / "s.sqlite"
    run_sweep(cfg, store, executor="serial", progress=False)
    with SweepStore.open(store, readonly=True) as st:
        recs = st.records()
    assert [r.result["y"] for r in recs] == [x * x for x in (1, 2, 3, 4, 5) for _ in range(2)]
    # replicates differ only in their derived seeds
    draws = [r.result["draw"] for r in recs]
    assert all(draws[2 * i] != draws[2 * i + 1] for i in range(5))
    assert [r.hash for r in recs] == [t.hash for t in expand(load_config(cfg))]


# ---------------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------------
def test_failed_tasks_are_recorded_do_not_stop_the_sweep_and_are_retried_on_resume(tmp_path, capsys):
    marker = tmp_path / "fixed"
    text = f"""
[sweep]
name = "flaky"
task = "tests.sweep_tasks:fails_on"

[params]
bad = 3
unless = "{marker}"

[grid]
x = [1, 2, 3, 4, 5]
"""
    cfg = _cfg(tmp_path, text)
    out = tmp_path / "out"
    rc = main(["sweep", str(cfg), "--executor", "serial", "--out", str(out), "--no-progress"])
    assert rc == 2
    printed = capsys.readouterr().out
    assert "4 finished now, 1 failed now" in printed and "planted failure at x = 3" in printed
    with SweepStore.open(out / "flaky.sqlite", readonly=True) as st:
        (bad,) = st.records("failed")
        assert bad.spec["x"] == 3 and bad.result is None and bad.attempts == 1
        assert bad.error.startswith("ValueError: planted failure at x = 3") and "sweep_tasks.py" in bad.error
        assert len(st.records("finished")) == 4
    # without retries the failure stays; with them (the default) it runs again
    rc = main(["sweep", str(cfg), "--executor", "serial", "--out", str(out), "--resume", "--no-retry-failed"])
    assert rc == 2 and "nothing to run" in capsys.readouterr().out
    marker.touch()
    rc = main(["sweep", str(cfg), "--executor", "serial", "--out", str(out), "--resume", "--no-progress"])
    assert rc == 0 and "1 finished now, 0 failed now" in capsys.readouterr().out
    with SweepStore.open(out / "flaky.sqlite", readonly=True) as st:
        fixed = next(r for r in st.records() if r.spec["x"] == 3)
        assert (fixed.status, fixed.result, fixed.error, fixed.attempts) == ("finished", {"y": 3}, None, 2)


def test_a_result_that_is_not_json_is_a_failure(tmp_path):
    cfg = _cfg(tmp_path, "[sweep]\ntask = 'tests.sweep_tasks:not_json'\n[grid]\nx = [1]\n")
    s = run_sweep(cfg, tmp_path / "s.sqlite", executor="serial", progress=False)
    assert s.failed == 1 and "Out of range float values are not JSON compliant" in s.errors[0][1]


@pytest.mark.slow
def test_a_dead_worker_stops_the_pool_sweep_and_keeps_finished_tasks(tmp_path):
    text = """
[sweep]
task = "tests.sweep_tasks:crashes_on"
[params]
bad = 4
[grid]
x = [1, 2, 3, 4, 5, 6]
"""
    cfg = _cfg(tmp_path, text)
    store = tmp_path / "s.sqlite"
    with pytest.raises(SweepAborted, match="a worker process died .* --resume"):
        run_sweep(cfg, store, executor="process:1", max_in_flight=1, progress=False)
    with SweepStore.open(store, readonly=True) as st:  # opens fine; the tasks before the crash are there
        assert sorted(r.spec["x"] for r in st.records("finished")) == [1, 2, 3]


# ---------------------------------------------------------------------------------------------
# Kill and resume
# ---------------------------------------------------------------------------------------------
KILL = """
[sweep]
name = "kill"
task = "phase"
seed = 5
replicates = 4

[params]
size = 8

[grid]
problem = [{K = 1, N = 4}, {K = 1, N = 9}]
r = [1, 2, 3, 4, 5]
init = ["gaussian", "large"]
"""


@pytest.mark.slow
def test_killed_sweep_loses_no_finished_task_and_resumes_to_the_uninterrupted_result(tmp_path):
    cfg = _cfg(tmp_path, KILL)
    n = len(expand(load_config(cfg)))
    out = tmp_path / "out"
    store = out / "kill.sqlite"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "verify.cli", "sweep", str(cfg), "--executor", "serial", "--out", str(out)]
    proc = subprocess.Popen(
        [*args, "--no-progress"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    t0 = time.monotonic()
    seen = 0
    while seen < 5:
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before it could be killed: {proc.stderr.read().decode()}")
        if time.monotonic() - t0 > 240:
            proc.kill()
            pytest.fail("no task was stored in time")
        if store.is_file():
            try:
                with SweepStore.open(store, readonly=True) as st:  # a reader while the sweep writes
                    seen = st.counts()["finished"]
            except StoreError:
                seen = 0  # the store is being created
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    # The killed store opens as a writer (quick_check passes, the lock died with the process).
    with SweepStore.open(store) as st:
        survived = {r.hash: r for r in st.records("finished")}
        assert st.counts()["failed"] == 0
    assert 5 <= len(survived) < n, "the kill should land mid-sweep"

    # An uninterrupted run of the same sweep (another store)
    ref = tmp_path / "ref.sqlite"
    run_sweep(cfg, ref, executor="serial", progress=False)
    reference = {row[0]: row for row in _rows(ref)}
    killed = {row[0]: row for row in _rows(store)}
    assert set(killed) == set(survived)
    for h in survived:  # every task that had finished is intact
        assert killed[h] == reference[h]

    # Without --resume the store is refused; with it, the rest runs and nothing finished runs again.
    r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 3 and "--resume" in r.stderr
    s = run_sweep(cfg, store, executor="serial", resume=True, progress=False)
    assert s.skipped == len(survived) and s.finished == n - len(survived) and s.complete
    assert _rows(store) == _rows(ref)
    with SweepStore.open(store, readonly=True) as st:
        after = {r.hash: r for r in st.records()}
    for h, rec in survived.items():  # not recomputed: the same commit time and worker
        assert (after[h].recorded_at, after[h].worker, after[h].attempts) == (rec.recorded_at, rec.worker, 1)


def test_a_failed_write_is_not_reported_as_bad_input(tmp_path):
    """A disk that fails under a usable store is exit 4 (StoreWriteError), not "bad input" (exit 3)."""
    import sqlite3

    from theory.errors import UserInputError
    from verify.sweep.store import StoreWriteError

    class FailingCommit:
        def __init__(self, conn):
            self._conn = conn

        def execute(self, sql, *args):
            if sql == "COMMIT":
                raise sqlite3.OperationalError("disk I/O error")
            return self._conn.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self._conn, name)

    st = SweepStore.create(tmp_path / "s.sqlite", meta={"config_hash": "x"})
    real = st._conn
    st._conn = FailingCommit(real)
    with pytest.raises(StoreWriteError, match="could not commit .*disk I/O error") as info:
        with st.transaction():
            st.record(
                key="k",
                index=0,
                spec="{}",
                status="finished",
                result="{}",
                error=None,
                seconds=0.0,
                worker="w",
            )
    assert not isinstance(info.value, UserInputError)
    assert not real.in_transaction  # rolled back
    st._conn = real
    st.close()
