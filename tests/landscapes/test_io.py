"""Tests for landscapes.io: exact round trips, corruption/format detection, atomic writes."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import landscapes.io as lio
from landscapes.io import FORMAT, VERSION, load_problem, save_problem
from landscapes.losses import LOSS_NAMES
from landscapes.operators import FunctionOperator
from landscapes.problem import Problem

DT = torch.float64
SEEDS = st.integers(0, 2**32 - 1)


def make_problem(
    seed: int,
    loss: str,
    *,
    N: int = 4,
    K: int = 3,
    blocks=((2, 3), (1, 2)),
    lam=(0.1, 0.25),
    pseed: int | None = 17,
    name: str = "demo",
    dtype: torch.dtype = DT,
) -> Problem:
    K = 1 if loss == "logistic" else K
    g = torch.Generator().manual_seed(seed)
    p = sum(m * n for m, n in blocks)
    J = torch.randn(K * N, p, generator=g, dtype=dtype)
    f0 = torch.randn(N, K, generator=g, dtype=dtype)
    if loss == "squared":
        y = torch.randn(N, K, generator=g, dtype=dtype)
    elif loss == "logistic":
        y = torch.randint(0, 2, (N,), generator=g)
    else:
        y = torch.randint(0, K, (N,), generator=g)
    return Problem(J, f0, y, loss=loss, blocks=list(blocks), lam=lam, seed=pseed, name=name)


def assert_same_problem(a: Problem, b: Problem) -> None:
    A, B = a.J.matrix, b.J.matrix  # type: ignore[attr-defined]
    assert A.dtype == B.dtype and torch.equal(A, B)
    assert a.f0.dtype == b.f0.dtype and torch.equal(a.f0, b.f0)
    assert a.y.dtype == b.y.dtype and torch.equal(a.y, b.y)
    assert a.blocks == b.blocks
    assert a.lam == b.lam
    assert a.loss.name == b.loss.name
    assert a.seed == b.seed
    assert a.name == b.name
    assert a.fingerprint() == b.fingerprint()


def read_npz(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSS_NAMES)
@pytest.mark.parametrize("pseed", [None, 0, 12345, 2**40])
def test_round_trip(tmp_path, loss, pseed):
    P = make_problem(1, loss, pseed=pseed, name=f"p-{loss}-é")
    out = save_problem(P, tmp_path / "p.npz")
    assert out == tmp_path / "p.npz"
    assert out.is_file()
    Q, extras = load_problem(out)
    assert extras == {}
    assert_same_problem(P, Q)
    D = tuple(torch.ones(m, n, dtype=DT) for m, n in P.blocks)
    assert P.risk(D) == Q.risk(D)


@given(
    seed=SEEDS,
    loss=st.sampled_from(LOSS_NAMES),
    N=st.integers(1, 5),
    nb=st.integers(1, 3),
    lam=st.floats(0.0, 10.0),
)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_round_trip_random(tmp_path, seed, loss, N, nb, lam):
    blocks = [(1 + (seed >> (2 * j)) % 3, 1 + (seed >> (2 * j + 1)) % 4) for j in range(nb)]
    lams = tuple(lam * (j + 1) for j in range(nb))
    P = make_problem(seed, loss, N=N, blocks=blocks, lam=lams, pseed=seed, name=str(seed))
    Q, _ = load_problem(save_problem(P, tmp_path / f"r{seed}.npz"))
    assert_same_problem(P, Q)


def test_round_trip_float32(tmp_path):
    P = make_problem(2, "squared", dtype=torch.float32)
    Q, _ = load_problem(save_problem(P, tmp_path / "f32.npz"))
    assert Q.dtype == torch.float32
    assert_same_problem(P, Q)


def test_extras_round_trip(tmp_path):
    P = make_problem(3, "cross_entropy")
    extra = {
        "point": np.arange(12, dtype=np.float64).reshape(3, 4) / 7.0,
        "labels": np.array([3, 1, 2], dtype=np.int32),
        "flag": np.array(True),
        "note": np.array("a counterexample"),
        "scalar": 2.5,
    }
    _, extras = load_problem(save_problem(P, tmp_path / "x.npz", extra=extra))
    assert set(extras) == set(extra)
    for k, v in extra.items():
        w = np.asarray(v)
        assert extras[k].dtype == w.dtype, k
        assert extras[k].shape == w.shape, k
        np.testing.assert_array_equal(extras[k], w)


def test_file_contents_follow_the_documented_format(tmp_path):
    P = make_problem(4, "logistic", pseed=None)
    data = read_npz(save_problem(P, tmp_path / "f.npz", extra={"a": np.zeros(2)}))
    assert set(data) == {
        "format",
        "version",
        "J",
        "f0",
        "y",
        "loss",
        "blocks",
        "lam",
        "seed",
        "has_seed",
        "name",
        "checksum",
        "extra__a",
    }
    assert str(data["format"]) == FORMAT == "loracheck.problem"
    assert int(data["version"]) == VERSION == 1
    assert str(data["loss"]) == "logistic"
    np.testing.assert_array_equal(data["blocks"], np.array([[2, 3], [1, 2]]))
    assert data["blocks"].dtype == np.int64
    np.testing.assert_array_equal(data["lam"], np.array([0.1, 0.25]))
    assert not bool(data["has_seed"])
    assert len(str(data["checksum"])) == 64


def test_save_overwrites_and_creates_parents(tmp_path):
    target = tmp_path / "a" / "b" / "p.npz"
    save_problem(make_problem(5, "squared", name="first"), target)
    save_problem(make_problem(6, "squared", name="second"), target)
    Q, _ = load_problem(target)
    assert Q.name == "second"
    assert_same_problem(make_problem(6, "squared", name="second"), Q)
    assert sorted(os.listdir(target.parent)) == ["p.npz"]


def test_save_accepts_str_path(tmp_path):
    P = make_problem(5, "squared")
    Q, _ = load_problem(str(save_problem(P, str(tmp_path / "s.npz"))))
    assert_same_problem(P, Q)


def test_negative_seed_round_trip(tmp_path):
    P = make_problem(7, "squared", pseed=-3)
    assert P.seed == -3
    Q, _ = load_problem(save_problem(P, tmp_path / "neg.npz"))
    assert Q.seed == -3


# ---------------------------------------------------------------------------------------------
# Corruption, format and path errors
# ---------------------------------------------------------------------------------------------


def _rewrite(path, **changes) -> None:
    data = read_npz(path)
    data.update(changes)
    with open(path, "wb") as fh:
        np.savez(fh, **data)


@pytest.mark.parametrize("key", ["J", "f0", "y", "blocks", "lam"])
def test_checksum_detects_corruption(tmp_path, key):
    P = make_problem(8, "cross_entropy")
    path = save_problem(P, tmp_path / "c.npz")
    data = read_npz(path)
    arr = data[key].copy()
    if key == "y":
        arr[0] = (arr[0] + 1) % P.K
    elif key == "blocks":
        arr[[0, 1]] = arr[[1, 0]]
    else:
        arr.reshape(-1)[0] += 1e-12 if arr.dtype.kind == "f" else 1
    _rewrite(path, **{key: arr})  # the old checksum is kept
    with pytest.raises(ValueError, match=r"path: checksum mismatch in .*c\.npz.*corrupted"):
        load_problem(path)


def test_rewrite_without_change_still_loads(tmp_path):
    """Control for the corruption test: re-saving unchanged arrays keeps the checksum valid."""
    P = make_problem(8, "cross_entropy")
    path = save_problem(P, tmp_path / "c.npz")
    _rewrite(path)
    assert_same_problem(P, load_problem(path)[0])


def test_bad_checksum_value(tmp_path):
    path = save_problem(make_problem(9, "squared"), tmp_path / "c.npz")
    _rewrite(path, checksum=np.array("0" * 64))
    with pytest.raises(ValueError, match="checksum"):
        load_problem(path)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (
            {"format": np.array("other.format")},
            r"path: expected a file of format 'loracheck\.problem', got other\.format",
        ),
        ({"version": np.array(2)}, r"path: expected format version 1, got 2"),
        ({"version": np.array(0)}, r"path: expected format version 1, got 0"),
    ],
)
def test_wrong_format_or_version(tmp_path, changes, match):
    path = save_problem(make_problem(10, "squared"), tmp_path / "v.npz")
    _rewrite(path, **changes)
    with pytest.raises(ValueError, match=match):
        load_problem(path)


def test_missing_format_key(tmp_path):
    path = tmp_path / "nofmt.npz"
    np.savez(path, J=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"path: expected a file of format 'loracheck\.problem', got none"):
        load_problem(path)


def test_npy_file_is_value_error(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ValueError, match="path"):
        load_problem(path)


@pytest.mark.parametrize("name", ["p.txt", "p", "p.npy", "p.npz.tmp"])
def test_save_rejects_non_npz_path(tmp_path, name):
    with pytest.raises(ValueError, match=r"path: expected a file name ending in \.npz, got .*"):
        save_problem(make_problem(12, "squared"), tmp_path / name)
    assert os.listdir(tmp_path) == []


def test_operator_problem_cannot_be_saved(tmp_path):
    P = make_problem(13, "squared")
    J = P.J.matrix  # type: ignore[attr-defined]
    op = Problem(
        FunctionOperator(lambda x: J @ x, lambda v: J.T @ v, tuple(J.shape)),
        P.f0,
        P.y,
        loss="squared",
        blocks=P.blocks,
        lam=P.lam,
    )
    with pytest.raises(
        ValueError, match=r"problem: expected a dense-J problem to save, got an operator-form J"
    ):
        save_problem(op, tmp_path / "op.npz")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Atomicity
# ---------------------------------------------------------------------------------------------


def test_no_temp_files_after_success(tmp_path):
    for i in range(3):
        save_problem(make_problem(i, "squared"), tmp_path / f"p{i}.npz")
    assert sorted(os.listdir(tmp_path)) == ["p0.npz", "p1.npz", "p2.npz"]


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_save_leaves_nothing(tmp_path, monkeypatch, exc):
    def boom(*args, **kwargs):
        fh = args[0]
        fh.write(b"PK\x03\x04partial")  # a half-written temporary file
        raise exc

    monkeypatch.setattr(lio.np, "savez", boom)
    with pytest.raises(type(exc)):
        save_problem(make_problem(14, "squared"), tmp_path / "p.npz")
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "p.npz"
    P = make_problem(15, "logistic")
    save_problem(P, target)
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(lio.np, "savez", boom)
    with pytest.raises(OSError, match="no space"):
        save_problem(make_problem(16, "logistic"), target)
    assert os.listdir(tmp_path) == ["p.npz"]
    assert target.read_bytes() == before
    monkeypatch.undo()
    assert_same_problem(P, load_problem(target)[0])


def test_failed_replace_leaves_no_temp(tmp_path, monkeypatch):
    def bad_replace(src, dst):
        raise OSError("replace failed")

    monkeypatch.setattr(lio.os, "replace", bad_replace)
    with pytest.raises(OSError, match="replace failed"):
        save_problem(make_problem(17, "squared"), tmp_path / "p.npz")
    assert os.listdir(tmp_path) == []


def test_lam_values_round_trip_exactly(tmp_path):
    lam = (math.pi / 10, 1e-300)
    P = make_problem(18, "squared", lam=lam)
    Q, _ = load_problem(save_problem(P, tmp_path / "lam.npz"))
    assert Q.lam == lam
