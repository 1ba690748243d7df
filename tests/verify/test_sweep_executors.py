"""Sweeps on every executor give identical stored results; the phase diagram read from a store."""

from __future__ import annotations

import json
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from figures.phase import plot_phase_diagram
from landscapes.nuc import solve_nuc
from landscapes.synthetic import gaussian_problem
from verify.cli.main import main
from verify.jlr.phase import (
    PHASE_FORMAT,
    PHASE_VERSION,
    phase_problem,
    phase_reference,
    phase_run,
    phase_sweep,
    phase_task,
)
from verify.sweep.config import expand, load_config
from verify.sweep.executors import SerialExecutor, make_executor
from verify.sweep.phase_data import phase_data_from_store
from verify.sweep.runner import run_sweep
from verify.sweep.store import SweepStore
from verify.sweep.tasks import derive_seed, run_task, single_thread

TINY = """
[sweep]
name = "tiny"
task = "phase"
seed = 0
replicates = 2

[params]
size = 6

[grid]
problem = [{K = 1, N = 3}, {K = 1, N = 6}]
r = [1, 3]
init = ["gaussian", "adversarial"]
"""


def _rows(path: Path) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT hash, idx, spec, status, result, error FROM tasks ORDER BY idx").fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    cfg = d / "tiny.toml"
    cfg.write_text(TINY)
    store = d / "serial.sqlite"
    summary = run_sweep(cfg, store, executor="serial", progress=False)
    return cfg, store, summary


def test_the_serial_sweep_finishes_every_task(tiny):
    cfg, store, s = tiny
    assert (s.tasks, s.finished, s.failed) == (16, 16, 0) and s.complete
    rows = _rows(store)
    assert len(rows) == 16 and all(r[3] == "finished" for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["process:2", "dask:2"])
def test_every_executor_stores_identical_results(tiny, tmp_path, executor):
    cfg, ref, _ = tiny
    store = tmp_path / "s.sqlite"
    s = run_sweep(cfg, store, executor=executor, progress=False)
    assert s.finished == 16 and s.failed == 0
    assert s.executor.startswith(
        "process pool (2 workers" if executor.startswith("process") else "local Dask"
    )
    # hash, order, spec, status, result JSON and error: equal byte for byte
    assert _rows(store) == _rows(ref)
    with SweepStore.open(store, readonly=True) as st:
        pids = {int(r.worker.rsplit(":", 1)[1]) for r in st.records()}
    assert os.getpid() not in pids  # the tasks ran in worker processes, not here


@pytest.mark.slow
def test_an_existing_dask_cluster_by_address(tiny, tmp_path):
    import logging

    from distributed import LocalCluster

    cfg, ref, _ = tiny
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
    ) as cluster:
        address = cluster.scheduler_address.removeprefix("tcp://")
        s = run_sweep(cfg, tmp_path / "s.sqlite", executor=f"dask://{address}", progress=False)
        assert s.executor.startswith(f"Dask cluster at tcp://{address}") and s.finished == 16
        assert len(cluster.scheduler_info["workers"]) == 1  # only disconnected from, not closed
    assert _rows(tmp_path / "s.sqlite") == _rows(ref)


def test_any_concurrent_futures_executor_works(tiny, tmp_path):
    cfg, ref, _ = tiny
    store = tmp_path / "s.sqlite"
    with ThreadPoolExecutor(max_workers=1) as ex:
        s = run_sweep(cfg, store, executor=ex, progress=False)
        assert s.finished == 16 and s.executor == "ThreadPoolExecutor"
        assert _rows(store) == _rows(ref)
        # chunks of 3 tasks per executor call: 6 calls, the same results
        s = run_sweep(cfg, tmp_path / "c.sqlite", executor=ex, chunk=3, progress=False)
        assert (s.finished, s.calls) == (16, 6) and _rows(tmp_path / "c.sqlite") == _rows(ref)
        with pytest.raises(ValueError, match="chunk: expected None or a positive int, got 0"):
            run_sweep(cfg, tmp_path / "d.sqlite", executor=ex, chunk=0)


class _Threads(ThreadPoolExecutor):
    """A thread pool that tells a sweep its workers, calls in flight and chunk target (seconds)."""

    def __init__(self, chunk_seconds: float) -> None:
        super().__init__(max_workers=2)
        self.workers, self.in_flight, self.chunk_seconds = 2, 4, chunk_seconds


def test_automatic_chunk_follows_the_executors_chunk_seconds(tmp_path):
    """The automatic chunk aims at the executor's ``chunk_seconds`` of work per call: a target far
    below one task's time gives one task per call, a target far above it a few large calls (each
    worker still gets calls at the end); the stored results are the same."""
    from verify.sweep.config import parse_config

    cfg = parse_config(
        {"sweep": {"name": "sq", "task": "tests.sweep_tasks:square"}, "grid": {"x": list(range(200))}},
        source="sq",
    )
    with _Threads(chunk_seconds=1e-12) as ex:
        fine = run_sweep(cfg, tmp_path / "fine.sqlite", executor=ex, progress=False)
    with _Threads(chunk_seconds=1e3) as ex:
        coarse = run_sweep(cfg, tmp_path / "coarse.sqlite", executor=ex, progress=False)
    assert fine.finished == coarse.finished == 200
    assert fine.calls == 200
    # 4 single-task calls first, then chunks of at most a quarter of the tasks left (2 workers x 2
    # calls): they shrink geometrically towards the end, about 20 calls in all
    assert coarse.calls <= 40
    assert _rows(tmp_path / "fine.sqlite") == _rows(tmp_path / "coarse.sqlite")


def test_serial_executor_protocol():
    with make_executor("serial") as ex:
        assert isinstance(ex, SerialExecutor)
        f = ex.submit(divmod, 7, 2)
        assert f.done() and f.result() == (3, 1)
        g = ex.submit(divmod, 1, 0)
        assert isinstance(g.exception(), ZeroDivisionError)
        assert list(ex.map(abs, [-1, -2])) == [1, 2]
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(abs, 1)


def test_a_task_pins_threads_and_restores_them():
    from threadpoolctl import threadpool_info

    import landscapes.threads as vt

    def blas() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before, blas_before = torch.get_num_threads(), blas()
    for _ in range(2):  # the second time with the kept threadpoolctl controller
        with single_thread():
            assert torch.get_num_threads() == 1 and set(blas()) <= {1}
        assert torch.get_num_threads() == before and blas() == blas_before
    kept = vt._CONTROLLER
    import sys
    import types

    # a module imported since: the controller is built again at the next task
    sys.modules["_loracheck_test_new_module"] = types.ModuleType("_loracheck_test_new_module")
    try:
        with single_thread():
            assert vt._CONTROLLER is not kept and set(blas()) <= {1}
    finally:
        del sys.modules["_loracheck_test_new_module"]
    assert blas() == blas_before
    out = run_task(json.dumps({"task": "tests.sweep_tasks:square", "x": 3}))
    assert out["status"] == "finished" and json.loads(out["result"])["y"] == 9
    assert torch.get_num_threads() == before


def test_the_nuc_reference_is_reproducible_bit_for_bit():
    # The default (adaptive) certificate schedule lets the wall clock decide where L-BFGS stops;
    # the fixed schedule the phase diagram uses does not.
    P = gaussian_problem(K=1, N=10, blocks=[(12, 12)], lam=1e-3, seed=5)
    with single_thread():
        sols = [solve_nuc(P, gap_rtol=1e-10, check_schedule="fixed") for _ in range(4)]
    assert len({(s.certificate.primal, s.certificate.dual, s.iterations) for s in sols}) == 1
    assert all(s.converged for s in sols)
    with pytest.raises(ValueError, match="check_schedule: expected 'adaptive' or 'fixed'"):
        solve_nuc(P, check_schedule="sometimes")  # type: ignore[arg-type]


def test_a_phase_task_is_one_run_of_the_shared_building_blocks(tiny):
    cfg, store, _ = tiny
    task = expand(load_config(cfg))[5]
    spec = dict(task.spec)
    with single_thread():
        out = phase_task(spec)
        # the same run assembled by hand from the building blocks phase_sweep uses
        P = phase_problem(
            spec["K"],
            spec["N"],
            size=spec["size"],
            loss=spec["loss"],
            lam=spec["lam"],
            seed=derive_seed("phase.problem", 0, spec["K"], spec["N"], 6, "squared", 1e-3, 0),
        )
        run = phase_run(
            phase_reference(P, gap_rtol=spec["gap_rtol"]),
            rank=spec["r"],
            init=spec["init"],
            init_seed=out["seeds"]["init"],
            sosp_seed=out["seeds"]["sosp"],
        )
    assert {k: out[k] for k in run.to_dict()} == run.to_dict()
    with SweepStore.open(store, readonly=True) as st:
        stored = next(r for r in st.records() if r.hash == task.hash)
    assert stored.result == json.loads(json.dumps(out))


def test_phase_data_from_the_store_is_the_phase_format(tiny, tmp_path):
    cfg, store, _ = tiny
    data = phase_data_from_store(store)
    assert (data["format"], data["version"]) == (PHASE_FORMAT, PHASE_VERSION) and data["complete"]
    assert data["config"]["kn"] == [[1, 3], [1, 6]] and data["config"]["ranks"] == [1, 3]
    assert data["config"]["inits"] == [
        "gaussian",
        "large",
        "adversarial",
    ]  # adversarial at r = 1 runs "large"
    cells = {(c["KN"], c["r"]): c for c in data["cells"]}
    assert set(cells) == {(3, 1), (3, 3), (6, 1), (6, 3)}
    for c in data["cells"]:
        assert c["runs"] == 4 and 0 <= c["global"] <= 4 and len(c["ends"]) == 4
        assert all(e["objective_minus_nuc"] >= -1e-9 for e in c["ends"])  # never below the optimum
    # the theorem: above the bound r(r+1)/2 > KN every run ends at the global minimum
    assert cells[(3, 3)]["above_bound"] and cells[(3, 3)]["fraction_global"] == 1.0
    assert data["summary"]["certified_spurious_above_bound"] == 0
    # a phase sweep of the same grid (its own seeds) has the same cells, fields and verdicts above the bound
    ref = phase_sweep(kn=[(1, 3), (1, 6)], ranks=[1, 3], size=6, runs=4, progress=False)
    assert [set(c) for c in ref["cells"]] == [set(c) for c in data["cells"]]
    plot_phase_diagram(data)  # the figure code draws it
    with pytest.raises(ValueError, match="no finished phase tasks matching"):
        phase_data_from_store(store, select={"lam": 0.5})


def test_inconsistent_references_in_a_store_are_refused(tiny, tmp_path):
    _, store, _ = tiny
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes(store.read_bytes())
    con = sqlite3.connect(copy)
    with con:
        (h, result) = con.execute("SELECT hash, result FROM tasks ORDER BY idx LIMIT 1 OFFSET 3").fetchone()
        r = json.loads(result)
        r["nuc"]["primal"] *= 1 + 1e-15
        con.execute("UPDATE tasks SET result = ? WHERE hash = ?", (json.dumps(r), h))
    con.close()
    with pytest.raises(ValueError, match="report different NUC optima"):
        phase_data_from_store(copy)


def test_cli_sweep_writes_the_store_and_the_phase_data(tiny, tmp_path, capsys):
    cfg, ref, _ = tiny
    out = tmp_path / "out"
    rc = main(["sweep", str(cfg), "--executor", "serial", "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "16 finished now, 0 failed now" in text and "fraction of 4 runs" in text and "*" in text
    assert _rows(out / "tiny.sqlite") == _rows(ref)
    data = json.loads((out / "tiny-phase.json").read_text())
    assert data == json.loads(json.dumps(phase_data_from_store(out / "tiny.sqlite")))
    rc = main(["figures", "--from", str(out / "tiny.sqlite"), "--out", str(tmp_path / "fig")])
    assert rc == 0 and (tmp_path / "fig" / "phase-diagram.png").is_file()
