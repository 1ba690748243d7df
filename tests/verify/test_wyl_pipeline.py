"""WYL-first-step for the pipeline the reference code runs: sampled G (64 batches of 2), randomized SVD.

The tolerance is derived from the estimator (matrix Bernstein / Chebyshev on the per-example
gradients, Halko-Martinsson-Tropp on the sketch) and the gap sigma_2r - sigma_2r+1 (Wedin); each
status is pinned on a problem where it must come out, and a wrong pipeline run through the same
checker comes out ``violated``.
"""

import math

import pytest
import torch

import landscapes.inits as inits
from landscapes.inits import planted_gradient_problem
from landscapes.problem import Problem
from verify.wyl.checkers import check_wyl_first_step, pipeline_tolerance

# sigma_1..8 in [0.86, 1] (2r = 8 for r = 4), then a flat tail: the gap sigma_8 - sigma_9 is clear.
TOP = [1.0 - 0.02 * i for i in range(8)]


@pytest.fixture(scope="module")
def clear_gap():
    # N = 256 > 128: the sampled G uses half of the examples; per-example gradients spread 10 %
    return planted_gradient_problem(N=256, m=24, n=20, spectrum=TOP + [0.05] * 12, spread=0.1, seed=0)


def _pipeline(p, **kw):
    return check_wyl_first_step(p, rank=4, gradient="sampled", svd="randomized", **kw)


def test_pipeline_holds_within_its_derived_tolerance(clear_gap):
    v = _pipeline(clear_gap)
    assert v.status == "holds", v.reason
    (b,) = v.certificate["blocks"]
    assert v.certificate["examples_used"] == 128
    # the pipeline really is not exact here (N > 128), and the tolerance says something (< 1)
    assert 1e-6 < b["rel_error"] <= b["tolerance"] < 1
    # each measured error is inside its a priori bound
    assert 0 < b["sampling_error_2"] <= b["eps_sampling_bound"]
    assert 0 < b["sketch_residual_2"] <= b["eps_rsvd_bound"]
    assert b["gap"] > b["eps"]


def test_pipeline_verdict_follows_the_scale(clear_gap):
    p = clear_gap
    big = Problem(10.0 * p.J.matrix, p.f0, p.y, loss=p.loss, blocks=p.blocks, lam=p.lam, seed=p.seed)
    a, b = _pipeline(p), _pipeline(big)
    assert a.status == b.status == "holds"
    x, y = a.certificate["blocks"][0], b.certificate["blocks"][0]
    assert math.isclose(x["tolerance"], y["tolerance"], rel_tol=1e-9)
    assert math.isclose(x["rel_error"], y["rel_error"], rel_tol=1e-6)


def test_pipeline_is_inconclusive_near_degeneracy():
    # sigma_8 = 0.86, sigma_9 = 0.855: the gap is smaller than the estimator's error bound
    p = planted_gradient_problem(N=256, m=24, n=20, spectrum=TOP + [0.855] + [0.05] * 11, spread=0.1, seed=0)
    v = _pipeline(p)
    assert v.status == "inconclusive", v.reason
    (b,) = v.certificate["blocks"]
    assert b["gap_minus_eps"] <= 0 and "not larger than the perturbation bound" in v.reason


def test_pipeline_is_inconclusive_when_the_per_example_gradients_disagree():
    # per-example gradients as large as the mean gradient: the bound exceeds the step itself
    p = planted_gradient_problem(N=256, m=24, n=20, spectrum=TOP + [0.05] * 12, spread=1.0, seed=0)
    v = _pipeline(p)
    assert v.status == "inconclusive", v.reason
    assert v.certificate["blocks"][0]["tolerance"] >= 1


def test_a_wrong_pipeline_breaks_the_stated_tolerance(monkeypatch):
    # A slowly decaying (flat) tail of 92 singular values: the stated pipeline (q = 4r, niter = 4)
    # holds; a pipeline that silently sketches q = 2r columns without power iterations does not.
    p = planted_gradient_problem(N=160, m=100, n=100, spectrum=TOP + [0.02] * 92, spread=0.05, seed=0)
    good = _pipeline(p)
    assert good.status == "holds", good.reason
    real = inits.randomized_svd

    def sloppy(G, q, *, niter=4, generator=None):
        return real(G, 8, niter=0, generator=generator)

    monkeypatch.setattr(inits, "randomized_svd", sloppy)
    bad = _pipeline(p)
    assert bad.status == "violated", bad.reason
    (b,) = bad.certificate["blocks"]
    assert b["rel_error"] > b["tolerance"] > good.certificate["blocks"][0]["rel_error"]
    assert "||(I - QQ^T) G_hat||_2" in bad.reason  # the sketch is what broke its bound


def test_peft_variant_through_the_pipeline_is_refuted(clear_gap, tmp_path):
    v = check_wyl_first_step(
        clear_gap, rank=4, init="loraga-peft", gradient="sampled", svd="randomized", save_dir=tmp_path
    )
    assert v.status == "violated", v.reason
    # the saved problem and options replay through the audit to the same verdict
    from landscapes.io import load_problem
    from verify.run.audits import audit, replay_options

    P, extras = load_problem(v.counterexample)
    task = replay_options(extras)
    assert task is not None and task.options["gradient"] == "sampled" and task.options["svd"] == "randomized"
    assert [x.status for x in audit(P, tasks=[task], progress=False).verdicts] == ["violated"]


def test_the_pipeline_is_not_the_exact_step_on_more_than_128_examples(clear_gap):
    # planted false claim: "the pipeline gives the exact first step" (the old rtol, 1e-10)
    v = _pipeline(clear_gap, pipeline_rtol=1e-10)
    assert v.status == "violated" and "claimed 1e-10" in v.reason
    # with N <= 128 the sampled G is the full gradient: with an exact SVD the step is the exact one
    small = planted_gradient_problem(N=100, m=24, n=20, spectrum=TOP + [0.05] * 12, spread=0.1, seed=0)
    w = check_wyl_first_step(small, rank=4, gradient="sampled", pipeline_rtol=1e-10)
    assert w.status == "holds", w.reason
    assert w.certificate["examples_used"] == 100 and w.certificate["blocks"][0]["eps"] == 0.0


def test_the_wedin_bound_is_not_beaten_by_random_perturbations():
    # pipeline_tolerance is a theorem: the step from the exact SVD of G + E never exceeds it
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for _ in range(300):
        r = 2
        U, _ = torch.linalg.qr(torch.randn(12, 12, generator=gen, dtype=torch.float64))
        V, _ = torch.linalg.qr(torch.randn(10, 10, generator=gen, dtype=torch.float64))
        sig = torch.sort(torch.rand(10, generator=gen, dtype=torch.float64) ** 2, descending=True).values
        G = (U[:, :10] * sig) @ V.T
        E = torch.randn(12, 10, generator=gen, dtype=torch.float64)
        size = float(torch.rand(1, generator=gen)) * float(sig[3] - sig[4])  # up to the gap at 2r = 4
        E = E / torch.linalg.matrix_norm(E, ord=2) * size
        Uh, _, Vh = torch.linalg.svd(G + E, full_matrices=False)
        X = G @ Vh[:r].T @ Vh[:r] + Uh[:, r : 2 * r] @ Uh[:, r : 2 * r].T @ G
        G4 = (U[:, :4] * sig[:4]) @ V[:, :4].T
        bound, _ = pipeline_tolerance(sig, r, float(torch.linalg.matrix_norm(E, ord=2)))
        if math.isfinite(bound):
            worst = max(worst, float((X - G4).norm()) / bound)
    assert 0 < worst <= 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(gradient="batch"), "gradient: expected 'exact' or 'sampled'"),
        (dict(svd="lowrank"), "svd: expected 'full' or 'randomized'"),
        (dict(svd="randomized", sketch=5), r"sketch: expected None or an int >= 2 r = 8"),
        (dict(gradient="sampled", failure_probability=1.5), r"failure_probability: expected a float in \("),
        (dict(gradient="sampled", batches=0), "batches: expected a positive int"),
    ],
)
def test_bad_pipeline_options_name_the_argument(clear_gap, kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_wyl_first_step(clear_gap, rank=4, **kwargs)


def test_an_exact_pipeline_is_not_refuted_by_round_off():
    # N = 100 <= 128: the sampled G is the full G, and the SVD is exact, so eps = 0; the step is off
    # by ~1e-15 of round-off, which used to exceed tau = tau_post = 0 ('violated')
    p = planted_gradient_problem(N=100, m=24, n=20, spectrum=TOP + [0.05] * 12, spread=0.1, seed=0)
    v = check_wyl_first_step(p, rank=4, gradient="sampled")
    assert v.status == "holds", v.reason
    (b,) = v.certificate["blocks"]
    assert b["eps"] == 0 and 0 < b["rel_error"] <= b["roundoff_floor"] <= b["tolerance"] < 1e-10


def test_the_failure_probability_is_split_over_the_blocks():
    from landscapes import gaussian_problem
    from verify.wyl.checkers import _hmt_bound

    p = gaussian_problem(K=2, N=10, blocks=[(14, 12), (12, 16)], lam=0.01, loss="cross_entropy", seed=3)
    v = check_wyl_first_step(p, rank=3, svd="randomized", failure_probability=0.01)
    G = inits.full_gradient(p)
    for Gj, b in zip(G, v.certificate["blocks"]):
        # 2 parts x 2 blocks: each event gets 0.01 / 4 (it used to get 0.01 / 2 on every block)
        want = _hmt_bound(torch.linalg.svdvals(Gj), 6, b["sketch"], 4, 0.01 / 4)
        assert b["eps_rsvd_bound"] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("fac", [(20 / 24) ** 0.25, 1.05])
def test_a_wrong_scale_is_refuted_in_pipeline_mode(clear_gap, monkeypatch, fac):
    import dataclasses

    import verify.wyl.checkers as wyl

    real = inits.init_lora

    def bad(problem, name, **kw):
        ini = real(problem, name, **kw)
        B, A = tuple(b * fac for b in ini.B), tuple(a * fac for a in ini.A)
        return dataclasses.replace(ini, B=B, A=A, offset=tuple(ini.scale * (b @ a) for b, a in zip(B, A)))

    # c from d_in (or 5 % too large): the step is off by 9 % (10 %), inside the Wedin tolerance 0.61;
    # the scale checks that do not depend on G_hat catch it
    monkeypatch.setattr(wyl, "init_lora", bad)
    v = _pipeline(clear_gap)
    assert v.status == "violated" and "A0 A0^T = c^2 I_r" in v.reason, v.reason


@pytest.mark.parametrize("f", [1e-170, 1e74])
def test_the_pipeline_verdict_does_not_depend_on_the_scale_of_g(clear_gap, f):
    # |G| ~ 1e-170: squares underflow (it gave d = 0); the checker works in units of a power of two near
    # max |G|, so d and tau are those of the unscaled problem. Above 1.2e77 (the 4th root of the largest
    # float64) Problem refuses J itself (test_robustness); 1e74 is near the largest scale it accepts here
    p = clear_gap
    q = Problem(f * p.J.matrix, p.f0, p.y, loss=p.loss, blocks=p.blocks, lam=p.lam, seed=p.seed)
    ref, v = _pipeline(p).certificate["blocks"][0], _pipeline(q)
    assert v.status == "holds", v.reason
    (b,) = v.certificate["blocks"]
    assert b["rel_error"] == pytest.approx(ref["rel_error"], rel=1e-9)
    assert b["tolerance"] == pytest.approx(ref["tolerance"], rel=1e-9)
    assert b["G_norm"] == pytest.approx(f * ref["G_norm"], rel=1e-9)


def test_the_sketch_bound_is_zero_when_the_sketch_spans_the_smaller_side():
    from verify.wyl.checkers import _hmt_bound

    sv = torch.tensor([1.0, 0.9, 0.5, 0.4, 0.3, 0.2], dtype=torch.float64)
    assert _hmt_bound(sv, 2, 6, 0, 0.01) == 0.0  # q = min(m, n): Q Q^T G_hat = G_hat
    assert 0 < _hmt_bound(sv, 2, 5, 0, 0.01) < math.inf
