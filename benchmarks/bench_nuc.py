r"""Benchmark: our NUC solver vs cvxpy (SCS, Clarabel) at equal *certified* accuracy.

Problem (see :mod:`landscapes.nuc`)::

    min_D  L(D) + lam ||D||_*,   L(D) = (1/N) sum_i loss(f0_i + J_i vec(D), y_i)

on :func:`landscapes.synthetic.gaussian_problem` instances with one square block ``m x m`` and
``K N`` scalar predictions (squared / logistic: ``K = 1``; cross-entropy: ``K = 2``).

For each loss and size:

1. cvxpy builds the same problem (``cp.Variable((m, n))``, ``cp.vec(D, order="C")`` so that the
   flattening is row-major like :meth:`Problem.vec`, ``lam * cp.normNuc(D)``) and solves it with
   SCS (tight tolerances) and with CLARABEL, each solve in its own spawned subprocess with a hard
   wall-clock limit (``--timeout``; the process is killed when it runs over, or when its resident
   memory exceeds ``--mem-limit-gb``).  ``solve_seconds`` is the wall time of ``prob.solve(...)``
   (canonicalization + solver), measured inside the subprocess; problem construction and the
   imports are not counted.  The subprocess returns ``D`` to this process, which certifies it with
   :func:`landscapes.nuc.nuc_certificate` -- the same primal--dual yardstick as our solver.
   A solver that times out at one size is skipped at the larger sizes of the same loss.
2. Ours: ``solve_nuc(problem, gap_rtol=target)`` with
   ``target = min(1e-8, best certified relative gap reached by a cvxpy solver at this size)``,
   so our answer is at least as accurate as the best cvxpy answer; median wall time of 3 runs
   (seeds 0, 1, 2), in a spawned subprocess as well (same kill rule; the 3 runs share one
   ``--timeout`` budget), after one untimed warm-up solve at the smallest size in that
   subprocess.  The cost is also expressed in units of one risk-and-gradient evaluation
   ``problem.evaluate(D)`` (median of 20 calls), and, when the target is below 1e-8, one more
   solve at ``gap_rtol = 1e-8`` is timed (column ``@1e-08``).

On a shared 2-core machine any other busy process slows torch's OpenMP kernels by orders of
magnitude (a tiny ``torch.softmax`` goes from microseconds to a scheduler slice, ~8 ms); our
measurement is therefore bracketed by that probe and repeated after waiting for a quiet machine
when it was contended (``--contention-*`` options; the records keep the probes and load averages).
Each subprocess of ours also records a hash of the solver sources, since they may change while a
long benchmark runs.

The printed ratio is (fastest finished cvxpy solve) / (our median); with no finished cvxpy solve
it is the lower bound ``timeout / ours``.  Every size appends to the JSON (written atomically), so
an interrupted run keeps its finished rows.

No thread environment variables are set (that would distort the comparison); the thread counts
in effect are recorded in the JSON's environment record.

Usage::

    python benchmarks/bench_nuc.py [--sizes 8 16 ...] [--losses squared cross_entropy]
                                   [--timeout 300] [--out benchmarks/results/bench_nuc.json]
                                   [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from typing import Any

import numpy as np

# Heavy imports (torch, landscapes, cvxpy) are done inside functions: the cvxpy subprocesses are
# started with "spawn" and re-import this module, and they should load cvxpy only.

DEFAULT_SIZES = [8, 16, 32, 64, 128, 192, 256, 384]
QUICK_SIZES = [8, 16, 32]
QUICK_TIMEOUT = 60.0
CVXPY_SOLVERS = ("SCS", "CLARABEL")
DEFAULT_LAM = {"squared": 0.05, "cross_entropy": 0.01, "logistic": 0.01}
OUR_RUNS = 3
GRAD_TIMING_CALLS = 20


# ------------------------------------------------------------------------------------------------
# cvxpy side (runs in a spawned subprocess)
# ------------------------------------------------------------------------------------------------


def _jsonable(v: Any) -> Any:
    """Scalars (and short lists of them) as JSON values; ``None`` for anything else."""
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else repr(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return _jsonable(float(v))
    if isinstance(v, (list, tuple)) and len(v) <= 16:
        return [_jsonable(x) for x in v]
    return repr(v) if hasattr(v, "__str__") and len(repr(v)) < 80 else None


def _solver_extra(solver: str, extra: Any) -> dict[str, Any]:
    """The solver's own accuracy report (SCS ``info`` dict / Clarabel solution fields)."""
    out: dict[str, Any] = {}
    try:
        if solver == "SCS" and isinstance(extra, dict):
            info = extra.get("info", extra)
            for k in (
                "status",
                "iter",
                "pobj",
                "dobj",
                "res_pri",
                "res_dual",
                "gap",
                "res_infeas",
                "solve_time",
                "setup_time",
                "accel_time",
                "rejected_accel_steps",
                "accepted_accel_steps",
                "lin_sys_time",
                "cone_time",
            ):
                if k in info:
                    out[k] = _jsonable(info[k])
        elif extra is not None:
            for k in ("status", "obj_val", "obj_val_dual", "iterations", "r_prim", "r_dual", "solve_time"):
                if hasattr(extra, k):
                    out[k] = _jsonable(getattr(extra, k))
    except Exception as exc:  # pragma: no cover - best effort
        out["extra_error"] = repr(exc)
    return out


def _cvxpy_worker(conn: Any, data: dict[str, Any], solver: str, opts: dict[str, Any]) -> None:
    """Build the NUC problem in cvxpy, solve it, send back ``D`` and timings (in a subprocess)."""
    try:
        import cvxpy as cp

        J, f0, y = data["J"], data["f0"], data["y"]
        N, K, m, n = data["N"], data["K"], data["m"], data["n"]
        lam, loss = data["lam"], data["loss"]
        t_build = time.perf_counter()
        D = cp.Variable((m, n))
        z = f0.reshape(-1) + J @ cp.vec(D, order="C")  # row i*K + k: output k of example i
        if loss == "squared":
            risk = 0.5 * cp.sum_squares(z - y.reshape(-1)) / N
        elif loss == "cross_entropy":
            Z = cp.reshape(z, (N, K), order="C")
            picked = np.arange(N) * K + y.astype(np.int64)
            risk = (cp.sum(cp.log_sum_exp(Z, axis=1)) - cp.sum(z[picked])) / N
        elif loss == "logistic":
            risk = cp.sum(cp.logistic(z) - cp.multiply(y.astype(np.float64), z)) / N
        else:
            raise ValueError(f"loss: unsupported {loss!r}")
        prob = cp.Problem(cp.Minimize(risk + lam * cp.normNuc(D)))
        build_seconds = time.perf_counter() - t_build
        conn.send(("ready", os.getpid()))
        t0 = time.perf_counter()
        prob.solve(solver=solver, **opts)
        solve_seconds = time.perf_counter() - t0
        st = prob.solver_stats
        res = {
            "D": None if D.value is None else np.ascontiguousarray(D.value, dtype=np.float64),
            "cvxpy_status": prob.status,
            "cvxpy_objective": _jsonable(prob.value),
            "solve_seconds": solve_seconds,
            "build_seconds": build_seconds,
            "compilation_seconds": _jsonable(getattr(prob, "compilation_time", None)),
            "solver_solve_seconds": _jsonable(getattr(st, "solve_time", None)),
            "solver_setup_seconds": _jsonable(getattr(st, "setup_time", None)),
            "solver_iterations": _jsonable(getattr(st, "num_iters", None)),
            "solver_report": _solver_extra(solver, getattr(st, "extra_stats", None)),
        }
        conn.send(("result", res))
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except Exception:
            pass
    finally:
        conn.close()


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_in_subprocess(
    target: Any,
    args: tuple,
    timeout: float,
    mem_limit_bytes: float,
    start_timeout: float = 300.0,
    reset_on_run: bool = False,
) -> dict[str, Any]:
    """Run ``target(conn, *args)`` in a spawned subprocess under a hard wall-clock limit.

    The child sends ``("ready", info)`` when its untimed set-up is done, then any number of
    ``("run", record)`` progress messages and ``("phase", info)`` markers, then ``("result",
    dict)`` or ``("error", traceback)``.  The clock (``timeout`` seconds) starts at "ready" and
    restarts at every "phase" (and, with ``reset_on_run``, every "run") message; when it runs out,
    or the child's resident memory exceeds ``mem_limit_bytes``, the child is killed.

    Returns the result dict plus ``status`` in ``{"ok", "timeout", "memory_limit", "error",
    "died"}`` and ``partial_runs`` (the "run" records received).
    """
    ctx = mp.get_context("spawn")
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=target, args=(w, *args), daemon=True)
    t_start = time.perf_counter()
    p.start()
    w.close()
    out: dict[str, Any] = {"status": None}
    runs: list[dict[str, Any]] = []
    phase, deadline, peak = "start", t_start + start_timeout, 0
    t_mark = None
    try:
        while True:
            now = time.perf_counter()
            if now >= deadline:
                out["status"] = "timeout" if phase == "solve" else "error"
                if phase != "solve":
                    out["error"] = f"subprocess did not get ready within {start_timeout} s"
                break
            if r.poll(min(0.25, max(deadline - now, 0.0))):
                try:
                    kind, payload = r.recv()
                except EOFError:
                    out["status"] = "died"
                    break
                if kind in ("ready", "run", "phase"):
                    if kind == "run":
                        runs.append(payload)
                    elif kind == "ready":
                        out["ready_info"] = payload
                    if kind != "run" or reset_on_run:
                        phase, t_mark = "solve", time.perf_counter()
                        deadline = t_mark + timeout
                    continue
                if kind == "result":
                    out.update(payload)
                    out["status"] = "ok"
                else:
                    out["status"] = "error"
                    out["error"] = payload
                break
            rss = _rss_bytes(p.pid)
            peak = max(peak, rss)
            if rss > mem_limit_bytes:
                out["status"] = "memory_limit"
                break
    finally:
        if p.is_alive() and out["status"] != "ok":
            p.kill()
        p.join(timeout=30)
        if p.is_alive():  # pragma: no cover
            p.kill()
            p.join()
        r.close()
    if out["status"] == "died":
        out["error"] = f"subprocess exited with code {p.exitcode} without a result"
    if out["status"] in ("timeout", "memory_limit") and t_mark is not None:
        out["killed_after_seconds"] = time.perf_counter() - t_mark
    out["peak_rss_gb"] = peak / 2**30
    out["subprocess_wall_seconds"] = time.perf_counter() - t_start
    if runs:
        out["partial_runs"] = runs
    return out


def run_cvxpy(
    data: dict[str, Any], solver: str, opts: dict[str, Any], timeout: float, mem_limit_bytes: float
) -> dict[str, Any]:
    """One cvxpy solve in a subprocess (see :func:`run_in_subprocess`)."""
    return run_in_subprocess(_cvxpy_worker, (data, solver, opts), timeout, mem_limit_bytes)


# ------------------------------------------------------------------------------------------------
# our side (this process)
# ------------------------------------------------------------------------------------------------


def data_sha256(problem) -> str:
    """Content hash of the problem data (J, f0, y, blocks, lam, loss); our own, independent of
    :meth:`Problem.fingerprint` (whose definition may change while the benchmark runs)."""
    import hashlib

    from landscapes.operators import DenseOperator

    h = hashlib.sha256(repr((problem.blocks, problem.lam, problem.loss.name)).encode())
    mats = [problem.f0, problem.y]
    if isinstance(problem.J, DenseOperator):
        mats.append(problem.J.matrix)
    for t in mats:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def code_sha256() -> str:
    """Hash of the solver sources (``landscapes/*.py``, ``theory/*.py``) as they are on disk now.

    Recorded at start and in every subprocess of ours: other people edit the solver while a long
    benchmark runs, and each subprocess imports the code afresh.
    """
    import glob
    import hashlib

    import landscapes

    root = os.path.dirname(os.path.dirname(os.path.abspath(landscapes.__file__)))
    h = hashlib.sha256()
    for pkg in ("landscapes", "theory"):
        for f in sorted(glob.glob(os.path.join(root, pkg, "*.py"))):
            h.update(os.path.relpath(f, root).encode())
            with open(f, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()[:16]


def git_head() -> str | None:
    """``git rev-parse HEAD`` of the checkout holding ``landscapes`` (read-only), if any."""
    import subprocess

    import landscapes

    root = os.path.dirname(os.path.dirname(os.path.abspath(landscapes.__file__)))
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except Exception:
        return None


def make_problem(loss: str, m: int, kn: int, lam: float, seed: int):  # -> Problem
    from landscapes.synthetic import gaussian_problem

    K = 2 if loss == "cross_entropy" else 1
    if kn % K:
        raise ValueError(f"--kn: expected a multiple of K = {K} for {loss}, got {kn}")
    return gaussian_problem(K=K, N=kn // K, blocks=[(m, m)], lam=lam, loss=loss, seed=seed)


def problem_data(problem, loss: str, m: int) -> dict[str, Any]:
    from landscapes.operators import DenseOperator

    assert isinstance(problem.J, DenseOperator)
    return {
        "J": problem.J.matrix.detach().cpu().numpy().astype(np.float64),
        "f0": problem.f0.detach().cpu().numpy().astype(np.float64),
        "y": problem.y.detach().cpu().numpy(),
        "N": problem.N,
        "K": problem.K,
        "m": m,
        "n": m,
        "lam": float(problem.lam[0]),
        "loss": loss,
    }


def certify(problem, D: np.ndarray) -> dict[str, Any]:
    import torch

    from landscapes.nuc import nuc_certificate

    Dt = torch.as_tensor(D, dtype=problem.dtype)
    c = nuc_certificate(problem, (Dt,))
    return {
        "rel_gap": c.rel_gap,
        "gap": c.gap,
        "primal": c.primal,
        "dual": c.dual,
        "dual_scale": c.dual_scale,
        "S_op_over_lam": c.S_op[0] / c.lam[0],
        "rank_1e-8": int(
            (np.linalg.svd(D, compute_uv=False) > 1e-8 * max(np.linalg.norm(D, 2), 1e-300)).sum()
        ),
    }


def time_gradient(problem, D, calls: int = GRAD_TIMING_CALLS) -> float:
    """Median wall time of one ``problem.evaluate(D)`` (risk, dual residuals and gradient)."""
    problem.evaluate(D)  # warm
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter()
        problem.evaluate(D)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def contention_probe_ms(calls: int = 20) -> float:
    """Median time of a tiny ``torch.softmax`` (a (32, 2) tensor), in ms.

    It enters torch's OpenMP pool; on an idle machine it takes microseconds, but when another
    process occupies a core it costs a scheduler time slice (~8 ms measured on the 2-core dev
    box), which is what every torch kernel of our solver that uses the pool then pays.
    """
    import torch

    z = torch.zeros(32, 2, dtype=torch.float64)
    torch.softmax(z, dim=1)
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter()
        torch.softmax(z, dim=1)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def wait_quiet(max_seconds: float, threshold_ms: float, poll: float = 5.0) -> bool:
    """Wait until :func:`contention_probe_ms` is below ``threshold_ms`` (at most ``max_seconds``)."""
    t_end = time.perf_counter() + max_seconds
    while True:
        if contention_probe_ms() <= threshold_ms:
            return True
        if time.perf_counter() >= t_end:
            return False
        time.sleep(poll)


def _ours_worker(conn: Any, spec: dict[str, Any]) -> None:
    """Our solver in a subprocess: warm-up, ``runs`` timed solves, gradient timing, extra solve."""
    try:
        from landscapes.nuc import solve_nuc

        code = code_sha256()
        problem = make_problem(spec["loss"], spec["m"], spec["kn"], spec["lam"], spec["seed"])
        sha = data_sha256(problem)
        if sha != spec["sha256"]:
            raise RuntimeError(f"problem mismatch in subprocess: {sha} != {spec['sha256']}")
        # one warm-up solve at the smallest size (imports, first-call costs, allocator)
        warm = make_problem(spec["loss"], spec["warm_m"], spec["kn"], spec["lam"], spec["seed"])
        t0 = time.perf_counter()
        solve_nuc(warm, gap_rtol=float(spec["max_target"]), seed=0)
        warmup_seconds = time.perf_counter() - t0
        conn.send(
            (
                "ready",
                {
                    "warmup_m": spec["warm_m"],
                    "warmup_seconds": warmup_seconds,
                    "code_sha256": code,
                    "contention_probe_ms": contention_probe_ms(),
                },
            )
        )

        def one(seed: int, target: float) -> tuple[dict[str, Any], Any]:
            t0 = time.perf_counter()
            sol = solve_nuc(problem, gap_rtol=float(target), seed=seed)
            wall = time.perf_counter() - t0
            c = sol.certificate
            return (
                {
                    "seed": seed,
                    "target_rel_gap": target,
                    "seconds": wall,
                    "solver_seconds": sol.seconds,
                    "rel_gap": c.rel_gap,
                    "gap": c.gap,
                    "primal": c.primal,
                    "converged": bool(sol.converged),
                    "gradient_evaluations": sol.gradient_evaluations,
                    "iterations": sol.iterations,
                    "rank": sol.ranks[0],
                },
                sol.D,
            )

        recs, Ds = [], []
        for seed in range(spec["runs"]):
            rec, D = one(seed, spec["target"])
            recs.append(rec)
            Ds.append(D)
            conn.send(("run", rec))
        order = sorted(range(len(recs)), key=lambda i: recs[i]["seconds"])
        mid = order[len(order) // 2]
        med = recs[mid]
        conn.send(("phase", "gradient timing"))
        t_grad = time_gradient(problem, Ds[mid])
        secs = statistics.median(r["seconds"] for r in recs)
        res: dict[str, Any] = {
            "target_rel_gap": spec["target"],
            "solve_seconds": secs,
            "rel_gap": med["rel_gap"],
            "worst_rel_gap": max(r["rel_gap"] for r in recs),
            "gap": med["gap"],
            "primal": med["primal"],
            "converged_all": all(r["converged"] for r in recs),
            "converged_runs": sum(r["converged"] for r in recs),
            "gradient_evaluations": med["gradient_evaluations"],
            "iterations": med["iterations"],
            "rank": med["rank"],
            "grad_eval_seconds": t_grad,
            "seconds_over_grad_eval": secs / t_grad if t_grad > 0 else None,
            "runs": recs,
            "torch_num_threads": __import__("torch").get_num_threads(),
        }
        if spec["extra_target"] is not None:
            conn.send(("phase", "extra target"))
            rec, _ = one(0, spec["extra_target"])
            res["at_extra_target"] = rec
        res["contention_probe_ms_end"] = contention_probe_ms()
        conn.send(("result", res))
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except Exception:
            pass
    finally:
        conn.close()


def run_ours(spec: dict[str, Any], timeout: float, mem_limit_bytes: float) -> dict[str, Any]:
    """Our solver in a subprocess (see :func:`run_in_subprocess`).

    The ``runs`` timed solves share ONE ``timeout`` budget (a cvxpy solver gets the same budget
    for a single solve); the gradient timing and the extra solve at ``max_target`` get their own.
    """
    out = run_in_subprocess(_ours_worker, (spec,), timeout, mem_limit_bytes)
    if out["status"] == "ok":
        out["status"] = "ok" if out["converged_all"] else "not_converged"
        out.pop("partial_runs", None)
    else:
        out["target_rel_gap"] = spec["target"]
        out["runs"] = [r for r in out.pop("partial_runs", []) if "seed" in r]
    return out


# ------------------------------------------------------------------------------------------------
# bookkeeping
# ------------------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "thread_env": {
            k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        },
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    for mod in ("scipy", "cvxpy", "scs", "clarabel", "threadpoolctl"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception as exc:  # pragma: no cover
            env[mod] = f"unavailable: {exc!r}"
    try:
        from threadpoolctl import threadpool_info

        env["threadpools"] = [
            {k: d.get(k) for k in ("user_api", "internal_api", "num_threads", "version")}
            for d in threadpool_info()
        ]
    except Exception:  # pragma: no cover
        pass
    env["git_head_at_start"] = git_head()
    env["code_sha256_at_start"] = code_sha256()
    env["loadavg_at_start"] = os.getloadavg()
    env["contention_probe_ms_at_start"] = contention_probe_ms()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        env["cpu_model"] = names[0] if names else None
    except OSError:
        pass
    return env


def write_json(path: str, obj: dict[str, Any]) -> None:
    """Atomic write: a temp file in the same folder, then ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".bench_nuc.", suffix=".json.tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=1, default=_jsonable)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _fmt_secs(s: float | None) -> str:
    return "-" if s is None else (f"{s:.3g}" if s < 100 else f"{s:.0f}")


def _fmt_cvx(rec: dict[str, Any], threshold_ms: float) -> str:
    st = rec["status"]
    if st == "ok":
        star = "*" if (rec.get("contention_probe_ms_before") or 0.0) > threshold_ms else ""
        return f"{star}{_fmt_secs(rec['solve_seconds'])} s, {rec['rel_gap']:.1e}"
    if st == "timeout":
        return "timeout"
    if st.startswith("skipped"):
        return "skipped"
    return st


def print_table(
    loss: str, rows: list[dict[str, Any]], timeout: float, max_target: float, threshold_ms: float
) -> None:
    at_hdr = "@" + format(max_target, "g") + " s"
    hdr = (
        f"{'m':>4} | {'ours s':>8} {'ours gap':>8} {'conv':>4} {'x grad':>7} {at_hdr:>9} | "
        f"{'SCS s, gap':>18} | {'Clarabel s, gap':>18} | {'cvxpy/ours':>10} | "
        "fastest cvxpy gap vs ours"
    )
    print(
        f"\n== loss = {loss} (timeout {timeout:g} s; gaps are certified relative gaps; "
        f"'conv' = our runs that reached the target; 'x grad' = our seconds / one gradient "
        f"evaluation; '@{max_target:g}' = ours at gap_rtol {max_target:g}; '*' = cvxpy solve "
        f"started on a contended machine) =="
    )
    print(hdr)
    print("-" * len(hdr))
    for row in rows:
        o = row["ours"]
        ratio = row["ratio"]
        rs = "-" if ratio is None else (">" if row["ratio_is_lower_bound"] else "") + f"{ratio:.3g}"
        if "solve_seconds" in o:
            at = o["at_extra_target"]["seconds"] if "at_extra_target" in o else o["solve_seconds"]
            ours_s = (
                f"{_fmt_secs(o['solve_seconds']):>8} {o['rel_gap']:>8.1e} "
                f"{o['converged_runs']:>2}/{OUR_RUNS} {o['seconds_over_grad_eval']:>7.0f} "
                f"{_fmt_secs(at):>9}"
            )
        else:
            ours_s = f"{o['status']:>42}"
        print(
            f"{row['m']:>4} | {ours_s} | {_fmt_cvx(row['SCS'], threshold_ms):>18} | "
            f"{_fmt_cvx(row['CLARABEL'], threshold_ms):>18} | {rs:>10} | {row['comparison']}"
        )
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--sizes", type=int, nargs="+", default=None, help=f"block sizes m = n (default {DEFAULT_SIZES})"
    )
    ap.add_argument(
        "--losses",
        nargs="+",
        default=["squared", "cross_entropy"],
        choices=["squared", "cross_entropy", "logistic"],
    )
    ap.add_argument("--kn", type=int, default=64, help="K*N, number of scalar predictions (default 64)")
    ap.add_argument("--lam-squared", type=float, default=DEFAULT_LAM["squared"])
    ap.add_argument("--lam-cross-entropy", type=float, default=DEFAULT_LAM["cross_entropy"])
    ap.add_argument("--lam-logistic", type=float, default=DEFAULT_LAM["logistic"])
    ap.add_argument("--seed", type=int, default=0, help="problem seed (default 0)")
    ap.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="wall-clock limit in seconds per cvxpy solve and for our 3 runs together "
        "(default 300; 60 with --quick)",
    )
    ap.add_argument(
        "--mem-limit-gb",
        type=float,
        default=16.0,
        help="kill a cvxpy subprocess whose resident memory exceeds this (default 16)",
    )
    ap.add_argument("--scs-eps", type=float, default=1e-9, help="SCS eps_abs = eps_rel (default 1e-9)")
    ap.add_argument("--scs-max-iters", type=int, default=10**7)
    ap.add_argument(
        "--clarabel-tol",
        type=float,
        default=None,
        help="Clarabel tol_gap_abs = tol_gap_rel = tol_feas (default: Clarabel's defaults)",
    )
    ap.add_argument(
        "--max-target",
        type=float,
        default=1e-8,
        help="our gap target is min(this, best cvxpy certified gap) (default 1e-8)",
    )
    ap.add_argument(
        "--min-target",
        type=float,
        default=1e-14,
        help="floor on our gap target, against float64 round-off (default 1e-14)",
    )
    ap.add_argument(
        "--contention-threshold-ms",
        type=float,
        default=1.0,
        help="our measurement counts as contended when a tiny torch.softmax takes "
        "longer than this before or after it (default 1 ms)",
    )
    ap.add_argument(
        "--contention-retries",
        type=int,
        default=3,
        help="re-measure ours up to this many times when contended (default 3)",
    )
    ap.add_argument(
        "--contention-wait",
        type=float,
        default=120.0,
        help="seconds to wait for a quiet machine before a re-measurement (default 120)",
    )
    ap.add_argument("--out", default=os.path.join("benchmarks", "results", "bench_nuc.json"))
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: sizes {QUICK_SIZES}, timeout {QUICK_TIMEOUT:g} s (unless given)",
    )
    args = ap.parse_args(argv)
    if args.sizes is None:
        args.sizes = list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    if args.timeout is None:
        args.timeout = QUICK_TIMEOUT if args.quick else 300.0
    args.sizes = sorted(set(args.sizes))
    if any(s < 1 for s in args.sizes):
        ap.error("--sizes: expected positive ints")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lams = {
        "squared": args.lam_squared,
        "cross_entropy": args.lam_cross_entropy,
        "logistic": args.lam_logistic,
    }
    solver_opts = {
        "SCS": {"eps_abs": args.scs_eps, "eps_rel": args.scs_eps, "max_iters": args.scs_max_iters},
        "CLARABEL": (
            {}
            if args.clarabel_tol is None
            else {
                "tol_gap_abs": args.clarabel_tol,
                "tol_gap_rel": args.clarabel_tol,
                "tol_feas": args.clarabel_tol,
            }
        ),
    }
    env = environment()
    print(
        f"environment: python {env['python']}, torch {env['torch']} ({env['torch_num_threads']} "
        f"threads), cpu_count {env['cpu_count']}, cvxpy {env['cvxpy']}, scs {env['scs']}, "
        f"clarabel {env['clarabel']}"
    )
    doc: dict[str, Any] = {
        "benchmark": "bench_nuc",
        "description": (
            "NUC: ours (solve_nuc, factored L-BFGS, certified gap) vs cvxpy SCS / "
            "CLARABEL; every answer certified with landscapes.nuc.nuc_certificate"
        ),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "finished": None,
        "environment": env,
        "config": {
            "sizes": args.sizes,
            "losses": args.losses,
            "kn": args.kn,
            "lam": lams,
            "seed": args.seed,
            "timeout_seconds": args.timeout,
            "mem_limit_gb": args.mem_limit_gb,
            "solver_options": solver_opts,
            "max_target": args.max_target,
            "min_target": args.min_target,
            "our_runs": OUR_RUNS,
            "contention": {
                "threshold_ms": args.contention_threshold_ms,
                "retries": args.contention_retries,
                "wait_seconds": args.contention_wait,
            },
            "grad_timing_calls": GRAD_TIMING_CALLS,
            "problem": "gaussian_problem, one m x m block",
            "timing": {
                "cvxpy solve_seconds": "wall time of prob.solve (canonicalization + solver), "
                "inside the subprocess; excludes imports and construction",
                "ours solve_seconds": "median wall time of solve_nuc over seeds 0..2",
                "grad_eval_seconds": "median wall time of problem.evaluate(D) over 20 calls",
            },
        },
        "records": [],
        "summary": [],
    }
    write_json(args.out, doc)
    for loss in args.losses:
        lam = lams[loss]
        timed_out: dict[str, int] = {}
        rows: list[dict[str, Any]] = []
        for m in args.sizes:
            problem = make_problem(loss, m, args.kn, lam, args.seed)
            base = {
                "loss": loss,
                "m": m,
                "n": m,
                "K": problem.K,
                "N": problem.N,
                "lam": lam,
                "seed": args.seed,
                "problem_sha256": data_sha256(problem),
            }
            data = problem_data(problem, loss, m)
            row: dict[str, Any] = {"m": m}
            for solver in CVXPY_SOLVERS:
                if solver in timed_out:
                    rec = {"status": f"skipped: timed out at smaller size (m = {timed_out[solver]})"}
                else:
                    print(f"[{loss} m={m}] {solver} ...", flush=True)
                    probe_before = contention_probe_ms()
                    rec = run_cvxpy(
                        data, solver, solver_opts[solver], args.timeout, args.mem_limit_gb * 2**30
                    )
                    rec["contention_probe_ms_before"] = probe_before
                    D = rec.pop("D", None)
                    if rec["status"] == "ok" and D is None:
                        rec["status"] = "no_solution"
                    if rec["status"] == "ok":
                        rec.update(certify(problem, D))
                        rec["cvxpy_objective_minus_certified_primal"] = (
                            rec["cvxpy_objective"] - rec["primal"]
                            if isinstance(rec.get("cvxpy_objective"), float)
                            else None
                        )
                    if rec["status"] in ("timeout", "memory_limit"):
                        timed_out[solver] = m
                    print(
                        f"[{loss} m={m}] {solver}: {rec['status']}"
                        + (
                            f", {rec['solve_seconds']:.3g} s, cvxpy status {rec['cvxpy_status']}, "
                            f"certified rel gap {rec['rel_gap']:.2e}"
                            if rec["status"] == "ok"
                            else ""
                        )
                        + (f"\n{rec['error']}" if "error" in rec else ""),
                        flush=True,
                    )
                rec["loadavg"] = os.getloadavg()
                row[solver] = rec
                doc["records"].append({**base, "solver": solver, **rec})
            ok = [row[s] for s in CVXPY_SOLVERS if row[s]["status"] == "ok"]
            best = min((r["rel_gap"] for r in ok), default=None)
            target = args.max_target if best is None else min(args.max_target, best)
            target = max(target, args.min_target)
            spec = {
                "loss": loss,
                "m": m,
                "kn": args.kn,
                "lam": lam,
                "seed": args.seed,
                "sha256": base["problem_sha256"],
                "warm_m": args.sizes[0],
                "target": target,
                "max_target": args.max_target,
                "runs": OUR_RUNS,
                "extra_target": args.max_target if target < args.max_target else None,
            }
            attempts: list[dict[str, Any]] = []
            for attempt in range(args.contention_retries + 1):
                print(f"[{loss} m={m}] ours (target rel gap {target:.2e}) ...", flush=True)
                ours = run_ours(spec, args.timeout, args.mem_limit_gb * 2**30)
                probes = [
                    (ours.get("ready_info") or {}).get("contention_probe_ms"),
                    ours.get("contention_probe_ms_end"),
                ]
                worst = max((p for p in probes if p is not None), default=None)
                ours["contention_probe_ms_worst"] = worst
                ours["contended"] = worst is not None and worst > args.contention_threshold_ms
                if not ours["contended"] or attempt == args.contention_retries:
                    break
                attempts.append(
                    {
                        k: ours.get(k)
                        for k in ("status", "solve_seconds", "rel_gap", "contention_probe_ms_worst")
                    }
                )
                print(
                    f"[{loss} m={m}] ours: contended (probe {worst:.3g} ms, "
                    f"{ours.get('solve_seconds') or float('nan'):.3g} s); waiting for a quiet "
                    f"machine and measuring again",
                    flush=True,
                )
                wait_quiet(args.contention_wait, args.contention_threshold_ms)
            ours["contended_attempts"] = attempts
            ours["target_floored"] = bool(best is not None and best < target)
            ours["loadavg"] = os.getloadavg()
            ours_code = (ours.get("ready_info") or {}).get("code_sha256")
            ours["code_sha256"] = ours_code
            ours["code_changed_since_start"] = (
                None if ours_code is None else ours_code != env["code_sha256_at_start"]
            )
            row["ours"] = ours
            doc["records"].append({**base, "solver": "ours", **ours})
            if "solve_seconds" in ours:
                print(
                    f"[{loss} m={m}] ours: {ours['solve_seconds']:.3g} s, "
                    f"rel gap {ours['rel_gap']:.2e}"
                    f" ({ours['converged_runs']}/{OUR_RUNS} runs reached the target), "
                    f"{ours['gradient_evaluations']} grad evals, "
                    f"{ours['seconds_over_grad_eval']:.0f} x "
                    f"t_grad ({ours['grad_eval_seconds'] * 1e3:.3g} ms), status {ours['status']}"
                    + (
                        f"; at {args.max_target:g}: {ours['at_extra_target']['seconds']:.3g} s"
                        if "at_extra_target" in ours
                        else ""
                    )
                    + f"; contention probe {ours['contention_probe_ms_worst']:.3g} ms, "
                    f"load {ours['loadavg'][0]:.2f}",
                    flush=True,
                )
            else:
                print(
                    f"[{loss} m={m}] ours: {ours['status']}"
                    + (f"\n{ours['error']}" if "error" in ours else ""),
                    flush=True,
                )
            # speed ratio: fastest finished cvxpy solve / ours; a lower bound when none finished
            ours_s = ours.get("solve_seconds")
            fastest_name, cg, ratio, lower = None, None, None, False
            if ok:
                fastest_name = min(
                    (s for s in CVXPY_SOLVERS if row[s]["status"] == "ok"),
                    key=lambda s: row[s]["solve_seconds"],
                )
                cg = row[fastest_name]["rel_gap"]
            if ours_s is None:
                comparison = f"ours: {ours['status']}"
            elif ok:
                ratio = row[fastest_name]["solve_seconds"] / ours_s
                og = ours["rel_gap"]
                comparison = (
                    f"{fastest_name} gap {cg:.1e} "
                    + ("worse than" if cg > og else "better than or equal to")
                    + f" ours {og:.1e}"
                )
            else:
                cut = any(
                    row[s]["status"] in ("timeout", "memory_limit") or row[s]["status"].startswith("skipped")
                    for s in CVXPY_SOLVERS
                )
                ratio = args.timeout / ours_s if cut else None
                lower = ratio is not None
                comparison = "no cvxpy answer"
            if ours.get("contended"):
                comparison += " [ours measured on a contended machine]"
            if ours["code_changed_since_start"]:
                comparison += " [solver code changed since start]"
            if ours["status"] == "not_converged":
                missed = OUR_RUNS - ours["converged_runs"]
                comparison += f" [ours missed target {target:.1e} in {missed}/{OUR_RUNS} runs]"
            row.update(ratio=ratio, ratio_is_lower_bound=lower, comparison=comparison)
            rows.append(row)
            doc["summary"].append(
                {
                    **base,
                    "ours_status": ours["status"],
                    "ours_seconds": ours_s,
                    "ours_rel_gap": ours.get("rel_gap"),
                    "ours_target_rel_gap": target,
                    "ours_converged_runs": ours.get("converged_runs"),
                    "ours_seconds_over_grad_eval": ours.get("seconds_over_grad_eval"),
                    "ours_gradient_evaluations": ours.get("gradient_evaluations"),
                    "ours_seconds_at_max_target": (
                        ours["at_extra_target"]["seconds"] if "at_extra_target" in ours else ours_s
                    ),
                    **{f"{s}_status": row[s]["status"] for s in CVXPY_SOLVERS},
                    **{f"{s}_seconds": row[s].get("solve_seconds") for s in CVXPY_SOLVERS},
                    **{f"{s}_rel_gap": row[s].get("rel_gap") for s in CVXPY_SOLVERS},
                    "fastest_cvxpy": fastest_name,
                    "fastest_cvxpy_rel_gap": cg,
                    "ratio_fastest_cvxpy_over_ours": ratio,
                    "ratio_is_lower_bound": lower,
                    "cvxpy_gap_worse_than_ours": (
                        None if cg is None or ours_s is None else bool(cg > ours["rel_gap"])
                    ),
                    "loadavg": os.getloadavg(),
                    "ours_contention_probe_ms": ours.get("contention_probe_ms_worst"),
                    "ours_contended": ours.get("contended"),
                    "ours_contended_attempts": len(ours.get("contended_attempts", [])),
                    "ours_code_changed_since_start": ours["code_changed_since_start"],
                }
            )
            write_json(args.out, doc)
        print_table(loss, rows, args.timeout, args.max_target, args.contention_threshold_ms)
    doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(args.out, doc)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
