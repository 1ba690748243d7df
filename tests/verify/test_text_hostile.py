"""Text from input files never breaks or fakes the terminal output; JSON files to resume are bounded.

* :func:`verify.terminal.printable` escapes by Unicode category: control (Cc, but tab and
  newline), format (Cf: bidirectional marks such as U+061C, the soft hyphen, U+180E, the tag
  characters U+E0000-U+E007F), line/paragraph separators (Zl, Zp), lone surrogates (Cs),
  private-use (Co) and unassigned (Cn) characters; ordinary text of any script is kept.
* Lone surrogates (a JSON ``"\\ud800"`` escape, a problem name, a file name that is not UTF-8)
  and characters the stdout encoding lacks never make printing raise (exit 4): they are shown
  escaped, also on a strict UTF-8 or ASCII stdout.
* :func:`verify.jsonfile.read_json` reads regular files only (``/dev/zero`` and FIFOs are refused
  before a byte is read, never blocking) and refuses nesting deeper than ``MAX_JSON_DEPTH``, which
  a resumed ``--json`` file would otherwise carry into recursive code (``RecursionError``, exit 4).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from landscapes import gaussian_problem
from landscapes.io import save_problem
from tests.fifo import read_without_blocking
from theory.errors import UserInputError
from verify.cli.main import main
from verify.jsonfile import MAX_JSON_DEPTH, json_depth, read_json
from verify.terminal import PrintableStream, printable

ROOT = Path(__file__).resolve().parents[2]
ESCAPED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


@pytest.fixture(scope="module")
def P():
    return gaussian_problem(K=1, N=6, blocks=[(5, 4)], lam=0.05, seed=0)


def _escape(c: str) -> str:
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def named_problem(P, path: Path, name: str) -> Path:
    """``P`` saved to ``path`` with the name ``name`` written straight into the .npz (no checksum)."""
    save_problem(P, path)
    with np.load(path, allow_pickle=False) as z:
        fields = dict(z)
    fields.pop("checksum", None)
    fields["name"] = np.array(name)
    np.savez(path, **fields)
    return path


# ---- printable: by Unicode category ------------------------------------------------------------


def test_printable_escapes_exactly_the_escaped_categories():
    # every code point at once, against the categories (not str.isprintable, which it uses)
    text = "".join(map(chr, range(0x110000)))
    want = "".join(
        _escape(c) if unicodedata.category(c) in ESCAPED_CATEGORIES and c not in "\t\n" else c for c in text
    )
    assert printable(text) == want


@pytest.mark.parametrize(
    "char",
    [
        "\u061c",  # Arabic letter mark (bidi)
        "\u2028",  # line separator
        "\u2029",  # paragraph separator
        "\u180e",  # Mongolian vowel separator
        "\u00ad",  # soft hyphen
        "\U000e0001",  # language tag
        "\U000e0041",  # tag latin capital A
        "\U000e007f",  # cancel tag
        "\ud800",  # lone high surrogate
        "\udcff",  # surrogateescape'd byte 0xff of a file name
        "\ue000",  # private use
        "\U0010fffd",  # supplementary private use
        "\u0378",  # unassigned
        "\uffff",  # noncharacter
        "\u202e",  # right-to-left override
        "\u2066",  # left-to-right isolate
        "\u200b",  # zero-width space
        "\ufeff",  # zero-width no-break space
        "\x1b",
        "\r",
        "\x0b",
        "\x7f",
        "\x9b",
    ],
)
def test_trojan_and_unencodable_characters_are_escaped(char):
    shown = printable(f"a{char}b")
    assert shown == f"a{_escape(char)}b"
    assert shown.isascii() and shown.isprintable()


def test_ordinary_text_of_any_script_is_kept():
    text = (
        "JLR-rank-NUC  holds\tcertified (rel gap 1e-12)\n"
        "λ_min = −0.5, ||D||_* ≤ 3, naïve café, Straße, Ελληνικά, Русский, العربية, עברית, हिन्दी, "
        "中文, 日本語, 한국어, ไทย, e\u0301 (combining), ✓ ✗ → ≥, emoji 😀 👍🏽 ❤️, "
        "no-break\u00a0space, ideographic\u3000space, thin\u2009space"
    )
    assert printable(text) == text


def test_printable_stream_never_raises_on_encoding():
    for encoding in ("utf-8", "ascii", "latin-1"):
        raw = io.BytesIO()
        stream = io.TextIOWrapper(raw, encoding=encoding, errors="strict", write_through=True)
        out = PrintableStream(stream)  # type: ignore[arg-type]
        text = "name ab\ud800cd, file bad\udcffname.npz, λ = 0.5 😀\n"
        assert out.write(text) == len(text)
        got = raw.getvalue().decode(encoding)
        assert "ab\\ud800cd" in got and "bad\\udcffname.npz" in got, got
        assert ("λ" if encoding == "utf-8" else "\\u03bb") in got, got


# ---- through the command line ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["ab\ud800cd", "x\u061cholds", "x\u2028JLR-rank-NUC holds", "a\u00adb\u180ec", "t\U000e0068\U000e0069"],
    ids=["surrogate", "arabic-letter-mark", "line-separator", "soft-hyphen-mvs", "tags"],
)
def test_hostile_problem_names_are_shown_escaped(P, tmp_path, capsys, name):
    prob = named_problem(P, tmp_path / "p.npz", name)
    rc = main(["audit", str(prob), "--claims", "JLR-magnitude", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert printable(name) in out and printable(name) != name, out
    assert all(c.isprintable() or c in "\t\n" for c in out + err), ascii(out + err)


def _run_cli(args: list[str | bytes], encoding: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONIOENCODING=encoding)
    return subprocess.run(
        [sys.executable, "-m", "verify.cli", *args], capture_output=True, cwd=ROOT, env=env, timeout=300
    )


@pytest.mark.skipif(sys.platform != "linux", reason="file names that are not UTF-8")
def test_non_utf8_file_name_on_a_strict_utf8_stdout(P, tmp_path):
    # Python decodes the name with surrogateescape ("bad\udcffname.npz"); printing it to a strict
    # UTF-8 stdout raised UnicodeEncodeError (exit 4)
    path = os.path.join(os.fsencode(tmp_path), b"bad\xffname.npz")
    save_problem(P, tmp_path / "p.npz")
    os.rename(tmp_path / "p.npz", path)
    r = _run_cli(["audit", path, "--claims", "JLR-magnitude", "--no-progress"], "utf-8:strict")
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    assert b"bad\\udcffname.npz" in r.stdout, r.stdout


def test_surrogate_and_non_ascii_names_on_strict_stdouts(P, tmp_path):
    prob = named_problem(P, tmp_path / "p.npz", "λ-ab\ud800cd")
    for encoding, shown in (("utf-8:strict", "λ-ab\\ud800cd"), ("ascii:strict", "\\u03bb-ab\\ud800cd")):
        r = _run_cli(["audit", str(prob), "--claims", "JLR-magnitude", "--no-progress"], encoding)
        assert r.returncode == 0, (encoding, r.stderr.decode(errors="replace")[-2000:])
        assert shown.encode() in r.stdout, (encoding, r.stdout)


def _interrupted_audit(P, tmp_path: Path, capsys) -> tuple[str, Path, dict]:
    """A problem file, its audit --json file and that file's data marked interrupted (to forge)."""
    prob = str(save_problem(P, tmp_path / "p.npz"))
    out = tmp_path / "a.json"
    assert main(["audit", prob, "--claims", "JLR-magnitude", "--no-progress", "--json", str(out)]) == 0
    capsys.readouterr()
    data = json.loads(out.read_text())
    data["complete"] = False
    return prob, out, data


def test_resumed_audit_reason_with_a_surrogate(P, tmp_path, capsys):
    prob, out, data = _interrupted_audit(P, tmp_path, capsys)
    data["verdicts"][0]["reason"] = "\ud800\u2028 forged"
    out.write_text(json.dumps(data))  # ensure_ascii: the surrogate as a "\ud800" escape
    rc = main(["audit", prob, "--claims", "JLR-magnitude", "--no-progress", "--json", str(out)])
    o, err = capsys.readouterr()
    assert rc in (0, 3), err  # reused or refused, never an internal error
    assert "\ud800" not in o + err and "\u2028" not in o + err


def test_resumed_run_report_reason_with_a_surrogate(tmp_path, capsys):
    args = ["run", "--claims", "JLR-magnitude", "--problems", "gauss-sq-K1", "--no-progress"]
    out = tmp_path / "run"
    assert main([*args, "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    report["complete"] = False
    report["verdicts"][0]["reason"] = "\ud800\u2028 forged"
    (out / "report.json").write_text(json.dumps(report))
    capsys.readouterr()
    rc = main([*args, "--out", str(out)])
    o, err = capsys.readouterr()
    assert rc in (0, 3), err
    assert "\ud800" not in o + err


# ---- read_json: regular files only, nesting bounded -------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_read_json_refuses_devices_before_reading():
    with pytest.raises(UserInputError, match=r"--from: expected a regular JSON file, got '/dev/zero'"):
        read_json("/dev/zero", what="--from")


def test_read_json_refuses_directories(tmp_path):
    with pytest.raises(UserInputError, match=r"--out: expected a (regular|readable) JSON file"):
        read_json(tmp_path, what="--out")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_read_json_never_blocks_on_a_fifo(tmp_path):
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    got = read_without_blocking(fifo, lambda: read_json(fifo, what="--out"), "read_json")
    assert isinstance(got, UserInputError), got
    assert "not a regular file" in str(got)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 600])
def test_read_json_refuses_deep_nesting(tmp_path, depth):
    path = tmp_path / "deep.json"
    path.write_text("[" * (depth - 1) + "1" + "]" * (depth - 1))
    with pytest.raises(
        UserInputError, match=rf"--json: expected JSON nested at most {MAX_JSON_DEPTH} deep in .*deep\.json"
    ):
        read_json(path, what="--json")


def test_read_json_accepts_the_maximum_depth(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text('{"a": ' * (MAX_JSON_DEPTH - 1) + "1" + "}" * (MAX_JSON_DEPTH - 1))
    assert json_depth(read_json(path, what="--json")) == MAX_JSON_DEPTH


def test_depth_cap_leaves_margin_over_the_package_files():
    # the deepest files the package writes (kkr.json, speed.json, report.json) are ~10 deep
    files = [p for p in (ROOT / "benchmarks" / "results").rglob("*.json") if p.stat().st_size < 50e6]
    if not files:
        pytest.skip("no benchmark results in this checkout")
    deepest = max(json_depth(read_json(p, what="file")) for p in files)
    assert deepest * 4 <= MAX_JSON_DEPTH, deepest


def test_deep_certificate_in_a_resumed_audit_is_exit_3(P, tmp_path, capsys):
    # was RecursionError (exit 4) when the resumed verdict was re-serialised
    prob, out, data = _interrupted_audit(P, tmp_path, capsys)
    deep: object = 1.0
    for _ in range(500):
        deep = [deep]
    cert = data["verdicts"][0]["certificate"]
    cert[next(iter(cert))] = deep
    out.write_text(json.dumps(data))
    rc = main(["audit", prob, "--claims", "JLR-magnitude", "--no-progress", "--json", str(out)])
    err = capsys.readouterr().err
    assert rc == 3, err
    assert f"nested at most {MAX_JSON_DEPTH} deep" in err and "a.json" in err, err
