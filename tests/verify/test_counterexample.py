"""One counterexample format (verify.counterexample): round trips, every writer, damaged files, replays."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from landscapes.attention import HskSetting
from landscapes.io import load_problem, save_problem
from landscapes.nonlinear import problems as nl
from landscapes.nonlinear.sosp import Factors
from landscapes.synthetic import gaussian_problem
from theory.errors import UserInputError
from verify.checker import save_counterexample as checker_save
from verify.cli.main import main
from verify.counterexample import FORMAT, META_KEY, VERSION, load_counterexample, save_counterexample


@pytest.fixture(scope="module")
def problem():
    return gaussian_problem(K=1, N=8, blocks=[(7, 6)], lam=0.01, seed=3)


def _meta(path: str | Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        key = META_KEY if META_KEY in z.files else f"extra__{META_KEY}"
        return json.loads(str(z[key]))


# --------------------------------------------------------------------------------------------------
# Round trips


def test_round_trip_of_a_problem_counterexample(problem, tmp_path):
    D = (torch.ones(7, 6, dtype=torch.float64),)
    opts = {"rank_bound": 1, "gap_rtol": 1e-8}
    path = save_counterexample(
        tmp_path, "JLR-rank-NUC", options=opts, problem=problem, point=D, record={"gap": float("inf")}
    )
    assert path is not None and Path(path).name.startswith(f"JLR-rank-NUC-{problem.fingerprint()['sha256']}-")
    cx = load_counterexample(path)
    assert (cx.claim, cx.kind, cx.options, cx.source) == ("JLR-rank-NUC", "problem", opts, None)
    assert cx.record == {"gap": "inf"}  # verify.verdict.jsonable
    assert set(cx.arrays) == {"D0"} and np.array_equal(cx.arrays["D0"], D[0].numpy())
    assert cx.problem is not None and cx.problem.fingerprint() == problem.fingerprint()
    meta = _meta(path)
    assert (meta["format"], meta["version"], meta["arrays"]) == (FORMAT, VERSION, ["D0"])
    # still a problem file with the extras loracheck audit replays
    _, extras = load_problem(path)
    assert str(extras["claim"]) == "JLR-rank-NUC" and json.loads(str(extras["options_json"])) == opts
    assert save_counterexample(None, "JLR-rank-NUC", options=opts, problem=problem) is None


def test_the_checker_wrapper_keeps_the_old_file_name(problem, tmp_path):
    import hashlib

    opts = {"rank_bound": 0}
    path = checker_save(problem, tmp_path, "JLR-rank-NUC", None, opts)
    tag = hashlib.sha256(json.dumps(opts, sort_keys=True).encode()).hexdigest()[:8]
    assert Path(path).name == f"JLR-rank-NUC-{problem.fingerprint()['sha256']}-{tag}.npz"
    cx = load_counterexample(path)
    assert cx.kind == "problem" and cx.arrays == {} and cx.options == opts


@pytest.mark.parametrize("kind", ["nonlinear", "attention"])
def test_round_trip_of_an_array_counterexample(kind, tmp_path):
    arrays = {
        "P0.A0": np.ones((2, 1)),
        "P0.B0": torch.full((2, 1), 2.0, dtype=torch.float64),
        "n": np.arange(3),
    }
    source = {"name": "p", "catalog": None}
    path = save_counterexample(
        tmp_path, "KKR-x", kind=kind, options={"a": 1}, record={"b": [1.5]}, source=source, arrays=arrays,
        ident="a name/with odd chars",
    )  # fmt: skip
    assert Path(path).name.startswith("KKR-x-a_name_with_odd_chars-")
    cx = load_counterexample(path)
    assert (cx.claim, cx.kind, cx.options, cx.record, cx.source) == (
        "KKR-x",
        kind,
        {"a": 1},
        {"b": [1.5]},
        source,
    )
    assert cx.problem is None and set(cx.arrays) == {"P0.A0", "P0.B0", "n"}
    assert np.array_equal(cx.arrays["P0.B0"], np.full((2, 1), 2.0)) and cx.arrays["n"].dtype.kind == "i"
    with zipfile.ZipFile(path) as zf:
        assert "format.npy" not in zf.namelist()  # not a problem file


def test_the_writer_refuses_what_the_format_cannot_hold(problem, tmp_path):
    with pytest.raises(ValueError, match="kind"):
        save_counterexample(tmp_path, "c", kind="other", options={})
    with pytest.raises(ValueError, match="problem"):
        save_counterexample(tmp_path, "c", kind="nonlinear", options={}, problem=problem, ident="x")
    with pytest.raises(ValueError, match="bool or number"):
        save_counterexample(
            tmp_path, "c", kind="attention", options={}, arrays={"s": np.array("x")}, ident="x"
        )
    with pytest.raises(ValueError, match="names"):
        save_counterexample(
            tmp_path, "c", kind="attention", options={}, arrays={META_KEY: np.ones(1)}, ident="x"
        )


# --------------------------------------------------------------------------------------------------
# Damaged and forged files


def _plain(tmp_path: Path, meta: object, **arrays: np.ndarray) -> Path:
    path = tmp_path / "cx.npz"
    text = meta if isinstance(meta, str) else json.dumps(meta)
    with open(path, "wb") as fh:
        np.savez(fh, **{META_KEY: np.array(text)}, **arrays)
    return path


GOOD = {
    "format": FORMAT, "version": VERSION, "claim": "HSK-exact", "kind": "attention", "options": {},
    "record": None, "source": None, "arrays": ["X"],
}  # fmt: skip


@pytest.mark.parametrize(
    ("meta", "arrays", "match"),
    [
        ("{bad", {"X": np.ones(2)}, r"key 'counterexample_json' .*expected a JSON object, got invalid JSON"),
        ("[1]", {"X": np.ones(2)}, r"key 'counterexample_json' .*expected a JSON object, got JSON list"),
        (
            {**GOOD, "format": "other"},
            {"X": np.ones(2)},
            r"counterexample_json\.format' .*expected 'loracheck",
        ),
        ({**GOOD, "version": 2}, {"X": np.ones(2)}, r"counterexample_json\.version' .*expected 1, got 2"),
        ({**GOOD, "version": True}, {"X": np.ones(2)}, r"counterexample_json\.version'"),
        ({**GOOD, "kind": "x"}, {"X": np.ones(2)}, r"counterexample_json\.kind' .*expected one of problem"),
        ({**GOOD, "kind": "problem"}, {"X": np.ones(2)}, r"expected a problem file for kind 'problem'"),
        ({**GOOD, "options": [1]}, {"X": np.ones(2)}, r"counterexample_json\.options' .*JSON object"),
        ({k: v for k, v in GOOD.items() if k != "claim"}, {"X": np.ones(2)}, r"\.claim' .*got nothing"),
        (GOOD, {}, r"key 'X' .*expected the array 'X' the metadata lists, got nothing \(missing array\)"),
        (GOOD, {"X": np.ones(2), "Z": np.ones(1)}, r"key 'Z' .*expected only the arrays the metadata lists"),
        (GOOD, {"X": np.array([None, 1], dtype=object)}, r"key 'X' .*no pickled objects\), got dtype object"),
        (GOOD, {"X": np.array(["a"])}, r"key 'X' .*expected a bool or number array, got dtype <U1"),
    ],
)
def test_a_damaged_file_is_refused_naming_the_argument(tmp_path, meta, arrays, match):
    path = _plain(tmp_path, meta, **arrays)
    with pytest.raises(UserInputError, match=r"^path: .*" + match):
        load_counterexample(path)


def test_files_that_are_not_counterexamples_are_refused(problem, tmp_path):
    with pytest.raises(UserInputError, match=r"^path: expected an existing"):
        load_counterexample(tmp_path / "none.npz")
    (tmp_path / "t.npz").write_text("not a zip")
    with pytest.raises(
        UserInputError, match=r"^path: expected a counterexample \.npz file, got an unreadable"
    ):
        load_counterexample(tmp_path / "t.npz")
    np.savez(tmp_path / "a.npz", X=np.ones(2))
    with pytest.raises(UserInputError, match=r"^path: key 'counterexample_json' .*got nothing"):
        load_counterexample(tmp_path / "a.npz")
    # a problem file without the metadata (an old counterexample, a user's problem)
    save_problem(problem, tmp_path / "p.npz", extra={"claim": np.array("JLR-rank-NUC")})
    with pytest.raises(UserInputError, match=r"^path: key 'counterexample_json' .*got nothing"):
        load_counterexample(tmp_path / "p.npz")
    # a problem counterexample whose claim extra disagrees with its metadata (forged)
    path = save_counterexample(tmp_path, "JLR-rank-NUC", options={}, problem=problem)
    _, extras = load_problem(path)
    extras["claim"] = np.array("JLR-magnitude")
    save_problem(problem, tmp_path / "f.npz", extra=extras)
    with pytest.raises(UserInputError, match=r"^path: key 'claim' .*expected the claim of the metadata"):
        load_counterexample(tmp_path / "f.npz")


def test_the_array_budget_is_checked_from_the_headers(tmp_path):
    path = _plain(tmp_path, GOOD, X=np.ones(1000))
    with pytest.raises(UserInputError, match=r"^path: expected arrays of at most 100 bytes"):
        load_counterexample(path, max_bytes=100)


# --------------------------------------------------------------------------------------------------
# Every writer


def test_jlr_rank_writes_a_problem_counterexample_that_audit_replays(problem, tmp_path, capsys):
    from verify.jlr.rank import check_jlr_rank_nuc

    v = check_jlr_rank_nuc(problem, rank_bound=0, save_dir=tmp_path / "cx")
    assert v.status == "violated" and v.counterexample
    cx = load_counterexample(v.counterexample)
    assert (cx.claim, cx.kind) == ("JLR-rank-NUC", "problem") and cx.options["rank_bound"] == 0
    assert main(["audit", v.counterexample, "--no-progress"]) == 1
    assert "replaying the saved counterexample of JLR-rank-NUC" in capsys.readouterr().out


def test_jlr_second_order_writes_factors_and_the_record(problem, tmp_path, capsys):
    from verify.jlr.second_order import check_jlr_no_spurious

    v = check_jlr_no_spurious(
        problem, n_starts=2, inits=("zero", "small"), perturbations=("none",), order=1, save_dir=tmp_path
    )
    assert v.status == "violated" and v.counterexample
    cx = load_counterexample(v.counterexample)
    assert (cx.claim, cx.kind) == ("JLR-no-spurious", "problem") and cx.options["order"] == 1
    assert {"U0", "V0", "D0"} <= set(cx.arrays) and isinstance(cx.record, dict)
    np.testing.assert_allclose(cx.arrays["D0"], cx.arrays["U0"] @ cx.arrays["V0"].T)
    assert main(["audit", v.counterexample, "--no-progress"]) == 1
    assert "replaying" in capsys.readouterr().out


@pytest.fixture(scope="module")
def kkr_counterexample(tmp_path_factory):
    from verify.kkr import checkers as kkr

    lam = 0.05
    p = nl.double_well(lam=lam)
    s1, s2 = nl.double_well_points(lam)["spurious"]
    root = torch.diag(torch.tensor([abs(s1), abs(s2)], dtype=torch.float64).sqrt())
    near = Factors((-root + 0.01,), (root,))
    ev = kkr.collect_evidence(
        p, rank=2, radius=5.0, seeds=(0,), inits=("zero",), samples=10, starts={"near-spurious": near}
    )
    v = kkr.check_kkr_dichotomy(ev, variant="all-global", save_dir=tmp_path_factory.mktemp("kkr"))
    assert v.status == "violated" and v.counterexample, v.reason
    return v.counterexample


def test_kkr_writes_end_points_with_their_catalog_entry(kkr_counterexample, capsys):
    cx = load_counterexample(kkr_counterexample)
    assert (cx.claim, cx.kind, cx.problem) == ("KKR-dichotomy", "nonlinear", None)
    assert cx.source["catalog"] == {"name": "double-well", "builder": "double_well", "kwargs": {"lam": 0.05}}
    assert cx.source["name"] == "double-well-lam0.05" and cx.options["variant"] == "all-global"
    assert {"P0.A0", "P0.B0", "REF.X0"} <= set(cx.arrays)
    pt = cx.record["points"][0]
    assert pt["init"] == "near-spurious" and pt["class"] == "spurious" and pt["sosp_certified"]
    # loracheck audit recomputes the end points on the rebuilt problem
    assert main(["audit", kkr_counterexample]) == 1
    out = capsys.readouterr().out
    assert "a 'nonlinear' counterexample of KKR-dichotomy" in out and "is reproduced" in out
    assert "end point near-spurious/" in out and " NO" not in out


def test_kkr_replay_of_changed_numbers_is_not_reproduced(kkr_counterexample, tmp_path, capsys):
    cx = load_counterexample(kkr_counterexample)
    record = dict(cx.record, points=[dict(cx.record["points"][0], penalized=0.0)])
    path = save_counterexample(
        tmp_path, cx.claim, kind="nonlinear", options=cx.options, record=record, source=cx.source,
        arrays=cx.arrays, ident="changed",
    )  # fmt: skip
    assert main(["audit", path]) == 2
    assert "NOT reproduced" in capsys.readouterr().out
    # a forged catalog entry is refused, never built
    source = dict(cx.source, catalog={"name": "double-well", "builder": "double_well", "kwargs": {"lam": -1}})
    path = save_counterexample(
        tmp_path, cx.claim, kind="nonlinear", options=cx.options, record=cx.record, source=source,
        arrays=cx.arrays, ident="forged",
    )  # fmt: skip
    assert main(["audit", path]) == 3
    assert "key 'source.catalog': expected the builder and arguments" in capsys.readouterr().err
    # not from the catalog: refused with how to read it
    source = dict(cx.source, catalog=None)
    path = save_counterexample(
        tmp_path, cx.claim, kind="nonlinear", options=cx.options, record=cx.record, source=source,
        arrays=cx.arrays, ident="own",
    )  # fmt: skip
    assert main(["audit", path]) == 3
    err = capsys.readouterr().err
    assert "not an entry of landscapes.catalog.KKR_PROBLEMS" in err and "load_counterexample" in err
    assert main(["audit", kkr_counterexample, "--claims", "KKR-special"]) == 3
    assert "--claims: FILE is a 'nonlinear' counterexample" in capsys.readouterr().err


def test_hsk_exact_writes_the_head_and_audit_recomputes_it(tmp_path, capsys):
    from verify.hsk.checkers import check_hsk_exact

    v = check_hsk_exact(
        HskSetting(case="C2"), variant="printed", timing_lengths=(64, 128), repeats=1, save_dir=tmp_path
    )
    assert v.status == "violated" and v.counterexample
    cx = load_counterexample(v.counterexample)
    assert (cx.claim, cx.kind) == ("HSK-exact", "attention") and cx.source["case"] == "C2"
    assert cx.arrays["X"].shape == (2, 2) and {"Y", "W_Q", "A_Q", "B_Q", "scale_beta"} <= set(cx.arrays)
    assert set(cx.record) == {"error"} and cx.record["error"] > 1e-3  # JSON, not a repr
    assert main(["audit", v.counterexample]) == 1
    assert "is reproduced" in capsys.readouterr().out


def test_hsk_poly_error_writes_the_row_as_its_record(tmp_path, capsys):
    from verify.hsk.checkers import check_hsk_poly_error

    v = check_hsk_poly_error(HskSetting(), L=32, bound_factor=0.01, save_dir=tmp_path)
    assert v.status == "violated" and v.counterexample
    cx = load_counterexample(v.counterexample)
    assert (cx.claim, cx.kind) == ("HSK-poly-error", "attention") and cx.options["bound_factor"] == 0.01
    assert {"degree", "gamma", "max_entry_error", "error_over_allowed"} <= set(cx.record)
    assert main(["audit", v.counterexample]) == 1
    assert "is reproduced" in capsys.readouterr().out


def test_hsk_below_planted_above_writes_the_head(tmp_path, capsys):
    from verify.hsk.checkers import check_hsk_below

    v = check_hsk_below(
        HskSetting(), lengths=(64, 128), timing_lengths=(256, 512), variant="above", above_ratio=2.0,
        max_degree=2, repeats=1, save_dir=tmp_path,
    )  # fmt: skip
    assert v.status == "violated" and v.counterexample, v.reason
    cx = load_counterexample(v.counterexample)
    assert (cx.claim, cx.kind) == ("HSK-below", "attention") and set(cx.record) == {"L", "best_error"}
    assert main(["audit", v.counterexample]) == 1
    assert "is reproduced" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# Forged array counterexamples: exit 1 only when the refutation itself is re-established


def _forge(src: str, out: Path, edit) -> Path:
    """Copy the counterexample ``src`` to ``out`` after ``edit(meta, arrays)`` (the arrays listed again)."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop(META_KEY)))
    edit(meta, arrays)
    meta["arrays"] = sorted(arrays)
    with open(out, "wb") as fh:
        np.savez(fh, **{META_KEY: np.array(json.dumps(meta))}, **arrays)
    return out


@pytest.fixture(scope="module")
def hsk_files(tmp_path_factory):
    from verify.hsk.checkers import check_hsk_below, check_hsk_exact, check_hsk_poly_error

    d = tmp_path_factory.mktemp("hsk")
    exact = check_hsk_exact(
        HskSetting(case="C2"), variant="printed", timing_lengths=(64, 128), repeats=1, save_dir=d
    )
    poly = check_hsk_poly_error(HskSetting(), L=32, bound_factor=0.01, save_dir=d)
    below = check_hsk_below(
        HskSetting(), lengths=(64, 128), timing_lengths=(256, 512), variant="above", above_ratio=2.0,
        max_degree=2, repeats=1, save_dir=d,
    )  # fmt: skip
    files = {"exact": exact.counterexample, "poly": poly.counterexample, "below": below.counterexample}
    assert all(files.values())
    return files


def _set(where: str, key: str, value):
    def edit(meta, arrays):
        meta[where][key] = value

    return edit


def _drop(where: str, key: str):
    def edit(meta, arrays):
        del meta[where][key]

    return edit


def _claim(value):
    def edit(meta, arrays):
        meta["claim"] = value

    return edit


def _scale_x(factor):
    def edit(meta, arrays):
        arrays["X"] = arrays["X"] * factor

    return edit


def _no_adapters(meta, arrays):
    for k in [k for k in arrays if k.startswith(("A_", "B_"))]:
        del arrays[k]


def _long_head(meta, arrays):
    for k in ("X", "Y"):
        arrays[k] = np.ones((5000, arrays[k].shape[1]))


@pytest.mark.parametrize(
    ("which", "edit", "match"),
    [
        # the claim: registered, and one whose checker writes this kind
        ("exact", _claim("JLR-rank-NUC"), r"key 'claim': .*'attention' counterexamples"),
        ("exact", _claim("Bogus claim!"), r"key 'claim': .*a claim of theory\.claims"),
        ("exact", _claim("KKR-dichotomy"), r"key 'claim'"),
        # the options, by the checker's specs
        ("exact", _set("options", "rtol", "nan"), r"key 'options\.rtol'"),
        ("exact", _set("options", "rtol", 0), r"key 'options\.rtol'"),
        ("exact", _set("options", "rtol", -1), r"key 'options\.rtol'"),
        ("exact", _set("options", "rtol", 10**400), r"key 'options\.rtol'"),
        ("exact", _set("options", "variant", "fixed"), r"key 'options\.variant'"),
        ("exact", _drop("options", "rtol"), r"key 'options\.rtol'.*got nothing"),
        ("below", _set("options", "target", -1), r"key 'options\.target'"),
        ("below", _set("options", "target", "nan"), r"key 'options\.target'"),
        ("below", _set("options", "max_degree", -1), r"key 'options\.max_degree'"),
        ("below", _set("options", "max_degree", 10**6), r"key 'options\.max_degree'"),
        ("below", _set("options", "max_degree", "x"), r"key 'options\.max_degree'"),
        ("below", _set("options", "variant", "below"), r"key 'options\.variant'"),
        ("poly", _set("options", "bound_factor", 0), r"key 'options\.bound_factor'"),
        # the source and the record against the arrays
        ("poly", _set("source", "d", 5), r"key 'source\.d'"),
        ("below", _set("source", "beta", 2.0), r"key 'source\.beta'"),
        ("below", _set("record", "L", 128), r"key 'record\.L'"),
        ("poly", _set("record", "degree", "x"), r"key 'record\.degree'"),
        ("poly", _set("record", "degree", 200), r"key 'record\.degree'"),
        ("poly", _set("record", "degree", 10**6), r"key 'record\.degree'"),
        ("poly", _drop("record", "max_entry_error"), r"key 'record\.max_entry_error'"),
        ("exact", _set("record", "error", 10**400), r"key 'record\.error'"),
        # non-finite inputs, heads beyond the checker's limits, arrays that are not a head
        ("exact", _scale_x(np.nan), r"key 'arrays\.X': expected finite numbers"),
        ("exact", _long_head, r"key 'arrays\.X': expected a head of length L <= 4096"),
        ("exact", _no_adapters, r"key 'arrays'"),
    ],
)
def test_a_forged_head_is_refused_naming_the_key(hsk_files, tmp_path, capsys, which, edit, match):
    path = _forge(hsk_files[which], tmp_path / "f.npz", edit)
    assert main(["audit", str(path)]) == 3
    err = capsys.readouterr().err
    assert re.search(match, err), err


def test_a_head_over_the_memory_budget_is_refused_before_allocating(hsk_files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LORACHECK_MAX_BYTES", "20000")
    assert main(["audit", hsk_files["poly"]]) == 3
    assert "over the memory budget of 20000 bytes" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["exact", "poly"])
def test_a_non_finite_evaluation_reproduces_nothing(hsk_files, tmp_path, capsys, which):
    path = _forge(hsk_files[which], tmp_path / "f.npz", _scale_x(1e200))
    assert main(["audit", str(path)]) == 2
    out = capsys.readouterr().out
    assert "NOT reproduced" in out and " NO" in out


@pytest.mark.parametrize("which", ["exact", "poly", "below"])
def test_genuine_heads_are_reproduced_and_the_ok_column_agrees(hsk_files, capsys, which):
    assert main(["audit", hsk_files[which]]) == 1
    out = capsys.readouterr().out
    assert "is reproduced" in out and " NO" not in out


def test_a_changed_record_shows_no_in_the_ok_column(hsk_files, tmp_path, capsys):
    path = _forge(hsk_files["exact"], tmp_path / "f.npz", _set("record", "error", 2e-16))
    assert main(["audit", str(path)]) == 2
    out = capsys.readouterr().out
    assert "NOT reproduced" in out and "max rel error (record)" in out and out.count("  NO\n") == 1


def _on_the_reference(meta, arrays):
    """H1 of the review: the end point moved onto X*, the record made to agree."""
    del arrays["P0.A0"], arrays["P0.B0"]
    arrays["P0.X0"] = arrays["REF.X0"].copy()
    pt = meta["record"]["points"][0]
    pt.update(penalized=meta["record"]["reference"]["value"], excess=0.0)
    for k in ("objective", "grad_norm", "class"):
        pt.pop(k, None)


@pytest.mark.parametrize(
    ("edit", "code", "match"),
    [
        (_on_the_reference, 2, "NOT reproduced"),
        (_claim("HSK-exact"), 3, r"key 'claim': .*'nonlinear' counterexamples"),
        (_claim("NO-SUCH"), 3, r"key 'claim'"),
        (_claim("KKR-magnitude"), 3, r"key 'claim'"),
        (_set("options", "global_rtol", 2.0), 3, r"key 'options\.global_rtol'"),
        (_set("options", "global_rtol", "x"), 3, r"key 'options\.global_rtol'"),
        (_set("options", "variant", "none"), 3, r"key 'options\.variant'"),
        (_set("options", "dense_max", 10**9), 3, r"key 'options\.dense_max'"),
        (_set("record", "rank", "x"), 3, r"key 'record\.rank'"),
        (_set("record", "points", []), 3, r"key 'record\.points'"),
        (_set("record", "reference", {"value": 10**400}), 3, r"key 'record\.reference\.value'"),
    ],
)
def test_a_forged_kkr_file_does_not_reproduce(kkr_counterexample, tmp_path, capsys, edit, code, match):
    path = _forge(kkr_counterexample, tmp_path / "f.npz", edit)
    assert main(["audit", str(path)]) == code
    out = capsys.readouterr()
    assert re.search(match, out.out + out.err), out


def test_kkr_points_are_judged_by_the_checker_tolerances(kkr_counterexample, tmp_path, capsys):
    def edit(meta, arrays):
        pt = meta["record"]["points"][0]
        pt["penalized"] = 10**400
        pt["tolerances"] = [1]

    path = _forge(kkr_counterexample, tmp_path / "f.npz", edit)
    assert main(["audit", str(path)]) == 3
    assert "key 'record.points[0].penalized'" in capsys.readouterr().err
    # a tolerance in the file is not the checker's: a huge grad_rtol there changes nothing
    path = _forge(kkr_counterexample, tmp_path / "g.npz", lambda m, a: m["record"]["points"][0].update(
        tolerances={"grad_rtol": 10.0}))  # fmt: skip
    assert main(["audit", str(path)]) == 1
    out = capsys.readouterr().out
    assert "grad_norm <= tol" in out and "excess > global tol" in out and " NO" not in out


@pytest.mark.parametrize("flags", [["--scale", "2"], ["--scale", "-5"], ["--fresh"]])
def test_inapplicable_options_are_refused_on_array_counterexamples(hsk_files, capsys, flags):
    assert main(["audit", hsk_files["exact"], *flags]) == 3
    assert f"{flags[0]}: FILE is a 'attention' counterexample" in capsys.readouterr().err


def test_distinct_points_never_share_a_file_name(problem, tmp_path):
    opts = {"rank_bound": 1}
    a = save_counterexample(
        tmp_path, "JLR-rank-NUC", options=opts, problem=problem, point=(torch.ones(7, 6),)
    )
    b = save_counterexample(
        tmp_path, "JLR-rank-NUC", options=opts, problem=problem, point=(torch.zeros(7, 6),)
    )
    assert a != b and Path(a).exists() and Path(b).exists()
    x = save_counterexample(tmp_path, "c", kind="attention", options={}, arrays={"X": np.ones(2)}, ident="h")
    y = save_counterexample(tmp_path, "c", kind="attention", options={}, arrays={"X": np.zeros(2)}, ident="h")
    assert x != y


def test_a_problem_file_whose_extras_disagree_with_its_metadata_is_refused(problem, tmp_path, capsys):
    path = save_counterexample(tmp_path, "JLR-rank-NUC", options={"rank_bound": 0}, problem=problem)
    _, extras = load_problem(path)
    for key, value, match in [
        ("claim", "JLR-magnitude", "key 'claim'"),
        ("options_json", json.dumps({"rank_bound": 1}), "key 'options_json'"),
    ]:
        forged = dict(extras, **{key: np.array(value)})
        save_problem(problem, tmp_path / "f.npz", extra=forged)
        assert main(["audit", str(tmp_path / "f.npz"), "--no-progress"]) == 3
        assert match in capsys.readouterr().err
    assert main(["audit", path, "--no-progress"]) == 1


def test_older_counterexamples_are_named_as_such(tmp_path, capsys):
    old = tmp_path / "KKR-dichotomy-old-12345678.json"
    old.write_text(json.dumps({"claim": "KKR-dichotomy", "points": []}))
    assert main(["audit", str(old)]) == 3
    assert "a counterexample of an older format that this version does not replay" in capsys.readouterr().err
    np.savez(tmp_path / "h.npz", X=np.ones((2, 2)), Y=np.ones((2, 2)), info=np.array("{'error': 1.6}"))
    assert main(["audit", str(tmp_path / "h.npz")]) == 3
    assert "an older format" in capsys.readouterr().err
