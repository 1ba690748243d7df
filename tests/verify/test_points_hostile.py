"""Hostile LoRA point files and PEFT adapters: refused with exit 3 before any work, PEFT semantics kept.

Classes (issue 25, sections 2, 3 and 5): ranks outside ``[1, m + n]`` (a rank-0 point is
refused before the NUC solve); scales that are complex, non-finite, non-positive, of the wrong
type or shape; ``adapter_config.json`` that is not a JSON object or whose fields have the wrong
types; ``rank_pattern`` / ``alpha_pattern`` keys run by RE2 (linear time: ``(a+)+b`` against a
long name returns at once), with length caps, and refused when invalid or not runnable by RE2;
point files read with the bounded reader of ``landscapes.io`` (headers first, the memory budget);
factors whose norm could overflow the objective (``1e200``) refused at the boundary.
The pattern semantics are checked against PEFT's own ``get_pattern_key``.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file as st_save_file
from torch import nn

from landscapes import gaussian_problem
from landscapes.io import save_problem
from tests.fifo import read_without_blocking
from theory.errors import InputTypeError, UserInputError
from verify.cli.main import main
from verify.run import points as vp
from verify.run.points import MAX_PATTERN_CHARS, audit_point, load_point

ROOT = Path(__file__).resolve().parents[2]
M, N = 5, 4


@pytest.fixture(scope="module")
def P():
    return gaussian_problem(K=1, N=6, blocks=[(M, N)], lam=0.05, seed=0)


def factors(r: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    return g.standard_normal((M, r)), g.standard_normal((r, N))


def adapter(tmp_path: Path, config, *, module: str = "base_model.model.lin", r: int = 2) -> Path:
    """A PEFT-layout adapter directory: ``module``'s lora_A/lora_B and ``config`` (a dict, or raw text)."""
    d = tmp_path / "adapter"
    d.mkdir(parents=True, exist_ok=True)
    B, A = factors(r)
    st_save_file(
        {f"{module}.lora_A.weight": A, f"{module}.lora_B.weight": B}, str(d / "adapter_model.safetensors")
    )
    text = config if isinstance(config, str) else json.dumps(config)
    (d / "adapter_config.json").write_text(text)
    return d


# ---------------------------------------------------------------------------------------------
# adapter_config.json: a JSON object with PEFT's field types
# ---------------------------------------------------------------------------------------------
BAD_CONFIGS = [
    ("list", "[1]", r"adapter_config\.json in .*: expected a JSON object, got a JSON list"),
    ("string", '"x"', r"expected a JSON object, got a JSON str"),
    ("null", "null", r"expected a JSON object, got a JSON NoneType"),
    ("number", "8", r"expected a JSON object, got a JSON int"),
    ("invalid", "{", r"expected a JSON object, got invalid JSON"),
    ("deep", "[" * 100_000 + "]" * 100_000, r"nested at most 64 deep"),
    ("r-text", {"r": "2", "lora_alpha": 4}, r"field 'r': expected a positive integer, got '2'"),
    ("r-float", {"r": 2.0, "lora_alpha": 4}, r"field 'r': expected a positive integer, got '2\.0'"),
    ("r-bool", {"r": True, "lora_alpha": 4}, r"field 'r': expected a positive integer"),
    ("r-zero", {"r": 0, "lora_alpha": 4}, r"field 'r': expected a positive integer, got '0'"),
    ("alpha-text", {"r": 2, "lora_alpha": "4"}, r"field 'lora_alpha': expected a positive finite number"),
    ("alpha-nan", '{"r": 2, "lora_alpha": NaN}', r"invalid JSON \(the non-standard constant NaN\)"),
    ("alpha-inf", '{"r": 2, "lora_alpha": Infinity}', r"invalid JSON \(the non-standard constant Infinity"),
    ("alpha-neg", {"r": 2, "lora_alpha": -4}, r"field 'lora_alpha': expected a positive finite number"),
    ("alpha-underflow", {"r": 2, "lora_alpha": 5e-324}, r"lora_alpha / r = 5e-324 / 2, which rounds to 0"),
    ("rslora-text", {"r": 2, "lora_alpha": 4, "use_rslora": "yes"}, r"field 'use_rslora': expected true or"),
    ("rslora-int", {"r": 2, "lora_alpha": 4, "use_rslora": 1}, r"field 'use_rslora'"),
    (
        "targets-int",
        {"r": 2, "lora_alpha": 4, "target_modules": 5},
        r"field 'target_modules': expected a str",
    ),
    ("targets-ints", {"r": 2, "lora_alpha": 4, "target_modules": [1]}, r"field 'target_modules'"),
    (
        "rank-pattern-list",
        {"r": 2, "lora_alpha": 4, "rank_pattern": [1]},
        r"field 'rank_pattern': expected a JSON obj",
    ),
    ("rank-pattern-str", {"r": 2, "lora_alpha": 4, "rank_pattern": "lin"}, r"field 'rank_pattern'"),
    (
        "rank-value-str",
        {"r": 2, "lora_alpha": 4, "rank_pattern": {"lin": "2"}},
        r"'rank_pattern' key 'lin': expe",
    ),
    ("rank-value-0", {"r": 2, "lora_alpha": 4, "rank_pattern": {"lin": 0}}, r"'rank_pattern' key 'lin'"),
    (
        "rank-value-float",
        {"r": 2, "lora_alpha": 4, "rank_pattern": {"lin": 2.5}},
        r"'rank_pattern' key 'lin'",
    ),
    (
        "alpha-value-str",
        {"r": 2, "lora_alpha": 4, "alpha_pattern": {"lin": "x"}},
        r"'alpha_pattern' key 'lin'",
    ),
    (
        "alpha-value-neg",
        {"r": 2, "lora_alpha": 4, "alpha_pattern": {"lin": -1}},
        r"'alpha_pattern' key 'lin'",
    ),
]


@pytest.mark.parametrize(("config", "match"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_malformed_adapter_config(tmp_path, P, config, match):
    with pytest.raises(UserInputError, match=r"point: .*" + match):
        load_point(adapter(tmp_path, config), P)


def test_adapter_config_next_to_the_file_is_checked_too(tmp_path, P):
    d = adapter(tmp_path, "[1]")
    with pytest.raises(UserInputError, match=r"adapter_config\.json next to .*: expected a JSON object"):
        load_point(d / "adapter_model.safetensors", P)


def test_oversized_adapter_config(tmp_path, P):
    d = adapter(tmp_path, {"r": 2, "lora_alpha": 4, "note": "x" * (5 * 2**20)})
    with pytest.raises(UserInputError, match=r"adapter_config\.json .*at most 4194304 bytes"):
        load_point(d, P)


# ---------------------------------------------------------------------------------------------
# rank_pattern / alpha_pattern: RE2, caps, refusals
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "match"),
    [
        (r"(l)\1n", r"without backreferences or octal escapes"),  # backreference
        (r"(a)(b)(c)(d)(e)(f)(g)(h)\10", r"without backreferences or octal escapes"),  # re: group; RE2: octal
        ("q{,2}", r"without '\{,' \(write \{0,n\}"),  # re: q{0,2}; RE2: the text "q{,2}"
        ("l{,}n", r"without '\{,'"),  # re: l*n
        ("l\u00efn", r"expected an ASCII regular expression"),  # re and RE2 differ beyond ASCII
        ("\ud800", r"expected an ASCII regular expression.*'\\ud800'"),  # RE2 cannot even encode it
        (r"(?=l)lin", r"RE2 .*invalid perl operator"),  # lookahead
        (r"(?<=m\.)lin", r"RE2 .*invalid perl operator"),  # lookbehind
        (r"lin\Z", r"RE2 .*invalid escape sequence"),  # Python-only anchor
        (r"\pLin", r"expected a valid regular expression"),  # RE2-only class: PEFT's re fails
        ("lin[", r"expected a valid regular expression"),
        ("(?i)lin", r"expected a valid regular expression"),  # Python: global flag not at the start
        ("a{1000}{1000}", r"expected a valid regular expression"),
        ("[[:alpha:]]+", r"without POSIX classes"),
        ("l" * (MAX_PATTERN_CHARS + 1), r"at most 1000 characters, got 1001"),
    ],
    ids=[
        "backref",
        "backref-or-octal",
        "{,n}",
        "{,}",
        "non-ASCII",
        "surrogate",
        "lookahead",
        "lookbehind",
        "\\Z",
        "\\pL",
        "unclosed",
        "global-flag",
        "repeat",
        "posix",
        "too-long",
    ],
)
@pytest.mark.parametrize("field", ["rank_pattern", "alpha_pattern"])
def test_patterns_refused(tmp_path, P, field, key, match):
    d = adapter(tmp_path, {"r": 2, "lora_alpha": 4, field: {"lin": 2, key: 2}})
    with pytest.raises(UserInputError, match=rf"adapter_config\.json {field} key .*{match}"):
        load_point(d, P)


_REDOS = textwrap.dedent(
    """
    import sys, json
    from landscapes import gaussian_problem
    from verify.run.points import load_point
    P = gaussian_problem(K=1, N=6, blocks=[(5, 4)], lam=0.05, seed=0)
    try:
        pt, info = load_point(sys.argv[1], P)
        print("LOADED", info["scale"])
    except ValueError as exc:
        print("REFUSED", exc)
    """
)


@pytest.mark.parametrize(
    ("module_len", "expect"),
    [(40, "LOADED 2.0"), (999, "LOADED 2.0"), (50_000, "REFUSED")],
)
def test_redos_pattern_runs_in_linear_time(tmp_path, module_len, expect):
    # Python's re takes ~2^n steps for (a+)+b against a^n: n = 40 would run for days. RE2 is linear;
    # a name over the cap is refused. The subprocess's timeout only stops a hang (the old code).
    d = adapter(tmp_path, {"r": 2, "lora_alpha": 4, "rank_pattern": {"(a+)+b": 3}}, module="a" * module_len)
    r = subprocess.run(
        [sys.executable, "-c", _REDOS, str(d)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert r.stdout.startswith(expect), (r.stdout, r.stderr[-2000:])
    if expect == "REFUSED":
        assert "module names of at most 1000 characters" in r.stdout and "50000" in r.stdout


def test_pattern_semantics_match_peft():
    other = pytest.importorskip("peft.utils.other")
    keys_sets = [
        ["lin"],
        ["^lin", "q"],
        ["m.lin", "lin"],
        ["l.n", "lin"],
        ["lin$", "x"],
        ["q|v", "lin"],
        ["layer.0.q", r"layer\.\d+\.v"],
        [".*q", "(?i:LIN)"],
        ["enc.*0", "lin"],
        ["(q)", "(?P<name>v)"],
        ["", "lin"],
        ["attention.self.query", "query"],
        [")|(", "lin"],  # closes PEFT's group: "$" then binds only the last alternative
        [r"a\sb", r"\w+\.K\.\S"],
        ["(?i:k).s", r"\bq\B"],
        ["q{0,2}", "lin{1}"],
    ]
    modules = [
        "lin",
        "m.lin",
        "mlin",
        "q",
        "v",
        "layer.0.q",
        "layer.12.v",
        "layerX0.q",
        "a.LIN",
        "enc.layer.0",
        "attention.self.query",
        "x.attention.self.query",
        "query",
        "aquery",
        "lin.q",
        "a.b c",
        "layer.K.s",
    ]
    for keys in keys_sets:
        values = {k: i + 2 for i, k in enumerate(keys)}
        patterns = [vp._Pattern(k, v, vp._compile_pattern("rank_pattern", k)) for k, v in values.items()]
        for mod in modules:
            want = values.get(other.get_pattern_key(list(values), mod))
            assert vp._pattern_value(patterns, mod) == want, (keys, mod)


# Regex tokens that Python's re and RE2 might read differently: escapes, classes, anchors,
# repetitions, scoped flags, group-structure changes, and text meaning nothing special.
_KEY_TOKENS = [
    *"abklins.09AKS _-^$|()*+?{},:#!~@`'",
    *["(?:", "(?i:", "(?-i:", "(?s:", "(?m:", "(?P<g>", "[", "]", "[^", "*?", "+?", "??", "{2}"],
    *["{1,3}", "{2,}", "{0}", r"\d", r"\w", r"\s", r"\b", r"\B", r"\A", r"\z", r"\.", "\\\\"],
    *[r"\x41", r"\x2e", r"\0", r"\012", r"\101", r"\n", r"\t", r"\D", r"\W", r"\S", "\x00", "\t"],
    *[r"\-", r"\[", r"\]", r"\^", "&&", "--", "||", "~~", r"\a", r"\f", r"\v", r"\r", r"\ "],
    *[r"\_", r"\%", r"\@", "[[", ":]", "a-z", "0-9", ")|(", "\\"],
]
_MODULE_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=10)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    key=st.lists(st.sampled_from(_KEY_TOKENS), max_size=7).map("".join),
    modules=st.lists(
        st.one_of(_MODULE_TEXT, st.text(st.sampled_from("abklins.09AKS _-\\[](){}^$|*"), min_size=1)),
        min_size=1,
        max_size=8,
    ),
)
def test_accepted_patterns_match_as_pythons_re(key, modules):
    # Any key loracheck accepts matches a (non-empty, printable ASCII) module name exactly when
    # PEFT's expression re.match(rf"(.*\.)?({key})$", name) does: RE2 and re agree there.
    try:
        rx = vp._compile_pattern("rank_pattern", key)
    except UserInputError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "possible nested set"
        peft = re.compile(rf"(.*\.)?({key})$")
    pattern = vp._Pattern(key, 2, rx)
    for name in modules:
        assert pattern.matches(name) == (peft.match(name) is not None), (key, name)


@pytest.mark.parametrize(
    "module", ["", "lin\n", "l\u00efn", "a.\u212a", "lin\x00", "lin\t", "lin\udcff", "q\u0663"]
)
def test_module_names_beyond_printable_ascii_refused_when_patterns_apply(module):
    # re and RE2 differ there (\s on \x0b/\x1c, \d on U+0663, (?i:k) on the Kelvin sign U+212A,
    # "$" before a final newline, \B on ""), so such a name is refused rather than mis-scaled.
    patterns = [vp._Pattern("lin", 2, vp._compile_pattern("rank_pattern", "lin"))]
    with pytest.raises(UserInputError, match=r"non-empty PEFT module names of printable ASCII"):
        vp._pattern_value(patterns, module)
    assert vp._pattern_value([], module) is None  # no patterns: nothing to match, nothing refused


def test_non_ascii_module_name_refused_from_an_adapter(tmp_path, P):
    d = adapter(
        tmp_path, {"r": 2, "lora_alpha": 4, "rank_pattern": {"x": 2}}, module="base_model.model.l\u00efn"
    )
    with pytest.raises(UserInputError, match=r"printable ASCII .*got 'l\u00efn'"):
        load_point(d, P)


def test_adapter_config_read_is_bounded_even_if_it_grows(tmp_path, P, monkeypatch):
    # The size check and the read are two steps; a file that grows in between (here: whose stat
    # reports 100 bytes) is still read only up to MAX_CONFIG_BYTES + 1 bytes, then refused.
    d = adapter(tmp_path, {"r": 2, "lora_alpha": 4, "note": "x" * (vp.MAX_CONFIG_BYTES + 10)})
    cfg = d / "adapter_config.json"
    real_stat, real_fstat = os.stat, os.fstat

    def small(st_: os.stat_result) -> os.stat_result:
        if st_.st_size <= vp.MAX_CONFIG_BYTES:
            return st_
        fields = list(st_[:10])
        fields[6] = 100  # st_size
        return os.stat_result(fields)

    monkeypatch.setattr(os, "stat", lambda p, *a, **k: small(real_stat(p, *a, **k)))
    monkeypatch.setattr(os, "fstat", lambda fd: small(real_fstat(fd)))
    reads: list[str] = []
    real_read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(str(self)) or real_read_bytes(self))
    with pytest.raises(UserInputError, match=r"adapter_config\.json .*at most 4194304 bytes"):
        load_point(d, P)
    assert real_stat(cfg).st_size > vp.MAX_CONFIG_BYTES and reads == []  # never read unbounded


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_adapter_config_fifo_never_blocks(tmp_path, P):
    # A FIFO is not a config file: loracheck does not wait for a writer that never comes.
    d = adapter(tmp_path, {"r": 2, "lora_alpha": 4})
    (d / "adapter_config.json").unlink()
    fifo = d / "adapter_config.json"
    os.mkfifo(fifo)
    got = read_without_blocking(fifo, lambda: vp._read_config(fifo, "in test"), "reading adapter_config.json")
    assert isinstance(got, UserInputError) and "not a regular file" in str(got), got


def test_surrogate_pattern_key_is_exit_3(tmp_path, P, capsys):
    prob = save_problem(P, tmp_path / "p.npz")
    d = adapter(tmp_path, '{"r": 2, "lora_alpha": 4, "rank_pattern": {"\\ud800": 2}}')
    assert main(["audit", str(prob), "--claims", "none", "--point", str(d)]) == 3
    err = capsys.readouterr().err
    assert "expected an ASCII regular expression" in err and "\\ud800" in err, err


def test_peft_prefix_is_stripped_as_peft_matches(tmp_path, P):
    # PEFT matched "lin" (the base model's name) when it built the adapter, not "base_model.model.lin"
    d = adapter(
        tmp_path, {"r": 8, "lora_alpha": 4, "rank_pattern": {"^lin": 2}, "alpha_pattern": {"^lin": 6}}
    )
    _, info = load_point(d, P)
    assert info["scale"] == 3.0


# ---------------------------------------------------------------------------------------------
# Scale
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scale", "err", "match"),
    [
        (1 + 2j, InputTypeError, "got a complex"),
        (True, InputTypeError, "got a bool"),
        ("2", InputTypeError, "got a str"),
        (np.complex128(2), InputTypeError, "got a complex"),
        (float("nan"), UserInputError, "got nan"),
        (float("inf"), UserInputError, "got inf"),
        (0.0, UserInputError, "got 0.0"),
        (-1, UserInputError, "got -1"),
    ],
)
def test_scale_argument(tmp_path, P, scale, err, match):
    B, A = factors()
    np.savez(tmp_path / "ba.npz", B0=B, A0=A)
    with pytest.raises(err, match=r"scale: expected a positive finite number, " + match):
        load_point(tmp_path / "ba.npz", P, scale=scale)


def test_numpy_scale_argument_accepted(tmp_path, P):
    B, A = factors()
    np.savez(tmp_path / "ba.npz", B0=B, A0=A)
    pt, info = load_point(tmp_path / "ba.npz", P, scale=np.float32(2.0))
    assert info["scale"] == 2.0
    np.testing.assert_allclose((pt.U[0] @ pt.V[0].T).numpy(), 2.0 * B @ A, rtol=1e-12)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.array(1 + 2j), r"key 'scale' of .*: expected a positive finite number, got dtype complex128"),
        (np.array([2.0, 3.0]), r"key 'scale' of .*got an array of shape \(2,\)"),
        (np.array([]), r"key 'scale' of .*got an array of shape \(0,\)"),
        (np.array(np.nan), r"key 'scale' of .*got nan"),
        (np.array(-2.0), r"key 'scale' of .*got -2\.0"),
        (np.array(True), r"key 'scale' of .*got dtype bool"),
        (np.array("2"), r"key 'scale' of .*bool or number array, got dtype <U1"),
    ],
    ids=["complex", "two", "empty", "nan", "negative", "bool", "text"],
)
def test_scale_in_the_file(tmp_path, P, value, match):
    B, A = factors()
    np.savez(tmp_path / "ba.npz", B0=B, A0=A, scale=value)
    with pytest.raises(UserInputError, match=r"point: " + match):
        load_point(tmp_path / "ba.npz", P)


# ---------------------------------------------------------------------------------------------
# Ranks: 1 <= r <= m + n (ranks above min(m, n) are admissible), before any work
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        (
            {"U0": np.zeros((M, 0)), "V0": np.zeros((N, 0))},
            r"block 0 \(5 x 4\): .*1 <= r <= m \+ n = 9, got 0",
        ),
        ({"U0": np.ones((M, 10)), "V0": np.ones((N, 10))}, r"m \+ n = 9, got 10"),
        ({"B0": np.ones((M, 0)), "A0": np.ones((0, N))}, r"got 0"),
        ({"B0": np.ones((M, 10**5)), "A0": np.ones((10**5, N))}, r"got 100000"),
        (
            {"B0": np.ones((M, 2)), "A0": np.ones((3, N))},
            r"point\.A\[0\]: expected shape \(r, 4\) with r = 2",
        ),
        (
            {"U0": np.ones((M, 2)), "V0": np.ones((N, 3))},
            r"point\.V\[0\]: expected shape \(4, r\) with r = 2",
        ),
        ({"U0": np.ones((N, 2)), "V0": np.ones((M, 2))}, r"point\.U\[0\]: expected shape \(5, r\)"),
    ],
    ids=["UV-rank-0", "UV-rank-10", "BA-rank-0", "BA-rank-1e5", "BA-mismatch", "UV-mismatch", "UV-swapped"],
)
def test_ranks_checked_when_the_point_is_loaded(tmp_path, P, arrays, match):
    np.savez(tmp_path / "p.npz", **arrays)
    with pytest.raises(UserInputError, match=match):
        load_point(tmp_path / "p.npz", P, scale=1.0 if "B0" in arrays else None)


def test_peft_adapter_ranks(tmp_path, P):
    d = adapter(tmp_path, {"r": 6, "lora_alpha": 4}, r=6)  # above min(m, n) = 4: an admissible point
    pt, info = load_point(d, P)
    assert pt.U[0].shape == (M, 6) and info["scale"] == 4 / 6
    d = adapter(tmp_path / "big", {"r": 12, "lora_alpha": 4}, r=12)
    with pytest.raises(UserInputError, match=r"m \+ n = 9, got 12"):
        load_point(d, P)


def test_rank_0_refused_before_the_nuc_solve(P, monkeypatch):
    def no_solve(*a, **k):
        raise AssertionError("solve_nuc reached")

    monkeypatch.setattr(vp, "solve_nuc", no_solve)
    zero = (torch.zeros(M, 0, dtype=torch.float64), torch.zeros(N, 0, dtype=torch.float64))
    with pytest.raises(UserInputError, match=r"1 <= r <= m \+ n = 9, got 0"):
        audit_point(P, zero)
    big = (torch.zeros(M, 10, dtype=torch.float64), torch.zeros(N, 10, dtype=torch.float64))
    with pytest.raises(UserInputError, match=r"got 10"):
        audit_point(P, big)


@pytest.mark.parametrize("big", [1e100, 1e200, 1e300])
def test_magnitudes_refused_at_the_boundary(tmp_path, P, big, monkeypatch):
    # 1e200 made eigh fail deep in the SOSP certificate (exit 4)
    monkeypatch.setattr(vp, "solve_nuc", lambda *a, **k: pytest.fail("solve_nuc reached"))
    U, V = big * np.ones((M, 2)), np.ones((N, 2))
    with pytest.raises(UserInputError, match=r"point\.U\[0\]: expected a Frobenius norm at most 3\.4e\+38"):
        audit_point(P, (torch.from_numpy(U), torch.from_numpy(V)))
    np.savez(tmp_path / "big.npz", U0=np.ones((M, 2)), V0=big * np.ones((N, 2)))
    with pytest.raises(
        UserInputError, match=r"point\.V\[0\]: expected a Frobenius norm .*got [0-9.]+e\+[0-9]+$"
    ):
        load_point(tmp_path / "big.npz", P)


@pytest.mark.parametrize(
    ("U", "match"),
    [
        (np.full((M, 2), "a"), r"point\.U0: expected a 2-D floating array, got <U1"),
        (np.ones((M, 2)) * (1 + 1j), r"point\.U0: expected a 2-D floating array, got complex128"),
        (np.ones((M, 0)), r"1 <= r <= m \+ n = 9, got 0"),
    ],
    ids=["text", "complex", "rank-0"],
)
def test_counterexample_factors_checked(P, U, match):
    from verify.run.points import point_from_extras

    with pytest.raises(UserInputError, match=match):
        point_from_extras({"U0": U, "V0": np.ones((N, U.shape[1]))}, P)


# ---------------------------------------------------------------------------------------------
# Point files: the bounded reader
# ---------------------------------------------------------------------------------------------
def test_point_zip_bomb_refused_from_the_directory(tmp_path, P):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("U0.npy", "w", force_zip64=True) as fh:
            fh.write(
                b"\x93NUMPY\x01\x00"
                + struct.pack("<H", 118)
                + b"{'descr': '<f8', 'fortran_order': False, 'shape': (4194304, 5), }".ljust(117)
                + b"\n"
            )
            z = bytes(2**24)
            for _ in range(10):  # 160 MiB of zeros, ~160 KB on disk
                fh.write(z)
    assert path.stat().st_size < 2**20
    with pytest.raises(UserInputError, match=r"point: key 'U0' of .*bomb\.npz.*at most 1000000 bytes"):
        load_point(path, P, max_bytes=10**6)


def test_point_safetensors_over_the_budget(tmp_path, P):
    path = tmp_path / "big.safetensors"
    header = json.dumps(
        {"U0": {"dtype": "F64", "shape": [2**28, 5], "data_offsets": [0, 8 * 5 * 2**28]}}
    ).encode()
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        fh.truncate(8 + len(header) + 8 * 5 * 2**28)  # sparse 10 GiB
    with pytest.raises(UserInputError, match=r"point: key 'U0' of .*big\.safetensors.*memory budget.*F64"):
        load_point(path, P)


def test_point_bf16_counts_as_float64_in_the_budget(tmp_path, P):
    from safetensors.torch import save_file

    B = torch.ones(M, 2, dtype=torch.bfloat16)
    save_file(
        {"lin.lora_A.weight": torch.ones(2, N, dtype=torch.bfloat16), "lin.lora_B.weight": B},
        str(tmp_path / "a.safetensors"),
    )
    with pytest.raises(UserInputError, match=r"key 'lin\.lora_B\.weight' .*at most 100 bytes.*BF16"):
        load_point(tmp_path / "a.safetensors", P, scale=1.0, max_bytes=100)  # 36 bf16 = 72 B, 288 B as f64
    pt, _ = load_point(tmp_path / "a.safetensors", P, scale=1.0)
    assert pt.U[0].dtype == torch.float64


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_sparse_point_file_refused_from_its_header(tmp_path, P, suffix):
    path = tmp_path / f"sparse{suffix}"
    with open(path, "wb") as fh:
        fh.truncate(8 * 2**30)
    with pytest.raises(UserInputError, match=r"point: expected a readable .*sparse"):
        load_point(path, P)


def test_point_file_with_text_and_object_members(tmp_path, P):
    U, V = np.ones((M, 2)), np.ones((N, 2))
    np.savez(tmp_path / "t.npz", U0=U, V0=V, note=np.array("hello"))
    with pytest.raises(UserInputError, match=r"point: key 'note' of .*bool or number array, got dtype <U5"):
        load_point(tmp_path / "t.npz", P)
    np.savez(tmp_path / "o.npz", U0=np.array([None], dtype=object), V0=V)
    with pytest.raises(UserInputError, match=r"point: key 'U0' of .*plain \(unpickled\) array"):
        load_point(tmp_path / "o.npz", P)


def test_deep_safetensors_header_in_an_adapter(tmp_path, P):
    d = tmp_path / "ad"
    d.mkdir()
    h = b"[" * 100_000 + b"]" * 100_000
    (d / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(h)) + h)
    with pytest.raises(UserInputError, match=r"point: expected a readable .*nested at most"):
        load_point(d, P, scale=1.0)


# ---------------------------------------------------------------------------------------------
# Through the CLI: exit 3 before any work
# ---------------------------------------------------------------------------------------------
def test_cli_exit_3(tmp_path, P, capsys):
    prob = save_problem(P, tmp_path / "p.npz")
    cfg = {"r": 2, "lora_alpha": 4, "rank_pattern": {r"(l)\1": 2}}
    cases = [
        (adapter(tmp_path / "a1", "[1]"), "JSON object"),
        (adapter(tmp_path / "a2", '"x"'), "JSON object"),
        (adapter(tmp_path / "a3", cfg), "(l)"),
    ]
    B, A = factors()
    np.savez(tmp_path / "c.npz", B0=B, A0=A, scale=np.array(1 + 1j))
    cases.append((tmp_path / "c.npz", "key 'scale'"))
    np.savez(tmp_path / "z.npz", U0=np.zeros((M, 0)), V0=np.zeros((N, 0)))
    cases.append((tmp_path / "z.npz", "got 0"))
    for path, needle in cases:
        assert main(["audit", str(prob), "--claims", "none", "--point", str(path)]) == 3, path
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err


# ---------------------------------------------------------------------------------------------
# Good points and real PEFT adapters still load, unchanged
# ---------------------------------------------------------------------------------------------
def test_good_point_files_load(tmp_path, P):
    B, A = factors(3)
    np.savez(tmp_path / "uv.npz", U0=B, V0=A.T)
    np.savez(tmp_path / "ba.npz", B0=B, A0=A, scale=np.array(2.0))
    st_save_file({"U0": B, "V0": np.ascontiguousarray(A.T)}, str(tmp_path / "uv.safetensors"))
    np.savez_compressed(tmp_path / "uvc.npz", U0=B.astype(np.float32), V0=A.T.astype(np.float32))
    for name, s in [("uv.npz", 1.0), ("ba.npz", 2.0), ("uv.safetensors", 1.0), ("uvc.npz", 1.0)]:
        pt, _ = load_point(tmp_path / name, P)
        np.testing.assert_allclose((pt.U[0] @ pt.V[0].T).numpy(), s * (B @ A), rtol=1e-5, err_msg=name)


class _One(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(N, M, bias=False)


@pytest.mark.parametrize(
    "cfg",
    [
        {"r": 2, "lora_alpha": 6},
        {"r": 3, "lora_alpha": 6, "use_rslora": True},
        {"r": 4, "lora_alpha": 8, "rank_pattern": {"^lin": 2}, "alpha_pattern": {"l.n": 5}},
        {"r": 4, "lora_alpha": 8, "rank_pattern": {"lin": 3}, "alpha_pattern": {"(?:x|lin)": 7}},
    ],
)
def test_real_peft_adapters_load(tmp_path, P, cfg):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = _One().double()
    pm = peft.get_peft_model(model, peft.LoraConfig(target_modules=["lin"], init_lora_weights=False, **cfg))
    pm.save_pretrained(str(tmp_path / "ad"))
    layer = pm.base_model.model.lin
    ref = layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    pt, info = load_point(tmp_path / "ad", P)
    assert info["scale"] == pytest.approx(layer.scaling["default"], rel=1e-15)
    torch.testing.assert_close(pt.U[0] @ pt.V[0].T, ref.detach(), rtol=1e-12, atol=1e-12)
