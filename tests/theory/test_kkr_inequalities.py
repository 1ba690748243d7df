"""The [KKR25] inequalities as pure functions: hand-computed cases and bad input."""

import math

import pytest

from theory.kkr import dichotomy, loud, sgd_rank_bound

SV = [3.0, 2.0, 1.0, 0.0, 0.0]


def test_dichotomy_by_hand():
    # 2 alpha / beta = 1/4: sigma_3 = 1 >= 3/4; denominator 1 - 2*3/(8*1) = 1/4; tail 2^2 + 1^2 = 5
    d = dichotomy(SV, r=3, r_star=1, alpha=1.0, beta=8.0, distance_sq=25.0)
    assert d["rank"] == 3 and d["rank_is_r"] and d["sigma_ratio_ok"]
    assert math.isclose(d["sigma_r_needed"], 0.75) and math.isclose(d["distance_sq_needed"], 20.0)
    assert d["distance_ok"] and d["all"]
    near = dichotomy(SV, r=3, r_star=1, alpha=1.0, beta=8.0, distance_sq=19.0)
    assert not near["distance_ok"] and not near["all"]
    # 2 alpha / beta = 1/2: sigma_3 = 1 < 3/2, and the denominator is negative: (iii) cannot hold
    tight = dichotomy(SV, r=3, r_star=1, alpha=1.0, beta=4.0, distance_sq=1e9)
    assert not tight["sigma_ratio_ok"] and tight["distance_sq_needed"] == math.inf and not tight["all"]
    # rank 3 is not r = 4
    assert not dichotomy(SV, r=4, r_star=1, alpha=1.0, beta=8.0, distance_sq=25.0)["rank_is_r"]


def test_loud_by_hand():
    g = loud(SV, r=3, r_star=1, alpha=1.0, beta=4.0, x_star_norm=1.0)  # 1 <= 1.5: predicted global
    assert g["prediction"] == "global" and g["spurious_norm_bound"] is None
    s = loud(SV, r=3, r_star=1, alpha=1.0, beta=8.0, x_star_norm=1.0)  # sqrt(5 / (1/4)) - 1
    assert s["prediction"] == "spurious"
    assert math.isclose(s["spurious_norm_bound"], math.sqrt(20.0) - 1.0)
    assert math.isclose(s["norm"], math.sqrt(14.0)) and s["bound_holds"] == (
        math.sqrt(14) >= math.sqrt(20) - 1
    )


def test_sgd_rank_bound_by_hand():
    assert math.isclose(sgd_rank_bound(batch=1, eps=0.04, lr=0.1, lam=0.1), math.log(0.01) / math.log(0.99))
    assert math.isclose(
        sgd_rank_bound(batch=8, eps=0.04, lr=0.1, lam=0.1), 8 * math.log(0.01) / math.log(0.99)
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dichotomy([1.0, 2.0], r=1, r_star=1, alpha=1, beta=1, distance_sq=0), "non-increasing"),
        (
            lambda: dichotomy(SV, r=2, r_star=3, alpha=1, beta=1, distance_sq=0),
            "r_star: expected r_star <= r",
        ),
        (
            lambda: dichotomy(SV, r=2, r_star=1, alpha=0.0, beta=1, distance_sq=0),
            "alpha: expected a positive",
        ),
        (lambda: dichotomy(SV, r=9, r_star=1, alpha=1, beta=1, distance_sq=0), "r: expected at most"),
        (lambda: loud(SV, r=1, r_star=1, alpha=1, beta=1, x_star_norm=0), "Corollary 1 needs r > r_star"),
        (lambda: sgd_rank_bound(batch=1, eps=5.0, lr=0.1, lam=0.1), r"eps: expected a number in \(0, 4\)"),
        (lambda: sgd_rank_bound(batch=1, eps=0.1, lr=10.0, lam=0.2), "lr, lam: expected 0 < lr \\* lam < 1"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
