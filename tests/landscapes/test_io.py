"""Tests for landscapes.io: format version 2 (.npz and .safetensors), version 1, errors, atomicity."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as stnp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import landscapes.io as lio
from landscapes.io import (
    FORMAT,
    SUFFIXES,
    VERSION,
    checksum,
    load_counterexample,
    load_problem,
    save_problem,
)
from landscapes.losses import LOSS_NAMES
from landscapes.operators import DenseOperator, FunctionOperator, LowRankOperator
from landscapes.problem import Problem
from landscapes.synthetic import teacher_problem

DT = torch.float64
SEEDS = st.integers(0, 2**32 - 1)
DOC = Path(__file__).resolve().parents[2] / "docs" / "problem-format.md"


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
    low_rank: int | None = None,
    meta: dict | None = None,
) -> Problem:
    K = 1 if loss == "logistic" else K
    g = torch.Generator().manual_seed(seed)
    p = sum(m * n for m, n in blocks)
    # float16 problems accept inputs of Frobenius norm <= 16 (landscapes.problem.magnitude_bound)
    c = 0.25 if dtype == torch.float16 else 1.0
    if low_rank is None:
        J = c * torch.randn(K * N, p, generator=g, dtype=dtype)
    else:
        J = LowRankOperator(
            c * torch.randn(K * N, low_rank, generator=g, dtype=dtype),
            c * torch.randn(low_rank, p, generator=g, dtype=dtype),
        )
    f0 = torch.randn(N, K, generator=g, dtype=dtype)
    if loss == "squared":
        y = torch.randn(N, K, generator=g, dtype=dtype)
    elif loss == "logistic":
        y = torch.randint(0, 2, (N,), generator=g)
    else:
        y = torch.randint(0, K, (N,), generator=g)
    return Problem(J, f0, y, loss=loss, blocks=list(blocks), lam=lam, seed=pseed, name=name, meta=meta)


def same_tensor(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def assert_same_problem(a: Problem, b: Problem) -> None:
    assert type(a.J) is type(b.J)
    if isinstance(a.J, DenseOperator):
        assert same_tensor(a.J.matrix, b.J.matrix)  # type: ignore[attr-defined]
    else:
        assert same_tensor(a.J.left, b.J.left) and same_tensor(a.J.right, b.J.right)  # type: ignore[attr-defined]
    assert same_tensor(a.f0, b.f0)
    assert same_tensor(a.y, b.y)
    assert a.blocks == b.blocks
    assert a.lam == b.lam
    assert a.loss.name == b.loss.name
    assert a.seed == b.seed
    assert a.name == b.name
    assert a.dtype == b.dtype
    assert a.fingerprint() == b.fingerprint()


def read_npz(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def read_st(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    return stnp.load(raw), header.get("__metadata__", {})


def write_st(path, tensors, metadata) -> None:
    Path(path).write_bytes(stnp.save(tensors, metadata=metadata))


def _rewrite(path, **changes) -> None:
    """Rewrite an .npz file with some keys changed (None: removed); the old checksum is kept."""
    data = read_npz(path)
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    with open(path, "wb") as fh:
        np.savez(fh, **data)


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("loss", LOSS_NAMES)
@pytest.mark.parametrize("pseed", [None, 0, 12345, 2**40])
def test_round_trip(tmp_path, suffix, loss, pseed):
    P = make_problem(1, loss, pseed=pseed, name=f"p-{loss}-é")
    out = save_problem(P, tmp_path / f"p{suffix}")
    assert out == tmp_path / f"p{suffix}"
    assert out.is_file()
    Q, extras = load_problem(out)
    assert extras == {}
    assert_same_problem(P, Q)
    D = tuple(torch.ones(m, n, dtype=DT) for m, n in P.blocks)
    assert P.risk(D) == Q.risk(D)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("low_rank", [None, 1, 3])
@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_round_trip_dtype_and_J_form(tmp_path, suffix, dtype, low_rank, loss):
    P = make_problem(2, loss, dtype=dtype, low_rank=low_rank, meta={"k": [1, 2.5, "x"]})
    Q, _ = load_problem(save_problem(P, tmp_path / f"f{suffix}"))
    assert Q.dtype == dtype
    assert isinstance(Q.J, LowRankOperator if low_rank else DenseOperator)
    if low_rank:
        assert Q.J.rank == low_rank  # type: ignore[attr-defined]
    assert_same_problem(P, Q)
    assert Q.meta == {"k": [1, 2.5, "x"]}


@given(
    seed=SEEDS,
    loss=st.sampled_from(LOSS_NAMES),
    N=st.integers(1, 5),
    nb=st.integers(1, 3),
    lam=st.floats(0.0, 10.0, allow_subnormal=False),  # a subnormal lam is refused by Problem
    suffix=st.sampled_from(SUFFIXES),
    low_rank=st.sampled_from([None, 1, 2]),
)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_round_trip_random(tmp_path, seed, loss, N, nb, lam, suffix, low_rank):
    blocks = [(1 + (seed >> (2 * j)) % 3, 1 + (seed >> (2 * j + 1)) % 4) for j in range(nb)]
    lams = tuple(lam * (j + 1) for j in range(nb))
    P = make_problem(seed, loss, N=N, blocks=blocks, lam=lams, pseed=seed, name=str(seed), low_rank=low_rank)
    Q, _ = load_problem(save_problem(P, tmp_path / f"r{seed}{suffix}"))
    assert_same_problem(P, Q)


META = {
    "generator": "unit test",
    "unicode": "λ ∑ é — 😀",
    "nested": {"a": [1, 2, {"b": None}], "t": True, "big": 2**70, "neg": -3},
    "float": 0.1 + 0.2,
    "tiny": 5e-324,
    "tuple": (1, "two", 3.0),
    "tensor": torch.tensor([[1.5, -2.0], [1e-300, 3.0]], dtype=torch.float64),
    "tensor32": torch.tensor([0.1, 0.2], dtype=torch.float32),
    "ints": torch.arange(6, dtype=torch.int32).reshape(2, 3),
    "array": np.linspace(0, 1, 7).reshape(7, 1),
    "np_scalars": [np.float64(0.3), np.int64(7), np.bool_(False)],
    "empty": {},
}


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_meta_round_trip(tmp_path, suffix):
    P = make_problem(3, "squared", meta=META)
    Q, _ = load_problem(save_problem(P, tmp_path / f"m{suffix}"))
    m = Q.meta
    assert list(m) == list(META)  # insertion order kept
    for k in ("generator", "unicode", "nested", "float", "tiny", "empty"):
        assert m[k] == META[k], k
    assert m["tuple"] == [1, "two", 3.0]  # JSON has one sequence type
    for k in ("tensor", "tensor32", "ints"):
        assert isinstance(m[k], torch.Tensor) and same_tensor(m[k], META[k]), k
    assert isinstance(m["array"], np.ndarray) and m["array"].dtype == np.float64
    np.testing.assert_array_equal(m["array"], META["array"])
    assert m["np_scalars"] == [0.3, 7, False]


def test_teacher_problem_meta_round_trip(tmp_path):
    P = teacher_problem(K=1, N=6, blocks=[(3, 2), (2, 2)], lam=0.01, teacher_rank=2, seed=4)
    for suffix in SUFFIXES:
        Q, _ = load_problem(save_problem(P, tmp_path / f"t{suffix}"))
        assert_same_problem(P, Q)
        assert Q.meta["generator"] == "teacher_problem" and Q.meta["teacher_rank"] == 2
        assert len(Q.meta["teacher"]) == 2
        for a, b in zip(P.meta["teacher"], Q.meta["teacher"]):
            assert same_tensor(a, b)


class _Opaque:
    pass


@pytest.mark.parametrize(
    ("meta", "where"),
    [
        ({"model": _Opaque()}, r"meta\['model'\], got a _Opaque"),
        ({"s": {1, 2}}, r"meta\['s'\], got a set"),
        ({"a": {"b": [1, float("nan")]}}, r"meta\['a'\]\['b'\]\[1\], got nan"),
        ({"inf": float("inf")}, r"meta\['inf'\], got inf"),
        ({"d": {3: "x"}}, r"string keys .* at meta\['d'\], got the key 3"),
        ({"c": torch.zeros(2, dtype=torch.complex64)}, r"meta\['c'\], got dtype complex64"),
        ({"t": torch.tensor([1.0, float("nan")])}, r"meta\['t'\], got NaN or inf"),
        ({"o": np.array([None], dtype=object)}, r"meta\['o'\], got dtype object"),
        ({"b": b"bytes"}, r"meta\['b'\], got a bytes"),
        ({"tag": {"__tensor__": 1}}, r"reserved tag at meta\['tag'\]"),
    ],
)
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_meta_not_json_is_a_clear_error(tmp_path, meta, where, suffix):
    P = make_problem(3, "squared", meta=meta)
    with pytest.raises(ValueError, match=r"problem\.meta: expected .*" + where):
        save_problem(P, tmp_path / f"m{suffix}")
    assert os.listdir(tmp_path) == []


EXTRA = {
    "point": np.arange(12, dtype=np.float64).reshape(3, 4) / 7.0,
    "labels": np.array([3, 1, 2], dtype=np.int32),
    "flag": np.array(True),
    "note": np.array("a counterexample — é"),
    "scalar": 2.5,
    "f32": np.ones((2, 0), dtype=np.float32),
    "u8": np.array([255, 0], dtype=np.uint8),
    "tensor": torch.arange(3, dtype=torch.float64),
}


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_extras_round_trip(tmp_path, suffix):
    P = make_problem(3, "cross_entropy")
    _, extras = load_problem(save_problem(P, tmp_path / f"x{suffix}", extra=EXTRA))
    assert set(extras) == set(EXTRA)
    for k, v in EXTRA.items():
        w = v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        assert extras[k].dtype == w.dtype, k
        assert extras[k].shape == w.shape, k
        np.testing.assert_array_equal(extras[k], w)


def test_npz_only_extras(tmp_path):
    extra = {"names": np.array(["a", "bc"]), "z": np.array([1 + 2j]), "raw": np.array(b"\x00\x01")}
    _, extras = load_problem(save_problem(make_problem(3, "squared"), tmp_path / "x.npz", extra=extra))
    for k, v in extra.items():
        assert extras[k].dtype == v.dtype and np.array_equal(extras[k], v)
    for k, v in extra.items():
        with pytest.raises(ValueError, match=rf"extra\['{k}'\]: expected .* for \.safetensors, got dtype"):
            save_problem(make_problem(3, "squared"), tmp_path / "x.safetensors", extra={k: v})
    assert sorted(os.listdir(tmp_path)) == ["x.npz"]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"a/b": np.zeros(1)}, r"extra: expected names of letters, digits, '_', '\.', '-', got 'a/b'"),
        ({"": np.zeros(1)}, r"extra: expected names .*got ''"),
        ({3: np.zeros(1)}, r"extra: expected names .*got 3"),
        (
            {"o": np.array([{}], dtype=object)},
            r"extra\['o'\]: expected a bool, number or string array .*object",
        ),
        (
            {"bf": torch.zeros(2, dtype=torch.bfloat16)},
            r"extra\['bf'\]: expected dtype float16, float32 or float64",
        ),
    ],
)
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_bad_extras(tmp_path, extra, match, suffix):
    with pytest.raises(ValueError, match=match):
        save_problem(make_problem(3, "squared"), tmp_path / f"x{suffix}", extra=extra)
    assert os.listdir(tmp_path) == []


def test_npz_contents_follow_the_documented_format(tmp_path):
    P = make_problem(4, "logistic", pseed=None, meta={"a": 1})
    data = read_npz(save_problem(P, tmp_path / "f.npz", extra={"a": np.zeros(2), "t": np.array("x")}))
    assert set(data) == {
        "format", "version", "J", "f0", "y", "loss", "blocks", "lam", "name", "meta", "checksum",
        "extra__a", "extra__t",
    }  # fmt: skip
    assert str(data["format"]) == FORMAT == "loracheck.problem"
    assert int(data["version"]) == VERSION == 2
    assert data["version"].dtype == np.int64 and data["version"].ndim == 0
    assert str(data["loss"]) == "logistic"
    np.testing.assert_array_equal(data["blocks"], np.array([[2, 3], [1, 2]]))
    assert data["blocks"].dtype == np.int64
    np.testing.assert_array_equal(data["lam"], np.array([0.1, 0.25]))
    assert data["lam"].dtype == np.float64
    assert json.loads(str(data["meta"])) == {"a": 1}
    assert re.fullmatch("[0-9a-f]{64}", str(data["checksum"]))
    # with a seed (uint64 range too)
    for seed, dt in ((5, np.int64), (-5, np.int64), (2**64 - 1, np.uint64)):
        data = read_npz(save_problem(make_problem(4, "squared", pseed=seed), tmp_path / "s.npz"))
        assert data["seed"].dtype == dt and int(data["seed"]) == seed
        assert load_problem(tmp_path / "s.npz")[0].seed == seed


def test_safetensors_contents_follow_the_documented_format(tmp_path):
    P = make_problem(4, "squared", pseed=2**63 + 5, low_rank=2, meta={"a": [1]})
    path = save_problem(P, tmp_path / "f.safetensors", extra={"D0": np.zeros((2, 3)), "claim": np.array("c")})
    tensors, meta = read_st(path)
    assert set(tensors) == {"J_left", "J_right", "f0", "y", "blocks", "lam", "extra__D0"}
    assert set(meta) == {"format", "version", "loss", "seed", "name", "meta", "checksum", "extra__claim"}
    assert meta["format"] == FORMAT and meta["version"] == "2" and meta["seed"] == str(2**63 + 5)
    assert meta["loss"] == "squared" and meta["name"] == "demo" and json.loads(meta["meta"]) == {"a": [1]}
    assert meta["extra__claim"] == "c"
    assert tensors["blocks"].dtype == np.int64 and tensors["lam"].dtype == np.float64
    Q, extras = load_problem(path)
    assert Q.seed == 2**63 + 5 and str(extras["claim"]) == "c"


@pytest.mark.parametrize("low_rank", [None, 2])
def test_checksum_is_the_same_in_both_containers(tmp_path, low_rank):
    P = make_problem(5, "cross_entropy", low_rank=low_rank, meta={"x": torch.ones(2)})
    extra = {"D0": np.ones((2, 3)), "claim": np.array("c")}
    a = read_npz(save_problem(P, tmp_path / "a.npz", extra=extra))["checksum"]
    b = read_st(save_problem(P, tmp_path / "b.safetensors", extra=extra))[1]["checksum"]
    assert str(a) == b
    # and it is the documented recipe over the fields
    ns = doc_namespace(tmp_path)
    assert ns["problem_checksum"](ns["npz_fields"](tmp_path / "a.npz")) == b
    assert checksum(ns["npz_fields"](tmp_path / "a.npz")) == b


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
    Q, _ = load_problem(str(save_problem(P, str(tmp_path / "s.safetensors"))))
    assert_same_problem(P, Q)


def test_negative_seed_round_trip(tmp_path):
    P = make_problem(7, "squared", pseed=-3)
    for suffix in SUFFIXES:
        assert load_problem(save_problem(P, tmp_path / f"neg{suffix}"))[0].seed == -3


def test_lam_values_round_trip_exactly(tmp_path):
    lam = (math.pi / 10, 1e-300)
    P = make_problem(18, "squared", lam=lam)
    for suffix in SUFFIXES:
        assert load_problem(save_problem(P, tmp_path / f"lam{suffix}"))[0].lam == lam


def test_container_is_recognized_from_the_content(tmp_path):
    P = make_problem(8, "squared")
    a = save_problem(P, tmp_path / "a.npz")
    b = save_problem(P, tmp_path / "b.safetensors")
    a2, b2 = tmp_path / "a.bin", tmp_path / "b.npz"
    a2.write_bytes(a.read_bytes())
    b2.write_bytes(b.read_bytes())
    assert_same_problem(P, load_problem(a2)[0])
    assert_same_problem(P, load_problem(b2)[0])


# ---------------------------------------------------------------------------------------------
# Version 1
# ---------------------------------------------------------------------------------------------


def write_v1(problem: Problem, path, extra=None) -> None:
    """The version-1 writer, as it was (landscapes/io.py before version 2)."""
    J = problem.J.matrix.numpy()  # type: ignore[attr-defined]
    f0, y = problem.f0.numpy(), problem.y.numpy()
    blocks = np.array(problem.blocks, dtype=np.int64)
    lam = np.array(problem.lam, dtype=np.float64)
    data = {
        "format": np.array(FORMAT),
        "version": np.array(1),
        "J": J,
        "f0": f0,
        "y": y,
        "loss": np.array(problem.loss.name),
        "blocks": blocks,
        "lam": lam,
        "seed": np.array(0 if problem.seed is None else problem.seed),
        "has_seed": np.array(problem.seed is not None),
        "name": np.array(problem.name),
        "checksum": np.array(lio._checksum_v1([J, f0, y, blocks, lam])),
    }
    for k, v in (extra or {}).items():
        data[f"extra__{k}"] = np.asarray(v)
    np.savez(path, **data)


@pytest.mark.parametrize("loss", LOSS_NAMES)
@pytest.mark.parametrize("pseed", [None, 0, 2**40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_version_1_files_still_load(tmp_path, loss, pseed, dtype):
    P = make_problem(9, loss, pseed=pseed, dtype=dtype)
    write_v1(P, tmp_path / "v1.npz", extra={"D0": np.ones((2, 3)), "claim": np.array("c")})
    Q, extras = load_problem(tmp_path / "v1.npz")
    assert_same_problem(P, Q)
    assert Q.meta == {}
    assert set(extras) == {"D0", "claim"} and str(extras["claim"]) == "c"
    assert load_counterexample_or_none(tmp_path / "v1.npz") is None  # no options: not a counterexample


def load_counterexample_or_none(path):
    try:
        return load_counterexample(path)
    except ValueError:
        return None


@pytest.mark.parametrize("key", ["J", "f0", "y", "blocks", "lam"])
def test_version_1_corruption_detected(tmp_path, key):
    P = make_problem(8, "cross_entropy")
    path = tmp_path / "c.npz"
    write_v1(P, path)
    arr = read_npz(path)[key].copy()
    arr.reshape(-1)[0] += 1
    _rewrite(path, **{key: arr})
    with pytest.raises(ValueError, match=r"path: checksum mismatch in .*c\.npz.*corrupted"):
        load_problem(path)


def test_version_1_missing_keys(tmp_path):
    path = tmp_path / "v1.npz"
    write_v1(make_problem(8, "squared"), path)
    _rewrite(path, has_seed=None, checksum=None)
    with pytest.raises(
        ValueError, match=r"path: expected the keys of .* version 1; missing has_seed, checksum"
    ):
        load_problem(path)


# ---------------------------------------------------------------------------------------------
# Corruption
# ---------------------------------------------------------------------------------------------


def _bump(arr: np.ndarray, n_classes: int) -> np.ndarray:
    arr = arr.copy()
    if arr.dtype.kind == "f":
        arr.reshape(-1)[0] += 1e-12 if arr.dtype == np.float64 else 1e-3
    elif arr.dtype.kind == "b":
        arr.reshape(-1)[0] = ~arr.reshape(-1)[0]
    else:
        arr.reshape(-1)[0] = (arr.reshape(-1)[0] + 1) % n_classes
    return arr


CORRUPTIBLE = ["J", "f0", "y", "blocks", "lam", "extra__D0", "extra__flag"]


@pytest.mark.parametrize("key", CORRUPTIBLE + ["J_left", "J_right"])
def test_npz_corruption_of_each_array_detected(tmp_path, key):
    P = make_problem(8, "cross_entropy", low_rank=2 if key.startswith("J_") else None)
    path = save_problem(P, tmp_path / "c.npz", extra={"D0": np.ones((2, 3)), "flag": np.array([True])})
    _rewrite(path, **{key: _bump(read_npz(path)[key], P.K)})  # the old checksum is kept
    with pytest.raises(ValueError, match=r"path: checksum mismatch in .*c\.npz.*: the file is corrupted"):
        load_problem(path)


@pytest.mark.parametrize("key", ["name", "meta", "loss", "seed", "extra__note", "version"])
def test_npz_corruption_of_texts_detected(tmp_path, key):
    P = make_problem(8, "squared", meta={"a": 1})
    path = save_problem(P, tmp_path / "c.npz", extra={"note": np.array("n")})
    new = {
        "name": np.array("other"),
        "meta": np.array('{"a": 2}'),
        "loss": np.array("logistic"),
        "seed": np.array(18),
        "extra__note": np.array("m"),
        "version": np.array(2, dtype=np.int32),  # same value, other dtype: not corruption
    }[key]
    _rewrite(path, **{key: new})
    if key == "version":
        assert_same_problem(P, load_problem(path)[0])
        return
    with pytest.raises(ValueError, match=r"checksum mismatch .*corrupted"):
        load_problem(path)


@pytest.mark.parametrize("key", CORRUPTIBLE + ["J_left", "J_right"])
def test_safetensors_byte_flip_in_each_array_detected(tmp_path, key):
    P = make_problem(8, "cross_entropy", low_rank=2 if key.startswith("J_") else None)
    path = save_problem(
        P, tmp_path / "c.safetensors", extra={"D0": np.ones((2, 3)), "flag": np.array([True])}
    )
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    start, _ = json.loads(raw[8 : 8 + n])[key]["data_offsets"]
    raw[8 + n + start] ^= 0x01  # one bit of the tensor's first byte
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"path: checksum mismatch in .*c\.safetensors.*corrupted"):
        load_problem(path)


@pytest.mark.parametrize("key", ["name", "meta", "loss", "seed", "extra__note"])
def test_safetensors_metadata_corruption_detected(tmp_path, key):
    P = make_problem(8, "squared")
    path = save_problem(P, tmp_path / "c.safetensors", extra={"note": np.array("n")})
    tensors, meta = read_st(path)
    meta[key] = {"name": "x", "meta": '{"b":1}', "loss": "logistic", "seed": "99", "extra__note": "m"}[key]
    write_st(path, tensors, meta)
    with pytest.raises(ValueError, match="checksum mismatch .*corrupted"):
        load_problem(path)


def test_rewrite_without_change_still_loads(tmp_path):
    """Control for the corruption tests: re-saving unchanged arrays keeps the checksum valid."""
    P = make_problem(8, "cross_entropy")
    path = save_problem(P, tmp_path / "c.npz")
    _rewrite(path)
    assert_same_problem(P, load_problem(path)[0])
    path = save_problem(P, tmp_path / "c.safetensors")
    write_st(path, *read_st(path))
    assert_same_problem(P, load_problem(path)[0])


# ---------------------------------------------------------------------------------------------
# Hand-written files: missing and malformed keys
# ---------------------------------------------------------------------------------------------


def hand_written() -> dict[str, np.ndarray]:
    """A valid problem written with NumPy alone (no checksum): N = 3, K = 2, one 2 x 2 block."""
    rng = np.random.default_rng(0)
    return {
        "format": np.array("loracheck.problem"),
        "version": np.array(2),
        "J": rng.standard_normal((6, 4)),
        "f0": np.zeros((3, 2)),
        "y": np.array([0, 1, 1]),
        "loss": np.array("cross_entropy"),
        "blocks": np.array([[2, 2]]),
        "lam": np.array([0.1]),
    }


def test_hand_written_file_without_checksum_loads(tmp_path):
    np.savez(tmp_path / "h.npz", **hand_written())
    P, extras = load_problem(tmp_path / "h.npz")
    assert (P.N, P.K, P.blocks, P.lam, P.seed, P.name, P.meta) == (3, 2, ((2, 2),), (0.1,), None, "", {})
    assert extras == {}


def _drop(key):
    def f(d):
        del d[key]

    return f


def _set(**kw):
    def f(d):
        d.update(kw)

    return f


def _low_rank(d):
    J = d.pop("J")
    d["J_left"], d["J_right"] = J[:, :2], np.eye(2, 4)


BAD_FILES = [
    ("no-format", _drop("format"), r"path: expected a file of format 'loracheck\.problem', got none"),
    ("format", _set(format=np.array("other.format")), r"format 'loracheck\.problem', got other\.format"),
    ("format-bytes", _set(format=np.array(b"loracheck.problem")), r"key 'format' .*expected the text"),
    (
        "no-version",
        _drop("version"),
        r"key 'version' .*expected an integer in \[1, 2\], got nothing \(missing",
    ),
    ("version-3", _set(version=np.array(3)), r"path: expected format version 1 or 2, got 3"),
    ("version-0", _set(version=np.array(0)), r"path: expected format version 1 or 2, got 0"),
    ("version-text", _set(version=np.array("2")), r"key 'version' .*0-d integer array\), got"),
    ("version-float", _set(version=np.array(2.0)), r"key 'version' .*got a float64 array of shape \(\)"),
    ("no-J", _drop("J"), r"key 'J' .*expected J or J_left and J_right, got nothing \(missing key\)"),
    ("J-and-factor", _set(J_left=np.ones((6, 1))), r"key 'J' .*expected either J or J_left and J_right"),
    ("J_left-alone", lambda d: (_drop("J")(d), d.update(J_left=np.ones((6, 1)))), r"key 'J_right' .*missing"),
    (
        "J_right-alone",
        lambda d: (_drop("J")(d), d.update(J_right=np.ones((1, 4)))),
        r"key 'J_left' .*missing",
    ),
    (
        "J-int",
        _set(J=np.ones((6, 4), dtype=np.int64)),
        r"key 'J' .*float16/float32/float64 .*got dtype int64",
    ),
    ("J-bool", _set(J=np.ones((6, 4), dtype=bool)), r"key 'J' .*got dtype bool"),
    ("J-1d", _set(J=np.ones(24)), r"key 'J' .*got 1 dimension\(s\), shape \(24,\)"),
    ("J-3d", _set(J=np.ones((6, 4, 1))), r"key 'J' .*got 3 dimension\(s\)"),
    ("J-nan", _set(J=np.full((6, 4), np.nan)), r"key 'J' .*got NaN or inf values"),
    ("J-inf", _set(J=np.full((6, 4), np.inf)), r"key 'J' .*got NaN or inf values"),
    ("J-rows", _set(J=np.ones((5, 4))), r"key 'f0' .*expected shape \(N, K\) with N\*K = 5"),
    ("J-text", _set(J=np.array("J")), r"key 'J' .*got the text 'J'"),
    (
        "J_left-int",
        lambda d: (_low_rank(d), d.update(J_left=np.ones((6, 2), dtype=np.int32))),
        r"key 'J_left'",
    ),
    (
        "J_right-dtype",
        lambda d: (_low_rank(d), d.update(J_right=np.eye(2, 4, dtype=np.float32))),
        r"key 'J_right' .*expected the dtype of J_left \(float64\), got dtype float32",
    ),
    (
        "J_right-rows",
        lambda d: (_low_rank(d), d.update(J_right=np.eye(3, 4))),
        r"key 'J_right' .*expected 2 rows \(the columns of J_left\), got shape \(3, 4\)",
    ),
    ("J_right-nan", lambda d: (_low_rank(d), d.update(J_right=np.full((2, 4), np.nan))), r"'J_right' .*NaN"),
    ("no-f0", _drop("f0"), r"key 'f0' .*expected a 2-D float array .*got nothing \(missing key\)"),
    ("f0-dtype", _set(f0=np.zeros((3, 2), dtype=np.float32)), r"key 'f0' .*the dtype of J \(float64\)"),
    ("f0-int", _set(f0=np.zeros((3, 2), dtype=np.int64)), r"key 'f0' .*got dtype int64"),
    ("f0-1d", _set(f0=np.zeros(6)), r"key 'f0' .*got 1 dimension\(s\)"),
    ("f0-nan", _set(f0=np.full((3, 2), np.nan)), r"key 'f0' .*NaN or inf"),
    ("no-y", _drop("y"), r"key 'y' .*missing"),
    ("y-text", _set(y=np.array(["a", "b", "c"])), r"key 'y' .*expected an integer or float label array"),
    ("y-bool", _set(y=np.array([True, False, True])), r"key 'y' .*got a bool array"),
    (
        "y-range",
        _set(y=np.array([0, 1, 2])),
        r"holds an invalid problem \(version 2\): y: expected labels in",
    ),
    ("y-shape", _set(y=np.array([0, 1])), r"holds an invalid problem .*y: expected shape \(3,\)"),
    ("y-nan", _set(y=np.array([0.0, np.nan, 1.0])), r"key 'y' .*NaN or inf"),
    ("no-loss", _drop("loss"), r"key 'loss' .*missing"),
    (
        "loss-unknown",
        _set(loss=np.array("hinge")),
        r"key 'loss' .*squared, logistic, cross_entropy, got .*'hinge'",
    ),
    ("loss-int", _set(loss=np.array(1)), r"key 'loss' .*got an int64 array"),
    (
        "loss-K",
        _set(loss=np.array("logistic")),
        r"holds an invalid problem .*K: the logistic loss needs K = 1",
    ),
    ("no-blocks", _drop("blocks"), r"key 'blocks' .*missing"),
    ("blocks-float", _set(blocks=np.array([[2.0, 2.0]])), r"key 'blocks' .*integer .*got a float64 array"),
    ("blocks-1d", _set(blocks=np.array([2, 2])), r"key 'blocks' .*got shape \(2,\)"),
    ("blocks-3col", _set(blocks=np.array([[2, 2, 1]])), r"key 'blocks' .*got shape \(1, 3\)"),
    ("blocks-empty", _set(blocks=np.zeros((0, 2), dtype=np.int64)), r"key 'blocks' .*got shape \(0, 2\)"),
    (
        "blocks-zero",
        _set(blocks=np.array([[0, 4]])),
        r"key 'blocks' .*positive .*got the shapes \[\[0, 4\]\]",
    ),
    ("blocks-sum", _set(blocks=np.array([[2, 3]])), r"key 'blocks' .*sum to 4 \(the columns of J\)"),
    ("no-lam", _drop("lam"), r"key 'lam' .*missing"),
    ("lam-negative", _set(lam=np.array([-0.1])), r"key 'lam' .*>= 0, got the values \[-0\.1\]"),
    ("lam-nan", _set(lam=np.array([np.nan])), r"key 'lam' .*got the values \[nan\]"),
    ("lam-inf", _set(lam=np.array([np.inf])), r"key 'lam' .*got the values \[inf\]"),
    ("lam-shape", _set(lam=np.array([0.1, 0.2])), r"key 'lam' .*shape \(1,\): one weight decay per block"),
    ("lam-scalar", _set(lam=np.array(0.1)), r"key 'lam' .*got shape \(\)"),
    ("lam-bool", _set(lam=np.array([True])), r"key 'lam' .*got a bool array"),
    ("seed-float", _set(seed=np.array(1.5)), r"key 'seed' .*integer.*got a float64 array"),
    ("name-int", _set(name=np.array(3)), r"key 'name' .*expected a text, got an int64 array"),
    ("meta-bad-json", _set(meta=np.array("{oops")), r"key 'meta' .*JSON object, got invalid JSON"),
    ("meta-list", _set(meta=np.array("[1, 2]")), r"key 'meta' .*JSON object, got a JSON list"),
    (
        "meta-bad-tag",
        _set(meta=np.array('{"t": {"__tensor__": {"dtype": "nope", "shape": [1], "data": [1]}}}')),
        r"key 'meta' .*tagged __tensor__ object .*at meta\['t'\]",
    ),
    (
        "checksum-short",
        _set(checksum=np.array("abc")),
        r"key 'checksum' .*64 lowercase hex digits, got the text",
    ),
    ("checksum-wrong", _set(checksum=np.array("0" * 64)), r"path: checksum mismatch in .*corrupted"),
    ("unknown-key", _set(lambda_=np.array([0.1])), r"got unexpected key\(s\) 'lambda_'"),
    ("pickled-J", _set(J=np.array([None, 1], dtype=object)), r"key 'J' .*plain \(unpickled\) array"),
]


@pytest.mark.parametrize(("change", "match"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_malformed_npz_files(tmp_path, change, match):
    d = hand_written()
    change(d)
    path = tmp_path / "bad.npz"
    np.savez(path, **d)  # a pickled object array needs allow_pickle (the default for savez)
    with pytest.raises(
        ValueError, match=match if match.startswith("path: ") else r"path: .*" + match
    ) as info:
        load_problem(path)
    assert "bad.npz" in str(info.value)


def test_low_rank_hand_written_loads(tmp_path):
    d = hand_written()
    _low_rank(d)
    np.savez(tmp_path / "lr.npz", **d)
    P, _ = load_problem(tmp_path / "lr.npz")
    assert isinstance(P.J, LowRankOperator) and P.J.rank == 2
    torch.testing.assert_close(P.J.rows(), torch.from_numpy(d["J_left"] @ d["J_right"]))


def st_hand_written() -> tuple[dict[str, np.ndarray], dict[str, str]]:
    d = hand_written()
    meta = {k: str(d.pop(k)) for k in ("format", "version", "loss")}
    return d, meta


def _st_case(tensors=None, meta=None, drop=()):
    def f(t, m):
        t.update(tensors or {})
        m.update(meta or {})
        for k in drop:
            t.pop(k, None)
            m.pop(k, None)

    return f


BAD_ST = [
    ("no-metadata", _st_case(drop=("format", "version", "loss")), r"format 'loracheck\.problem', got none"),
    ("hf-model", _st_case(meta={"format": "pt"}), r"format 'loracheck\.problem', got pt"),
    (
        "version-word",
        _st_case(meta={"version": "two"}),
        r"key 'version' .*\(a decimal text\), got the __metadata",
    ),
    ("version-3", _st_case(meta={"version": "3"}), r"expected format version 1 or 2, got 3"),
    ("version-1", _st_case(meta={"version": "1"}), r"version 1 files as \.npz only"),
    ("seed-word", _st_case(meta={"seed": "0x10"}), r"key 'seed' .*decimal text"),
    (
        "J-in-metadata",
        _st_case(meta={"J_left": "x"}),
        r"key 'J_left' .*\(a tensor\), got a __metadata__ text",
    ),
    ("name-tensor", _st_case(tensors={"name": np.zeros(1)}), r"key 'name' .*in __metadata__, not a tensor"),
    (
        "both",
        _st_case(tensors={"extra__a": np.zeros(1)}, meta={"extra__a": "x"}),
        r"key 'extra__a' .*exactly one",
    ),
    ("no-J", _st_case(drop=("J",)), r"key 'J' .*got nothing \(missing key\)"),
    ("no-lam", _st_case(drop=("lam",)), r"key 'lam' .*missing"),
    ("J-int", _st_case(tensors={"J": np.ones((6, 4), dtype=np.int32)}), r"key 'J' .*got dtype int32"),
    ("unknown", _st_case(meta={"author": "me"}), r"unexpected key\(s\) 'author'"),
    (
        "checksum",
        _st_case(meta={"checksum": "f" * 64}),
        r"checksum mismatch in .*bad\.safetensors.*corrupted",
    ),
]


@pytest.mark.parametrize(("change", "match"), [c[1:] for c in BAD_ST], ids=[c[0] for c in BAD_ST])
def test_malformed_safetensors_files(tmp_path, change, match):
    t, m = st_hand_written()
    change(t, m)
    path = tmp_path / "bad.safetensors"
    write_st(path, t, m)
    with pytest.raises(ValueError, match=r"path: .*" + match) as info:
        load_problem(path)
    assert "bad.safetensors" in str(info.value)


def test_hand_written_safetensors_loads(tmp_path):
    t, m = st_hand_written()
    write_st(tmp_path / "h.safetensors", t, m)
    P, _ = load_problem(tmp_path / "h.safetensors")
    assert (P.N, P.K, P.loss.name, P.seed) == (3, 2, "cross_entropy", None)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", r"unreadable file"),
        (b"not a problem file at all", r"unreadable file"),
        (b"PK\x03\x04 truncated zip", r"unreadable file"),
        (b'\x05\x00\x00\x00\x00\x00\x00\x00{"a"', r"unreadable file"),
        (b"\xff" * 8 + b"{}", r"unreadable file"),
    ],
)
def test_garbage_files(tmp_path, content, match):
    path = tmp_path / "g.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"path: .*" + match + r".*g\.npz"):
        load_problem(path)


def test_missing_format_key(tmp_path):
    path = tmp_path / "nofmt.npz"
    np.savez(path, J=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"path: expected a file of format 'loracheck\.problem', got none"):
        load_problem(path)


def test_npy_file_is_value_error(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ValueError, match="path: expected a loracheck problem file, got a single array file"):
        load_problem(path)


def test_missing_file_is_value_error(tmp_path):
    with pytest.raises(ValueError, match=r"path: expected an existing problem file, got .*nope\.npz"):
        load_problem(tmp_path / "nope.npz")


# ---------------------------------------------------------------------------------------------
# Save errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["p.txt", "p", "p.npy", "p.npz.tmp", "p.safetensor", "p.pt"])
def test_save_rejects_other_suffixes(tmp_path, name):
    with pytest.raises(
        ValueError, match=r"path: expected a file name ending in \.npz or \.safetensors, got .*"
    ):
        save_problem(make_problem(12, "squared"), tmp_path / name)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_operator_problem_cannot_be_saved(tmp_path, suffix):
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
    with pytest.raises(ValueError, match=r"problem: expected a dense-J or LowRankOperator-J problem to save"):
        save_problem(op, tmp_path / f"op{suffix}")
    assert os.listdir(tmp_path) == []


def test_unsaveable_problems(tmp_path):
    # a bfloat16 problem cannot even be built (Problem refuses the dtype), so there is nothing to save
    with pytest.raises(
        ValueError, match=r"J: expected a floating dtype \(float16, float32, float64\), got torch\.bfloat16"
    ):
        make_problem(1, "squared", dtype=torch.bfloat16)
    with pytest.raises(
        ValueError, match=rf"problem\.seed: expected an int in \[-{2**63}, {2**64 - 1}\] to save, got {2**70}"
    ):
        save_problem(make_problem(1, "squared", pseed=2**70), tmp_path / "s.npz")
    with pytest.raises(TypeError, match="problem: expected a Problem, got dict"):
        save_problem({}, tmp_path / "d.npz")  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Counterexamples
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_load_counterexample_from_the_jlr_writer(tmp_path, suffix, monkeypatch):
    from verify import checker as jlr
    from verify import counterexample as writer

    P = make_problem(20, "squared", low_rank=2 if suffix == ".safetensors" else None)
    g = torch.Generator().manual_seed(0)
    D = tuple(torch.randn(m, n, generator=g, dtype=DT) for m, n in P.blocks)
    opts = {"rank_bound": 1, "gap_rtol": 1e-8, "seed": 3}
    if suffix == ".safetensors":  # the checker names its files .npz; the format is the same
        real = writer.save_problem
        monkeypatch.setattr(
            writer, "save_problem", lambda p, path, **kw: real(p, Path(path).with_suffix(suffix), **kw)
        )
    path = jlr.save_counterexample(P, tmp_path, "JLR24.rank_nuc", D, opts)
    assert path is not None and path.endswith(suffix)
    cx = load_counterexample(path)
    assert cx.claim == "JLR24.rank_nuc"
    assert cx.options == opts and json.loads(cx.options_json) == opts
    assert len(cx.point) == 2 and all(same_tensor(a, b) for a, b in zip(cx.point, D))
    assert cx.U is None and cx.V is None and cx.perturbation is None and cx.record is None
    # the one counterexample format (verify.counterexample) adds its metadata, counterexample_json
    assert cx.version == 2 and set(cx.extras) == {"D0", "D1", "claim", "options_json", "counterexample_json"}
    assert_same_problem(P, cx.problem)
    Q, extras = load_problem(path)  # the old interface still works
    assert_same_problem(P, Q) and set(extras) == set(cx.extras)


def test_load_counterexample_with_factors_and_record(tmp_path):
    P = make_problem(21, "squared", blocks=((3, 2),), lam=(0.1,))
    U, V, C = np.ones((3, 1)), np.full((2, 1), 2.0), np.zeros((3, 2))
    blob = json.dumps({"record": {"grad_norm": 1e-9}, "options": {"order": 2}}, sort_keys=True)
    extra = {"U0": U, "V0": V, "D0": U @ V.T, "C0": C, "claim": np.array("JLR24.no_spurious"),
             "record_json": np.array(blob)}  # fmt: skip
    cx = load_counterexample(save_problem(P, tmp_path / "cx.npz", extra=extra))
    assert cx.claim == "JLR24.no_spurious" and cx.options == {"order": 2} and cx.record == {"grad_norm": 1e-9}
    assert cx.U is not None and cx.V is not None and cx.perturbation is not None
    np.testing.assert_array_equal(cx.U[0].numpy(), U)
    np.testing.assert_array_equal(cx.point[0].numpy(), U @ V.T)
    np.testing.assert_array_equal(cx.perturbation[0].numpy(), C)


@pytest.mark.parametrize(
    ("drop", "change", "match"),
    [
        ("claim", {}, r"extra 'claim' .*expected the refuted claim's id, got nothing"),
        ("options_json", {}, r"extra 'options_json' .*JSON object of checker options, got nothing"),
        ("D1", {}, r"extra 'D1' .*expected D0\.\.D1 \(one per block\), got nothing"),
        (None, {"options_json": np.array("[1]")}, r"extra 'options_json' .*got JSON list"),
        (None, {"options_json": np.array("{bad")}, r"extra 'options_json' .*JSON object"),
        (None, {"claim": np.array(3)}, r"extra 'claim' .*expected a text, got an int64 array"),
        (
            None,
            {"D0": np.ones((3, 2))},
            r"holds a point that does not fit the problem: D\[0\]: expected shape",
        ),
        (
            None,
            {"D0": np.ones((2, 3), np.float32)},
            r"extra 'D0' .*expected dtype torch\.float64, got float32",
        ),
    ],
)
def test_load_counterexample_errors(tmp_path, drop, change, match):
    P = make_problem(22, "squared")
    extra = {
        "D0": np.ones((2, 3)),
        "D1": np.ones((1, 2)),
        "claim": np.array("c"),
        "options_json": np.array("{}"),
    }
    extra.pop(drop, None)
    extra.update(change)
    path = save_problem(P, tmp_path / "cx.npz", extra=extra)
    with pytest.raises(ValueError, match=r"path: .*" + match):
        load_counterexample(path)


# ---------------------------------------------------------------------------------------------
# The examples of docs/problem-format.md
# ---------------------------------------------------------------------------------------------


def doc_examples() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    found = re.findall(r"<!-- test: ([\w-]+) -->\n```python\n(.*?)```", text, flags=re.S)
    return dict(found)


def doc_namespace(tmp_path) -> dict:
    ns: dict = {}
    exec(compile(doc_examples()["checksum-recipe"], str(DOC), "exec"), ns)
    return ns


def test_docs_have_the_examples():
    assert set(doc_examples()) == {
        "checksum-recipe",
        "numpy-only",
        "numpy-only-checksum",
        "safetensors-by-hand",
    }
    # the numpy-only example imports nothing from loracheck before writing the file
    ex = doc_examples()["numpy-only"]
    before = ex.split("np.savez(")[0]
    assert "landscapes" not in before and "verify" not in before and "import numpy as np" in before


def test_numpy_only_example_of_the_docs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ns = doc_namespace(tmp_path)
    for name in ("numpy-only", "numpy-only-checksum", "safetensors-by-hand"):
        exec(compile(doc_examples()[name], f"{DOC}:{name}", "exec"), ns)
    assert "Problem(name='my model, last layer'" in capsys.readouterr().out
    P, _ = load_problem(tmp_path / "my_problem.npz")
    Q, _ = load_problem(tmp_path / "my_problem_checked.npz")
    assert "checksum" in read_npz(tmp_path / "my_problem_checked.npz")
    assert_same_problem(P, Q)
    assert str(read_npz(tmp_path / "my_problem_checked.npz")["checksum"]) == checksum(
        ns["npz_fields"](tmp_path / "my_problem.npz")
    )
    S, _ = load_problem(tmp_path / "my_problem.safetensors")
    assert same_tensor(S.J.matrix, P.J.matrix) and S.loss.name == "cross_entropy"  # type: ignore[attr-defined]
    # the hand-written file, corrupted after its checksum was added, is refused
    _rewrite(tmp_path / "my_problem_checked.npz", lam=np.array([0.02]))
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_problem(tmp_path / "my_problem_checked.npz")


# ---------------------------------------------------------------------------------------------
# Atomicity
# ---------------------------------------------------------------------------------------------


def _patch_writer(monkeypatch, suffix, fail):
    if suffix == ".npz":
        monkeypatch.setattr(lio.np, "savez", fail)
    else:
        monkeypatch.setattr(lio.stnp, "save", fail)


def test_no_temp_files_after_success(tmp_path):
    for i in range(3):
        save_problem(make_problem(i, "squared"), tmp_path / f"p{i}.npz")
        save_problem(make_problem(i, "squared"), tmp_path / f"p{i}.safetensors")
    assert sorted(os.listdir(tmp_path)) == sorted(f"p{i}{s}" for i in range(3) for s in SUFFIXES)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_save_leaves_nothing(tmp_path, monkeypatch, exc, suffix):
    written = []

    def boom(*args, **kwargs):
        if suffix == ".npz":
            args[0].write(b"PK\x03\x04partial")  # a half-written temporary file
            written.append(os.listdir(tmp_path))
        raise exc

    _patch_writer(monkeypatch, suffix, boom)
    with pytest.raises(type(exc)):
        save_problem(make_problem(14, "squared"), tmp_path / f"p{suffix}")
    assert os.listdir(tmp_path) == []
    if suffix == ".npz":  # the temporary file existed while writing
        assert len(written[0]) == 1 and written[0][0].startswith(".p.npz.") and written[0][0].endswith(".tmp")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_failed_write_mid_file_leaves_nothing(tmp_path, monkeypatch, suffix):
    """The writer dies after part of the bytes went out (fh.write raises half-way)."""
    real_fdopen = os.fdopen

    class Dying:
        def __init__(self, fh):
            self.fh = fh

        def write(self, b):
            self.fh.write(bytes(b)[: len(b) // 2])
            raise OSError("killed mid-write")

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

    monkeypatch.setattr(lio.os, "fdopen", lambda fd, mode: Dying(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="killed mid-write"):
        save_problem(make_problem(14, "squared"), tmp_path / f"p{suffix}")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_failed_overwrite_keeps_old_file(tmp_path, monkeypatch, suffix):
    target = tmp_path / f"p{suffix}"
    P = make_problem(15, "logistic")
    save_problem(P, target)
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("no space left on device")

    _patch_writer(monkeypatch, suffix, boom)
    with pytest.raises(OSError, match="no space"):
        save_problem(make_problem(16, "logistic"), target)
    assert os.listdir(tmp_path) == [target.name]
    assert target.read_bytes() == before
    monkeypatch.undo()
    assert_same_problem(P, load_problem(target)[0])


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_failed_replace_leaves_no_temp(tmp_path, monkeypatch, suffix):
    def bad_replace(src, dst):
        raise OSError("replace failed")

    monkeypatch.setattr(lio.os, "replace", bad_replace)
    with pytest.raises(OSError, match="replace failed"):
        save_problem(make_problem(17, "squared"), tmp_path / f"p{suffix}")
    assert os.listdir(tmp_path) == []


def test_load_counterexample_reads_the_record_of_the_one_format(tmp_path):
    """A problem-kind counterexample of verify.counterexample keeps its record in its metadata."""
    from verify.counterexample import save_counterexample

    P = make_problem(8, "squared")
    D = tuple(torch.zeros(m, n, dtype=DT) for m, n in P.blocks)
    path = save_counterexample(
        tmp_path, "JLR-gd", options={"seed": 1}, problem=P, point=D, record={"objective": 0.5}
    )
    cx = load_counterexample(path)
    assert cx.claim == "JLR-gd" and cx.options == {"seed": 1} and cx.record == {"objective": 0.5}
