"""[KKR25] checkers: closed-form problems, planted false claims, the experiment file and its CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from landscapes.nonlinear import problems as nl
from landscapes.nonlinear.sosp import Factors
from landscapes.problem import Problem
from landscapes.synthetic import gaussian_problem
from verify.cli.main import main
from verify.counterexample import load_counterexample
from verify.kkr import checkers as kkr
from verify.kkr.experiment import kkr_experiment
from verify.kkr.training import KKR_PROBLEMS, classify, kkr_table, make_init, wilson_interval


@pytest.fixture(scope="module")
def special_evidence():
    p = nl.matrix_sensing(m=6, n=5, N=2000, rank=1, lam=0.05, seed=0)
    return kkr.collect_evidence(p, rank=3, radius=3.0, seeds=(0, 1, 2, 3, 4), samples=60)


@pytest.fixture(scope="module")
def well_evidence():
    """The double well with one start at its spurious rank-2 point (besides zero/small/large inits)."""
    lam = 0.05
    p = nl.double_well(lam=lam)
    s1, s2 = nl.double_well_points(lam)["spurious"]
    root = torch.diag(torch.tensor([abs(s1), abs(s2)], dtype=torch.float64).sqrt())
    near = Factors((-root + 0.01,), (root,))
    return kkr.collect_evidence(
        p, rank=2, radius=5.0, seeds=tuple(range(10)), samples=60, starts={"near-spurious": near}
    )


def test_special_regime_problem_holds_everything(special_evidence):
    ev = special_evidence
    assert ev.bounds.special_certified and ev.reference.certified
    # 33 LoRA parameters: every end point gets the dense curvature certificate.
    assert all(r["sosp_certified"] for r in ev.runs)
    for check in (kkr.check_kkr_special, kkr.check_kkr_magnitude):
        v = check(ev)
        assert v.status == "holds", (v.claim, v.reason)
    assert "certified SOSP(s) (dense Hessian)" in kkr.check_kkr_special(ev).reason
    # No loud failure here: the planted "quiet" claim holds on this problem.
    assert kkr.check_kkr_loud(ev, variant="quiet").status == "holds"
    # Theorem 1.2 and Corollary 1 are about the generic regime; here the special regime is certified.
    v = kkr.check_kkr_dichotomy(ev)
    assert v.status == "inconclusive" and "see KKR-special" in v.reason
    v = kkr.check_kkr_loud(ev)
    assert v.status == "inconclusive" and "generic regime" in v.reason, v.reason
    # 5/5 zero-init runs global (Wilson interval above 1/2), but every large init succeeds too:
    # without a failure there is no contrast, and the claim's other half is not exercised.
    v = kkr.check_kkr_bias(ev)
    assert v.status == "inconclusive" and "no contrast" in v.reason, v.reason
    assert v.certificate["contrast"]["against_failures"] == 0
    c = kkr.check_kkr_special(ev).certificate
    # The sampled constants lie within the structural bounds.
    assert c["bounds"]["alpha_lower"] <= c["alpha_hat"] and c["beta_hat"] <= c["bounds"]["beta_upper"]


def test_planted_false_magnitude_is_refuted():
    p = nl.matrix_sensing(m=6, n=5, N=300, rank=2, lam=0.3, seed=1)
    ev = kkr.collect_evidence(p, rank=3, seeds=(0,), inits=("zero",), samples=10)
    assert kkr.check_kkr_magnitude(ev).status == "holds"
    v = kkr.check_kkr_magnitude(ev, factor=0.1)
    assert v.status == "violated", v.reason


def test_double_well_refutes_planted_claims_and_rsc_fails(well_evidence, tmp_path):
    ev = well_evidence
    # "Every SOSP is global" and "every SOSP has rank <= r*": refuted by certified SOSPs.
    v = kkr.check_kkr_dichotomy(ev, variant="all-global", save_dir=tmp_path)
    assert v.status == "violated", v.reason
    saved = load_counterexample(v.counterexample)
    assert saved.claim == "KKR-dichotomy" and saved.kind == "nonlinear" and saved.record["points"]
    assert saved.source["catalog"]["name"] == "double-well" and "P0.A0" in saved.arrays
    v = kkr.check_kkr_dichotomy(ev, variant="low-rank")
    assert v.status == "violated" and "have rank > r* = 1" in v.reason and "rank 2" in v.reason
    # Theorem 1.1's conclusion without its hypothesis, and "no loud failure": both refuted.
    v = kkr.check_kkr_special(ev, variant="any-regime")
    assert v.status == "violated", v.reason
    assert kkr.check_kkr_special(ev).status == "inconclusive"  # the theorem: not in its regime
    v = kkr.check_kkr_loud(ev, variant="quiet")
    assert v.status == "violated" and "2 ||X*||_F" in v.reason, v.reason
    with pytest.raises(ValueError, match="variant"):
        kkr.check_kkr_loud(ev, variant="loud")
    # The theorem itself is not refuted: its hypothesis (RSC) fails on this set, witnessed.
    v = kkr.check_kkr_dichotomy(ev)
    assert v.status == "inconclusive" and "RSC fails" in v.reason
    assert v.certificate["alpha_hat"] <= 0
    # Zero init succeeds, large init fails: the planted "large random init is favoured" is refuted.
    b = kkr.check_kkr_bias(ev, favoured="large", against="zero")
    assert b.status == "violated", b.reason
    table = b.certificate["table"]
    assert table["zero"]["successes"] == table["zero"]["converged"] > 0
    assert table["large"]["failures"] > 0
    # Failures are loud: larger in norm than every success.
    assert table["all"]["separation_ratio"] > 2


def test_evidence_from_a_problem_and_bad_options():
    p = nl.double_well()
    v = kkr.check_kkr_magnitude(p, collect={"seeds": (0,), "inits": ("zero",), "samples": 5, "rank": 2})
    assert v.claim == "KKR-magnitude" and v.certificate["points"]
    with pytest.raises(ValueError, match="collect"):
        kkr.check_kkr_special(p, collect={"sedes": (0,)})
    with pytest.raises(TypeError, match="problem"):
        kkr.check_kkr_special(gaussian_problem(K=1, N=4, blocks=[(3, 3)], lam=0.1))
    with pytest.raises(ValueError, match="variant"):
        kkr.check_kkr_dichotomy(p, variant="nope", collect={"seeds": (0,), "inits": ("zero",), "samples": 5})
    with pytest.raises(ValueError, match="inits"):
        kkr.collect_evidence(p, inits=("loraga",))
    with pytest.raises(ValueError, match="init"):
        make_init(p, "huge", rank=2, seed=0)


def test_includes_jlr_is_refuted_by_a_null_direction():
    q = gaussian_problem(K=1, N=8, blocks=[(10, 6)], lam=0.05, seed=8)
    v = kkr.check_kkr_includes_jlr(q, eps=1e-3, form="ridge")
    assert v.status == "violated", v.reason
    row = v.certificate["forms"]["ridge"]
    # Along the null direction the predictions do not move: the RSC ratio is exactly eps.
    assert row["null_residual"] < 1e-12
    assert row["alpha_upper"] == pytest.approx(1e-3, rel=1e-8)
    assert abs(v.certificate["forms"]["none"]["alpha_upper"]) < 1e-10
    assert v.certificate["forms"]["none"]["beta_lower"] > 2 * 1e-3


def test_includes_jlr_holds_when_eps_dominates_the_curvature():
    q = gaussian_problem(K=1, N=60, blocks=[(6, 5)], lam=0.05, seed=0)
    tiny = Problem(q.J.matrix * 1e-3, q.f0, q.y, loss="squared", blocks=[(6, 5)], lam=0.05)
    assert kkr.check_kkr_includes_jlr(tiny, eps=1.0, form="ridge").status == "holds"
    assert kkr.check_kkr_includes_jlr(tiny, eps=1.0, form="none").status == "violated"
    with pytest.raises(ValueError, match="form"):
        kkr.check_kkr_includes_jlr(q, form="quadratic")
    with pytest.raises(TypeError, match="Problem"):
        kkr.check_kkr_includes_jlr(nl.double_well())


def test_classification_and_wilson_interval():
    run = {"status": "finished", "sosp": True, "penalized": 1.0}
    assert classify(run, 1.0) == "global"
    assert classify(dict(run, penalized=1.1), 1.0) == "spurious"
    assert classify(dict(run, sosp=False), 1.0) == "not-sosp"
    lo, hi = wilson_interval(5, 5)
    assert lo == pytest.approx(0.5655, abs=1e-3) and hi == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    base = {"status": "finished", "sosp": True}
    rows = [
        dict(base, init="zero", penalized=1.0, frobenius=1.0, ranks=[1]),
        dict(base, init="large", penalized=2.0, frobenius=3.0, ranks=[2]),
    ]
    t = kkr_table([dict(r, test_risk=0.0) for r in rows], {"value": 1.0})
    assert t["all"]["separation_ratio"] == 3.0 and t["zero"]["successes"] == 1 and t["large"]["failures"] == 1


def test_experiment_file_resume_and_refusals(tmp_path):
    out = tmp_path / "kkr.json"
    opts = {"inits": ("zero", "large"), "seeds": (0,), "samples": 10, "progress": False}
    d = kkr_experiment(["double-well"], out=out, **opts)
    entry = d["configurations"]["double-well"]
    assert entry["table"]["large"]["failures"] == 1 and entry["table"]["zero"]["successes"] == 1
    assert set(entry["verdicts"]) == {"KKR-special", "KKR-dichotomy", "KKR-loud", "KKR-magnitude", "KKR-bias"}
    first = json.loads(out.read_text())
    again = kkr_experiment(["double-well"], out=out, **opts)
    assert again["configurations"]["double-well"]["runs"] == first["configurations"]["double-well"]["runs"]
    with pytest.raises(ValueError, match="another configuration"):
        kkr_experiment(["double-well"], out=out, inits=("zero",), seeds=(0,), samples=10, progress=False)
    (tmp_path / "bad.json").write_text('{"format": "loracheck.speed/1"}')
    with pytest.raises(ValueError, match="expected a file of format 'loracheck.kkr', version 1"):
        kkr_experiment(["double-well"], out=tmp_path / "bad.json", seeds=(0,), progress=False)
    with pytest.raises(ValueError, match="problems"):
        kkr_experiment(["nope"], out=out, progress=False)


def test_an_interrupted_experiment_keeps_its_runs(tmp_path, monkeypatch):
    import verify.kkr.experiment as kr

    out = tmp_path / "kkr.json"
    real = kr.kkr_run
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(kr, "kkr_run", flaky)
    with pytest.raises(KeyboardInterrupt):
        kkr_experiment(["double-well"], out=out, inits=("zero",), seeds=(0, 1), samples=5, progress=False)
    kept = json.loads(out.read_text())["configurations"]["double-well"]["runs"]
    assert [r["seed"] for r in kept] == [0]
    monkeypatch.setattr(kr, "kkr_run", real)
    d = kkr_experiment(["double-well"], out=out, inits=("zero",), seeds=(0, 1), samples=5, progress=False)
    assert [r["seed"] for r in d["configurations"]["double-well"]["runs"]] == [0, 1]


def test_cli_kkr(tmp_path, capsys):
    code = main(
        ["kkr", "--problems", "double-well", "--inits", "zero", "large", "--seeds", "1", "--samples", "5",
         "--out", str(tmp_path), "--no-progress"]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0 and "double-well" in text and "KKR-dichotomy" in text and "spur" in text
    assert main(["kkr", "--problems", "nope", "--out", str(tmp_path)]) == 3
    assert "--problems" in capsys.readouterr().err
    assert main(["kkr", "--inits", "huge", "--out", str(tmp_path)]) == 3
    assert main(["kkr", "--seeds", "0", "--out", str(tmp_path)]) == 3


def test_named_configurations_build_and_fit_their_rank():
    from verify.kkr.training import build_kkr_problem

    for name, spec in KKR_PROBLEMS.items():
        if spec["builder"] == "minilm":
            continue  # the real model: tests/landscapes/test_minilm_nonlinear.py
        p = build_kkr_problem(name)
        r = spec["train"]["rank"]
        assert r <= min(min(b) for b in p.blocks), name
        assert all(lam > 0 for lam in p.lam) and math.isfinite(p.value(p.zeros())), name
    with pytest.raises(ValueError, match="problem"):
        build_kkr_problem("nope")


def test_sgd_rank_bound_holds_on_converged_gd_and_refutes_a_planted_bound():
    p = nl.two_layer(m=10, n=8, N=8, rank=1, lam=0.05, seed=0)
    v = kkr.check_kkr_sgd_rank(p, batch=8, lr=0.5, steps=5000)
    # Full-batch SGD converges; the lemma's bounds (657 and up at mu lam = 0.025) exceed every
    # possible rank, so the lemma cannot fail here and the verdict says so.
    assert v.status == "inconclusive" and "vacuous" in v.reason, v.reason
    assert v.certificate["spread"] < 1e-6
    assert all(r["rank_spectral"] <= r["bound"] for r in v.certificate["rows"])
    # The lemma's bound, shrunk 1000x, falls below the measured rank: refuted.
    assert kkr.check_kkr_sgd_rank(p, batch=8, lr=0.5, steps=5000, factor=1e-3).status == "violated"
    # Minibatches of 2 do not converge here (the batch gradients do not vanish at the limit).
    v = kkr.check_kkr_sgd_rank(p, batch=2, lr=0.5, steps=2000)
    assert v.status == "inconclusive" and "did not converge" in v.reason
    with pytest.raises(ValueError, match="batch"):
        kkr.check_kkr_sgd_rank(p, batch=9)
    with pytest.raises(ValueError, match="batch_risk"):
        kkr.check_kkr_sgd_rank(nl.double_well())
    with pytest.raises(ValueError, match="eps"):
        kkr.check_kkr_sgd_rank(p, eps=(5.0,))
    with pytest.raises(ValueError, match="lr"):
        kkr.check_kkr_sgd_rank(p, lr=30.0)
    with pytest.raises(ValueError, match="init"):
        kkr.check_kkr_sgd_rank(p, init="loraga")


def test_outside_the_theorems_is_inconclusive():
    # r < r*: no LoRA point of rank r reaches X*; nothing may be called violated.
    p = nl.matrix_sensing(m=6, n=5, N=2000, rank=3, lam=0.01, seed=0)
    ev = kkr.collect_evidence(p, rank=2, seeds=(0,), inits=("zero",), samples=10)
    assert ev.reference.rank == 3
    for check in (kkr.check_kkr_special, kkr.check_kkr_dichotomy, kkr.check_kkr_loud):
        v = check(ev)
        assert v.status == "inconclusive" and "r* = 3" in v.reason, (v.claim, v.reason)
    # Two adapted matrices: Theorem 1.2 and Corollary 1 are about one.
    two = nl.from_problem(gaussian_problem(K=1, N=30, blocks=[(4, 3), (3, 3)], lam=0.05, seed=1))
    ev2 = kkr.collect_evidence(two, rank=3, seeds=(0,), inits=("zero",), samples=10)
    for check in (kkr.check_kkr_dichotomy, kkr.check_kkr_loud):
        v = check(ev2)
        assert v.status == "inconclusive" and "one adapted matrix" in v.reason, (v.claim, v.reason)


def test_uncertified_global_is_never_holds_in_loud():
    p = nl.nonlinear_sensing(m=6, n=5, N=200, rank=1, lam=0.01, seed=0)
    ev = kkr.collect_evidence(p, rank=3, seeds=(0, 1), inits=("zero",), samples=30)
    assert not ev.reference.certified
    v = kkr.check_kkr_loud(ev)
    assert v.status == "inconclusive", v.reason


def test_magnitude_at_a_zero_minimizer():
    # lam so large that X* = 0: points within round-off of the reference are not violations.
    p = nl.matrix_sensing(m=4, n=3, N=100, rank=1, lam=5.0, seed=0)
    ev = kkr.collect_evidence(p, rank=2, seeds=(0, 1), inits=("small",), samples=5)
    assert ev.reference.frobenius == 0.0
    assert kkr.check_kkr_magnitude(ev).status == "holds"


def test_more_bad_options(special_evidence, tmp_path):
    with pytest.raises(ValueError, match="favoured"):
        kkr.check_kkr_bias(special_evidence, favoured="zeros")
    with pytest.raises(ValueError, match="global_rtol"):
        kkr.check_kkr_loud(special_evidence, global_rtol=0.0)
    q = gaussian_problem(K=1, N=8, blocks=[(10, 6)], lam=0.05, seed=8)
    with pytest.raises(ValueError, match="rank"):
        kkr.check_kkr_includes_jlr(q, rank=0)
    with pytest.raises(ValueError, match="seeds"):
        kkr.collect_evidence(nl.double_well(), seeds=(0, 0))
    from verify.kkr.experiment import kkr_paper_tables

    out = tmp_path / "t.json"
    kkr_paper_tables("double-well", out=out, lams=(0.05,), ranks=(2,), samples=5, progress=False)
    with pytest.raises(ValueError, match=r"holds tables of another configuration \(at \['lams'\]\[0\]\)"):
        kkr_paper_tables("double-well", out=out, lams=(0.1,), ranks=(2,), samples=5, progress=False)
    d = kkr_paper_tables(
        "double-well", out=out, lams=(0.1,), ranks=(2,), samples=5, fresh=True, progress=False
    )
    assert d["table1"][0]["lam"] == 0.1 and d["table1"][0]["rank"] == 1


def test_experiment_loraga_and_reference_refinement(tmp_path, monkeypatch):
    """A tiny configuration: LoRA-GA's own (shifted) problem, and a poor first reference refined by a run."""
    import verify.kkr.training as kr

    tiny = {
        "builder": "two_layer",
        "kwargs": {"m": 6, "n": 5, "N": 30, "rank": 1, "lam": 0.01, "seed": 0},
        # reference_iter = 1: the first reference is one proximal step from zero, far from the minimum.
        "train": {"rank": 2, "steps": 300, "lr": 0.05, "radius": 3.0, "reference_iter": 1},
    }
    monkeypatch.setitem(kr.KKR_PROBLEMS, "tiny", tiny)
    d = kkr_experiment(["tiny"], out=tmp_path / "kkr.json", inits=("zero", "loraga"), seeds=(0,), samples=5,
                       progress=False)  # fmt: skip
    e = d["configurations"]["tiny"]
    assert e["reference_refined_from_run"]["init"] == "zero"
    # The constants were re-measured about the refined reference.
    assert e["constants_about_reference_value"] == e["reference"]["value"]
    zero = next(r for r in e["runs"] if r["init"] == "zero")
    assert (
        zero["reference_value"] == e["reference"]["value"]
        and classify(zero, zero["reference_value"]) == "global"
    )
    lg = next(r for r in e["runs"] if r["init"] == "loraga")
    assert lg["shifted"] and lg["shifted_reference"] in e["shifted_references"]
    sref = e["shifted_references"][lg["shifted_reference"]]
    assert lg["reference_value"] == sref["value"]
    # Its own (shifted) reference started as poor as the base one and was refined from the run.
    assert sref["refined_from_run"] == ["loraga", 0] and lg["penalized"] >= sref["value"]
    assert "loraga" in e["table"] and e["table"]["all"]["runs"] == 1  # "all" leaves the shifted problem out


def test_truncated_run_is_certified_through_the_zero_column_splitting():
    """kkr_run(truncate=True): a zero-init run with weight decay on rank-2 sensing at LoRA rank 4
    ends with two exactly zero columns; the certificate splits them off (closed form) and matches
    the whole-Hessian Lanczos of the same point; the truncation moved X by round-off only."""
    from landscapes.nonlinear.sosp import inactive_columns, lambda_min_lora
    from verify.kkr.training import end_point_matrices, kkr_run

    p = nl.matrix_sensing(m=7, n=5, N=60, rank=2, lam=0.02, seed=0)
    start, _ = make_init(p, "zero", rank=4, seed=0)
    # dense_max=0: the reduced part by Lanczos, so the point is an approximate SOSP only.
    run = kkr_run(p, start, steps=1500, lr=0.02, polish=500, grad_tol=1e-11, truncate=True, dense_max=0)
    assert run["status"] == "finished" and run["truncated"] and run["sosp"]
    assert not run["sosp_certified"]
    assert tuple(run["ranks"]) == (2,) and run["truncation_change"] <= 1e-8
    assert run["lambda_min_method"] == "zero-columns+lanczos-autodiff"
    assert run["lambda_min_reduced_params"] == 2 * (7 + 5)
    end = Factors(
        tuple(torch.tensor(a, dtype=torch.float64) for a in run["A"]),
        tuple(torch.tensor(b, dtype=torch.float64) for b in run["B"]),
    )
    assert inactive_columns(end) == ((2, 3),)
    assert torch.allclose(end.A[0] @ end.B[0].T, end_point_matrices(run, p)[0])
    whole = lambda_min_lora(p, end, tol=1e-12, structured=False)
    assert whole.converged
    assert abs(whole.value - run["lambda_min"]) <= 1e-8 * max(1.0, abs(run["lambda_max"]))


def test_recertify_saved_end_points(tmp_path, capsys, monkeypatch):
    """loracheck kkr --recertify: the saved end points of a double-well file are truncated, polished
    and certified with a dense Hessian (rigorous lower bound); the classes agree with the saved
    ones (one global, one spurious of the closed-form double well); a re-run skips done runs;
    bad requests and foreign files are refused."""
    from verify.kkr.experiment import kkr_recertify

    args = ["kkr", "--problems", "double-well", "--inits", "zero", "large", "--seeds", "1", "--samples", "5",
            "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    # Unmark the saved zero:0 end point's certificate: the re-certified table must count it again.
    path = tmp_path / "kkr.json"
    saved_file = json.loads(path.read_text())
    saved_file["configurations"]["double-well"]["runs"][0]["sosp"] = False
    path.write_text(json.dumps(saved_file))
    saved_table = saved_file["configurations"]["double-well"]["table"]
    assert main(["kkr", "--out", str(tmp_path), "--recertify", "zero:0", "large:0"]) == 0
    text = capsys.readouterr().out
    assert "zero:0" in text and "large:0" in text and "dense-autodiff" in text
    assert "in place of the saved ones" in text and "KKR-dichotomy" in text
    data = json.loads((tmp_path / "kkr-recertified.json").read_text())
    saved = saved_file["configurations"]["double-well"]["runs"]
    by_run = {(r["init"], r["seed"]): r for r in saved}
    assert [(r["init"], r["seed"]) for r in data["runs"]] == [("zero", 0), ("large", 0)]
    for r in data["runs"]:
        lm = r["end_point"]["lambda_min"]
        assert lm["lower_is_rigorous"] and lm["converged"] and lm["lower"] <= lm["value"]
        assert r["change_frobenius"] <= 1e-6
        assert r["saved"]["penalized"] == by_run[(r["init"], r["seed"])]["penalized"]
    assert [(r["saved_class"], r["class"]) for r in data["runs"]] == [
        ("not-sosp", "global"),
        ("spurious", "spurious"),
    ]
    # The table and verdicts count the re-certified end points instead of the saved ones.
    assert saved_table["zero"]["converged"] == 1  # written before the certificate was unmarked
    assert data["recertified"] == [["zero", 0], ["large", 0]]
    t = data["table"]
    assert (t["zero"]["successes"], t["large"]["failures"], t["all"]["converged"]) == (1, 1, 2)
    assert set(data["verdicts"]) == {"KKR-special", "KKR-dichotomy", "KKR-loud", "KKR-magnitude", "KKR-bias"}
    # The same classes as the saved file's (before the unmarking): the same verdicts.
    saved_verdicts = saved_file["configurations"]["double-well"]["verdicts"]
    assert {k: v["status"] for k, v in data["verdicts"].items()} == {
        k: v["status"] for k, v in saved_verdicts.items()
    }
    before = (tmp_path / "kkr-recertified.json").read_text()
    import verify.kkr.experiment as kr

    with monkeypatch.context() as mp:  # nothing added: the stored table and verdicts are returned
        mp.setattr(kr, "_verdicts", lambda *a, **k: pytest.fail("the verdicts were recomputed"))
        again = kkr_recertify(tmp_path / "kkr.json", [("zero", 0)], out=tmp_path / "kkr-recertified.json")
    assert (tmp_path / "kkr-recertified.json").read_text() == before  # done runs are skipped
    assert again["table"] == data["table"] and again["verdicts"] == data["verdicts"]
    # The source changes (the saved large:0 run is marked not converged): the table is recomputed.
    changed = json.loads(path.read_text())
    changed["configurations"]["double-well"]["runs"][1]["status"] = "not-converged"
    path.write_text(json.dumps(changed))
    calls = []
    with monkeypatch.context() as mp:
        mp.setattr(kr, "_verdicts", lambda *a, _v=kr._verdicts, **k: calls.append(1) or _v(*a, **k))
        redone = kkr_recertify(tmp_path / "kkr.json", [("zero", 0)], out=tmp_path / "kkr-recertified.json")
    # zero:0's source run is unchanged: its re-certification is reused; large:0's changed: dropped
    assert calls == [1] and redone["basis"] != data["basis"] and redone["runs"] == data["runs"][:1]
    assert main(["kkr", "--out", str(tmp_path), "--recertify", "zero"]) == 3
    assert "--recertify: expected INIT:SEED" in capsys.readouterr().err
    assert main(["kkr", "--out", str(tmp_path), "--recertify", "small:0"]) == 3
    assert "runs: expected finished (init, seed) runs" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "x"}))
    with pytest.raises(ValueError, match="source: expected a file of format 'loracheck.kkr', version 1"):
        kkr_recertify(other, [("zero", 0)], out=tmp_path / "o.json")
    with pytest.raises(ValueError, match="out: expected a file of format 'loracheck.kkr-recertified'"):
        kkr_recertify(tmp_path / "kkr.json", [("zero", 0)], out=other)
    # The source is identified by its content, not its path: a moved copy resumes (nothing redone);
    # a changed source run (say, retrained) makes its re-certification be redone, never reused.
    moved = tmp_path / "moved" / "kkr.json"
    moved.parent.mkdir()
    moved.write_text((tmp_path / "kkr.json").read_text())
    again = kkr_recertify(moved, [("zero", 0)], out=tmp_path / "kkr-recertified.json")
    assert again["runs"] == redone["runs"] and again["source"] == str(moved)
    src = json.loads(moved.read_text())
    (run0,) = [
        r
        for r in next(iter(src["configurations"].values()))["runs"]
        if (r["init"], r["seed"]) == ("zero", 0)
    ]
    run0["penalized"] = run0["penalized"] * 2  # the run's saved record changed
    moved.write_text(json.dumps(src))
    stale = kkr_recertify(moved, [("zero", 0)], out=tmp_path / "kkr-recertified.json")
    assert stale["runs"][0]["source_sha256"] != redone["runs"][0]["source_sha256"]
    assert [(r["init"], r["seed"]) for r in stale["runs"]] == [("zero", 0)]


def test_recertify_refuses_runs_with_a_loraga_offset(tmp_path):
    """A LoRA-GA run's factors belong to its shifted problem: re-certifying them on the base
    problem would be wrong, so it is refused (the file is edited to mark a run as shifted)."""
    from verify.kkr.experiment import kkr_recertify

    assert main(["kkr", "--problems", "double-well", "--inits", "zero", "--seeds", "1", "--samples", "5",
                 "--out", str(tmp_path), "--no-progress"]) == 0  # fmt: skip
    path = tmp_path / "kkr.json"
    data = json.loads(path.read_text())
    data["configurations"]["double-well"]["runs"][0]["shifted"] = True
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="runs with a weight offset"):
        kkr_recertify(path, [("zero", 0)], out=tmp_path / "r.json")
