"""Hostile problem files: refused before anything big is read, with the file, key and limit named.

Classes (issue 25, sections 2 and 5): container headers checked first (a sparse 8 GB file is never
read whole); zip directories and ``.npy`` headers checked against the memory budget before any
member is inflated (zip bombs, forged shapes, more members than allowed); safetensors headers
(lengths, offsets, dtypes, shapes) checked against the file size and the budget; ``meta`` JSON
capped in depth (100,000 deep is a clean error, not ``RecursionError``) and its tagged arrays
restricted to bool/integer/float dtypes whose shape agrees with their data (``"U500000000"``
allocates nothing). The memory tests run the load in a subprocess under ``RLIMIT_AS`` (the
address space in use plus 1 GiB): a reader that allocated before checking would die of
``MemoryError`` there instead of printing the clean refusal.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save as st_save

from landscapes.io import (
    MAX_BYTES,
    MAX_BYTES_ENV,
    load_counterexample,
    load_problem,
    loads_json,
    memory_budget,
    read_arrays,
    save_problem,
)
from landscapes.operators import LowRankOperator
from landscapes.problem import Problem
from theory.errors import UserInputError
from verify.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def hand_written() -> dict[str, np.ndarray]:
    """A valid problem written with NumPy alone: N = 3, K = 2, one 2 x 2 block."""
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


def st_parts() -> tuple[dict[str, np.ndarray], dict[str, str]]:
    d = hand_written()
    return d, {k: str(d.pop(k)) for k in ("format", "version", "loss")}


def npy_header(dtype: object, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header (magic included) declaring ``dtype`` and ``shape``."""
    h = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode("latin1")
    h += b" " * (63 - (10 + len(h)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h


# A minimal zip writer: lets a test declare sizes and CRCs that zipfile would never write.
def write_zip(path: Path, members: list[tuple[str, bytes, int, int, int]]) -> None:
    """``members``: (name, stored bytes, method 0/8, crc32, declared uncompressed size)."""
    out, central = bytearray(), bytearray()
    for name, data, method, crc, usize in members:
        nb = name.encode()
        off = len(out)
        out += struct.pack(
            "<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(data), usize, len(nb), 0
        )
        out += nb + data
        central += struct.pack(
            "<4s6H3I5H2I",
            b"PK\x01\x02",
            20,
            20,
            0,
            method,
            0,
            0x21,
            crc,
            len(data),
            usize,
            len(nb),
            0,
            0,
            0,
            0,
            0,
            off,
        )
        central += nb
    n = len(members)
    eocd = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, n, n, len(central), len(out), 0)
    path.write_bytes(bytes(out + central + eocd))


def deflated(data: bytes) -> tuple[bytes, int, int]:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(), zlib.crc32(data), len(data)


def zeros_bomb(nbytes_zeros: int, prefix: bytes) -> tuple[bytes, int, int]:
    """A raw deflate stream of ``prefix`` and ``nbytes_zeros`` zero bytes, built from one repeated
    64 MiB segment (fully flushed segments concatenate), with its CRC and size."""
    seg = 2**26
    assert nbytes_zeros % seg == 0
    c0 = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c0.compress(prefix) + c0.flush(zlib.Z_FULL_FLUSH)
    c1 = zlib.compressobj(9, zlib.DEFLATED, -15)
    zseg = c1.compress(bytes(seg)) + c1.flush(zlib.Z_FULL_FLUSH)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc = zlib.crc32(prefix)
    z = bytes(seg)
    for _ in range(nbytes_zeros // seg):
        crc = zlib.crc32(z, crc)
    return head + zseg * (nbytes_zeros // seg) + tail, crc, len(prefix) + nbytes_zeros


def problem_members(skip: tuple[str, ...] = ()) -> list[tuple[str, bytes, int, int, int]]:
    """The members of a valid hand-written problem (deflated), less ``skip``."""
    return [npy_member(k, npy_bytes(a)) for k, a in hand_written().items() if k not in skip]


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def npy_member(key: str, raw: bytes) -> tuple[str, bytes, int, int, int]:
    data, crc, usize = deflated(raw)
    return key + ".npy", data, 8, crc, usize


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """A ~3 MB .npz whose J member inflates to 2.5 GiB of zeros (a real bomb: CRC and sizes true)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.npz"
    n = 40 * 2**26  # 2.5 GiB
    data, crc, usize = zeros_bomb(n, npy_header("<f8", (n // 8 // 4, 4)))
    write_zip(path, [*problem_members(skip=("J",)), ("J.npy", data, 8, crc, usize)])
    assert path.stat().st_size < 4 * 2**20
    return path


def refused(path, match: str, **kw) -> str:
    with pytest.raises(UserInputError, match=match) as info:
        load_problem(path, **kw)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# Containers: headers first
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("first", "match"),
    [
        (b"", r"unreadable file .*big\.npz.*JSON"),  # header length 0: not a safetensors header
        (struct.pack("<Q", 2**40), r"header length 1099511627776 exceeds the file size"),
        (struct.pack("<Q", 7 * 2**30), r"exceeds the file size .* or the limit 100000000"),
        (b"PK\x03\x04", r"unreadable file .*big\.npz"),  # a zip local header, no directory
    ],
    ids=["zeros", "header-1TiB", "header-7GiB", "zip-magic"],
)
def test_sparse_8gb_file_is_refused_from_its_header(tmp_path, first, match):
    path = tmp_path / "big.npz"
    with open(path, "wb") as fh:
        fh.write(first)
        fh.truncate(8 * 2**30)  # sparse: no disk used
    refused(path, match)


def test_safetensors_header_nested_deep_is_refused(tmp_path):
    header = b"[" * 100_000 + b"]" * 100_000
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    refused(path, r"unreadable file .*deep\.safetensors.*nested at most")


# ---------------------------------------------------------------------------------------------
# .npz: the directory and the .npy headers against the budget, before inflating
# ---------------------------------------------------------------------------------------------
def test_zip_bomb_refused_from_the_directory(bomb):
    msg = refused(bomb, r"key 'J' of .*bomb\.npz.*memory budget")
    assert str(MAX_BYTES) in msg and "2684354" in msg  # the limit and the declared size (2.5 GiB + header)


def test_zip_bomb_refused_under_the_budget_override(tmp_path):
    path = tmp_path / "small_bomb.npz"
    n = 2**26  # 64 MiB of zeros: under the default budget, over max_bytes
    data, crc, usize = zeros_bomb(n, npy_header("<f8", (n // 32, 4)))
    write_zip(path, [*problem_members(skip=("J",)), ("J.npy", data, 8, crc, usize)])
    refused(path, r"key 'J' .*at most 1000000 bytes", max_bytes=10**6)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (npy_header("<f8", (10**6, 10**6)), r"key 'J' .*memory budget.*\(1000000, 1000000\)"),
        (npy_header("<f8", (2**62, 8)), r"key 'J' .*memory budget"),
        (
            npy_header("<f8", (100, 4)),
            r"key 'J' .*header agrees with its size",
        ),  # 3200 bytes declared, 0 present
        (npy_header("|O", (6, 4)), r"key 'J' .*plain \(unpickled\) array"),
        (
            npy_header("<U100000000", ()),
            r"key 'J' .*texts of at most 67108864 characters, got a text of up to 100000000",
        ),  # a 400 MB text where numbers go
        (npy_header([("a", "<f8")], (6, 4)), r"key 'J' .*bool, number or string array"),
        (npy_header("<f8", (6, -4)), r"key 'J' .*declared shape"),
        (b"\x93NUMPY\x03\x00" + b"\x00" * 8, r"key 'J' .*unreadable \.npy header"),
        (b"not an npy member at all", r"key 'J' .*unreadable \.npy header"),
    ],
    ids=[
        "1e12-elements",
        "2^65-elements",
        "short-data",
        "object",
        "huge-text",
        "structured",
        "negative",
        "npy-v3",
        "no-magic",
    ],
)
def test_forged_npy_headers_refused_before_allocation(tmp_path, header, match):
    path = tmp_path / "forged.npz"
    write_zip(path, [*problem_members(skip=("J",)), npy_member("J", header)])
    refused(path, match)


def test_text_fields_capped_before_reading(tmp_path, monkeypatch):
    import landscapes.io as lio

    monkeypatch.setattr(lio, "MAX_TEXT_CHARS", 1000)
    d = hand_written()
    d["meta"] = np.array(json.dumps({"note": "x" * 2000}))
    np.savez(tmp_path / "t.npz", **d)
    refused(tmp_path / "t.npz", r"key 'meta' .*texts of at most 1000 characters")


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ([("README.txt", b"hello", 0, zlib.crc32(b"hello"), 5)], r"zip member 'README\.txt' is not an \.npy"),
        ([("J.npy", b"", 0, 0, 0)], r"'J\.npy' appears twice"),
    ],
    ids=["not-npy", "duplicate"],
)
def test_zip_members_of_the_wrong_kind(tmp_path, members, match):
    path = tmp_path / "z.npz"
    write_zip(path, [*problem_members(), *members])
    refused(path, match)


def test_too_many_members(tmp_path):
    path = tmp_path / "many.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(5000):
            zf.writestr(f"extra__a{i}.npy", b"")
    refused(path, r"5000 members .*at most 4096")


def test_member_inflating_past_its_declared_size_is_read_bounded(tmp_path):
    # J's deflate stream goes on with 2.5 GiB of zeros past its declared size (and CRC of the
    # declared part): zipfile stops at the declared size, the problem loads as declared
    good = npy_bytes(hand_written()["J"])
    data, _, _ = zeros_bomb(40 * 2**26, good)
    path = tmp_path / "liar.npz"
    write_zip(path, [*problem_members(skip=("J",)), ("J.npy", data, 8, zlib.crc32(good), len(good))])
    P, _ = load_problem(path)
    np.testing.assert_array_equal(P.J.matrix.numpy(), hand_written()["J"])
    # with the CRC of the whole stream the member is corrupt
    _, crc, _ = zeros_bomb(2**26, good)
    write_zip(path, [*problem_members(skip=("J",)), ("J.npy", data, 8, crc, len(good))])
    refused(path, r"unreadable file .*liar\.npz.*J\.npy")


# ---------------------------------------------------------------------------------------------
# .safetensors: declared dtypes, shapes and offsets against the file size and the budget
# ---------------------------------------------------------------------------------------------
def forged_st(path: Path, spec: dict, pad: int = 0, sparse: int = 0) -> None:
    t, m = st_parts()
    t.pop("J")
    good = st_save(t, metadata=m)
    n = int.from_bytes(good[:8], "little")
    header = json.loads(good[8 : 8 + n])
    data = good[8 + n :]
    base = len(data)
    spec = {
        k: (v | {"data_offsets": [base + o for o in v["data_offsets"]]}) if "data_offsets" in v else v
        for k, v in spec.items()
    }
    header.update(spec)
    h = json.dumps(header).encode()
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)) + h + data + bytes(pad))
        if sparse:
            fh.truncate(sparse)


@pytest.mark.parametrize(
    ("spec", "pad", "match"),
    [
        (
            {"dtype": "F64", "shape": [100000, 100000], "data_offsets": [0, 8 * 10**10]},
            0,
            r"key 'J' .*data_offsets",
        ),
        ({"dtype": "F64", "shape": [6, 4], "data_offsets": [0, 100]}, 200, r"key 'J' .*agree with the dtype"),
        ({"dtype": "F64", "shape": [6, -4], "data_offsets": [0, 0]}, 0, r"key 'J' .*declared shape"),
        ({"dtype": "F64", "shape": [1] * 40, "data_offsets": [0, 8]}, 8, r"key 'J' .*at most 32 sizes"),
        ({"dtype": "F64", "shape": [True, 4], "data_offsets": [0, 32]}, 32, r"key 'J' .*declared shape"),
        (
            {"dtype": "BF16", "shape": [6, 4], "data_offsets": [0, 48]},
            48,
            r"key 'J' .*safetensors dtype 'BF16'",
        ),
        ({"dtype": ["F64"], "shape": [6, 4], "data_offsets": [0, 192]}, 192, r"key 'J' .*safetensors dtype"),
        (
            {"dtype": "F64", "shape": [6, 4]},
            192,
            r"unreadable file .*expected \{dtype, shape, data_offsets\}",
        ),
        ({"dtype": "F64", "shape": [6, 4], "data_offsets": [0, 2**70]}, 0, r"key 'J' .*data_offsets"),
    ],
    ids=[
        "8e10-bytes",
        "short-offsets",
        "negative",
        "40-dims",
        "bool-size",
        "bf16",
        "dtype-list",
        "no-offsets",
        "offset-2^70",
    ],
)
def test_forged_safetensors_headers(tmp_path, spec, pad, match):
    path = tmp_path / "f.safetensors"
    forged_st(path, {"J": spec}, pad=pad)
    refused(path, match)


def test_safetensors_tensor_over_the_budget_in_a_sparse_file(tmp_path):
    path = tmp_path / "s.safetensors"
    n = 2**30  # 8 GiB of float64, really in the (sparse) file
    forged_st(
        path, {"J": {"dtype": "F64", "shape": [n // 4, 4], "data_offsets": [0, 8 * n]}}, sparse=9 * 2**30
    )
    msg = refused(path, r"key 'J' of .*s\.safetensors.*memory budget")
    assert "8589934592 bytes" in msg and "F64 [268435456, 4]" in msg


# ---------------------------------------------------------------------------------------------
# meta: depth, tagged arrays
# ---------------------------------------------------------------------------------------------
def with_meta(tmp_path: Path, meta_text: str, suffix: str = ".npz", name: str = "m") -> Path:
    d = hand_written()
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".npz":
        d["meta"] = np.array(meta_text)
        np.savez(path, **d)
    else:
        t, m = st_parts()
        path.write_bytes(st_save(t, metadata=m | {"meta": meta_text}))
    return path


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"a":' + "[" * 100_000 + "]" * 100_000 + "}", r"key 'meta' .*nested at most 64 deep"),
        ('{"a":' + "[" * 70 + "]" * 70 + "}", r"key 'meta' .*nested at most 64 deep, got depth 71"),
        ('{"a":' + '{"b":' * 100_000 + "1" + "}" * 100_001, r"key 'meta' .*nested at most 64 deep"),
    ],
    ids=["lists-100000", "lists-70", "objects-100000"],
)
def test_deep_meta_is_a_clean_error(tmp_path, suffix, text, match):
    refused(with_meta(tmp_path, text, suffix), match)


def tagged(tag: str, dtype, shape, data) -> str:
    return json.dumps({"x": {tag: {"dtype": dtype, "shape": shape, "data": data}}})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (tagged("__ndarray__", "U500000000", [1], ["a"]), r"got the dtype 'U500000000' at meta\['x'\]"),
        (tagged("__ndarray__", "<U500000000", [2], ["a", "b"]), r"got the dtype '<U500000000'"),
        (tagged("__ndarray__", "O", [1], [1]), r"got the dtype 'O'"),
        (tagged("__ndarray__", "object", [1], [1]), r"got the dtype 'object'"),
        (tagged("__ndarray__", "V8", [1], [1]), r"got the dtype 'V8'"),
        (tagged("__ndarray__", "(1000000000,)f8", [1], [1]), r"got the dtype '\(1000000000,\)f8'"),
        (tagged("__ndarray__", "complex128", [1], [1]), r"got the dtype 'complex128'"),
        (tagged("__ndarray__", "float64", [10**6, 10**6], [1.0]), r"key 'meta' .*memory budget"),
        (
            tagged("__ndarray__", "float64", [3], [1.0, 2.0]),
            r"shape \[3\] \(3 values\) with data of 2 values",
        ),
        (tagged("__ndarray__", "float64", [1], ["1e400"]), r"data that are not all numbers"),
        (tagged("__ndarray__", "float64", [1], [[1.0]]), r"data that are not all numbers"),
        (tagged("__ndarray__", "int64", [1], [10**400]), r"data that do not fit the dtype int64"),
        (tagged("__ndarray__", "float64", [-1], []), r"got the shape \[-1\]"),
        (tagged("__ndarray__", "float64", "3", [1, 2, 3]), r"got the shape 3"),
        (tagged("__tensor__", "complex128", [1], [1]), r"got the dtype 'complex128'"),
        (tagged("__tensor__", "Tensor", [1], [1]), r"got the dtype 'Tensor'"),
        (tagged("__tensor__", "float64", [2**40, 2**40], []), r"key 'meta' .*memory budget"),
        (json.dumps({"x": {"__tensor__": [1, 2]}}), r"tagged __tensor__ object"),
    ],
    ids=[
        "U500000000",
        "2xU500000000",
        "O",
        "object",
        "V8",
        "subarray",
        "complex",
        "1e12",
        "short-data",
        "string-data",
        "nested-data",
        "int-overflow",
        "negative-shape",
        "string-shape",
        "tensor-complex",
        "tensor-Tensor",
        "tensor-2^80",
        "tensor-list",
    ],
)
def test_meta_tagged_arrays_refused_before_allocation(tmp_path, text, match):
    refused(with_meta(tmp_path, text), r"path: key 'meta' of .*m\.npz.*" + match.replace("key 'meta' .*", ""))


def test_meta_arrays_that_fit_still_load(tmp_path):
    meta = {"a": np.arange(6, dtype=">i4").reshape(2, 3), "t": torch.ones(2, dtype=torch.bfloat16)}
    meta["e"] = np.zeros((0, 3))
    d = hand_written()
    d["meta"] = np.array(
        json.dumps(
            {
                "a": {"__ndarray__": {"dtype": ">i4", "shape": [2, 3], "data": list(range(6))}},
                "t": {"__tensor__": {"dtype": "bfloat16", "shape": [2], "data": [1.0, 1.0]}},
                "e": {"__ndarray__": {"dtype": "float64", "shape": [0, 3], "data": []}},
            }
        )
    )
    np.savez(tmp_path / "ok.npz", **d)
    P, _ = load_problem(tmp_path / "ok.npz")
    np.testing.assert_array_equal(P.meta["a"], meta["a"])
    assert P.meta["t"].dtype == torch.bfloat16 and P.meta["e"].shape == (0, 3)


# ---------------------------------------------------------------------------------------------
# The budget itself, and other JSON texts from files
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1, 1.5, "1000", True, None.__class__])
def test_max_bytes_argument_checked(tmp_path, bad):
    np.savez(tmp_path / "h.npz", **hand_written())
    with pytest.raises(UserInputError, match="max_bytes: expected a positive integer"):
        load_problem(tmp_path / "h.npz", max_bytes=bad)


def test_budget_from_the_environment(tmp_path, monkeypatch):
    np.savez(tmp_path / "h.npz", **hand_written())
    monkeypatch.setenv(MAX_BYTES_ENV, "100")
    assert memory_budget() == 100
    refused(tmp_path / "h.npz", r"key '\w+' of .*h\.npz.*at most 100 bytes .*LORACHECK_MAX_BYTES")
    assert load_problem(tmp_path / "h.npz", max_bytes=10**6)[0].N == 3  # the argument wins
    monkeypatch.setenv(MAX_BYTES_ENV, "lots")
    refused(
        tmp_path / "h.npz", r"\$LORACHECK_MAX_BYTES: expected a positive integer number of bytes, got 'lots'"
    )


def test_budget_counts_all_keys_together(tmp_path):
    d = hand_written()
    d["extra__big1"] = np.zeros(100_000)
    d["extra__big2"] = np.zeros(100_000)
    np.savez(tmp_path / "two.npz", **d)
    msg = refused(tmp_path / "two.npz", r"key 'extra__big2' .*at most 1500000 bytes", max_bytes=1_500_000)
    assert "with the keys before it" in msg


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("options_json", "[" * 100_000 + "]" * 100_000),
        ("record_json", '{"record": {"a": ' + "[" * 70 + "1" + "]" * 70 + "}}"),
    ],
)
def test_counterexample_json_extras_depth(tmp_path, key, text):
    P = Problem(
        torch.eye(6, 4, dtype=torch.float64),
        torch.zeros(3, 2, dtype=torch.float64),
        torch.tensor([0, 1, 1]),
        loss="cross_entropy",
        blocks=[(2, 2)],
        lam=[0.1],
    )
    path = save_problem(
        P, tmp_path / "cx.npz", extra={"claim": np.array("c"), key: np.array(text), "D0": np.zeros((2, 2))}
    )
    with pytest.raises(UserInputError, match=rf"extra '{key}' of .*nested at most 64 deep"):
        load_counterexample(path)


def test_loads_json_caps():
    with pytest.raises(UserInputError, match="thing: expected JSON nested at most 2 deep, got depth 3"):
        loads_json("[[1]]", "thing", max_depth=2)
    with pytest.raises(UserInputError, match="thing: expected a JSON text, got invalid JSON"):
        loads_json(b"\xff", "thing")
    assert loads_json('{"a": [1, {"b": 2}]}', "thing") == {"a": [1, {"b": 2}]}


# ---------------------------------------------------------------------------------------------
# Memory: refused BEFORE allocation (a subprocess under RLIMIT_AS)
# ---------------------------------------------------------------------------------------------
_UNDER_RLIMIT = textwrap.dedent(
    """
    import resource, sys
    import landscapes.io, numpy, torch  # imports first: they map a lot of address space
    vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, resource.RLIM_INFINITY))
    from theory.errors import UserInputError
    for path in sys.argv[1:]:
        try:
            landscapes.io.load_problem(path)
            print("LOADED", path)
        except UserInputError as exc:
            print("REFUSED", str(exc).replace(chr(10), " "))
        except BaseException as exc:
            print("FAILED", type(exc).__name__, str(exc)[:200].replace(chr(10), " "))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_memory_budget_is_checked_before_allocation(tmp_path, bomb):
    sparse = tmp_path / "sparse.npz"
    with open(sparse, "wb") as fh:
        fh.truncate(8 * 2**30)
    st = tmp_path / "st.safetensors"
    n = 2**30
    forged_st(st, {"J": {"dtype": "F64", "shape": [n // 4, 4], "data_offsets": [0, 8 * n]}}, sparse=9 * 2**30)
    meta = with_meta(tmp_path, tagged("__ndarray__", "U500000000", [2], ["a", "b"]))
    forged = tmp_path / "forged.npz"
    header = npy_header("<f8", (2**28, 4))  # 8 GiB declared in a 200-byte member
    write_zip(forged, [*problem_members(skip=("J",)), npy_member("J", header)])
    paths = [sparse, st, meta, forged, bomb]
    r = subprocess.run(
        [sys.executable, "-c", _UNDER_RLIMIT, *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == len(paths), (r.stdout, r.stderr[-2000:])
    assert all(line.startswith("REFUSED") for line in lines), lines
    assert "unreadable file" in lines[0] and "sparse.npz" in lines[0]
    for line, key in zip(lines[1:], ["J", "meta", "J", "J"]):
        assert f"key '{key}'" in line, line
    assert "memory budget" in lines[1] and "memory budget" in lines[3] and "memory budget" in lines[4]
    assert "U500000000" in lines[2]


# ---------------------------------------------------------------------------------------------
# Through the CLI: exit 3, the key on stderr
# ---------------------------------------------------------------------------------------------
def test_cli_exit_3_names_the_key(tmp_path, bomb, capsys):
    deep = with_meta(tmp_path, '{"a":' + "[" * 100_000 + "]" * 100_000 + "}", name="deep")
    u = with_meta(tmp_path, tagged("__ndarray__", "U500000000", [1], ["a"]), name="u")
    sparse = tmp_path / "sparse.safetensors"
    with open(sparse, "wb") as fh:
        fh.write(struct.pack("<Q", 2**40))
        fh.truncate(8 * 2**30)
    for path, key in [(bomb, "key 'J'"), (deep, "key 'meta'"), (u, "key 'meta'"), (sparse, "header length")]:
        assert main(["audit", str(path)]) == 3
        err = capsys.readouterr().err
        assert key in err and str(path.name) in err and "Traceback" not in err, err


# ---------------------------------------------------------------------------------------------
# Good files still load, unchanged
# ---------------------------------------------------------------------------------------------
def _problems():
    g = torch.Generator().manual_seed(0)
    d = torch.float64
    yield (
        "dense",
        Problem(
            torch.randn(6, 10, generator=g, dtype=d),
            torch.zeros(3, 2, dtype=d),
            torch.tensor([0, 1, 1]),
            loss="cross_entropy",
            blocks=[(2, 3), (2, 2)],
            lam=[0.1, 0.2],
            seed=5,
            name="dense",
            meta={
                "teacher": [torch.ones(2, 3, dtype=d)],
                "arr": np.arange(4),
                "s": "x",
                "n": {"deep": [[1, 2], {"k": None}]},
            },
        ),
    )
    yield (
        "low-rank",
        Problem(
            LowRankOperator(torch.randn(4, 2, generator=g, dtype=d), torch.randn(2, 6, generator=g, dtype=d)),
            torch.zeros(4, 1, dtype=d),
            torch.randn(4, 1, generator=g, dtype=d),
            loss="squared",
            blocks=[(2, 3)],
            lam=[0.0],
        ),
    )
    for dt in (torch.float16, torch.float32):
        yield (
            str(dt),
            Problem(
                0.1 * torch.randn(2, 4, generator=g, dtype=dt),
                torch.zeros(2, 1, dtype=dt),
                torch.tensor([0, 1]),
                loss="logistic",
                blocks=[(2, 2)],
                lam=[0.1],
            ),
        )


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_good_files_load_unchanged(tmp_path, suffix):
    for name, P in _problems():
        extra = {
            "D0": np.ones((2, 3)),
            "D1": np.ones((2, 2)),
            "claim": np.array("JLR-x"),
            "options_json": np.array('{"rank": 1}'),
            "flags": np.array([True, False]),
            "u": np.arange(3, dtype=np.uint16),
        }
        if suffix == ".npz":
            extra |= {"c": np.array([1 + 2j]), "s": np.array(["a", "bc"]), "b": np.array([b"x"])}
        path = save_problem(P, tmp_path / f"{name}{suffix}", extra=extra)
        Q, extras = load_problem(path)
        assert Q.fingerprint() == P.fingerprint(), name
        for k, v in extra.items():
            np.testing.assert_array_equal(extras[k], v)
            assert extras[k].dtype == v.dtype
        assert extras["D0"].flags.writeable  # arrays come back as np.load gave them
        if P.blocks == ((2, 3), (2, 2)):
            cx = load_counterexample(path)
            assert cx.claim == "JLR-x" and cx.options == {"rank": 1}


def test_numpy_written_files_load(tmp_path):
    d = hand_written()
    np.savez_compressed(tmp_path / "c.npz", **d)
    np.savez(
        tmp_path / "f.npz", **(d | {"J": np.asfortranarray(d["J"]), "lam": np.array([0.1], dtype=">f8")})
    )
    for name in ("c.npz", "f.npz"):
        P, _ = load_problem(tmp_path / name)
        np.testing.assert_array_equal(P.J.matrix.numpy(), d["J"])
    with pytest.raises(
        UserInputError, match=r"point: key '\w+' of .*c\.npz.*bool or number array, got dtype <U"
    ):
        read_arrays(tmp_path / "c.npz", what="point")  # strings refused where numbers go


@pytest.mark.parametrize("value", ["NaN", "-Infinity", "1e999"])
def test_meta_with_non_finite_numbers_is_refused(tmp_path, value):
    # the package never writes them (allow_nan=False); a file carrying one is not one of ours
    p = tmp_path / "p.npz"
    arrays = hand_written()
    arrays["meta"] = np.array('{"note": ' + value + "}")
    np.savez(p, **arrays)
    with pytest.raises(UserInputError, match="meta.*(non-standard constant|overflows a float)"):
        load_problem(p)
