"""Second-order checkers: JLR-no-spurious, JLR-spurious-below, JLR-gd (and their planted variants)."""

import numpy as np
import pytest

from landscapes import gaussian_problem, load_problem
from verify.jlr.second_order import check_jlr_gd, check_jlr_no_spurious, check_jlr_spurious_below


@pytest.mark.parametrize("loss, K", [("squared", 1), ("cross_entropy", 2)])
def test_no_spurious_holds_above_the_bound(loss, K):
    P = gaussian_problem(K=K, N=8 // K, blocks=[(9, 8)], lam=0.01, loss=loss, seed=2)
    v = check_jlr_no_spurious(P, n_starts=6)
    assert v.status == "holds", v.reason
    runs = v.certificate["runs"]
    assert {r["perturbation"] for r in runs} == {"none", "symmetric", "linear"}
    assert all(r["stationary"] and r["certified_global"] for r in runs)
    for r in runs:
        if r["perturbation"] == "none":
            assert r["objective_minus_nuc"] <= 1e-8


def test_planted_every_first_order_point_is_global_is_refuted(tmp_path):
    P = gaussian_problem(K=1, N=8, blocks=[(7, 6)], lam=0.01, seed=3)
    v = check_jlr_no_spurious(
        P, n_starts=2, inits=("zero", "small"), perturbations=("none",), order=1, save_dir=tmp_path
    )
    assert v.status == "violated", v.reason
    assert v.counterexample is not None
    loaded, extra = load_problem(v.counterexample)
    assert loaded.fingerprint()["sha256"] == P.fingerprint()["sha256"]
    assert np.abs(extra["U0"]).max() == 0.0  # the zero point
    # the same starts under the real (second-order) claim hold
    assert (
        check_jlr_no_spurious(P, n_starts=2, inits=("zero", "small"), perturbations=("none",)).status
        == "holds"
    )


def test_no_spurious_below_the_bound_is_inconclusive_unless_forced():
    P = gaussian_problem(K=1, N=8, blocks=[(7, 6)], lam=0.01, seed=3)
    v = check_jlr_no_spurious(P, rank=2)
    assert v.status == "inconclusive" and "hypothesis not met" in v.reason


def test_spurious_below_never_violated():
    P = gaussian_problem(K=1, N=10, blocks=[(6, 6)], lam=0.005, seed=11)
    v = check_jlr_spurious_below(P, rank=1, n_starts=4)
    # rank 1 on a problem whose optimum has rank >= 2: the search certifies exact spurious minima
    assert v.status == "holds", v.reason
    assert any(r.get("counterexample_test", {}).get("certified") for r in v.certificate["runs"])
    assert v.certificate["search_effort"]["starts"] == 4
    # planted variant: "spurious SOSPs exist above the bound" -- the search finds none, and the
    # checker must not claim anything
    w = check_jlr_spurious_below(P, rank=5, n_starts=4, enforce_hypothesis=False)
    assert w.status == "inconclusive", w.reason
    assert check_jlr_spurious_below(P, rank=5).status == "inconclusive"


def test_gd_holds_above_and_planted_rank_one_variant_is_refuted():
    P = gaussian_problem(K=1, N=6, blocks=[(6, 5)], lam=0.02, seed=5)
    v = check_jlr_gd(P, optimizers=("gd",), inits=("zero_b", "small"), steps=4000, gap_rtol=1e-8)
    assert v.status == "holds", v.reason
    hist = v.certificate["runs"][0]["gap_history"]
    assert hist[-1][1] <= 1e-8 < hist[0][1]
    # planted: "GD at rank 1 reaches the NUC optimum" on a problem whose optimum has rank >= 2
    Q = gaussian_problem(K=1, N=10, blocks=[(6, 6)], lam=0.005, seed=11)
    w = check_jlr_gd(
        Q, rank=1, optimizers=("gd",), inits=("small",), steps=4000, gap_rtol=1e-8, enforce_hypothesis=False
    )
    assert w.status == "violated", w.reason
