"""The [HSK24] checkers: holds on the derived formulas, planted false variants refuted, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from landscapes.attention import CASES, HskSetting, exact_gradients, fast_gradients, max_abs_entry_error
from theory.hsk import far_crossover, polynomial_method_table
from verify.hsk.checkers import (
    check_hsk_above,
    check_hsk_below,
    check_hsk_exact,
    check_hsk_poly_error,
    fit_exponent,
)
from verify.registry import CHECKERS

SMALL_TIMING = (256, 512, 1024, 2048)


def test_fit_exponent_closed_form():
    assert fit_exponent([2, 4, 8, 16], [3 * x**2 for x in (2, 4, 8, 16)]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="positive values"):
        fit_exponent([1, 2], [0.0, 1.0])


@pytest.mark.parametrize("case", sorted(CASES))
def test_exact_holds_on_both_cases(case):
    # the timing exponent at these small sizes is not asymptotic: a wide range keeps the test about
    # the agreement; the exponent is reported in the certificate
    v = check_hsk_exact(HskSetting(case=case), timing_lengths=SMALL_TIMING, exponent_range=(1.0, 3.0))
    assert v.status == "holds", v.reason
    assert v.certificate["worst_max_entry_rel_error"] <= 1e-10
    t = v.certificate["timing"]  # the reported exponent is the fit of the reported timings
    assert t["L"] == list(SMALL_TIMING) and len(t["seconds"]) == len(SMALL_TIMING)
    assert t["fitted_exponent"] == pytest.approx(fit_exponent(t["L"], t["seconds"]), rel=1e-12)
    assert v.problem["adapted"] == list(CASES[case])


def test_exact_timing_outside_its_range_is_inconclusive_not_violated():
    v = check_hsk_exact(HskSetting(), timing_lengths=(256, 512), exponent_range=(5.0, 6.0), repeats=1)
    assert v.status == "inconclusive" and "machine-dependent" in v.reason


def test_the_printed_b_gradient_is_refuted(tmp_path):
    v = check_hsk_exact(
        HskSetting(case="C2"), variant="printed", timing_lengths=(256, 512), save_dir=tmp_path
    )
    assert v.status == "violated"
    p = v.certificate["printed_b_gradient"]
    assert p["defined_at_setting"] is False and p["max_entry_rel_error_vs_autograd"] > 1e-3
    assert "undefined" in v.reason
    # named as what it is: a dimension mismatch in the printed formula, corrected by the derived one
    assert "dimension mismatch" in v.reason and "typo" in v.reason and "C1^T p C2 A_Q^T" in v.reason
    saved = np.load(v.counterexample)
    assert saved["X"].shape == (2, 2)  # the head where the printed formula is defined, and wrong


@pytest.mark.parametrize("case", sorted(CASES))
def test_poly_error_holds_and_a_shrunk_bound_is_refuted(case, tmp_path):
    s = HskSetting(case=case)
    v = check_hsk_poly_error(s, L=96)
    assert v.status == "holds", v.reason
    rows = v.certificate["rows"]
    assert all(r["rank"] == __import__("math").comb(4 + r["degree"], r["degree"]) for r in rows)
    assert max(r["error_over_allowed"] for r in rows) <= 1.0
    assert max(r["error_over_bound"] for r in rows if r["error_over_bound"] is not None) > 0.05  # not vacuous
    assert "standard Lagrange remainder bound" in v.reason and "degree rule" in v.reason
    bad = check_hsk_poly_error(s, L=96, bound_factor=0.01, save_dir=tmp_path)
    assert bad.status == "violated" and bad.counterexample is not None
    assert set(np.load(bad.counterexample).files) >= {"X", "Y", "W_Q", "A_Q", "B_Q"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_below_holds_with_a_flat_rank_and_is_refuted_above_the_threshold(case):
    # scores scaled by 1/d (beta = 1/d): the counted regime with M = Gamma^2 matches these heads
    s = HskSetting(case=case, beta=0.25)
    v = check_hsk_below(s, lengths=(256, 512, 1024), timing_lengths=(4096, 16384, 65536))
    assert v.status == "holds", v.reason
    assert v.certificate["regime_rules_required"] == ["gamma^2"]
    assert "matching the measured heads (beta = 1/d = 0.25" in v.reason
    g = v.certificate["uniform_degree"]
    rows = v.certificate["per_length"]
    assert all(r["errors_by_degree"][g] <= 1e-3 for r in rows)
    # the judged error is the absolute max-entry error of the claim, recomputed here
    h = s.instance(256, 1.0)
    assert h.beta == 0.25
    _, a0, b0 = exact_gradients(h, block_size=64)
    f = fast_gradients(h, degree=g)
    assert rows[0]["errors_by_degree"][g] == pytest.approx(
        max(max_abs_entry_error(f.grad_A, a0), max_abs_entry_error(f.grad_B, b0)), rel=1e-6
    )
    assert v.certificate["timing"]["fitted_exponent"] <= 1.3
    assert "fixed-Gamma, fixed-accuracy corollary" in v.reason and "not the asymptotic" in v.reason
    assert "consistent with [HSK24] Thm 3.1 in the regime" in v.reason and "numerical evidence" in v.reason
    # the counted regime is theory.hsk's: same crossover
    far, _ = far_crossover(max_log2=1 << 40, m_rule="gamma^2")
    a = v.certificate["regime_analysis"]
    assert a["crossover_log2_L"] == far.row.log2_L == 60_841_960
    assert a["crossover_flips"][-1] == 60_841_959 and "2^60,841,960 on (no flip over the next" in v.reason
    bad = check_hsk_below(
        HskSetting(case=case),
        lengths=(256, 512),
        timing_lengths=(2048, 8192),
        variant="above",
        above_ratio=2.0,
    )
    assert bad.status == "violated", bad.reason
    assert "no Taylor degree <= 8" in bad.reason and "Gamma = 4.71" in bad.reason
    assert "exact rank <= 16" in bad.reason and "does not extend above" not in bad.reason


def test_below_planted_above_is_never_holds():
    # with a degree budget large enough for Gamma = 2 sqrt(ln L) at these L the planted claim is
    # not refuted: inconclusive, and the reason reports the Gamma range actually used
    v = check_hsk_below(
        HskSetting(d=1, r=1), variant="above", lengths=(64, 128), timing_lengths=(512, 1024),
        max_degree=40, repeats=1,
    )
    assert v.status == "inconclusive", v.reason
    assert "not refuted within the budget" in v.reason and "Gamma = 4.08..4.41" in v.reason
    assert "Gamma = 1 " not in v.reason and "does not depend on L" not in v.reason
    assert [r["degree"] for r in v.certificate["per_length"]] == [26, 29]


def test_below_a_superlinear_rank_claim_is_refuted_by_the_count():
    # planted: the polynomial method's rank grows like L^1.1 in the regime (M = Gamma^2); the count
    # of theory.hsk refutes it at a finite L
    bad = check_hsk_below(HskSetting(), variant="superlinear", superlinear_c=0.1, regime_m_rule="gamma^2")
    assert bad.status == "violated", bad.reason
    hit = bad.certificate["regime_analysis"]["first_rank_below_L_power"]
    assert hit["log2_rank"] < 1.1 * hit["log2_L"]
    (row,) = polynomial_method_table(log2_lengths=[hit["log2_L"]])
    assert row.log2_rank == pytest.approx(hit["log2_rank"], rel=1e-12)
    # without the 1/d scaling (M = d Gamma^2) the count is superlinear: the same claim is not refuted
    ok = check_hsk_below(
        HskSetting(), variant="superlinear", regime_m_rule="d*gamma^2", regime_max_log2=1 << 20
    )
    assert ok.status == "holds", ok.reason
    assert "not sub-linear" in ok.reason


def test_below_is_not_holds_when_the_count_does_not_fall_below_L():
    # the default heads have unscaled scores (beta = 1, |S| <= d Gamma^2): the matching counted
    # regime is M = d Gamma^2, where the rank is not sub-linear over the range, so the verdict
    # cannot say "consistent with" (the M = Gamma^2 count, which does cross, does not apply)
    v = check_hsk_below(
        HskSetting(),
        lengths=(256, 512),
        timing_lengths=(1024, 2048),
        repeats=1,
    )
    assert v.status == "inconclusive", v.reason
    assert "not sub-linear" in v.reason and "consistent with" not in v.reason
    never = "does not fall below L up to 2^1,099,511,627,776 in the regime matching the measured heads"
    assert never + " (M = d Gamma^2)" in v.reason
    assert v.certificate["regime_rules_required"] == ["d*gamma^2"]
    assert v.certificate["regime_analysis"]["crossover_log2_L"] is None
    assert v.certificate["regime_analysis_other_M"]["crossover_log2_L"] == 60_841_960
    # a beta that matches neither convention needs both counts; M = d Gamma^2 still does not cross
    both = check_hsk_below(HskSetting(beta=0.5), lengths=(256, 512), timing_lengths=(1024, 2048), repeats=1)
    assert both.status == "inconclusive", both.reason
    assert both.certificate["regime_rules_required"] == ["gamma^2", "d*gamma^2"]
    assert "both rules are required" in both.reason


# HSK-above: tests/verify/test_hsk_above.py


def test_registry_and_bad_input():
    for c in ("HSK-exact", "HSK-below", "HSK-above", "HSK-poly-error"):
        assert c in CHECKERS
    with pytest.raises(TypeError, match="setting: expected"):
        check_hsk_exact("C1")
    with pytest.raises(ValueError, match="lengths: expected"):
        check_hsk_exact(HskSetting(), lengths=())
    with pytest.raises(ValueError, match="variant: expected"):
        check_hsk_exact(HskSetting(), variant="paper")
    with pytest.raises(ValueError, match="bound_factor"):
        check_hsk_poly_error(HskSetting(), bound_factor=0)
    with pytest.raises(ValueError, match="max_degree"):
        check_hsk_below(HskSetting(), max_degree=-1)
    with pytest.raises(ValueError, match="variant: expected 'below', 'above' or 'superlinear'"):
        check_hsk_below(HskSetting(), variant="paper")
    with pytest.raises(ValueError, match="regime_m_rule"):
        check_hsk_below(HskSetting(), regime_m_rule="gamma")
    with pytest.raises(ValueError, match="regime_m_rule: 'gamma\\^2' does not match the measured heads"):
        check_hsk_below(HskSetting(), regime_m_rule="gamma^2")
    with pytest.raises(ValueError, match="regime_max_log2"):
        check_hsk_below(HskSetting(), regime_max_log2=1)
    with pytest.raises(ValueError, match="rel_err"):
        check_hsk_above(HskSetting(), rel_err=2.0)
    with pytest.raises(ValueError, match="case: expected one of"):
        HskSetting(case="C3")
    with pytest.raises(ValueError, match="beta"):
        HskSetting(beta=0.0)
    with pytest.raises(ValueError, match="beta: expected a finite nonzero number, got True"):
        HskSetting(beta=True)
    with pytest.raises(ValueError, match="gammas: expected a non-empty"):
        check_hsk_poly_error(HskSetting(), gammas=())
    with pytest.raises(ValueError, match="timing_lengths: expected at least 2 distinct"):
        check_hsk_exact(HskSetting(), timing_lengths=(512, 512))
    with pytest.raises(ValueError, match="repeats"):
        check_hsk_below(HskSetting(), repeats=0)
    with pytest.raises(ValueError, match="exponent_range"):
        check_hsk_exact(HskSetting(), exponent_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="flat_rank"):
        check_hsk_above(HskSetting(), flat_rank=-1)


def test_below_beyond_the_budget_is_inconclusive_not_violated():
    # the real claim is asymptotic: a degree budget too small for the target proves nothing
    v = check_hsk_below(
        HskSetting(), lengths=(256, 512), timing_lengths=(1024, 2048), target=1e-12, max_degree=2
    )
    assert v.status == "inconclusive" and "beyond the budget" in v.reason
