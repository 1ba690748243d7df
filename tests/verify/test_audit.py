"""Audits: the plan, the Python API, the CLI round trip, JSON Schema, replay, resume, point audits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from landscapes.io import load_problem, save_problem
from landscapes.lora import LoRAPoint, balanced_factors, minimize_lora
from landscapes.nuc import solve_nuc
from landscapes.synthetic import gaussian_problem, teacher_problem
from verify.cli.main import main
from verify.jlr.rank import check_jlr_rank_nuc
from verify.run.audits import (
    AUDIT_SCHEMA,
    AuditTask,
    audit,
    plan_audit,
    read_audit,
    replay_options,
    write_audit,
)
from verify.run.points import audit_point, load_point

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sq():
    return gaussian_problem(K=1, N=10, blocks=[(8, 6)], lam=0.05, seed=0)


@pytest.fixture(scope="module")
def sq_file(tmp_path_factory, sq):
    path = tmp_path_factory.mktemp("audit") / "sq.npz"
    save_problem(sq, path)
    return path


def _validate(data):
    jsonschema.Draft202012Validator.check_schema(AUDIT_SCHEMA)
    jsonschema.validate(data, AUDIT_SCHEMA)


# ---- planning ------------------------------------------------------------------------------------


def test_default_plan_depends_on_loss_and_blocks(sq):
    claims = [t.claim for t in plan_audit(sq)]
    assert claims == [
        "JLR-rank-FT",
        "JLR-rank-NUC",
        "JLR-equiv",
        "JLR-magnitude",
        "JLR-zero-saddle",
        "JLR-no-spurious",
    ]
    ce = gaussian_problem(K=2, N=6, blocks=[(5, 4), (4, 4)], lam=0.05, loss="cross_entropy", seed=1)
    claims = [t.claim for t in plan_audit(ce)]
    assert "JLR-rank-FT" not in claims and "JLR-rank-NUC" not in claims and "JLR-rank-blocks" in claims


def test_ranks_route_to_the_right_side_of_the_bound(sq):
    # KN = 10: r = 4 has r(r+1)/2 = 10 <= 10 (below), r = 5 and 7 are above
    plan = plan_audit(sq, ranks=[4, 5, 7])
    ranked = [(t.claim, t.options["rank"]) for t in plan if "rank" in t.options]
    assert ranked == [("JLR-spurious-below", 4), ("JLR-no-spurious", 5), ("JLR-no-spurious", 7)]


def test_explicit_claims_and_options(sq):
    plan = plan_audit(
        sq, claims=["JLR-no-spurious"], ranks=[2, 6], options={"JLR-no-spurious": {"n_starts": 3}}
    )
    assert [dict(t.options) for t in plan] == [{"n_starts": 3, "rank": 2}, {"n_starts": 3, "rank": 6}]
    assert plan_audit(sq, claims=[]) == ()


# ---- the API -------------------------------------------------------------------------------------


def test_audit_holds_on_a_small_problem_and_json_validates(sq, tmp_path):
    res = audit(sq, options={"JLR-no-spurious": {"n_starts": 4}}, progress=False)
    assert res.complete and res.exit_code == 0, res.table()
    assert all(v.status == "holds" for v in res.verdicts)
    data = res.to_dict()
    _validate(data)
    path = write_audit(res, tmp_path / "a.json")
    again = read_audit(path)
    assert again["counts"] == {"holds": len(res.verdicts), "violated": 0, "inconclusive": 0}
    assert [v["request"] for v in again["verdicts"]] == [t.to_dict() for t in res.tasks]
    assert "holds" in res.table()


def test_audit_point_global_and_not_global(sq):
    sol = solve_nuc(sq, gap_rtol=1e-12)
    # the balanced factors of the NUC solution, padded to rank 5: a global minimizer
    pt = balanced_factors(sol.D, rank=5)
    pa = audit_point(sq, pt, solution=sol)
    assert pa.status == "global" and pa.is_sosp
    assert pa.excess_upper <= 1e-8 and pa.nuc_ranks == sol.ranks
    # a scaled copy: stationary nowhere, and its objective exceeds min NUC -> certified not global
    bad = LoRAPoint(tuple(2.0 * u for u in pt.U), pt.V)
    pb = audit_point(sq, bad, solution=sol)
    assert pb.status == "not global" and not pb.is_sosp and pb.excess_lower > 1e-6
    # rank 1 below the NUC rank: F exceeds min NUC, but no admissible rank-1 point is known to
    # beat it (the truncated NUC solution is worse), so undecided -- never "not global"
    r1 = minimize_lora(sq, rank=1, seed=0, max_iter=2000).point
    pc = audit_point(sq, r1, solution=sol)
    assert sol.ranks[0] > 1 and pc.status == "undecided" and pc.excess_lower > 1e-8


def test_point_audit_through_audit_and_schema(sq):
    pt = minimize_lora(sq, rank=5, seed=1, max_iter=3000).point
    res = audit(sq, claims=[], point=pt, progress=False)
    assert res.verdicts == () and res.point is not None and res.point.status == "global"
    _validate(res.to_dict())


# ---- point files ---------------------------------------------------------------------------------


def test_load_point_layouts_agree(sq, tmp_path):
    g = torch.Generator().manual_seed(0)
    U = torch.randn(8, 3, generator=g, dtype=torch.float64)
    V = torch.randn(6, 3, generator=g, dtype=torch.float64)
    D = U @ V.T
    np.savez(tmp_path / "uv.npz", U0=U.numpy(), V0=V.numpy())
    # PEFT convention: D = s B A with B = U, A = V^T / s
    s = 4.0
    np.savez(tmp_path / "ba.npz", B0=U.numpy(), A0=(V.T / s).numpy(), scale=np.array(s))
    from safetensors.numpy import save_file

    peft = tmp_path / "adapter"
    peft.mkdir()
    save_file(
        {
            "base_model.model.layer.dense.lora_A.weight": np.ascontiguousarray((V.T / 2.0).numpy()),
            "base_model.model.layer.dense.lora_B.weight": U.numpy(),
        },
        str(peft / "adapter_model.safetensors"),
    )
    (peft / "adapter_config.json").write_text(json.dumps({"r": 3, "lora_alpha": 6}))  # s = 2
    for path, layout in ((tmp_path / "uv.npz", "UV"), (tmp_path / "ba.npz", "BA"), (peft, "peft")):
        pt, info = load_point(path, sq)
        assert info["layout"] == layout
        torch.testing.assert_close(pt.U[0] @ pt.V[0].T, D, rtol=1e-12, atol=1e-12)
    # an explicit scale wins over the adapter config
    pt, info = load_point(peft, sq, scale=1.0)
    torch.testing.assert_close(pt.U[0] @ pt.V[0].T, D / 2.0, rtol=1e-12, atol=1e-12)


def test_peft_adapters_are_matched_to_blocks_by_target_names(tmp_path):
    P = gaussian_problem(K=1, N=6, blocks=[(4, 3), (5, 2)], lam=0.1, seed=2)
    from landscapes.problem import Problem

    P = Problem(
        P.J,
        P.f0,
        P.y,
        loss="squared",
        blocks=P.blocks,
        lam=P.lam,
        meta={"targets": ["l.q.weight", "l.v.weight"]},
    )
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    Bq, Aq = rng.standard_normal((4, 2)), rng.standard_normal((2, 3))
    Bv, Av = rng.standard_normal((5, 2)), rng.standard_normal((2, 2))
    # stored in the "wrong" order: matching is by name, not by position
    save_file(
        {
            "base_model.model.l.v.lora_A.weight": Av,
            "base_model.model.l.v.lora_B.weight": Bv,
            "base_model.model.l.q.lora_A.weight": Aq,
            "base_model.model.l.q.lora_B.weight": Bq,
        },
        str(tmp_path / "adapter_model.safetensors"),
    )
    pt, _ = load_point(tmp_path / "adapter_model.safetensors", P, scale=1.0)
    with pytest.raises(ValueError, match="needs --scale"):
        load_point(tmp_path / "adapter_model.safetensors", P)
    np.testing.assert_allclose((pt.U[0] @ pt.V[0].T).numpy(), Bq @ Aq, rtol=1e-12)
    np.testing.assert_allclose((pt.U[1] @ pt.V[1].T).numpy(), Bv @ Av, rtol=1e-12)


# ---- CLI -----------------------------------------------------------------------------------------


def test_cli_round_trip_numpy_only_file(tmp_path, capsys):
    """A user writes a problem with numpy alone, audits it, reads the JSON."""
    rng = np.random.default_rng(0)
    N, K, m, n = 8, 1, 6, 5
    np.savez(
        tmp_path / "mine.npz",
        format="loracheck.problem",
        version=2,
        J=rng.standard_normal((K * N, m * n)),
        f0=np.zeros((N, K)),
        y=rng.standard_normal((N, K)),
        loss="squared",
        blocks=np.array([[m, n]]),
        lam=np.array([0.05]),
    )
    out = tmp_path / "audit.json"
    rc = main(["audit", str(tmp_path / "mine.npz"), "--json", str(out), "--no-progress"])
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    _validate(data)
    assert rc == data["exit_code"] == 0, text
    assert data["complete"] and data["counts"]["holds"] == len(data["verdicts"]) >= 5
    assert "JLR-rank-NUC" in text and "holds" in text


def test_cli_exit_codes_violated_and_inconclusive(sq_file, tmp_path):
    # a planted false claim through the options of a problem file saved as a counterexample
    P, _ = load_problem(sq_file)
    v = check_jlr_rank_nuc(P, rank_bound=0, save_dir=tmp_path / "cx")
    assert v.status == "violated" and v.counterexample
    out = tmp_path / "replay.json"
    rc = main(["audit", v.counterexample, "--json", str(out), "--no-progress"])
    data = json.loads(out.read_text())
    assert rc == 1 and [d["status"] for d in data["verdicts"]] == ["violated"]
    # the same verdict for the same reason (the audit's shared NUC solve is tighter, so the
    # solver's own numbers differ in the last digits)
    c0, c1 = v.to_dict()["certificate"], data["verdicts"][0]["certificate"]
    assert (
        c1["ranks"] == c0["ranks"] and data["verdicts"][0]["reason"].split(":")[0] == v.reason.split(":")[0]
    )
    assert c1["S_op_at_zero_over_lam"] == pytest.approx(c0["S_op_at_zero_over_lam"], rel=1e-9)
    # spurious search below the bound finds nothing on this problem: inconclusive, exit 2
    rc = main(["audit", str(sq_file), "--claims", "JLR-spurious-below", "--rank", "1", "--no-progress"])
    assert rc in (0, 2)


def test_replay_options_of_both_saving_modules(sq, tmp_path):
    from verify.jlr.second_order import check_jlr_no_spurious

    v = check_jlr_no_spurious(
        sq, n_starts=2, inits=("zero", "small"), perturbations=("none",), order=1, save_dir=tmp_path
    )
    assert v.status == "violated" and v.counterexample
    P, extras = load_problem(v.counterexample)
    task = replay_options(extras)
    assert isinstance(task, AuditTask) and task.claim == "JLR-no-spurious"
    again = audit(P, tasks=[task], progress=False)
    assert again.verdicts[0].status == "violated"
    assert replay_options({}) is None


def test_cli_point_audit_of_a_saved_counterexample(sq, tmp_path, capsys):
    from verify.jlr.second_order import check_jlr_no_spurious

    v = check_jlr_no_spurious(
        sq, n_starts=2, inits=("zero", "small"), perturbations=("none",), order=1, save_dir=tmp_path
    )
    rc = main(["audit", v.counterexample, "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 1 and "replaying" in text and "(the counterexample's point): " in text


def test_cli_resumes_an_interrupted_audit(sq_file, tmp_path, capsys):
    out = tmp_path / "a.json"
    args = [
        "audit",
        str(sq_file),
        "--claims",
        "JLR-rank-NUC",
        "JLR-magnitude",
        "--json",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    data = json.loads(out.read_text())
    # simulate a kill after the first verdict: the file as the audit writes it mid-way
    data["complete"] = False
    data["verdicts"] = data["verdicts"][:1]
    data["verdicts"][0]["reason"] = "MARKER: reused, not recomputed"
    out.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(args) == 0
    text = capsys.readouterr().out
    new = json.loads(out.read_text())
    assert "1 verdicts reused" in text and new["complete"]
    assert new["verdicts"][0]["reason"].startswith("MARKER") and len(new["verdicts"]) == 2
    # a finished audit is recomputed, and --fresh always recomputes
    assert main(args) == 0
    assert not json.loads(out.read_text())["verdicts"][0]["reason"].startswith("MARKER")


def test_resume_refuses_another_problem(sq, tmp_path):
    other = teacher_problem(K=1, N=10, blocks=[(8, 6)], lam=0.05, seed=1)
    res = audit(sq, claims=["JLR-magnitude"], progress=False)
    with pytest.raises(ValueError, match="resume: expected an audit of the same problem"):
        audit(other, claims=["JLR-magnitude"], resume=res.to_dict(), progress=False)


def test_published_schema_files_match(tmp_path):
    """docs/schemas/*.json are the schemas in the code (written by `loracheck schema KIND`)."""
    from verify.report import REPORT_SCHEMA

    for name, schema in (("audit-1.json", AUDIT_SCHEMA), ("report-1.json", REPORT_SCHEMA)):
        published = json.loads((ROOT / "docs" / "schemas" / name).read_text())
        assert published == json.loads(json.dumps(schema)), name


def test_console_script_audit_help():
    r = subprocess.run(
        [sys.executable, "-m", "verify.cli", "audit", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 0 and "--point" in r.stdout and "Exit codes" in r.stdout


def test_cli_audits_a_safetensors_problem_file(sq, tmp_path):
    save_problem(sq, tmp_path / "sq.safetensors")
    out = tmp_path / "a.json"
    assert (
        main(["audit", str(tmp_path / "sq.safetensors"), "--claims", "JLR-magnitude", "--json", str(out)])
        == 0
    )
    assert json.loads(out.read_text())["problem"]["sha256"] == sq.fingerprint()["sha256"]


def test_peft_rank_and_alpha_patterns(sq, tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    B, A = (
        torch.randn(8, 2, generator=g, dtype=torch.float64),
        torch.randn(2, 6, generator=g, dtype=torch.float64),
    )
    save_file(
        {"m.lin.lora_A.weight": A.to(torch.bfloat16), "m.lin.lora_B.weight": B.to(torch.bfloat16)},
        str(tmp_path / "adapter_model.safetensors"),
    )
    cfg = {"r": 8, "lora_alpha": 16, "rank_pattern": {"lin": 2}, "alpha_pattern": {"lin": 6}}
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    pt, info = load_point(tmp_path, sq)  # bf16 tensors read; s = 6 / 2 from the patterns
    assert info["scale"] == 3.0
    ref = 3.0 * B.to(torch.bfloat16).double() @ A.to(torch.bfloat16).double()
    torch.testing.assert_close(pt.U[0] @ pt.V[0].T, ref, rtol=1e-12, atol=1e-12)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
    with pytest.raises(ValueError, match="gives r = 8"):
        load_point(tmp_path, sq)


def test_point_audit_exit_codes(sq_file, sq, tmp_path):
    sol = solve_nuc(sq, gap_rtol=1e-12)
    pt = balanced_factors(sol.D, rank=5)
    np.savez(tmp_path / "good.npz", U0=pt.U[0].numpy(), V0=pt.V[0].numpy())
    np.savez(tmp_path / "bad.npz", U0=2 * pt.U[0].numpy(), V0=pt.V[0].numpy())
    base = ["audit", str(sq_file), "--claims", "none", "--point"]
    assert main([*base, str(tmp_path / "good.npz")]) == 0
    # not global, but not a stationary point: not a counterexample (exit 1 needs an exact spurious
    # local minimizer nearby, tests/verify/test_trust.py)
    assert main([*base, str(tmp_path / "bad.npz")]) == 2
    assert main([*base, str(tmp_path / "good.npz"), "--scale", "2"]) == 3  # no scale for U, V
