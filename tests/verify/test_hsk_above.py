"""HSK-above: certified eps-rank bounds, "consistent with" only on separated growth, flatness refuted."""

from __future__ import annotations

import numpy as np
import pytest

from landscapes.attention import HskSetting, hsk_instance
from landscapes.eps_rank import eps_rank_bounds, orthogonal_vectors_pre_activations
from verify.hsk import check_hsk_above, fit_exponent

KW = dict(lengths=(64, 128, 256, 512), ratios=(0.125, 1.0, 3.0))


@pytest.fixture(scope="module")
def verdict():
    return check_hsk_above(HskSetting(case="C1"), **KW)


def _matrix(row, setting, matrix):
    if row["family"] == "ov":
        Q, K = orthogonal_vectors_pre_activations(row["L"], row["d"], row["gamma"], seed=setting.seed)
        S = setting.beta * Q @ K.T
    else:
        h = hsk_instance(
            L=row["L"], d=row["d"], r=setting.r, gamma=row["gamma"], case=setting.case, seed=setting.seed
        )
        W = h.weights()
        S = (h.beta * (h.X @ W["Q"]) @ (h.X @ W["K"]).T).numpy()
    if matrix == "exp":
        return np.exp(S - S.max())
    P = np.exp(S - S.max(axis=1, keepdims=True))
    return P / P.sum(axis=1, keepdims=True)


def test_orthogonal_vectors_give_separated_growth_said_as_consistent_never_holds(verdict):
    v = verdict
    assert v.status == "inconclusive" and v.certificate["consistent"] is True, v.reason
    assert v.reason.startswith("consistent with [HSK24] Thm 4.1 (SETH-conditional, worst case): on ov")
    by = {(r["family"], r["ratio"]): r for r in v.certificate["rank_exponent_by_ratio"]}
    above, below = by[("ov", 1.0)], by[("ov", 0.125)]
    assert above["interval"][0] >= 0.5 and above["interval"][0] > below["interval"][1]
    assert v.certificate["transition_ratio"]["ov"] <= 1.0
    for (fam, c), r in by.items():  # the reported exponents are the fits of the reported bounds
        rows = sorted(
            (g for g in v.certificate["grid"] if g["family"] == fam and g["ratio"] == c), key=lambda g: g["L"]
        )
        assert r["lower_bounds"] == [g["exp"]["lower"] for g in rows]
        assert r["exponent"] == pytest.approx(
            fit_exponent(KW["lengths"], [max(g["exp"]["lower"], 1) for g in rows])
        )
        assert all(g["exp"]["lower"] <= g["exp"]["upper"] for g in rows)
        assert r["interval"][0] <= min(r["lower_exponent"], r["upper_exponent"])
    assert all("softmax" in g for g in v.certificate["grid"])  # the side measurement


def test_the_grid_bounds_are_the_bounds_of_the_regenerated_matrices(verdict):
    s = HskSetting(case="C1")
    for row in verdict.certificate["grid"][::5]:
        b = eps_rank_bounds(_matrix(row, s, "exp"), 1e-3)
        assert (b.lower, b.upper) == (row["exp"]["lower"], row["exp"]["upper"])


def test_random_heads_alone_cannot_be_told_apart():
    # random instances: exp(S - max S) collapses towards rank 1-4 at large ratios, so no separated growth
    v = check_hsk_above(HskSetting(case="C1"), families=("random",), **KW)
    assert v.status == "inconclusive" and v.certificate["consistent"] is False
    assert v.reason.startswith("cannot be told apart")
    by = {r["ratio"]: r for r in v.certificate["rank_exponent_by_ratio"]}
    assert by[3.0]["lower_bounds"][-1] <= 4


def test_no_below_threshold_ratio_is_not_consistent():
    v = check_hsk_above(HskSetting(), lengths=(64, 128, 256), ratios=(1.0, 2.0), families=("ov",))
    assert v.certificate["consistent"] is False and v.status == "inconclusive"


def test_no_transition_is_refuted_by_a_certified_lower_bound():
    s = HskSetting(case="C1")
    bad = check_hsk_above(s, variant="no-transition", lengths=(64, 128, 256), ratios=(0.125, 1.0))
    assert bad.status == "violated", bad.reason
    cap = bad.certificate["flat_rank"]
    grid = bad.certificate["grid"]
    assert cap == max(r["exp"]["upper"] for r in grid if r["ratio"] == 0.125)
    cell = bad.certificate["refuting_cell"]
    row = next(r for r in grid if all(r[k] == cell[k] for k in cell))
    # recomputed from the regenerated instance: the lower bound (not the upper one) exceeds the claimed cap
    assert eps_rank_bounds(_matrix(row, s, "exp"), 1e-3).lower > cap
    # a cap above every certified lower bound is not refuted, and never "holds"
    top = max(r["exp"]["lower"] for r in grid)
    ok = check_hsk_above(s, variant="no-transition", flat_rank=top, lengths=(64, 128), ratios=(0.125, 3.0))
    assert ok.status == "inconclusive" and ok.certificate["consistent"] is False


def test_bad_input():
    s = HskSetting()
    with pytest.raises(ValueError, match="rel_err"):
        check_hsk_above(s, rel_err=2.0)
    with pytest.raises(ValueError, match="families"):
        check_hsk_above(s, families=("gaussian",))
    with pytest.raises(ValueError, match="flat_rank"):
        check_hsk_above(s, flat_rank=-1)
    with pytest.raises(ValueError, match="matrix"):
        check_hsk_above(s, matrix="dense")
    with pytest.raises(ValueError, match="lengths"):
        check_hsk_above(s, lengths=(64,))
    with pytest.raises(TypeError, match="report_softmax"):
        check_hsk_above(s, report_softmax=1)
