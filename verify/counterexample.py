"""Counterexample files: one format, one writer, one reader for every ``violated`` verdict.

A counterexample is one ``.npz`` file named ``CLAIM-ID-TAG.npz`` (``ID`` names the problem or
head, ``TAG`` hashes the options, the record, the source and the arrays), written atomically.
Its metadata is one JSON object, the text under the key ``counterexample_json``:

============ ===================================================================================
key          content
============ ===================================================================================
format       ``"loracheck.counterexample"``
version      ``1``
claim        the refuted claim's id
kind         ``"problem"`` (a linearized problem), ``"nonlinear"`` ([KKR25] end points) or
             ``"attention"`` (one [HSK24] head)
options      the checker's options (JSON)
record       the refuting numbers (a JSON object, or ``null``)
source       how to rebuild what the arrays do not hold (a JSON object, or ``null``): for
             ``nonlinear``, the problem's ``name``, ``meta``, ``lam``, ``blocks``, ``fingerprint``
             and ``catalog`` (the :data:`landscapes.catalog.KKR_PROBLEMS` entry: ``name``,
             ``builder``, ``kwargs``; ``null`` when the problem is not from the catalog); for
             ``attention``, the :class:`~landscapes.attention.HskSetting`'s fingerprint
arrays        the names of the arrays the file holds besides the metadata (sorted)
============ ===================================================================================

The arrays are plain bool or number arrays (never pickled objects).  A ``problem`` counterexample
is also a problem file (:mod:`landscapes.io`, the metadata and arrays as ``extra__<key>``, with
the ``claim`` and ``options_json`` extras ``loracheck audit`` replays): ``D0, D1, ...`` the
point (none when the problem itself refutes the claim), ``U<j>``, ``V<j>``, ``C<j>`` the LoRA
factors and the perturbation of a second-order counterexample.  A ``nonlinear`` file holds the
end points ``P<i>.A<j>``, ``P<i>.B<j>`` (or ``P<i>.X<j>``) and the reference ``REF.X<j>``; an
``attention`` file the head: ``X``, ``Y``, ``W_<k>``, ``A_<k>``, ``B_<k>``, ``scale_beta``.

:func:`save_counterexample` writes one; :func:`load_counterexample` reads one back, refusing a
damaged or forged file with :class:`~theory.errors.UserInputError` naming ``path``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from landscapes.io import atomic_write, load_problem, loads_json, memory_budget, save_problem
from landscapes.problem import Problem
from theory.errors import UserInputError
from verify.verdict import jsonable

__all__ = [
    "FORMAT",
    "VERSION",
    "KINDS",
    "META_KEY",
    "Counterexample",
    "save_counterexample",
    "load_counterexample",
]

FORMAT = "loracheck.counterexample"
VERSION = 1
KINDS = ("problem", "nonlinear", "attention")
#: The key of the metadata text (in a problem file: the extra ``extra__counterexample_json``).
META_KEY = "counterexample_json"
#: Keys of a problem-kind file's extras that are not arrays of the counterexample.
_COMPAT = ("claim", "options_json")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_MAX_MEMBERS = 4096


@dataclass(frozen=True)
class Counterexample:
    """A counterexample read back: what :func:`save_counterexample` was given.

    ``arrays`` maps names to NumPy arrays (for a ``problem`` counterexample: the point ``D<j>``
    and any factors, without the ``claim``/``options_json`` texts); ``problem`` is the
    linearized problem of a ``problem`` counterexample, else ``None``.
    """

    path: str
    claim: str
    kind: str
    options: dict[str, Any]
    record: dict[str, Any] | None
    source: dict[str, Any] | None
    arrays: dict[str, np.ndarray]
    problem: Problem | None


def _array(v: Any, name: str) -> np.ndarray:
    a = v.detach().cpu().numpy() if isinstance(v, Tensor) else np.asarray(v)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"arrays[{name!r}]: expected a bool or number array, got dtype {a.dtype}")
    return a


def _arrays_digest(named: Mapping[str, np.ndarray]) -> str:
    """A sha256 of the arrays: names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for k in sorted(named):
        a = np.ascontiguousarray(named[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _safe_id(text: str) -> str:
    out = re.sub(r"[^A-Za-z0-9_.\-]", "_", text).strip(".") or "counterexample"
    return out[:100]


def save_counterexample(
    save_dir: str | os.PathLike[str] | None,
    claim: str,
    *,
    options: Mapping[str, Any],
    kind: str = "problem",
    problem: Problem | None = None,
    point: Sequence[Tensor] | None = None,
    arrays: Mapping[str, Any] | None = None,
    record: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
    ident: str | None = None,
) -> str | None:
    """Write a counterexample (module docstring) into ``save_dir``; its path, or ``None``.

    ``None`` when ``save_dir`` is ``None``, or for a ``problem`` whose ``J`` is an operator (nothing
    to save; the verdict says so).  ``kind="problem"`` needs ``problem`` (the file is also a problem
    file); ``point`` is stored as ``D0, D1, ...``; ``arrays`` are further named arrays.  ``ident``
    names the file (default: the problem's fingerprint): ``CLAIM-ID-TAG.npz``, the tag a hash of
    the options, the record, the source and the arrays, so distinct counterexamples never share a
    name.
    """
    if save_dir is None:
        return None
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if (kind == "problem") != (problem is not None):
        raise ValueError(f"problem: expected a Problem exactly for kind 'problem', got kind {kind!r}")
    opts = jsonable(dict(options))
    rec = None if record is None else jsonable(dict(record))
    src = None if source is None else jsonable(dict(source))
    named: dict[str, np.ndarray] = {f"D{j}": _array(d, f"D{j}") for j, d in enumerate(point or ())}
    for k, v in (arrays or {}).items():
        if not _NAME.fullmatch(k) or k in (META_KEY, *_COMPAT) or k in named:
            raise ValueError(f"arrays: expected new names of letters, digits, '_', '.', '-', got {k!r}")
        named[k] = _array(v, k)
    # The tag: the options alone, or the record and the options (the names of the old writers); the
    # source and the arrays too, so that distinct counterexamples never share a name.
    hashed: Any = {"record": rec, "options": opts} if rec is not None else opts
    if src is not None and kind != "problem":
        hashed = {"hashed": hashed, "source": src}
    if named:
        hashed = {"hashed": hashed, "arrays": _arrays_digest(named)}
    tag = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:8]
    if ident is None:
        if problem is None:
            raise ValueError("ident: expected a name for a counterexample without a problem, got None")
        ident = str(problem.fingerprint()["sha256"])
    path = Path(save_dir) / f"{claim}-{_safe_id(ident)}-{tag}.npz"
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "claim": claim,
        "kind": kind,
        "options": opts,
        "record": rec,
        "source": src,
        "arrays": sorted(named),
    }
    text = np.array(json.dumps(meta, sort_keys=True, allow_nan=False))
    if problem is not None:
        extra: dict[str, Any] = dict(named)
        extra.update(claim=np.array(claim), options_json=np.array(json.dumps(opts, sort_keys=True)))
        extra[META_KEY] = text
        try:
            return str(save_problem(problem, path, extra=extra))
        except ValueError:  # operator-form J: nothing to save; the verdict says so (counterexample None)
            return None
    data = {META_KEY: text, **named}
    return str(atomic_write(path, lambda fh: np.savez(fh, **data)))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Reading


def _bad(p: str, key: str, expected: str, got: str) -> UserInputError:
    return UserInputError(f"path: key {key!r} of {p}: expected {expected}, got {got}")


def _describe(a: np.ndarray) -> str:
    return f"a {a.dtype} array of shape {a.shape}"


def _plain_npz(path: Path, p: str, max_bytes: int | None) -> dict[str, np.ndarray]:
    """The arrays of a non-problem ``.npz``: headers checked (no objects, sizes in budget) before data."""
    budget = memory_budget(max_bytes)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > _MAX_MEMBERS:
                raise UserInputError(f"path: expected at most {_MAX_MEMBERS} arrays in {p}, got {len(infos)}")
            total = 0
            for info in infos:
                key = info.filename.removesuffix(".npy")
                if not info.filename.endswith(".npy") or not _NAME.fullmatch(key):
                    raise _bad(p, info.filename, "an array member <name>.npy", "another member")
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    read_header = {
                        (1, 0): np.lib.format.read_array_header_1_0,
                        (2, 0): np.lib.format.read_array_header_2_0,
                    }.get(version)
                    if read_header is None:
                        raise _bad(p, key, "an .npy array of format 1.0 or 2.0", f"format {version}")
                    shape, _, dtype = read_header(fh)
                size = math.prod(shape) * dtype.itemsize
                if dtype.hasobject or dtype.fields is not None:
                    raise _bad(
                        p, key, "a bool or number array (files hold no pickled objects)", f"dtype {dtype}"
                    )
                if key == META_KEY:
                    if dtype.kind != "U" or shape != ():
                        raise _bad(p, key, "the counterexample's metadata as a JSON text", f"dtype {dtype}")
                elif dtype.kind not in "biuf":
                    raise _bad(p, key, "a bool or number array", f"dtype {dtype} of shape {shape}")
                if size > info.file_size:
                    raise _bad(p, key, f"{size} bytes of data for shape {shape}", f"{info.file_size}")
                total += size
            if total > budget:
                raise UserInputError(f"path: expected arrays of at most {budget} bytes in {p}, got {total}")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except UserInputError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise UserInputError(
            f"path: expected a counterexample .npz file, got an unreadable file {p} ({exc})"
        ) from None


def _meta(text_array: np.ndarray | None, p: str) -> dict[str, Any]:
    if text_array is None:
        raise _bad(
            p, META_KEY, "the counterexample's metadata (a JSON text)", "nothing (not a counterexample file)"
        )
    if text_array.dtype.kind != "U" or text_array.ndim != 0:
        raise _bad(p, META_KEY, "the counterexample's metadata as a JSON text", _describe(text_array))
    meta = loads_json(str(text_array.item()), f"path: key {META_KEY!r} of {p}", expected="a JSON object")
    if not isinstance(meta, dict):
        raise _bad(p, META_KEY, "a JSON object", f"JSON {type(meta).__name__}")
    checks: list[tuple[str, bool, str]] = [
        ("format", meta.get("format") == FORMAT, repr(FORMAT)),
        (
            "version",
            meta.get("version") == VERSION and not isinstance(meta.get("version"), bool),
            str(VERSION),
        ),
        ("claim", isinstance(meta.get("claim"), str) and bool(meta.get("claim")), "a claim id"),
        ("kind", meta.get("kind") in KINDS, f"one of {', '.join(KINDS)}"),
        ("options", isinstance(meta.get("options"), dict), "a JSON object"),
        (
            "record",
            meta.get("record") is None or isinstance(meta.get("record"), dict),
            "a JSON object or null",
        ),
        (
            "source",
            meta.get("source") is None or isinstance(meta.get("source"), dict),
            "a JSON object or null",
        ),
        (
            "arrays",
            isinstance(meta.get("arrays"), list) and all(isinstance(a, str) for a in meta["arrays"]),
            "a list of array names",
        ),
    ]
    for field, ok, expected in checks:
        if not ok:
            got = "nothing" if field not in meta else f"{json.dumps(meta[field])[:80]}"
            raise _bad(p, f"{META_KEY}.{field}", expected, got)
    return meta


def load_counterexample(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> Counterexample:
    """Read a counterexample file (module docstring) written by :func:`save_counterexample`.

    Every damaged or forged file (not an ``.npz``, metadata that is not the format's JSON, a
    wrong format or version, a listed array missing or an unlisted one present, an object or
    string array, a ``problem`` file that is not a valid problem file) raises
    :class:`~theory.errors.UserInputError` naming ``path``, the key, what was expected and what
    came.  Arrays are read without pickle; ``max_bytes`` bounds them as in
    :func:`landscapes.io.load_problem`.
    """
    path = Path(path)
    p = repr(str(path))
    if not path.is_file():
        raise UserInputError(f"path: expected an existing counterexample .npz file, got {p}")
    if path.suffix != ".npz":
        raise UserInputError(f"path: expected a counterexample .npz file, got {p}")
    try:
        with zipfile.ZipFile(path) as zf:
            is_problem = "format.npy" in zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserInputError(
            f"path: expected a counterexample .npz file, got an unreadable file {p} ({exc})"
        ) from None
    problem: Problem | None = None
    if is_problem:
        problem, arrays = load_problem(path, max_bytes=max_bytes)
    else:
        arrays = _plain_npz(path, p, max_bytes)
    meta = _meta(arrays.pop(META_KEY, None), p)
    kind = meta["kind"]
    if (kind == "problem") != is_problem:
        what = "a problem file" if kind == "problem" else "a plain .npz of arrays"
        got = "a problem file" if is_problem else "a plain .npz of arrays"
        raise _bad(p, f"{META_KEY}.kind", f"{what} for kind {kind!r}", got)
    if is_problem:
        stored = arrays.pop("claim", None)
        if stored is None or stored.dtype.kind != "U" or str(stored.item()) != meta["claim"]:
            shown = "nothing" if stored is None else repr(str(stored.item()))[:80]
            raise _bad(p, "claim", f"the claim of the metadata, {meta['claim']!r}", shown)
        # the options again, for loracheck audit (which replays these): they must be the metadata's
        stored = arrays.pop("options_json", None)
        try:
            same = (
                stored is not None
                and stored.dtype.kind == "U"
                and json.loads(str(stored.item())) == meta["options"]
            )
        except (ValueError, RecursionError):
            same = False
        if not same:
            shown = "nothing" if stored is None else repr(str(stored.item()))[:80]
            raise _bad(p, "options_json", "the options of the metadata", shown)
    listed = set(meta["arrays"])
    for key in sorted(listed - set(arrays)):
        raise _bad(p, key, f"the array {key!r} the metadata lists", "nothing (missing array)")
    for key in sorted(set(arrays) - listed):
        raise _bad(p, key, "only the arrays the metadata lists", "an unlisted key")
    for key, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise _bad(p, key, "a bool or number array", _describe(a))
    return Counterexample(
        path=str(path),
        claim=meta["claim"],
        kind=kind,
        options=meta["options"],
        record=meta["record"],
        source=meta["source"],
        arrays=arrays,
        problem=problem,
    )
