"""Problem files: a documented, versioned format that replays a problem exactly.

Format ``loracheck.problem`` version 2, in two containers chosen by the file name: NumPy ``.npz``
(never pickled) or ``.safetensors``. The full specification, with the checksum recipe and an
example that writes a file with NumPy alone, is ``docs/problem-format.md``; in short, a file is a
set of named fields, each a *text* (a string), an *integer* or an *array*:

=============== ======== ==========================================================================
key             kind     content
=============== ======== ==========================================================================
format          text     ``"loracheck.problem"`` (required)
version         integer  ``2`` (required; version 1 ``.npz`` files are still read)
J               array    dense Jacobian ``(K N, p)``, float16/32/64 -- or, instead of ``J``:
J_left, J_right array    factors of ``J = J_left @ J_right``, ``(K N, s)`` and ``(s, p)``
f0              array    ``(N, K)``, the dtype of ``J`` (required)
y               array    labels in the loss's format (required)
loss            text     ``squared``, ``logistic`` or ``cross_entropy`` (required)
blocks          array    ``(b, 2)`` integer block shapes (required)
lam             array    ``(b,)`` weight decays ``>= 0`` (required)
seed            integer  the problem's seed (optional; absent: ``None``)
name            text     the problem's name (optional; absent: ``""``)
meta            text     ``Problem.meta`` as a JSON object (optional; absent: ``{}``)
checksum        text     sha256 over all other fields (optional; verified when present)
extra__<key>    any      arrays (or 0-d strings) attached by the writer, e.g. a counterexample
=============== ======== ==========================================================================

In ``.npz`` a text is a 0-d unicode array and an integer a 0-d integer array. In
``.safetensors`` (which stores only numeric tensors) texts and integers live in the header's
``__metadata__`` dictionary (integers as decimal strings), arrays are tensors.

Files are written atomically (temporary file in the same directory, ``fsync``, then
``os.replace``): a killed writer never leaves a half-written problem file, and a failed write
removes its temporary file and keeps the previous file.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy as stnp
import torch
from safetensors import safe_open
from torch import Tensor

from landscapes.losses import LOSS_NAMES
from landscapes.operators import DenseOperator, LowRankOperator
from landscapes.problem import Problem
from theory.atomic import atomic_write, atomic_write_text
from theory.errors import InputTypeError, UserInputError

__all__ = [
    "save_problem",
    "load_problem",
    "load_counterexample",
    "Counterexample",
    "atomic_write",
    "atomic_write_text",
    "checksum",
    "read_arrays",
    "loads_json",
    "json_depth",
    "memory_budget",
    "MAX_BYTES",
    "MAX_BYTES_ENV",
    "MAX_JSON_DEPTH",
    "FORMAT",
    "VERSION",
    "SUPPORTED_VERSIONS",
    "SUFFIXES",
]

FORMAT = "loracheck.problem"
VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
SUFFIXES = (".npz", ".safetensors")

#: A field's value: text (``str``), integer (``int``; only ``version`` and ``seed``) or array.
Field = str | int | np.ndarray

_TEXT_KEYS = ("format", "loss", "name", "meta", "checksum")
_INT_KEYS = ("version", "seed")
_ARRAY_KEYS = ("J", "J_left", "J_right", "f0", "y", "blocks", "lam")
_REQUIRED = ("format", "version", "f0", "y", "loss", "blocks", "lam")
_KNOWN = set(_TEXT_KEYS) | set(_INT_KEYS) | set(_ARRAY_KEYS)
_EXTRA = "extra__"
_EXTRA_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_TORCH_FLOATS = (torch.float16, torch.float32, torch.float64)
# numpy dtypes that safetensors stores
_ST_DTYPES = {np.dtype(t) for t in (np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32)}
_ST_DTYPES |= {np.dtype(t) for t in (np.int64, np.uint64, np.float16, np.float32, np.float64)}
_INT64 = np.iinfo(np.int64)
_UINT64 = np.iinfo(np.uint64)
_WHAT = {
    "format": f"the text {FORMAT!r}",
    "version": f"an integer in {list(SUPPORTED_VERSIONS)}",
    "J": "a 2-D float16/float32/float64 array of shape (K*N, p)",
    "J_left": "a 2-D float16/float32/float64 array of shape (K*N, s)",
    "J_right": "a 2-D float16/float32/float64 array of shape (s, p)",
    "f0": "a 2-D float array of shape (N, K) with the dtype of J",
    "y": "an integer or float label array",
    "loss": f"one of the texts {', '.join(LOSS_NAMES)}",
    "blocks": "a (b, 2) integer array of positive block shapes",
    "lam": "a (b,) array of finite weight decays >= 0",
    "seed": "an integer",
    "name": "a text",
    "meta": "a text holding a JSON object",
    "checksum": "a text of 64 lowercase hex digits",
}


# ---------------------------------------------------------------------------------------------
# Checksum
# ---------------------------------------------------------------------------------------------
def checksum(fields: Mapping[str, Field]) -> str:
    r"""The sha256 (hex) of a file's fields, in the canonical order of ``docs/problem-format.md``.

    For every key except ``checksum``, in sorted order (Python string order): a text ``t`` adds
    ``f"{key}\ttext\t{len(b)}\n".encode()`` then ``b = t.encode("utf-8")``; an integer ``i``
    (``version``, ``seed``) is hashed as the text ``str(i)``; an array ``a`` adds
    ``f"{key}\t{d}\t{shape}\n".encode()`` then its bytes in little-endian C order, where ``d`` is
    the little-endian dtype string (``"<f8"``, ``"|b1"``) and ``shape`` the comma-joined sizes
    (empty for a 0-d array). The digest is the same for a problem in either container.
    """
    h = hashlib.sha256()
    for key in sorted(fields):
        if key == "checksum":
            continue
        v = fields[key]
        if isinstance(v, (str, int)) and not isinstance(v, bool):
            b = str(v).encode("utf-8")
            h.update(f"{key}\ttext\t{len(b)}\n".encode())
            h.update(b)
        else:
            a = _little_endian(np.asarray(v))
            shape = ",".join(str(s) for s in a.shape)
            h.update(f"{key}\t{a.dtype.str}\t{shape}\n".encode())
            h.update(a.tobytes(order="C"))
    return h.hexdigest()


def _little_endian(a: np.ndarray) -> np.ndarray:
    return a.astype(a.dtype.newbyteorder("<"), copy=False)


def _checksum_v1(arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


class _Reader:
    """One file being read: its memory budget, and messages naming the file, key, expectation, value."""

    def __init__(self, path: Path, max_bytes: int | None = None, what: str = "path") -> None:
        self.path = path
        self.p = repr(str(path))
        self.what = what
        self.budget = memory_budget(max_bytes)
        self.charged = 0

    def charge(self, key: str, nbytes: int, declared: str) -> None:
        """Count ``nbytes`` (declared by the file for ``key``) against the budget, before reading."""
        self.charged += nbytes
        if self.charged > self.budget:
            raise UserInputError(
                f"{self.what}: key {key!r} of {self.p}: expected arrays of at most {self.budget} bytes "
                "in all "
                f"(the memory budget: max_bytes or ${MAX_BYTES_ENV}), got {declared} ({nbytes} bytes; "
                f"{self.charged} bytes with the keys before it), refused before allocating"
            )

    def unreadable(self, why: str) -> UserInputError:
        return UserInputError(
            f"{self.what}: expected a loracheck problem file (.npz or .safetensors), got an unreadable file "
            f"{self.p} ({why})"
            if self.what == "path"
            else f"{self.what}: expected a readable .npz or .safetensors file, got {self.p} ({why})"
        )

    def bad(self, key: str, got: str, expected: str | None = None) -> UserInputError:
        return UserInputError(
            f"{self.what}: key {key!r} of {self.p}: expected {expected or _WHAT[key]}, got {got}"
        )

    def missing(self, key: str) -> UserInputError:
        return UserInputError(
            f"{self.what}: key {key!r} of {self.p}: expected {_WHAT[key]}, got nothing (missing key)"
        )


# ---------------------------------------------------------------------------------------------
# Metadata (Problem.meta) <-> JSON
# ---------------------------------------------------------------------------------------------
_TENSOR_TAG, _ARRAY_TAG = "__tensor__", "__ndarray__"


def _meta_error(where: str, expected: str, got: object) -> UserInputError:
    return UserInputError(f"problem.meta: expected {expected} at {where}, got {got}")


def _encode_meta(v: Any, where: str) -> Any:
    """JSON form of one meta value; tensors and arrays become tagged objects (see the docs)."""
    if v is None or isinstance(v, (bool, np.bool_)):
        return None if v is None else bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(float(v)):
            raise _meta_error(where, "a finite number (JSON has no NaN or inf)", repr(float(v)))
        return float(v)
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return [_encode_meta(x, f"{where}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise _meta_error(where, "string keys (JSON objects have no others)", f"the key {k!r}")
            out[k] = _encode_meta(x, f"{where}[{k!r}]")
        if len(out) == 1 and next(iter(out)) in (_TENSOR_TAG, _ARRAY_TAG):
            raise _meta_error(
                where, "no dict whose only key is a reserved tag", f"the key {next(iter(out))!r}"
            )
        return out
    if isinstance(v, (Tensor, np.ndarray)):
        tag = _TENSOR_TAG if isinstance(v, Tensor) else _ARRAY_TAG
        a = v.detach().cpu() if isinstance(v, Tensor) else v
        dtype = str(a.dtype).replace("torch.", "")
        if (isinstance(a, Tensor) and a.dtype.is_complex) or (
            isinstance(a, np.ndarray) and a.dtype.kind not in "biuf"
        ):
            raise _meta_error(where, "a bool, integer or float tensor/array", f"dtype {dtype}")
        data = a.reshape(-1).tolist()
        if any(isinstance(x, float) and not math.isfinite(x) for x in data):
            raise _meta_error(where, "finite values (JSON has no NaN or inf)", "NaN or inf")
        return {tag: {"dtype": dtype, "shape": list(a.shape), "data": data}}
    raise _meta_error(
        where,
        "a JSON value (None, bool, int, float, str, list, tuple, dict with str keys, tensor, array)",
        f"a {type(v).__name__}",
    )


_META_NUMPY = {
    str(np.dtype(t)): np.dtype(t)
    for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
    + (np.float16, np.float32, np.float64)
}
_META_NUMPY |= {d.newbyteorder(">").str: d.newbyteorder(">") for d in list(_META_NUMPY.values())}
_META_NUMPY |= {d.newbyteorder("<").str: d.newbyteorder("<") for d in list(_META_NUMPY.values())}
_META_TORCH = {
    name: dt
    for name in ("bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64")
    + ("float16", "bfloat16", "float32", "float64")
    if isinstance(dt := getattr(torch, name, None), torch.dtype)
}


def _decode_tagged(tag: str, spec: Any, where: str, r: _Reader) -> Tensor | np.ndarray:
    """A tagged ``{dtype, shape, data}`` meta object, checked before anything is allocated.

    The dtype is allow-listed (bool, integer, float), the shape checked against ``len(data)`` and
    the memory budget, the data must all be numbers.
    """
    what = f"a tagged {tag} object {{dtype, shape, data}} of a bool, integer or float dtype"

    def bad(got: str) -> UserInputError:
        return r.bad("meta", f"{got} at {where}", what)

    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data"}:
        raise bad(f"{str(spec)[:80]}")
    name, shape, data = spec["dtype"], spec["shape"], spec["data"]
    table: Mapping[str, Any] = _META_TORCH if tag == _TENSOR_TAG else _META_NUMPY
    if not isinstance(name, str) or name not in table:
        raise bad(f"the dtype {str(name)[:40]!r}")
    itemsize = table[name].itemsize
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_NDIM
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise bad(f"the shape {str(shape)[:80]}")
    count = math.prod(shape)
    r.charge("meta", count * itemsize, f"a {name} {tag} of shape {shape} at {where}")
    if not isinstance(data, list) or len(data) != count:
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise bad(f"shape {shape} ({count} values) with data of {got} values")
    if not all(type(x) in (int, float, bool) for x in data):
        raise bad("data that are not all numbers")
    try:
        if tag == _TENSOR_TAG:
            return torch.tensor(data, dtype=table[name]).reshape(shape)
        return np.array(data, dtype=table[name]).reshape(shape)
    except (ValueError, TypeError, OverflowError, RuntimeError) as exc:
        raise bad(f"data that do not fit the dtype {name} ({str(exc)[:80]})") from None


def _decode_meta(v: Any, where: str, r: _Reader) -> Any:
    if isinstance(v, list):
        return [_decode_meta(x, f"{where}[{i}]", r) for i, x in enumerate(v)]
    if not isinstance(v, dict):
        return v
    if len(v) == 1 and next(iter(v)) in (_TENSOR_TAG, _ARRAY_TAG):
        tag = next(iter(v))
        return _decode_tagged(tag, v[tag], where, r)
    return {k: _decode_meta(x, f"{where}[{k!r}]", r) for k, x in v.items()}


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _container(path: Path) -> str:
    if path.suffix not in SUFFIXES:
        raise UserInputError(f"path: expected a file name ending in .npz or .safetensors, got {str(path)!r}")
    return path.suffix[1:]


def _tensor_array(t: Tensor, what: str) -> np.ndarray:
    if t.dtype.is_floating_point and t.dtype not in _TORCH_FLOATS:
        raise UserInputError(f"{what}: expected dtype float16, float32 or float64 to save, got {t.dtype}")
    try:
        return t.detach().cpu().contiguous().numpy()
    except TypeError as exc:
        raise UserInputError(f"{what}: expected a dtype that NumPy stores, got {t.dtype} ({exc})") from None


def _problem_fields(problem: Problem) -> dict[str, Field]:
    if not isinstance(problem, Problem):
        raise InputTypeError(f"problem: expected a Problem, got {type(problem).__name__}")
    fields: dict[str, Field] = {"format": FORMAT, "version": VERSION}
    if isinstance(problem.J, DenseOperator):
        fields["J"] = _tensor_array(problem.J.matrix, "problem.J")
    elif isinstance(problem.J, LowRankOperator):
        fields["J_left"] = _tensor_array(problem.J.left, "problem.J.left")
        fields["J_right"] = _tensor_array(problem.J.right, "problem.J.right")
    else:
        raise UserInputError(
            "problem: expected a dense-J or LowRankOperator-J problem to save, got an operator-form J "
            f"({type(problem.J).__name__}) that stores no matrix"
        )
    fields["f0"] = _tensor_array(problem.f0, "problem.f0")
    fields["y"] = _tensor_array(problem.y, "problem.y")
    fields["loss"] = problem.loss.name
    fields["blocks"] = np.array(problem.blocks, dtype=np.int64).reshape(-1, 2)
    fields["lam"] = np.array(problem.lam, dtype=np.float64)
    if problem.seed is not None:
        if not _INT64.min <= problem.seed <= _UINT64.max:
            raise UserInputError(
                f"problem.seed: expected an int in [{_INT64.min}, {_UINT64.max}] to save, got {problem.seed}"
            )
        fields["seed"] = int(problem.seed)
    fields["name"] = problem.name
    fields["meta"] = json.dumps(
        _encode_meta(dict(problem.meta), "meta"), allow_nan=False, ensure_ascii=False, separators=(",", ":")
    )
    return fields


def _extra_fields(extra: Mapping[str, Any] | None, container: str) -> dict[str, Field]:
    out: dict[str, Field] = {}
    if extra is None:
        return out
    if not isinstance(extra, Mapping):
        raise UserInputError(f"extra: expected a mapping of names to arrays, got {type(extra).__name__}")
    for k, v in extra.items():
        if not isinstance(k, str) or not _EXTRA_NAME.fullmatch(k):
            raise UserInputError(f"extra: expected names of letters, digits, '_', '.', '-', got {k!r}")
        a = _tensor_array(v, f"extra[{k!r}]") if isinstance(v, Tensor) else np.asarray(v)
        if a.dtype.kind == "U" and a.ndim == 0:
            out[_EXTRA + k] = str(a.item())
            continue
        if a.dtype.kind not in "biufcUS" or a.dtype.hasobject:
            raise UserInputError(
                f"extra[{k!r}]: expected a bool, number or string array (files hold no pickled "
                f"objects), got dtype {a.dtype}"
            )
        if container == "safetensors" and a.dtype.newbyteorder("=") not in _ST_DTYPES:
            raise UserInputError(
                f"extra[{k!r}]: expected a bool, integer or float16/32/64 array, or a 0-d string, "
                f"for .safetensors, got dtype {a.dtype} of shape {a.shape}"
            )
        out[_EXTRA + k] = a
    return out


def save_problem(
    problem: Problem, path: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``problem`` (and ``extra`` arrays) to ``path`` atomically; returns the path.

    The container follows the suffix: ``.npz`` or ``.safetensors`` (format version 2, see
    ``docs/problem-format.md``). ``J`` must be dense or a
    :class:`~landscapes.operators.LowRankOperator` (stored as its two factors); ``problem.meta``
    must be JSON-serializable (tensors and arrays are stored tagged and come back as such; tuples
    come back as lists). ``extra`` maps names to arrays (or 0-d strings), read back by
    :func:`load_problem`.
    """
    path = Path(path)
    container = _container(path)
    fields = _problem_fields(problem)
    fields.update(_extra_fields(extra, container))
    fields["checksum"] = checksum(fields)
    if container == "npz":
        data = {k: _npz_value(v) for k, v in fields.items()}
        return atomic_write(path, lambda fh: np.savez(fh, **data))  # type: ignore[arg-type]
    tensors = {k: v for k, v in fields.items() if isinstance(v, np.ndarray)}
    header = {k: str(v) for k, v in fields.items() if not isinstance(v, np.ndarray)}
    return atomic_write(path, lambda fh: fh.write(stnp.save(tensors, metadata=header)))


def _npz_value(v: Field) -> np.ndarray:
    if isinstance(v, np.ndarray):
        return v
    if isinstance(v, str):
        return np.array(v)
    return np.array(v, dtype=np.int64 if v <= _INT64.max else np.uint64)


# ---------------------------------------------------------------------------------------------
# Bounded reading: headers first, declared sizes against a memory budget, then the data
# ---------------------------------------------------------------------------------------------
#: Default memory budget of one file read: the declared bytes of all its arrays together.
MAX_BYTES = 2 * 2**30
#: Environment variable that overrides :data:`MAX_BYTES` (a positive integer number of bytes).
MAX_BYTES_ENV = "LORACHECK_MAX_BYTES"
#: Deepest nesting of JSON texts read from files (``meta``, headers, options, adapter configs).
MAX_JSON_DEPTH = 64
#: Longest text field (characters), e.g. ``meta``.
MAX_TEXT_CHARS = 2**26
#: Most members of an ``.npz`` archive / tensors of a ``.safetensors`` file.
MAX_MEMBERS = 4096
_MAX_NDIM = 32
_MAX_CENTRAL_DIRECTORY = 16 * 2**20
_MAX_NPY_HEADER = 10_000  # numpy's own default limit
_MAX_ST_HEADER = 100_000_000  # the safetensors library's own limit
_NPY_VERSIONS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_CHUNK = 2**24
#: safetensors dtype names -> numpy dtypes (BF16 and float8 have none: read only as points, via torch).
_ST_NUMPY = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
}
_ST_TORCH_ONLY = {"BF16": 2}

#: Checks a key's declared dtype and shape (raises :class:`UserInputError`).
KindCheck = Callable[["_Reader", str, np.dtype, tuple[int, ...]], None]


def memory_budget(max_bytes: int | None = None) -> int:
    """The memory budget in bytes: ``max_bytes``, else ``$LORACHECK_MAX_BYTES``, else :data:`MAX_BYTES`."""
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1:
            raise UserInputError(f"max_bytes: expected a positive integer number of bytes, got {max_bytes!r}")
        return int(max_bytes)
    env = os.environ.get(MAX_BYTES_ENV)
    if env is None or env.strip() == "":
        return MAX_BYTES
    if not re.fullmatch(r"\s*[0-9]{1,20}\s*", env) or int(env) < 1:
        raise UserInputError(
            f"${MAX_BYTES_ENV}: expected a positive integer number of bytes, got {env!r:.40}"
        )
    return int(env)


def json_depth(obj: Any) -> int:
    """Nesting depth of parsed JSON (1 for a scalar), without recursion."""
    depth, stack = 0, [(obj, 1)]
    while stack:
        v, d = stack.pop()
        depth = max(depth, d)
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return depth


def _no_constant(name: str) -> Any:
    raise ValueError(f"the non-standard constant {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} overflows a float")
    return value


def loads_json(
    text: str | bytes, what: str, *, max_depth: int = MAX_JSON_DEPTH, expected: str = "a JSON text"
) -> Any:
    """``json.loads`` for text from a file: size and nesting depth capped, every failure a ``UserInputError``.

    ``what`` names the input in messages (e.g. ``"key 'meta' of 'p.npz'"``). ``json.loads``
    recurses, so a text nested thousands deep would raise ``RecursionError``: it is refused here,
    as is any text nested deeper than ``max_depth``, or longer than :data:`MAX_TEXT_CHARS`.
    """
    if len(text) > MAX_TEXT_CHARS:
        raise UserInputError(
            f"{what}: expected a JSON text of at most {MAX_TEXT_CHARS} characters, got {len(text)}"
        )
    try:
        obj = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise UserInputError(
            f"{what}: expected JSON nested at most {max_depth} deep, got deeper nesting than Python's "
            "recursion limit"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise UserInputError(f"{what}: expected {expected}, got invalid JSON ({exc})") from None
    depth = json_depth(obj)
    if depth > max_depth:
        raise UserInputError(f"{what}: expected JSON nested at most {max_depth} deep, got depth {depth}")
    return obj


def _describe_header(dtype: np.dtype, shape: tuple[int, ...]) -> str:
    article = "an" if str(dtype)[0] in "aeiou" else "a"
    return f"{article} {dtype} array of shape {shape}"


def _sniff(r: _Reader) -> str:
    """``"npz"`` or ``"safetensors"`` from the first bytes (never reading the whole file)."""
    with open(r.path, "rb") as fh:
        magic = fh.read(9)
    # A safetensors file starts with an 8-byte header length and then the JSON header ("{").
    if magic[8:9] != b"{" and magic[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "npz"
    if magic.startswith(b"\x93NUMPY"):
        expected = "a loracheck problem file" if r.what == "path" else "an .npz archive of arrays"
        raise UserInputError(f"{r.what}: expected {expected}, got a single array file {r.p}")
    return "safetensors"


def _nbytes(r: _Reader, key: str, dtype: np.dtype, shape: Any) -> tuple[tuple[int, ...], int]:
    """Validate a declared shape; its byte count for ``dtype``."""
    if (
        not isinstance(shape, (tuple, list))
        or len(shape) > _MAX_NDIM
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise r.bad(
            key, f"the declared shape {str(shape)[:80]}", f"a shape of at most {_MAX_NDIM} sizes >= 0"
        )
    return tuple(shape), math.prod(shape) * dtype.itemsize


def _npz_arrays(r: _Reader, check: KindCheck) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``: the directory and every ``.npy`` header are checked before any data is read.

    The zip directory gives each member's uncompressed size and the ``.npy`` header its dtype and
    shape; both are checked (member count, no object/structured dtypes, ``check``, the shape
    against the member's size, the total against the budget) before an array is allocated, and a
    member is read with a bound (zipfile never inflates past the declared size and checks the CRC).
    """
    try:
        fh = open(r.path, "rb")
    except OSError as exc:
        raise r.unreadable(str(exc)) from None
    with fh:
        try:
            end = zipfile._EndRecData(fh)  # type: ignore[attr-defined]
        except OSError as exc:
            raise r.unreadable(str(exc)) from None
        if not end:
            raise r.unreadable("File is not a zip file")
        entries, cd_size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
        if entries > MAX_MEMBERS or cd_size > _MAX_CENTRAL_DIRECTORY:
            raise r.unreadable(
                f"its zip directory declares {entries} members in {cd_size} bytes; expected at most "
                f"{MAX_MEMBERS} members in {_MAX_CENTRAL_DIRECTORY} bytes"
            )
        try:
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise r.unreadable(str(exc)) from None
        with zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise r.unreadable(f"{len(infos)} zip members; expected at most {MAX_MEMBERS}")
            keys: dict[str, zipfile.ZipInfo] = {}
            for info in infos:
                if not info.filename.endswith(".npy") or info.is_dir():
                    raise r.unreadable(f"the zip member {info.filename[:80]!r} is not an .npy array")
                key = info.filename[: -len(".npy")]
                if key in keys:
                    raise r.unreadable(f"the zip member {info.filename[:80]!r} appears twice")
                keys[key] = info
            # the directory's declared sizes, before any member is inflated
            for key, info in keys.items():
                r.charge(key, info.file_size, f"a zip member of {info.file_size} bytes uncompressed")
            r.charged = 0
            out: dict[str, np.ndarray] = {}
            for key, info in keys.items():
                try:
                    out[key] = _read_npy_member(r, zf, key, info, check)
                except _INFLATE_ERRORS as exc:
                    raise r.unreadable(f"zip member {info.filename[:80]!r}: {exc}") from None
            return out


#: What reading a damaged zip member raises: a broken deflate stream is ``zlib.error``, a broken LZMA
#: one ``lzma.LZMAError``, bzip2's ``OSError`` (none of them a ``ValueError``).
_INFLATE_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    OSError,
    EOFError,
    NotImplementedError,
    RuntimeError,
)


def _read_npy_member(
    r: _Reader, zf: zipfile.ZipFile, key: str, info: zipfile.ZipInfo, check: KindCheck
) -> np.ndarray:
    with zf.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version not in _NPY_VERSIONS:
                raise ValueError(f".npy format version {version} (expected 1.0 or 2.0)")
            shape, fortran, dtype = _NPY_VERSIONS[version](fh, max_header_size=_MAX_NPY_HEADER)
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError) as exc:
            raise r.bad(key, f"an unreadable .npy header ({str(exc)[:200]})", "a plain .npy array") from None
        if dtype.hasobject:
            raise r.bad(key, f"dtype {dtype} (a pickled object array)", "a plain (unpickled) array")
        if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biufcUS":
            raise r.bad(key, f"dtype {dtype}", "a bool, number or string array")
        shape, nbytes = _nbytes(r, key, dtype, shape)
        check(r, key, dtype, shape)
        r.charge(key, nbytes, _describe_header(dtype, shape))
        if nbytes != info.file_size - fh.tell():
            raise r.bad(
                key,
                f"a header declaring {_describe_header(dtype, shape)} ({nbytes} bytes) in a member holding "
                f"{info.file_size - fh.tell()} bytes of data",
                "an array whose header agrees with its size",
            )
        flat = np.empty(math.prod(shape), dtype=dtype)
        view = flat.view(np.uint8) if nbytes else flat
        pos = 0
        while pos < nbytes:
            chunk = fh.read(min(_CHUNK, nbytes - pos))
            if not chunk:
                raise EOFError(f"{key}: data ends after {pos} of {nbytes} bytes")
            view[pos : pos + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            pos += len(chunk)
        if fh.read(1):
            raise r.bad(
                key, "more data than its header declares", "an array whose header agrees with its size"
            )
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def _safetensors_arrays(
    r: _Reader, check: KindCheck, *, torch_floats: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and ``__metadata__`` of a ``.safetensors`` file, its header checked before any data is read.

    The 8-byte header length is checked against the file size, the header's declared dtypes,
    shapes and offsets against each other, the file size, ``check`` and the budget; then each
    tensor is read. ``torch_floats``: also accept BF16 and return every float tensor as float64
    (reading a LoRA point).
    """
    try:
        size = r.path.stat().st_size
        with open(r.path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise r.unreadable("shorter than the 8-byte header length")
            n = int.from_bytes(head, "little")
            if n > size - 8 or n > _MAX_ST_HEADER:
                raise r.unreadable(
                    f"the header length {n} exceeds the file size {size} or the limit {_MAX_ST_HEADER}"
                )
            raw = fh.read(n)
    except OSError as exc:
        raise r.unreadable(str(exc)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise r.unreadable(f"the header is not UTF-8: {exc}") from None
    try:
        header = loads_json(text, "the safetensors header", max_depth=4)
    except UserInputError as exc:
        raise r.unreadable(str(exc)) from None
    if not isinstance(header, dict):
        raise r.unreadable("the header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise UserInputError(
            f"{r.what}: expected a safetensors __metadata__ of strings in {r.p}, got {str(meta)[:80]}"
        )
    if len(header) > MAX_MEMBERS:
        raise r.unreadable(f"{len(header)} tensors; expected at most {MAX_MEMBERS}")
    data_size = size - 8 - n
    for key, spec in header.items():
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
            raise r.unreadable(
                f"tensor {key[:80]!r}: expected {{dtype, shape, data_offsets}}, got {str(spec)[:80]}"
            )
        name = spec["dtype"]
        dtype: np.dtype
        if torch_floats and isinstance(name, str) and name in _ST_TORCH_ONLY:
            dtype, itemsize = np.dtype("<f2"), _ST_TORCH_ONLY[name]  # checked as a float of that size
        elif isinstance(name, str) and name in _ST_NUMPY:
            dtype = _ST_NUMPY[name]
            itemsize = dtype.itemsize
        else:
            raise r.bad(key, f"the safetensors dtype {str(name)[:20]!r}", f"one of {', '.join(_ST_NUMPY)}")
        shape, _ = _nbytes(r, key, dtype, spec["shape"])
        nbytes = math.prod(shape) * itemsize
        offsets = spec["data_offsets"]
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size
            or offsets[1] - offsets[0] != nbytes
        ):
            raise r.bad(
                key,
                f"data_offsets {str(offsets)[:60]} for {nbytes} bytes ({name} {list(shape)}) in "
                f"{data_size} bytes of data",
                "offsets that agree with the dtype, the shape and the file size",
            )
        check(r, key, dtype, shape)
        grown = math.prod(shape) * 8 if torch_floats and dtype.kind == "f" else nbytes
        r.charge(key, grown, f"{name} {list(shape)}")
    out: dict[str, np.ndarray] = {}
    try:
        with safe_open(str(r.path), framework="pt" if torch_floats else "numpy") as st:  # type: ignore[no-untyped-call]
            for key in header:
                t = st.get_tensor(key)
                if torch_floats:
                    t = (t.double() if t.is_floating_point() else t).numpy()
                out[key] = t
    except Exception as exc:  # noqa: BLE001 - safetensors' own checks (gaps, overlaps): bad input
        raise r.unreadable(str(exc)[:300]) from None
    return out, dict(meta)


def read_arrays(
    path: str | os.PathLike[str],
    *,
    what: str = "path",
    max_bytes: int | None = None,
    torch_floats: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The numeric arrays of an ``.npz`` or ``.safetensors`` file (and safetensors ``__metadata__``).

    The bounded reader behind :func:`load_problem`, for other array files (LoRA points): headers
    first, then declared sizes against the memory budget (``max_bytes``, see
    :func:`memory_budget`), object, string and structured dtypes refused, before any array is
    read. ``what`` names the input in messages; ``torch_floats`` reads BF16 and returns floats as
    float64. The container follows the suffix.
    """
    path = Path(path)
    r = _Reader(path, max_bytes, what)
    if not path.is_file():
        raise UserInputError(f"{what}: expected an existing .npz or .safetensors file, got {str(path)!r}")

    def numbers(r: _Reader, key: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        if dtype.kind not in "biufc":
            raise r.bad(key, f"dtype {dtype}", "a bool or number array")

    if path.suffix == ".npz":
        if _sniff(r) != "npz":
            raise r.unreadable("File is not a zip file")
        return _npz_arrays(r, numbers), {}
    if path.suffix == ".safetensors":
        return _safetensors_arrays(r, numbers, torch_floats=torch_floats)
    raise UserInputError(f"{what}: expected a .npz or .safetensors file, got {str(path)!r}")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def _describe(v: Field) -> str:
    if isinstance(v, np.ndarray):
        article = "an" if str(v.dtype)[0] in "aeiou" else "a"
        return f"{article} {v.dtype} array of shape {v.shape}"
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        return f"a {type(v).__name__}"
    return f"the {'text' if isinstance(v, str) else 'integer'} {v!r:.80}"


def _read_npz(r: _Reader) -> dict[str, Field]:
    fields: dict[str, Field] = {}
    for key, a in _npz_arrays(r, _problem_kinds).items():
        if key in _INT_KEYS:
            fields[key] = int(a.item())
        elif key in _TEXT_KEYS or (a.dtype.kind == "U" and a.ndim == 0):
            fields[key] = str(a.item())
        else:
            fields[key] = a
    return fields


def _problem_kinds(r: _Reader, key: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """Refuse, from a header, a dtype or shape that a problem file's ``key`` cannot hold."""
    if key in _INT_KEYS:
        if dtype.kind not in "iu" or shape != ():
            raise r.bad(key, _describe_header(dtype, shape), f"{_WHAT[key]} (a 0-d integer array)")
    elif key in _TEXT_KEYS:
        if dtype.kind != "U" or shape != ():
            raise r.bad(key, _describe_header(dtype, shape))
    elif key in _ARRAY_KEYS:
        if dtype.kind not in "biuf" and not (dtype.kind == "U" and shape == ()):  # a text: refused later
            raise r.bad(key, f"dtype {dtype}")
    elif dtype.kind not in "biufcUS":
        raise r.bad(key, f"dtype {dtype}", "a bool, number or string array")
    if dtype.kind == "U" and dtype.itemsize // 4 > MAX_TEXT_CHARS:
        raise r.bad(
            key,
            f"a text of up to {dtype.itemsize // 4} characters",
            f"texts of at most {MAX_TEXT_CHARS} characters",
        )


def _read_safetensors(r: _Reader) -> dict[str, Field]:
    def kinds(r: _Reader, key: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        if key not in _TEXT_KEYS and key not in _INT_KEYS:  # those as tensors: refused below
            _problem_kinds(r, key, dtype, shape)

    tensors, meta = _safetensors_arrays(r, kinds)
    fields: dict[str, Field] = {}
    for key, text in meta.items():
        if key in tensors:
            raise r.bad(key, "both a tensor and a __metadata__ entry", "exactly one of the two")
        if key in _ARRAY_KEYS:
            raise r.bad(key, f"a __metadata__ text {text!r:.40}", f"{_WHAT[key]} (a tensor)")
        if key in _INT_KEYS:
            if not re.fullmatch(r"-?[0-9]{1,40}", text):
                raise r.bad(key, f"the __metadata__ text {text!r:.40}", f"{_WHAT[key]} (a decimal text)")
            fields[key] = int(text)
        else:
            fields[key] = text
    for key, a in tensors.items():
        if key in _TEXT_KEYS or key in _INT_KEYS:
            raise r.bad(key, _describe(a), f"{_WHAT[key]} (in __metadata__, not a tensor)")
        fields[key] = a
    return fields


def _read_fields(path: Path, max_bytes: int | None = None) -> tuple[dict[str, Field], str]:
    """The fields of a file and its container, recognized from the content (not the name)."""
    r = _Reader(path, max_bytes)
    if not path.is_file():
        raise UserInputError(f"path: expected an existing problem file, got {str(path)!r}")
    container = _sniff(r)
    if container == "npz":
        return _read_npz(r), "npz"
    return _read_safetensors(r), "safetensors"


def _float_array(r: _Reader, key: str, a: Field, ndim: int) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise r.bad(key, _describe(a))
    if a.dtype.newbyteorder("=") not in _FLOATS:
        raise r.bad(key, f"dtype {a.dtype}")
    if a.ndim != ndim:
        raise r.bad(key, f"{a.ndim} dimension(s), shape {a.shape}")
    if not np.isfinite(a).all():
        raise r.bad(key, "NaN or inf values")
    return a


def _torch(a: np.ndarray) -> Tensor:
    if a.dtype.kind == "u" and a.dtype.itemsize > 1:  # torch has no general uint16/32/64
        a = a.astype(np.int64)
    return torch.from_numpy(np.array(a, dtype=a.dtype.newbyteorder("="), copy=True))


def _problem_from_fields(r: _Reader, fields: dict[str, Field], version: int) -> Problem:
    """Validate every key of a version-``version`` file and construct the problem."""
    dense = "J" in fields
    factors = [k for k in ("J_left", "J_right") if k in fields]
    if dense and factors:
        raise r.bad("J", f"J together with {' and '.join(factors)}", "either J or J_left and J_right")
    if not dense and len(factors) == 1:
        other = "J_right" if factors == ["J_left"] else "J_left"
        raise r.missing(other)
    if not dense and not factors:
        raise UserInputError(
            f"path: key 'J' of {r.p}: expected J or J_left and J_right, got nothing (missing key)"
        )
    for key in _REQUIRED:
        if key not in fields:
            raise r.missing(key)
    # --- J -------------------------------------------------------------------------------------
    J: Tensor | LowRankOperator
    if dense:
        Ja = _float_array(r, "J", fields["J"], 2)
        dtype = Ja.dtype.newbyteorder("=")
        J = _torch(Ja)
        rows, cols = Ja.shape
    else:
        La = _float_array(r, "J_left", fields["J_left"], 2)
        Ra = _float_array(r, "J_right", fields["J_right"], 2)
        dtype = La.dtype.newbyteorder("=")
        if Ra.dtype.newbyteorder("=") != dtype:
            raise r.bad("J_right", f"dtype {Ra.dtype}", f"the dtype of J_left ({dtype})")
        if Ra.shape[0] != La.shape[1]:
            raise r.bad("J_right", f"shape {Ra.shape}", f"{La.shape[1]} rows (the columns of J_left)")
        try:
            J = LowRankOperator(_torch(La), _torch(Ra))
        except ValueError as exc:
            raise UserInputError(f"path: {r.p} holds invalid J factors: {exc}") from None
        rows, cols = La.shape[0], Ra.shape[1]
    # --- f0, y ---------------------------------------------------------------------------------
    f0 = _float_array(r, "f0", fields["f0"], 2)
    if f0.dtype.newbyteorder("=") != dtype:
        raise r.bad("f0", f"dtype {f0.dtype}", f"the dtype of J ({dtype})")
    if f0.shape[0] * f0.shape[1] != rows or f0.shape[0] < 1:
        raise r.bad("f0", f"shape {f0.shape}", f"shape (N, K) with N*K = {rows} (the rows of J)")
    y = fields["y"]
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iuf":
        raise r.bad("y", _describe(y))
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise r.bad("y", "NaN or inf values")
    # --- loss, blocks, lam ---------------------------------------------------------------------
    loss = fields["loss"]
    if not isinstance(loss, str) or loss not in LOSS_NAMES:
        raise r.bad("loss", _describe(loss))
    blocks = fields["blocks"]
    if not isinstance(blocks, np.ndarray) or blocks.dtype.kind not in "iu":
        raise r.bad("blocks", _describe(blocks))
    if blocks.ndim != 2 or blocks.shape[1] != 2 or blocks.shape[0] < 1:
        raise r.bad("blocks", f"shape {blocks.shape}")
    if (blocks < 1).any():
        raise r.bad("blocks", f"the shapes {blocks.tolist()}")
    shapes = [(int(m), int(n)) for m, n in blocks.tolist()]
    if sum(m * n for m, n in shapes) != cols:
        raise r.bad(
            "blocks", f"the shapes {shapes}", f"shapes whose sizes m*n sum to {cols} (the columns of J)"
        )
    lam = fields["lam"]
    if not isinstance(lam, np.ndarray) or lam.dtype.kind not in "iuf":
        raise r.bad("lam", _describe(lam))
    if lam.shape != (len(shapes),):
        raise r.bad("lam", f"shape {lam.shape}", f"shape ({len(shapes)},): one weight decay per block")
    lams = [float(v) for v in lam.tolist()]
    if not all(math.isfinite(v) and v >= 0.0 for v in lams):
        raise r.bad("lam", f"the values {lams}")
    # --- optional: seed, name, meta ------------------------------------------------------------
    seed = fields.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise r.bad("seed", _describe(seed))
    name = fields.get("name", "")
    if not isinstance(name, str):
        raise r.bad("name", _describe(name))
    meta: dict[str, Any] = {}
    if "meta" in fields:
        text = fields["meta"]
        if not isinstance(text, str):
            raise r.bad("meta", _describe(text))
        obj = loads_json(text, f"{r.what}: key 'meta' of {r.p}", expected=_WHAT["meta"])
        if not isinstance(obj, dict):
            raise r.bad("meta", f"a JSON {type(obj).__name__}")
        meta = _decode_meta(obj, "meta", r)
    try:
        return Problem(
            J,
            _torch(f0),
            _torch(y),
            loss=loss,
            blocks=shapes,
            lam=lams,
            seed=seed,
            name=name,
            meta=meta,
        )
    except (ValueError, TypeError) as exc:
        raise UserInputError(f"path: {r.p} holds an invalid problem (version {version}): {exc}") from None


def _load_v1(r: _Reader, fields: dict[str, Field]) -> Problem:
    required = ("J", "f0", "y", "loss", "blocks", "lam", "seed", "has_seed", "name", "checksum")
    missing = [k for k in required if k not in fields]
    if missing:
        raise UserInputError(
            f"path: expected the keys of format {FORMAT!r} version 1; missing {', '.join(missing)}"
        )
    arrays = [a for k in ("J", "f0", "y", "blocks", "lam") if isinstance(a := fields[k], np.ndarray)]
    if len(arrays) != 5 or _checksum_v1(arrays) != fields["checksum"]:
        raise UserInputError(f"path: checksum mismatch in {r.p}: the file is corrupted")
    has_seed = fields["has_seed"]
    if not isinstance(has_seed, np.ndarray) or has_seed.dtype.kind != "b" or has_seed.ndim != 0:
        raise r.bad("has_seed", _describe(has_seed), "a 0-d bool array")
    v2 = {k: v for k, v in fields.items() if k in _KNOWN and k not in ("seed", "checksum")}
    if bool(has_seed.item()):
        v2["seed"] = fields["seed"]
    return _problem_from_fields(r, v2, 1)


def _read(path: str | os.PathLike[str], max_bytes: int | None) -> tuple[Problem, dict[str, np.ndarray], int]:
    path = Path(path)
    r = _Reader(path, max_bytes)
    fields, container = _read_fields(path, max_bytes)
    fmt = fields.get("format")
    if fmt != FORMAT:
        got = "none" if fmt is None else (fmt if isinstance(fmt, str) else _describe(fmt))
        raise UserInputError(f"path: expected a file of format {FORMAT!r}, got {got} (key 'format' of {r.p})")
    if "version" not in fields:
        raise r.missing("version")
    version = fields["version"]
    if version not in SUPPORTED_VERSIONS:
        raise UserInputError(
            f"path: expected format version {' or '.join(map(str, SUPPORTED_VERSIONS))}, got {version} "
            f"(key 'version' of {r.p})"
        )
    if version == 1:
        if container != "npz":
            raise UserInputError(
                f"path: expected version 1 files as .npz only, got a .{container} file {r.p}"
            )
        problem = _load_v1(r, fields)
    else:
        unknown = sorted(k for k in fields if k not in _KNOWN and not k.startswith(_EXTRA))
        if unknown:
            raise UserInputError(
                f"path: expected only the keys of format {FORMAT!r} version 2 and extra__<name> in {r.p}, "
                f"got unexpected key(s) {', '.join(map(repr, unknown))}"
            )
        if "checksum" in fields:
            stored = fields["checksum"]
            if not isinstance(stored, str) or not re.fullmatch(r"[0-9a-f]{64}", stored):
                raise r.bad("checksum", _describe(stored))
            if checksum(fields) != stored:
                raise UserInputError(f"path: checksum mismatch in {r.p}: the file is corrupted")
        problem = _problem_from_fields(r, fields, 2)
    extras = {k[len(_EXTRA) :]: np.asarray(v) for k, v in fields.items() if k.startswith(_EXTRA)}
    return problem, extras, int(version)


def load_problem(
    path: str | os.PathLike[str], *, max_bytes: int | None = None
) -> tuple[Problem, dict[str, np.ndarray]]:
    """Read a problem file (``.npz`` or ``.safetensors``, versions 1 and 2).

    Returns the problem (constructed, so validated as on construction) and its extras (the
    ``extra__<key>`` fields, keyed by ``<key>``; texts come back as 0-d string arrays). The
    container is recognized from the content. The checksum is verified when the file has one
    (files written by hand may omit it); every missing or malformed key raises
    :class:`~theory.errors.UserInputError` (a ``ValueError``) naming the path, the key, the
    expectation and what the file holds.

    Hostile files are refused before anything big is read: the container's header and directory
    first, then every array's declared dtype and shape, their bytes together against the memory
    budget ``max_bytes`` (default ``$LORACHECK_MAX_BYTES``, else :data:`MAX_BYTES`, 2 GiB), JSON
    texts nested at most :data:`MAX_JSON_DEPTH` deep, ``meta`` arrays of bool, integer or float
    dtypes whose shape agrees with their data.
    """
    problem, extras, _ = _read(path, max_bytes)
    return problem, extras


# ---------------------------------------------------------------------------------------------
# Counterexamples
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Counterexample:
    """A saved counterexample: the problem, the refuted claim, the checker options, the point.

    ``point`` is ``D = (D0, D1, ...)``, one matrix per block (the extras ``D<j>``); ``options``
    the checker options (``options_json`` parsed). Checkers that save LoRA factors also give
    ``U``, ``V`` (extras ``U<j>``, ``V<j>``), the perturbation (``C<j>``) and a ``record``
    (``record_json["record"]``); else these are ``None``. ``extras`` holds every extra array.
    """

    problem: Problem
    claim: str
    options_json: str
    options: dict[str, Any]
    point: tuple[Tensor, ...]
    U: tuple[Tensor, ...] | None
    V: tuple[Tensor, ...] | None
    perturbation: tuple[Tensor, ...] | None
    record: dict[str, Any] | None
    extras: dict[str, np.ndarray]
    version: int


def load_counterexample(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> Counterexample:
    """Read the problem and point of a linearized counterexample (the ``problem`` kind).

    ``verify.counterexample.load_counterexample`` reads every kind of counterexample (and checks
    its metadata); this reader sees the problem-file side of one, as ``loracheck audit`` replays
    it, and also reads the files of older versions. The file is a problem file whose extras hold
    ``claim`` (text), ``options_json`` (a JSON object) or ``record_json`` (``{"record": ...,
    "options": ...}``, older files; newer ones keep the record in ``counterexample_json``), and
    the point ``D0``, ``D1``, ... (one per block). Missing or malformed extras raise
    ``ValueError`` naming them; ``max_bytes`` as in :func:`load_problem`.
    """
    problem, extras, version = _read(path, max_bytes)
    p = repr(str(path))

    def text(key: str) -> str | None:
        if key not in extras:
            return None
        a = extras[key]
        if a.dtype.kind != "U" or a.ndim != 0:
            raise UserInputError(f"path: extra {key!r} of {p}: expected a text, got {_describe(a)}")
        return str(a.item())

    def points(letter: str, required: bool) -> tuple[Tensor, ...] | None:
        keys = [f"{letter}{j}" for j in range(len(problem.blocks))]
        if not any(k in extras for k in keys) and not required:
            return None
        for k in keys:
            if k not in extras:
                raise UserInputError(
                    f"path: extra {k!r} of {p}: expected {letter}0..{letter}{len(keys) - 1} "
                    f"(one per block), got nothing (missing extra)"
                )
        out = []
        for k in keys:
            a = extras[k]
            if a.dtype.newbyteorder("=") != np.dtype(str(problem.dtype).replace("torch.", "")):
                raise UserInputError(
                    f"path: extra {k!r} of {p}: expected dtype {problem.dtype}, got {a.dtype}"
                )
            out.append(_torch(a))
        return tuple(out)

    claim = text("claim")
    if claim is None:
        raise UserInputError(
            f"path: extra 'claim' of {p}: expected the refuted claim's id, got nothing (missing extra)"
        )
    options_json, record = text("options_json"), None
    record_json = text("record_json")
    meta_json = text("counterexample_json")  # format 1 of verify.counterexample: the record lives here
    try:
        if meta_json is not None:
            blob = loads_json(meta_json, f"path: extra 'counterexample_json' of {p}")
            record = blob.get("record") if isinstance(blob, dict) else None
        if record_json is not None:
            blob = loads_json(record_json, f"path: extra 'record_json' of {p}")
            record = blob.get("record") if isinstance(blob, dict) else None
            if options_json is None and isinstance(blob, dict):
                options_json = json.dumps(blob.get("options", {}), sort_keys=True)
        if options_json is None:
            raise UserInputError("got nothing (missing extra)")
        options = loads_json(options_json, f"path: extra 'options_json' of {p}")
        if not isinstance(options, dict):
            raise UserInputError(f"got JSON {type(options).__name__}")
    except (ValueError, AttributeError) as exc:
        raise UserInputError(
            f"path: extra 'options_json' of {p}: expected a JSON object of checker options, {exc}"
        ) from None
    point = points("D", True)
    assert point is not None
    try:
        point = problem.check_point(point, "D")
    except ValueError as exc:
        raise UserInputError(f"path: {p} holds a point that does not fit the problem: {exc}") from None
    return Counterexample(
        problem=problem,
        claim=claim,
        options_json=options_json,
        options=options,
        point=point,
        U=points("U", False),
        V=points("V", False),
        perturbation=points("C", False),
        record=record if isinstance(record, dict) else None,
        extras=extras,
        version=version,
    )
