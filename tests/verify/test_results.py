"""Versioned results files (verify.results): one key pair, atomic saves, one resume decision.

Every JSON results file says ``"format": "loracheck.<kind>"`` and ``"version": <int>``; a file is
resumed only when both and its identity (the configuration, the source, ...) are this run's, and is
refused otherwise (naming the argument, the expected and the found value) unless ``fresh``.  Files
written before the convention (``"schema": "loracheck.phase/1"``, ``"format": "loracheck.kkr/1"``)
are still read: they resume and draw.
"""

import json

import pytest

from theory.errors import InputTypeError, UserInputError
from verify.report import REPORT_SCHEMA
from verify.results import ResultsFile, current_spelling, first_difference, results_schema, saved_format
from verify.run.audits import AUDIT_SCHEMA


def _file(path, **kw):
    return ResultsFile(path, fmt="loracheck.thing", version=2, **kw)


def test_round_trip_writes_format_and_version_first_and_atomically(tmp_path):
    f = _file(tmp_path / "sub" / "r.json")
    data = f.new(config={"a": [1, 2]}, runs=[], complete=False)
    assert list(data)[:2] == ["format", "version"]
    path = f.save(data)
    assert path == tmp_path / "sub" / "r.json" and path.read_text().endswith("}\n")
    assert list(json.loads(path.read_text())) == ["format", "version", "config", "runs", "complete"]
    assert f.read() == data
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary file left behind
    with pytest.raises(ValueError):  # the package never writes NaN into a results file by default
        f.save({**data, "x": float("nan")})
    assert f.read() == data  # the failed write left the previous file
    f.save({**data, "x": float("nan")}, allow_nan=True)


def test_load_resumes_the_same_identity_and_starts_fresh_without_a_file(tmp_path):
    f = _file(tmp_path / "r.json")
    new = f.new(config={"seeds": [0, 1]}, runs=[])
    assert f.load(new, identity=("config",)) is new  # no file yet
    f.save({**new, "runs": [1]})
    assert f.load(f.new(config={"seeds": [0, 1]}, runs=[]), identity=("config",))["runs"] == [1]
    other = f.new(config={"seeds": [0]}, runs=[])
    assert f.load(other, identity=("config",), fresh=True) is other  # fresh: the file is not read


def test_another_identity_is_refused_naming_the_argument_and_the_difference(tmp_path):
    f = _file(tmp_path / "r.json", what="--out", hint="use --fresh")
    f.save(f.new(config={"problems": {"a": {"N": 3}}, "seeds": [0, 1]}, source="x.json"))
    with pytest.raises(UserInputError) as e:
        f.load(
            f.new(config={"problems": {"a": {"N": 4}}, "seeds": [0, 1]}, source="x.json"),
            identity=("source", "config"),
            contents="runs",
            labels={"config": "configuration"},
        )
    assert str(e.value) == (
        f"--out: {str(tmp_path / 'r.json')!r} holds runs of another configuration "
        "(at ['problems']['a']['N']): expected 4, got 3; use --fresh"
    )
    with pytest.raises(
        UserInputError, match=r"holds results of another source file: expected 'y.json', got 'x.json'"
    ):
        f.load(f.new(source="y.json"), identity=("source",))
    # a nested identity key, e.g. the problem's sha256
    f.save(f.new(problem={"sha256": "ab", "N": 3}))
    with pytest.raises(UserInputError, match=r"another problem.sha256: expected 'cd', got 'ab'"):
        f.load(f.new(problem={"sha256": "cd"}), identity=(("problem", "sha256"),))
    assert f.load(f.new(problem={"sha256": "ab"}), identity=(("problem", "sha256"),))["problem"]["N"] == 3


@pytest.mark.parametrize(
    ("saved", "found"),
    [
        ({"format": "loracheck.other", "version": 2}, "got format 'loracheck.other', version 2"),
        ({"format": "loracheck.thing", "version": 3}, "got format 'loracheck.thing', version 3"),
        ({"format": "loracheck.thing"}, "got format 'loracheck.thing', version None"),
        ({"schema": "loracheck.thing/1"}, "got format 'loracheck.thing', version 1"),
        ({"runs": []}, "got no format"),
        ([1, 2], "got a JSON list, not an object"),
    ],
)
def test_another_format_or_version_is_refused_unless_fresh(tmp_path, saved, found):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(saved))
    f = _file(path, hint="use fresh")
    with pytest.raises(UserInputError) as e:
        f.load(f.new())
    assert str(e.value) == (
        f"out: expected a file of format 'loracheck.thing', version 2 in {str(path)!r}, {found}; use fresh"
    )
    new = f.new()
    assert f.load(new, fresh=True) is new
    assert path.read_text() == json.dumps(saved)  # refusing never touches the file


def test_a_file_that_is_not_json_is_refused_with_the_reader_s_reason(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("{not json")
    with pytest.raises(
        UserInputError, match=r"^out: '.*r.json' is not a speed file \(out: expected JSON data"
    ):
        _file(path, noun="a speed file").load({})
    with pytest.raises(UserInputError, match=r"^--out: expected JSON data in .*; pass --fresh$"):
        _file(path, what="--out", noun=None, hint="pass --fresh").load({})
    (tmp_path / "d.json").mkdir()
    with pytest.raises(UserInputError, match="not a regular file"):
        _file(tmp_path / "d.json").read()


def test_replace_resumable_upgrade_and_check(tmp_path):
    path = tmp_path / "r.json"
    f = _file(path, hint="h")
    path.write_text(json.dumps({"format": "loracheck.other", "version": 1}))
    assert f.load(None, other="replace") is None  # another format: replaced, not refused
    f.save(f.new(complete=True))
    assert f.load(None, other="replace", resumable=lambda d: d["complete"] is False) is None
    f.save(f.new(complete=False, config={"note": "x", "n": 1}))
    got = f.load(
        f.new(config={"n": 1}),
        identity=("config",),
        upgrade=lambda d: d["config"].pop("note"),
        resumable=lambda d: d["complete"] is False,
    )
    assert got == {"format": "loracheck.thing", "version": 2, "complete": False, "config": {"n": 1}}

    def check(data, where):
        raise UserInputError(f"{where}: 'runs': expected a list")

    with pytest.raises(UserInputError, match=r"^out: '.*r.json': 'runs': expected a list; h$"):
        f.load({}, check=check)
    path.write_text("[")
    with pytest.raises(UserInputError, match="expected JSON data"):
        f.load(None, other="replace")  # unreadable JSON is refused all the same


def test_legacy_spellings_are_read_in_the_current_one():
    assert saved_format({"format": "loracheck.kkr", "version": 1}) == ("loracheck.kkr", 1)
    assert saved_format({"format": "loracheck.kkr/1"}) == ("loracheck.kkr", 1)
    assert saved_format({"format": "loracheck.kkr-tables/1"}) == ("loracheck.kkr-tables", 1)
    assert saved_format({"format": "loracheck.kkr/1-recertified"}) == ("loracheck.kkr-recertified", 1)
    assert saved_format({"schema": "loracheck.phase/1"}) == ("loracheck.phase", 1)
    assert saved_format({"format": "loracheck.speed/12"}) == ("loracheck.speed", 12)
    assert saved_format({"format": "x/1"}) == ("x/1", None)  # not ours: quoted as it is
    assert saved_format([1]) == (None, None) and saved_format({}) == (None, None)
    old = {"schema": "loracheck.phase/1", "cells": [1], "complete": True}
    assert current_spelling(old) == {
        "format": "loracheck.phase",
        "version": 1,
        "cells": [1],
        "complete": True,
    }
    assert list(current_spelling(old))[:2] == ["format", "version"]


def test_first_difference():
    assert first_difference({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) is None
    assert first_difference({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}]}) == ("['a'][1]['b']", 2, 3)
    assert first_difference({"a": 1}, {"a": 1, "z": 0}) == ("['z']", None, 0)
    assert first_difference([1, 2], [1]) == ("", [1, 2], [1])
    assert first_difference({"a": 1}, {"a": 1.0}) is None  # as == compares (and JSON keeps 1.0 a float)
    assert first_difference(1, None) == ("", 1, None)


def test_the_published_schemas_share_one_header():
    for schema, title in ((REPORT_SCHEMA, "loracheck report"), (AUDIT_SCHEMA, "loracheck audit")):
        head = results_schema(title, schema["properties"]["format"]["const"], 1, required=[], properties={})
        assert (
            schema["required"][:5]
            == head["required"]
            == ["format", "version", "created", "complete", "environment"]
        )
        assert {k: schema["properties"][k] for k in head["properties"]} == head["properties"]


# ------------------------------------------------------------------------------------------------
# The commands: legacy files resume, and are rewritten in the current spelling


def test_a_legacy_kkr_file_resumes_and_is_rewritten_in_the_current_spelling(tmp_path):
    from verify.kkr.experiment import kkr_experiment

    out = tmp_path / "kkr.json"
    opts = {"inits": ("zero",), "seeds": (0,), "samples": 5, "progress": False}
    kkr_experiment(["double-well"], out=out, **opts)
    saved = json.loads(out.read_text())
    assert (saved["format"], saved["version"]) == ("loracheck.kkr", 1)
    legacy = {
        "format": "loracheck.kkr/1",
        **{k: v for k, v in saved.items() if k not in ("format", "version")},
    }
    out.write_text(json.dumps(legacy))
    again = kkr_experiment(["double-well"], out=out, **opts)  # resumed: the runs are the saved ones
    assert again["configurations"]["double-well"]["runs"] == saved["configurations"]["double-well"]["runs"]
    rewritten = json.loads(out.read_text())
    assert (rewritten["format"], rewritten["version"]) == ("loracheck.kkr", 1)
    with pytest.raises(
        UserInputError, match=r"out: .* holds runs of another configuration \(at \['seeds'\]\)"
    ):
        kkr_experiment(["double-well"], out=out, **{**opts, "seeds": (0, 1)})


def test_legacy_results_still_draw():
    from figures.gallery import gallery_items
    from figures.validate import check_result
    from figures.validate import saved_format as figure_format

    cells = [
        {"r": 1, "KN": 3, "nuc_rank": 1, "runs": 2, "global": 2, "fraction_global": 1.0, "above_bound": False}
    ]
    for head in ({"schema": "loracheck.phase/1"}, {"format": "loracheck.phase", "version": 1}):
        data = {**head, "cells": cells, "curve": [{"KN": 3, "r_max": 2}], "config": {}}
        assert figure_format(data) == ("loracheck.phase", 1)
        assert check_result(data) == "loracheck.phase"
        assert [i.name for i in gallery_items([data])] == ["phase-diagram"]
    with pytest.raises(
        UserInputError,
        match="expected format 'loracheck.phase', version 1, got format 'loracheck.phase', version 2",
    ):
        check_result({"format": "loracheck.phase", "version": 2, "cells": cells})
    with pytest.raises(InputTypeError, match="results"):
        check_result([1], "results")


@pytest.mark.parametrize("version", [True, 2.0, "2", 3])
def test_a_version_not_this_releases_int_is_refused_even_where_other_formats_are_replaced(tmp_path, version):
    # "version": true or 2.0 compared equal to 1 or 2 and resumed (written back unchanged); a report of
    # this format at a newer version was replaced, losing that release's finished verdicts.
    path = tmp_path / "r.json"
    f = _file(path)  # format loracheck.thing, version 2
    text = json.dumps({"format": "loracheck.thing", "version": version, "complete": False})
    path.write_text(text)
    with pytest.raises(UserInputError, match=r"expected a file of format 'loracheck.thing', version 2"):
        f.load(None, other="replace")
    with pytest.raises(UserInputError, match=r"expected a file of format 'loracheck.thing', version 2"):
        f.read()
    assert path.read_text() == text


def test_a_directory_in_the_files_place_is_refused_before_any_work_even_with_fresh(tmp_path):
    # "--fresh" was suggested, and with it the command computed a run before failing on the rename.
    (tmp_path / "r.json").mkdir()
    for fresh in (False, True):
        with pytest.raises(UserInputError, match=r"expected a path for a results file, got '.*r.json'"):
            _file(tmp_path / "r.json").load({}, fresh=fresh)
