"""Hostile input at two boundaries: a user's local model folder (``experiment --model``) and a
``figures --from`` file that lies where the gallery writes its output.

A model folder that cannot be loaded is bad input (exit 3, one line naming the path and the
cause), never an internal error; a ``--from`` file is never overwritten by the drawn gallery.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from theory.errors import UserInputError
from verify.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
PHASE = ROOT / "benchmarks" / "results" / "phase_default.json"

#: A tiny BERT config (what ``config.json`` of a real checkpoint holds, cut down).
TINY = {
    "model_type": "bert",
    "architectures": ["BertModel"],
    "vocab_size": 16,
    "hidden_size": 8,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 16,
    "max_position_embeddings": 32,
    "type_vocab_size": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "it", "was", "great", "terrible", "a", "film"]


def _model_dir(root: Path, config: str | bytes | None, weights: bytes | None = None) -> Path:
    """A hand-written model folder: a BERT tokenizer, ``config`` as config.json, ``weights``."""
    d = root / "my-model"
    d.mkdir()
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    if isinstance(config, bytes):
        (d / "config.json").write_bytes(config)
    elif config is not None:
        (d / "config.json").write_text(config)
    if weights is not None:
        (d / "model.safetensors").write_bytes(weights)
    return d


def _empty_safetensors() -> bytes:
    """A valid safetensors file with no tensors: transformers builds the model before it finds none."""
    header = b'{"__metadata__":{}}'
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header


@pytest.fixture
def needs_real_extras():
    pytest.importorskip("transformers")
    from landscapes.transformer.data import load_reviews

    try:  # `experiment` checks the review data before the model: without it, exit 3 would prove nothing
        load_reviews()
    except (ImportError, OSError) as exc:
        pytest.skip(f"review data not available: {exc}")


def _experiment(model: Path | str, tmp_path: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["experiment", "--model", str(model), "--out", str(tmp_path / "out"), "--no-progress"])
    return rc, capsys.readouterr().err


def _assert_bad_model(rc: int, err: str, path: Path | str, cause: str) -> None:
    assert rc == 3, err
    assert err.count("\n") == 1 and err.startswith("loracheck: error: model:"), err
    assert "internal error" not in err
    assert repr(str(path)) in err, err
    assert cause in err, err


# ---- experiment --model: a local model folder ----------------------------------------------------


def test_missing_model_path_is_bad_input(needs_real_extras, tmp_path, capsys):
    path = tmp_path / "no-such-model"
    rc, err = _experiment(path, tmp_path, capsys)
    _assert_bad_model(rc, err, path, "no such file or directory")
    assert not (tmp_path / "out" / "experiment.json").exists()


def test_model_path_that_is_a_file_is_bad_input(needs_real_extras, tmp_path, capsys):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x00" * 16)
    rc, err = _experiment(path, tmp_path, capsys)
    _assert_bad_model(rc, err, path, "not a directory")


@pytest.mark.parametrize(
    "config, weights, cause",
    [
        pytest.param(None, None, "no config.json", id="no-config"),
        pytest.param("{not json", None, "config.json is not valid JSON", id="not-json"),
        pytest.param(b"\xff\xfe{}", None, "config.json is not valid JSON", id="not-utf8"),
        pytest.param("[1, 2]", None, "config.json: expected a JSON object, got list", id="json-list"),
        pytest.param(
            json.dumps(TINY).replace('"hidden_size": 8', '"hidden_size": 1e400'),
            _empty_safetensors(),
            "hidden_size",
            id="hidden-size-1e400",
        ),
        pytest.param(
            json.dumps(dict(TINY, hidden_size="big")), _empty_safetensors(), "hidden_size", id="str-size"
        ),
        pytest.param(
            json.dumps(dict(TINY, num_attention_heads=3)),
            _empty_safetensors(),
            "not a multiple of the number of attention heads",
            id="heads-not-dividing",
        ),
        pytest.param(
            json.dumps(dict(TINY, num_attention_heads=0)),
            _empty_safetensors(),
            "ZeroDivisionError",
            id="heads-0",
        ),
        pytest.param(
            json.dumps(dict(TINY, hidden_size=-8)),
            _empty_safetensors(),
            "negative dimension",
            id="negative-size",
        ),
        pytest.param(
            json.dumps(dict(TINY, hidden_act="nope")), _empty_safetensors(), "KeyError", id="bad-act"
        ),
        pytest.param(
            json.dumps(dict(TINY, model_type="nonsense")), None, "nonsense", id="unknown-model-type"
        ),
        pytest.param(json.dumps(TINY), None, "no file named model.safetensors", id="no-weights"),
        pytest.param(json.dumps(TINY), b"not a safetensors file", "SafetensorError", id="broken-weights"),
    ],
)
def test_unloadable_model_folder_is_bad_input(needs_real_extras, tmp_path, capsys, config, weights, cause):
    path = _model_dir(tmp_path, config, weights)
    rc, err = _experiment(path, tmp_path, capsys)
    _assert_bad_model(rc, err, path, cause)


def test_unloadable_model_is_both_bad_input_and_file_not_found(tmp_path):
    pytest.importorskip("transformers")
    from landscapes.transformer.encoder import ModelLoadError, load_encoder

    path = _model_dir(tmp_path, "{not json")
    with pytest.raises(ModelLoadError) as info:
        load_encoder(path)
    assert isinstance(info.value, UserInputError) and isinstance(info.value, FileNotFoundError)
    with pytest.raises(UserInputError, match="nothing was downloaded"):  # a hub name not in the cache
        load_encoder("some-org/a-model-that-is-not-cached")


# ---- figures --from FILE inside --out ----------------------------------------------------------


def test_figures_input_named_like_an_output_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "fg"
    out.mkdir()
    src = out / "phase-diagram.svg"  # JSON content under the name of a figure the gallery writes
    data = PHASE.read_bytes()
    src.write_bytes(data)
    capsys.readouterr()
    rc = main(["figures", "--from", str(src), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 3, err
    assert err.count("\n") == 1 and "--from" in err and repr(str(src)) in err, err
    assert src.read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == ["phase-diagram.svg"]  # nothing drawn, no page


def test_figures_input_linked_to_an_output_is_not_overwritten(tmp_path, capsys):
    # the input is a link elsewhere whose target is an output file: same file, another name
    out = tmp_path / "fg"
    out.mkdir()
    target = out / "phase-diagram.png"
    target.write_bytes(PHASE.read_bytes())
    src = tmp_path / "phase.json"
    src.symlink_to(target)
    capsys.readouterr()
    rc = main(["figures", "--from", str(src), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 3 and repr(str(src)) in err and "phase-diagram.png" in err, err
    assert target.read_bytes() == PHASE.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["phase-diagram.png"]


def test_write_gallery_refuses_an_input_among_its_outputs_before_writing(tmp_path):
    from figures.gallery import write_gallery

    out = tmp_path / "fg"
    out.mkdir()
    src = out / "phase-diagram.png"
    src.write_bytes(PHASE.read_bytes())
    res = json.loads(PHASE.read_text())
    with pytest.raises(UserInputError, match=r"inputs: the result file .*phase-diagram\.png"):
        write_gallery([res], out, inputs=[src])
    assert sorted(p.name for p in out.iterdir()) == ["phase-diagram.png"]
    assert src.read_bytes() == PHASE.read_bytes()
    # an input elsewhere (or a single path, not a list) is fine
    other = tmp_path / "phase.json"
    other.write_bytes(PHASE.read_bytes())
    index = write_gallery([res], tmp_path / "fg2", inputs=other)  # type: ignore[arg-type]
    assert index.is_file() and other.read_bytes() == PHASE.read_bytes()
