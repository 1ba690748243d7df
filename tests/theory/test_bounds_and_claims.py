import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from theory import (
    CLAIMS,
    claim_ids,
    get_claim,
    r_max,
    rank_above_bound,
    rank_within_bound,
    ranks_within_bound,
)
from theory.bounds import triangular


def brute_r_max(K: int, N: int) -> int:
    r = 0
    while (r + 1) * (r + 2) // 2 <= K * N:
        r += 1
    return r


@given(K=st.integers(1, 50), N=st.integers(1, 2000))
def test_r_max_matches_brute_force_and_float_formula(K, N):
    r = r_max(K, N)
    assert r == brute_r_max(K, N)
    assert r == math.floor((math.sqrt(8 * K * N + 1) - 1) / 2)
    assert rank_within_bound(r, K, N) and rank_above_bound(r + 1, K, N)


def test_r_max_paper_values():
    # [JLR24]: N = 32, K = 2 -> KN = 64, r_max = 10 (r >= 11 is above the bound); K = 1 -> r >= 8.
    assert r_max(2, 32) == 10
    assert r_max(1, 32) == 7
    # exact at sizes where a float formula could round wrongly
    r = r_max(1, 10**15)
    assert triangular(r) <= 10**15 < triangular(r + 1)


def test_block_bound():
    assert ranks_within_bound([3, 3], 1, 12)  # 6 + 6 <= 12
    assert not ranks_within_bound([3, 4], 1, 12)  # 6 + 10 > 12
    assert triangular(0) == 0 and triangular(4) == 10


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: r_max(0, 3), "K: expected a positive int"),
        (lambda: r_max(2, -1), "N: expected a positive int"),
        (lambda: r_max(2.0, 3), "K: expected a positive int"),
        (lambda: r_max(True, 3), "K: expected a positive int"),
        (lambda: rank_within_bound(-1, 1, 1), "r: expected a non-negative int"),
        (lambda: ranks_within_bound([], 1, 1), "ranks: expected at least one"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_claim_registry():
    ids = claim_ids()
    assert len(ids) == len(set(ids)) == len(CLAIMS)
    assert get_claim("JLR-rank-NUC").paper == "JLR24"
    assert not get_claim("JLR-no-spurious").confirmed
    with pytest.raises(KeyError, match="claim_id: expected one of"):
        get_claim("JLR-nope")


def test_theory_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, theory, theory.derivations; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
