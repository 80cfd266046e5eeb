"""BERT -> SqueezeBERT conversion: the real MiniLM checkpoint converted and compared with
transformers' BertModel on tokenized text, every head on tiny checkpoints, legacy files, and
the refusals (existing destination, non-BERT source, missing source), library and CLI."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
import transformers
from click.testing import CliRunner
from conftest import tiny_bert_config, tiny_squeezebert_config
from safetensors.torch import load_file

from sbexport import cli as cli_module
from sbexport import modeling
from sbexport.config import SqueezeBertConfig
from sbexport.convert import TOKENIZER_FILES, convert_bert_to_squeezebert
from sbexport.errors import CheckpointError, ConfigError, SbexportError
from sbexport.tasks import HEADS

SENTENCES = [
    ("The quick brown fox jumps over the lazy dog.", "A fast animal leaps over a sleeping one."),
    ("SqueezeBERT runs four times faster than BERT-base on a phone.", "Is it as accurate?"),
    ("Hello", "world"),
    ("Grouped convolutions replace the position-wise fully connected layers.", None),
]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# Real tokens of the converted MiniLM against BertModel, this batch, torch 2.13 CPU fp32:
# last_hidden_state 2.9e-6 (1 thread) / 3.1e-6 (2 threads) on the Intel kind at scale 6.01,
# 3.0e-6 on the AMD kind; pooler_output 2.2e-7 at scale 0.20. 1e-5 absolute leaves 3x.
REAL_TOKEN_ATOL = 1e-5


def test_minilm_converted_matches_bert(minilm_dir, minilm_squeezebert):
    """The converted MiniLM (6 layers, hidden 384) against transformers' BertModel on the source.

    Conv1d and Linear kernels sum the same products in different orders, so the two agree to
    rounding, not bit for bit, and only where a consumer reads: real tokens, and the pooled
    output (taken from position 0). Padded positions are never read (the pooler takes position
    0, token heads skip them) and drift further: 1.33e-4 on the Intel kind (2.6e-5 on the AMD
    kind), because a padded row attends to a few real tokens and amplifies the rounding through
    6 layers; they are not compared. Both SqueezeBERT implementations run the same kernels in
    the same order, so they agree bit for bit everywhere, padding included.
    """
    tokenizer = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    first, second = zip(*SENTENCES)
    batch = tokenizer(list(first), [s or "" for s in second], padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any() and (batch["token_type_ids"] == 1).any()
    assert tokenizer.unk_token_id not in batch["input_ids"][0].tolist()   # a real vocabulary
    real = batch["attention_mask"].bool()

    reference = transformers.BertModel.from_pretrained(minilm_dir).eval()
    ours = modeling.SqueezeBertModel.from_pretrained(str(minilm_squeezebert))
    theirs = transformers.SqueezeBertModel.from_pretrained(minilm_squeezebert).eval()
    with torch.no_grad():
        want = reference(**batch)
        outputs = {"sbexport": ours(**batch), "transformers": theirs(**batch)}
    assert want.last_hidden_state[real].abs().max() > 100 * REAL_TOKEN_ATOL, "outputs too small to prove anything"
    for who, got in outputs.items():
        real_diff = _max_diff(got.last_hidden_state[real], want.last_hidden_state[real])
        assert real_diff <= REAL_TOKEN_ATOL, f"{who}: real tokens differ by {real_diff:.3g}"
        pooled_diff = _max_diff(got.pooler_output, want.pooler_output)
        assert pooled_diff <= REAL_TOKEN_ATOL, f"{who}: pooler_output differs by {pooled_diff:.3g}"
    for name in ("last_hidden_state", "pooler_output"):
        assert torch.equal(outputs["sbexport"][name], outputs["transformers"][name]), name


def test_minilm_files_and_config(minilm_dir, minilm_squeezebert):
    for name in TOKENIZER_FILES:
        assert (minilm_squeezebert / name).read_bytes() == (minilm_dir / name).read_bytes()
    config = SqueezeBertConfig.from_json_file(minilm_squeezebert / "config.json")
    assert config.embedding_size == config.hidden_size == 384
    assert set(config.groups.values()) == {1}
    assert (config.num_hidden_layers, config.intermediate_size) == (6, 1536)
    assert config.extra["_name_or_path"] == "nreimers/MiniLM-L6-H384-uncased"   # other fields kept
    assert config.extra["architectures"] == ["SqueezeBertModel"]
    state = load_file(minilm_squeezebert / "model.safetensors")
    assert state["encoder.layers.0.intermediate.conv1d.weight"].shape == (1536, 384, 1)
    assert state["encoder.layers.5.post_attention.layernorm.weight"].shape == (384,)
    assert not any(".layer." in k or "position_ids" in k for k in state)
    assert not list(minilm_squeezebert.parent.glob(".*"))   # no temporary folder left behind


def _tiny_bert_checkpoint(head: str, folder, **overrides):
    """A transformers Bert head with random (wider than init) weights saved in `folder`."""
    config = tiny_bert_config(**overrides)
    tconfig = transformers.BertConfig(**{k: v for k, v in config.to_dict().items() if k != "model_type"},
                                      attn_implementation="eager")
    torch.manual_seed(0)
    model = getattr(transformers, HEADS[head].model_class("bert").__name__)(tconfig).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("LayerNorm.weight"):
                p.normal_(0, 0.3)
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("head", list(HEADS))
def test_every_head_converts(head, tmp_path):
    overrides = {"num_labels": 2} if head == "question-answering" else {}
    if head == "sequence-classification":
        overrides = {"id2label": {0: "entailment", 1: "neutral", 2: "contradiction"},
                     "problem_type": "single_label_classification"}
    bert = _tiny_bert_checkpoint(head, tmp_path / "bert", **overrides)
    dst = convert_bert_to_squeezebert(tmp_path / "bert", tmp_path / "sq")
    config = json.loads((dst / "config.json").read_text())
    assert config["architectures"] == [HEADS[head].model_class("squeezebert").__name__]
    if head == "sequence-classification":
        assert config["id2label"] == {"0": "entailment", "1": "neutral", "2": "contradiction"}
        assert config["problem_type"] == "single_label_classification"

    ours = HEADS[head].model_class("squeezebert").from_pretrained(str(dst))
    theirs = getattr(transformers, HEADS[head].model_class("squeezebert").__name__).from_pretrained(dst).eval()
    ids = torch.randint(1, 99, (2, 6), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2]),
              "token_type_ids": torch.tensor([[0, 0, 0, 1, 1, 1]] * 2)}
    if head == "multiple-choice":
        inputs = {k: torch.stack([v, v.flip(0)], 1) for k, v in inputs.items()}   # [B, 2, S]
    with torch.no_grad():
        want = bert(**inputs)
        for got in (ours(**inputs), theirs(**inputs)):
            for name in ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits"):
                if getattr(want, name, None) is not None:
                    assert _max_diff(got[name], want[name]) <= 1e-5, name


def test_legacy_bin_checkpoint(tmp_path):
    """pytorch_model.bin with "bert." prefixes, LayerNorm gamma/beta and a position_ids buffer
    converts to the same tensors as the modern file."""
    _tiny_bert_checkpoint("sequence-classification", tmp_path / "modern")
    state = load_file(tmp_path / "modern" / "model.safetensors")
    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in state.items()}
    legacy["bert.embeddings.position_ids"] = torch.arange(64)[None]
    (tmp_path / "legacy").mkdir()
    torch.save(legacy, tmp_path / "legacy" / "pytorch_model.bin")
    (tmp_path / "legacy" / "config.json").write_text((tmp_path / "modern" / "config.json").read_text())
    a = load_file(convert_bert_to_squeezebert(tmp_path / "modern", tmp_path / "a") / "model.safetensors")
    b = load_file(convert_bert_to_squeezebert(tmp_path / "legacy", tmp_path / "b") / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "transformer.encoder.layers.1.output.layernorm.weight" in a


def _snapshot(folder):
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def test_refuses_existing_destination(tmp_path):
    _tiny_bert_checkpoint("base", tmp_path / "bert")
    dst = tmp_path / "sq"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(SbexportError, match="already exists"):
        convert_bert_to_squeezebert(tmp_path / "bert", dst)
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    # --overwrite replaces a checkpoint folder only, never a folder of other files.
    with pytest.raises(SbexportError, match="not an sbexport checkpoint folder"):
        convert_bert_to_squeezebert(tmp_path / "bert", dst, overwrite=True)
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    (dst / "keep.txt").unlink()
    convert_bert_to_squeezebert(tmp_path / "bert", dst, overwrite=True)   # an empty folder may go
    record = json.loads((dst / "sbexport-checkpoint.json").read_text())
    assert sorted(record["files"]) == sorted(p.name for p in dst.iterdir() if p.name != "sbexport-checkpoint.json")
    convert_bert_to_squeezebert(tmp_path / "bert", dst, overwrite=True)   # its own output may go
    (dst / "NOTES.md").write_text("my notes on the first conversion")
    with pytest.raises(SbexportError, match="sq holds NOTES.md, which sbexport did not write there"):
        convert_bert_to_squeezebert(tmp_path / "bert", dst, overwrite=True)
    assert (dst / "NOTES.md").read_text() == "my notes on the first conversion"
    before = _snapshot(tmp_path / "bert")
    with pytest.raises(SbexportError, match="bert is the source checkpoint .*, which this command only reads"):
        convert_bert_to_squeezebert(tmp_path / "bert", tmp_path / "bert", overwrite=True)
    with pytest.raises(SbexportError, match="is inside the source checkpoint"):
        convert_bert_to_squeezebert(tmp_path / "bert", tmp_path / "bert" / "squeezebert")
    assert _snapshot(tmp_path / "bert") == before


@pytest.mark.parametrize("write", ["convert-bert", "save_pretrained"])
def test_written_weights_are_readable_by_the_umask(tmp_path, write):
    """The weights came out 0600 (safetensors' save_file) beside 0644 config and tokenizer
    files: other users of a shared folder could not load the checkpoint."""
    from sbexport.checkpoints import save_pretrained

    _tiny_bert_checkpoint("base", tmp_path / "bert")
    previous = os.umask(0o022)
    try:
        if write == "convert-bert":
            convert_bert_to_squeezebert(tmp_path / "bert", tmp_path / "sq")
        else:
            save_pretrained(modeling.SqueezeBertModel(tiny_squeezebert_config()), tmp_path / "sq")
    finally:
        os.umask(previous)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "sq").iterdir()}
    assert set(modes.values()) == {"0o644"}, modes


def test_overwrite_keeps_a_project_with_a_config_json(tmp_path):
    """`convert-bert SRC proj --overwrite` on config.json + src/ + NOTES.md deleted src/ and
    NOTES.md: config.json was taken as the sign of a checkpoint."""
    _tiny_bert_checkpoint("base", tmp_path / "bert")
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('hi')")
    (project / "config.json").write_text('{"debug": true}')
    (project / "NOTES.md").write_text("notes")
    before = _snapshot(project)
    with pytest.raises(SbexportError,
                       match="proj is not an sbexport checkpoint folder .no valid sbexport-checkpoint.json."):
        convert_bert_to_squeezebert(tmp_path / "bert", project, overwrite=True)
    assert _snapshot(project) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_checkpoint_never_replaces_an_artifact(tmp_path):
    """convert-bert onto an artifact folder silently turned it into a checkpoint."""
    from sbexport.artifact import ARTIFACT, write_record

    _tiny_bert_checkpoint("base", tmp_path / "bert")
    art = tmp_path / "mnli-onnx"
    art.mkdir()
    (art / "model.onnx").write_bytes(b"a model")
    (art / "config.json").write_text("{}")
    write_record(art, ARTIFACT, {"task": "mnli"})
    before = _snapshot(art)
    with pytest.raises(SbexportError, match="mnli-onnx is an sbexport artifact folder, not an sbexport checkpoint one"):
        convert_bert_to_squeezebert(tmp_path / "bert", art, overwrite=True)
    assert _snapshot(art) == before


def test_empty_destination_is_refused(tmp_path, monkeypatch):
    _tiny_bert_checkpoint("base", tmp_path / "bert")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SbexportError, match="the output folder is empty"):
        convert_bert_to_squeezebert(tmp_path / "bert", "", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert"]


def test_non_bert_source_names_its_model_type(tmp_path):
    modeling.SqueezeBertModel(tiny_squeezebert_config()).save_pretrained(str(tmp_path / "sq"))
    with pytest.raises(CheckpointError, match=r"config\.json: model_type is 'squeezebert', not 'bert'"):
        convert_bert_to_squeezebert(tmp_path / "sq", tmp_path / "out")
    config = json.loads((tmp_path / "sq" / "config.json").read_text())
    (tmp_path / "sq" / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    with pytest.raises(ConfigError, match="model_type 'roberta'"):
        convert_bert_to_squeezebert(tmp_path / "sq", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_source(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        convert_bert_to_squeezebert(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        convert_bert_to_squeezebert(tmp_path / "empty", tmp_path / "out")


def test_cli_convert_bert(tmp_path, monkeypatch, capsys):
    _tiny_bert_checkpoint("base", tmp_path / "bert")
    runner = CliRunner()
    help_text = runner.invoke(cli_module.cli, ["convert-bert", "--help"]).output
    assert "Example:" in help_text and "sbexport convert-bert" in help_text
    dst = tmp_path / "sq"
    result = runner.invoke(cli_module.cli, ["convert-bert", str(tmp_path / "bert"), str(dst)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(dst)
    assert modeling.SqueezeBertModel.from_pretrained(str(dst)).config.q_groups == 1
    # Through the console entry point: one line on stderr, exit status 1.
    capsys.readouterr()
    for args, message in (([str(tmp_path / "bert"), str(dst)], "already exists"),
                          ([str(tmp_path / "nowhere"), str(tmp_path / "x")], "no such checkpoint folder")):
        monkeypatch.setattr(sys, "argv", ["sbexport", "convert-bert", *args])
        with pytest.raises(SystemExit) as exit_info:
            cli_module.main()
        assert exit_info.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err
    result = runner.invoke(cli_module.cli, ["convert-bert", str(tmp_path / "bert"), str(dst), "--overwrite"])
    assert result.exit_code == 0, result.output
