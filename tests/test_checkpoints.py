"""Checkpoints: every place one can come from (local folder in each weights format, the HF
cache, the Hub), every way a folder can be wrong (each error names the file and the tensor),
and the round trip with transformers in both directions for every head."""

from __future__ import annotations

import json
import logging
import os
import warnings

import huggingface_hub
import pytest
import torch
import transformers
from conftest import tiny_bert_config, tiny_squeezebert_config
from safetensors import safe_open
from safetensors.torch import save_file

from sbexport import checkpoints, modeling, modeling_bert
from sbexport.checkpoints import (
    checkpoint_fingerprint,
    load_pretrained,
    read_state_dict,
    resolve_checkpoint,
    save_pretrained,
)
from sbexport.config import SqueezeBertConfig
from sbexport.errors import CheckpointError, ConfigError

REPO = "squeezebert/squeezebert-mnli"
HEADS = ["Model", "ForMaskedLM", "ForSequenceClassification", "ForMultipleChoice",
         "ForTokenClassification", "ForQuestionAnswering"]


# -- helpers -----------------------------------------------------------------------------


def tiny_model(head: str = "ForSequenceClassification", seed: int = 0, arch: str = "SqueezeBert",
               **config):
    """A tiny SqueezeBERT (or BERT) with every parameter random (biases and LayerNorms too),
    in eval mode."""
    torch.manual_seed(seed)
    if arch == "Bert":
        model = getattr(modeling_bert, "Bert" + head)(tiny_bert_config(**config))
    else:
        model = getattr(modeling, "SqueezeBert" + head)(tiny_squeezebert_config(**config))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.2)
    return model.eval()


def write_checkpoint(folder, config: SqueezeBertConfig, state: dict, fmt: str = "safetensors"):
    """config.json plus weights in one of the formats hub checkpoints use; returns folder."""
    folder.mkdir(parents=True, exist_ok=True)
    config.to_json_file(folder / "config.json")
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    ext = "safetensors" if "safetensors" in fmt else "bin"
    write = ((lambda t, p: save_file(t, p, metadata={"format": "pt"})) if ext == "safetensors"
             else torch.save)
    if not fmt.startswith("sharded"):
        write(state, folder / ("model.safetensors" if ext == "safetensors" else "pytorch_model.bin"))
        return folder
    names = sorted(state)
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves, 1):
        shard = f"model-{i:05d}-of-00002.{ext}" if ext == "safetensors" else f"pytorch_model-{i:05d}-of-00002.bin"
        write({k: state[k] for k in part}, folder / shard)
        weight_map.update(dict.fromkeys(part, shard))
    index = "model.safetensors.index.json" if ext == "safetensors" else "pytorch_model.bin.index.json"
    (folder / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def saved(tmp_path, model, name="ckpt", fmt="safetensors", drop=(), add=None, config=None):
    """Write model's weights (less `drop`, plus `add`) with its config (or `config`)."""
    state = {k: v for k, v in model.state_dict().items()
             if k not in drop and k not in dict(model.tied_weights)}
    return write_checkpoint(tmp_path / name, config or model.config, {**state, **(add or {})}, fmt)


def assert_same_weights(model, reference):
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert ours[k].dtype == torch.float32, k
        torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=0, msg=k)


def fake_hf_cache(root, repo_id, files: dict, revision="main", commit="a" * 40):
    """The HF cache layout: blobs/, refs/<revision>, snapshots/<commit>/ symlinking to blobs."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, source in files.items():
        blob = repo / "blobs" / f"{name}-blob"
        blob.write_bytes(source.read_bytes())
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convs on one thread: on a busy 2-core host, intra-op threads make each grouped
    conv ~50x slower (16 ms instead of 0.3 ms), which would dominate this file's run time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """An empty HF cache and no network use; yields the cache folder."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def inputs(model, batch=2, seq=7, choices=3):
    """input_ids, attention_mask (with padding), token_type_ids; [B, C, S] for multiple choice."""
    g = torch.Generator().manual_seed(1)
    shape = (batch, choices, seq) if "MultipleChoice" in type(model).__name__ else (batch, seq)
    mask = torch.ones(shape, dtype=torch.long)
    mask[..., -2:] = 0
    mask[0, ...] = 1
    return dict(input_ids=torch.randint(1, 99, shape, generator=g), attention_mask=mask,
                token_type_ids=torch.randint(0, 2, shape, generator=g))


def outputs(out) -> list[torch.Tensor]:
    names = ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits")
    return [getattr(out, n) for n in names if getattr(out, n, None) is not None]


# -- local folders -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "sharded-safetensors", "sharded-bin"])
def test_local_folder_in_every_format(tmp_path, fmt, no_hub):
    reference = tiny_model()
    folder = saved(tmp_path, reference, fmt=fmt)

    model = load_pretrained(type(reference), str(folder))

    assert not model.training
    assert_same_weights(model, reference)
    assert read_state_dict(folder).keys() == reference.state_dict().keys()


def test_from_pretrained_delegates(tmp_path, no_hub):
    reference = tiny_model("ForMaskedLM")
    reference.save_pretrained(str(tmp_path / "m"))
    model = modeling.SqueezeBertForMaskedLM.from_pretrained(str(tmp_path / "m"))
    assert_same_weights(model, reference)
    # the tie survives loading
    assert model.cls.predictions.decoder.weight is model.transformer.embeddings.word_embeddings.weight


def test_half_precision_weights_load_as_float32(tmp_path, no_hub):
    reference = tiny_model()
    state = {k: v.half() for k, v in reference.state_dict().items()}
    folder = write_checkpoint(tmp_path / "fp16", reference.config, state)

    model = load_pretrained(type(reference), str(folder))

    for name, p in model.state_dict().items():
        assert p.dtype == torch.float32, name
        torch.testing.assert_close(p, state[name].float(), rtol=0, atol=0)


def test_larger_config_vocab_than_tokenizer_loads(tmp_path, no_hub):
    # squeezebert-uncased: vocab_size 30528 in config and weights, 30522 tokens in vocab.txt
    reference = tiny_model(vocab_size=128)
    (saved(tmp_path, reference) / "vocab.txt").write_text("\n".join(f"t{i}" for i in range(99)))
    model = load_pretrained(type(reference), str(tmp_path / "ckpt"))
    assert model.transformer.embeddings.word_embeddings.weight.shape == (128, 32)


def test_config_override_and_explicit_config(tmp_path, no_hub):
    reference = tiny_model("Model")
    folder = saved(tmp_path, reference)

    with pytest.warns(UserWarning, match="classifier.weight"):
        model = load_pretrained(modeling.SqueezeBertForSequenceClassification, str(folder),
                                allow_missing_head=True, num_labels=3)
    assert model.classifier.weight.shape == (3, 32)
    assert model.config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}

    model = load_pretrained(modeling.SqueezeBertModel, str(folder), hidden_act="relu")
    assert model.config.hidden_act == "relu"
    model = load_pretrained(modeling.SqueezeBertModel, str(folder),
                            config=reference.config.replace(layer_norm_eps=1e-6))
    assert model.config.layer_norm_eps == 1e-6
    with pytest.raises(ConfigError, match="^not_a_field: not a field of SqueezeBertConfig"):
        load_pretrained(modeling.SqueezeBertModel, str(folder), not_a_field=1)
    with pytest.raises(ConfigError, match="^q_groups"):
        load_pretrained(modeling.SqueezeBertModel, str(folder), q_groups=3)


# -- not a checkpoint folder -------------------------------------------------------------


@pytest.mark.parametrize("path", ["./no-such-checkpoint", "~/no-such-checkpoint-xyz",
                                  "/no/such/checkpoint", "../no-such-checkpoint"])
def test_local_looking_path_that_does_not_exist(path, no_hub):
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        resolve_checkpoint(path)


def test_partly_existing_path_names_what_exists(tmp_path, no_hub):
    with pytest.raises(CheckpointError, match=rf"no such checkpoint folder \({tmp_path} exists, run/best does not\)"):
        resolve_checkpoint(str(tmp_path / "run" / "best"))


def test_relative_partly_existing_path_is_not_sent_to_the_hub(tmp_path, monkeypatch, no_hub):
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", pytest.fail)
    with pytest.raises(CheckpointError, match=r"^runs/mnli: no such checkpoint folder \(runs exists"):
        resolve_checkpoint("runs/mnli")


def test_file_instead_of_folder(tmp_path, no_hub):
    folder = saved(tmp_path, tiny_model())
    with pytest.raises(CheckpointError, match="model.safetensors: is a file, not a checkpoint folder"):
        resolve_checkpoint(str(folder / "model.safetensors"))


def test_invalid_repo_id_that_is_no_folder(no_hub):
    with pytest.raises(CheckpointError,
                       match=r"^org/name/extra: no such checkpoint folder.*nor is it a Hugging Face repo id"):
        resolve_checkpoint("org/name/extra")


def test_unreadable_config_names_the_file(tmp_path, no_hub):
    folder = saved(tmp_path, tiny_model())
    (folder / "config.json").write_text("{broken")
    with pytest.raises(ConfigError, match=rf"^{folder / 'config.json'}: not valid JSON"):
        load_pretrained(modeling.SqueezeBertModel, str(folder))


def test_folder_without_config(tmp_path, no_hub):
    folder = saved(tmp_path, tiny_model())
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"no config.json, not a checkpoint folder; it holds: model.safetensors"):
        resolve_checkpoint(str(folder))


def test_folder_without_weights_lists_its_files(tmp_path, no_hub):
    folder = tmp_path / "empty"
    folder.mkdir()
    tiny_squeezebert_config().to_json_file(folder / "config.json")
    (folder / "vocab.txt").write_text("[PAD]\n")
    (folder / "tf_model.h5").write_bytes(b"x")
    message = r"no weights \(looked for model.safetensors, .*\); the folder holds: config.json, tf_model.h5, vocab.txt"
    with pytest.raises(CheckpointError, match=message):
        load_pretrained(modeling.SqueezeBertModel, str(folder))
    with pytest.raises(CheckpointError, match=message):
        read_state_dict(folder)


# -- the Hugging Face cache and the Hub ----------------------------------------------------


def test_found_in_hf_cache_via_HF_HUB_CACHE(tmp_path, no_hub):
    reference = tiny_model()
    source = saved(tmp_path, reference)
    snapshot = fake_hf_cache(no_hub, REPO, {"config.json": source / "config.json",
                                            "model.safetensors": source / "model.safetensors"})

    assert resolve_checkpoint(REPO) == snapshot
    model = load_pretrained(type(reference), REPO)
    assert_same_weights(model, reference)


def test_cache_hit_does_not_go_online(tmp_path, monkeypatch, no_hub):
    source = saved(tmp_path, tiny_model())
    snapshot = fake_hf_cache(no_hub, REPO, {"config.json": source / "config.json",
                                            "model.safetensors": source / "model.safetensors"})
    monkeypatch.delenv("HF_HUB_OFFLINE")
    real = huggingface_hub.snapshot_download

    def cache_only(*args, **kwargs):
        assert kwargs.get("local_files_only"), "went to the Hub although the snapshot is cached"
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", cache_only)
    assert resolve_checkpoint(REPO) == snapshot


def test_cache_revisions_and_HF_HOME(tmp_path, monkeypatch, no_hub):
    source = saved(tmp_path, tiny_model())
    files = {"config.json": source / "config.json", "model.safetensors": source / "model.safetensors"}
    home = tmp_path / "hf-home"
    main = fake_hf_cache(home / "hub", REPO, files, commit="1" * 40)
    tagged = fake_hf_cache(home / "hub", REPO, files, revision="v1", commit="2" * 40)
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(home))

    assert resolve_checkpoint(REPO) == main
    assert resolve_checkpoint(REPO, revision="v1") == tagged
    assert resolve_checkpoint(REPO, revision="2" * 40) == tagged
    with pytest.raises(CheckpointError, match="at revision 'v2' is not available"):
        resolve_checkpoint(REPO, revision="v2")


def test_cached_snapshot_without_weights_is_not_a_hit(tmp_path, no_hub):
    source = saved(tmp_path, tiny_model())
    fake_hf_cache(no_hub, REPO, {"config.json": source / "config.json"})
    with pytest.raises(CheckpointError, match="is not available"):
        resolve_checkpoint(REPO)


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "local_files_only"])
def test_offline_and_not_cached_names_the_ways(monkeypatch, no_hub, how):
    if how == "local_files_only":
        monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(CheckpointError) as error:
        resolve_checkpoint(REPO, local_files_only=True if how == "local_files_only" else None)
    message = str(error.value)
    assert f"checkpoint '{REPO}' is not available" in message
    assert how in message
    assert "(1) a local folder" in message
    assert f"`hf download {REPO}`" in message and f"huggingface-cli download {REPO}" in message
    assert f"copy the cache to {no_hub}" in message
    # convert-bert (local_files_only=True) never downloads: going online would not help it.
    assert ("(3) go online" in message) == (how == "HF_HUB_OFFLINE"), message
    assert "\n" not in message   # the CLI prints it on one line


def test_HF_HUB_OFFLINE_wins_over_local_files_only_false(monkeypatch, no_hub):
    def cache_only(repo_id, **kwargs):
        if not kwargs.get("local_files_only"):
            pytest.fail("went to the Hub with HF_HUB_OFFLINE=1")
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", cache_only)
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set"):
        resolve_checkpoint(REPO, local_files_only=False)


def test_unreachable_hub_names_the_three_ways(monkeypatch, no_hub):
    # The real download code against a port nothing listens on: fails fast, no network needed.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(CheckpointError, match=r"the Hub could not be reached .*\(1\) a local folder.*\(2\).*\(3\)"):
        resolve_checkpoint(REPO)


def test_download_fetches_only_what_loading_needs(tmp_path, monkeypatch, no_hub):
    source = saved(tmp_path, tiny_model())
    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls = []

    def fake_download(repo_id, **kwargs):
        calls.append(kwargs)
        if kwargs.get("local_files_only"):
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        return str(fake_hf_cache(kwargs["cache_dir"], repo_id, {
            "config.json": source / "config.json", "model.safetensors": source / "model.safetensors"}))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    folder = resolve_checkpoint(REPO, revision="main")

    assert (folder / "model.safetensors").is_file()
    assert calls[-1]["revision"] == "main" and calls[-1]["cache_dir"] == no_hub
    assert set(calls[-1]["allow_patterns"]) == {
        "config.json", "*.safetensors", "*.bin", "*.index.json", "vocab.txt", "tokenizer.json",
        "tokenizer_config.json", "special_tokens_map.json"}


# -- heads and prefixes ------------------------------------------------------------------


def test_headless_checkpoint_into_classifier(tmp_path, no_hub):
    # squeezebert-mnli-headless: backbone tensors only, saved by the bare model (no prefix)
    bare = tiny_model("Model")
    folder = saved(tmp_path, bare)
    cls = modeling.SqueezeBertForSequenceClassification

    with pytest.raises(CheckpointError) as error:
        load_pretrained(cls, str(folder))
    assert "model.safetensors" in str(error.value)
    assert "classifier.weight" in str(error.value) and "classifier.bias" in str(error.value)
    assert "allow_missing_head=True" in str(error.value)

    with pytest.warns(UserWarning) as record:
        model = load_pretrained(cls, str(folder), allow_missing_head=True)
    message = str(record[0].message)
    assert record[0].filename == __file__   # attributed to the caller of load_pretrained
    assert "classifier.bias, classifier.weight" in message and "initialised randomly" in message
    assert_same_weights(model.transformer, bare)


def test_head_checkpoint_with_prefix_but_no_head(tmp_path, no_hub):
    head = tiny_model("ForTokenClassification")
    folder = saved(tmp_path, head, drop=("classifier.weight", "classifier.bias"))
    with pytest.warns(UserWarning, match="classifier.bias, classifier.weight"):
        model = load_pretrained(type(head), str(folder), allow_missing_head=True)
    assert_same_weights(model.transformer, head.transformer)


def test_bare_model_from_head_checkpoint(tmp_path, no_hub, caplog):
    head = tiny_model("ForSequenceClassification")
    folder = saved(tmp_path, head)

    with caplog.at_level(logging.INFO, logger="sbexport.checkpoints"), warnings.catch_warnings():
        warnings.simplefilter("error")   # head tensors are not a warning, let alone an error
        model = load_pretrained(modeling.SqueezeBertModel, str(folder))

    assert_same_weights(model, head.transformer)
    assert "classifier.bias, classifier.weight" in caplog.text


def test_bert_pooler_tensors_dropped_by_heads_without_pooler(tmp_path, no_hub):
    # bert-base-uncased has a pooler; the BERT baseline's masked-LM head has none (as in transformers)
    bare = tiny_model("Model", arch="Bert")
    folder = saved(tmp_path, bare)
    with pytest.warns(UserWarning) as record:
        model = load_pretrained(modeling_bert.BertForMaskedLM, str(folder), allow_missing_head=True)
    assert "no weights for cls.predictions.bias, cls.predictions.transform" in str(record[0].message)
    assert "bert.pooler" not in str(record[0].message)
    assert model.bert.pooler is None
    reference = bare.state_dict()
    for name, tensor in model.bert.state_dict().items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=0, msg=name)


def test_other_heads_tensors_are_dropped_for_a_new_head(tmp_path, no_hub):
    # squad from squeezebert-uncased: its masked-LM head is not ours, the QA layer is new
    mlm = tiny_model("ForMaskedLM")
    folder = saved(tmp_path, mlm)
    with pytest.warns(UserWarning, match="qa_outputs.bias, qa_outputs.weight"):
        model = load_pretrained(modeling.SqueezeBertForQuestionAnswering, str(folder),
                                allow_missing_head=True)
    assert_same_weights(model.transformer, mlm.transformer)


def test_missing_pooler(tmp_path, no_hub):
    # transformers' BertForMaskedLM saves no pooler: harmless for heads that do not read it
    mlm = tiny_model("ForMaskedLM")
    pooler = ("transformer.pooler.dense.weight", "transformer.pooler.dense.bias")
    folder = saved(tmp_path, mlm, drop=pooler)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_pretrained(type(mlm), str(folder))
    # ... but the classifier reads pooler_output: that is a missing tensor
    seq = saved(tmp_path, tiny_model(), name="seq", drop=pooler)
    with pytest.raises(CheckpointError, match="transformer.pooler.dense.bias, transformer.pooler.dense.weight"):
        load_pretrained(modeling.SqueezeBertForSequenceClassification, str(seq))


@pytest.mark.parametrize("stored", ["source only", "both", "alias only"])
def test_tied_weights_in_any_form(tmp_path, stored, no_hub):
    mlm = tiny_model("ForMaskedLM")
    state = mlm.state_dict()
    aliases = mlm.tied_weights
    if stored == "source only":
        state = {k: v for k, v in state.items() if k not in aliases}
    elif stored == "alias only":
        state = {k: v for k, v in state.items() if k not in aliases.values()}
    folder = write_checkpoint(tmp_path / "mlm", mlm.config, state, "bin")

    model = load_pretrained(type(mlm), str(folder))

    assert_same_weights(model, mlm)
    assert model.cls.predictions.decoder.weight is model.transformer.embeddings.word_embeddings.weight


def test_untied_decoder_is_an_error(tmp_path, no_hub):
    mlm = tiny_model("ForMaskedLM")
    state = {**mlm.state_dict(), "cls.predictions.decoder.weight": torch.zeros(99, 32)}
    folder = write_checkpoint(tmp_path / "untied", mlm.config, state)
    with pytest.raises(CheckpointError, match=(
            r"model.safetensors: cls.predictions.decoder.weight differs from "
            r"transformer.embeddings.word_embeddings.weight, which the model ties it to")):
        load_pretrained(type(mlm), str(folder))


def test_old_checkpoint_buffers_are_ignored(tmp_path, no_hub):
    model = tiny_model()
    folder = saved(tmp_path, model, add={"transformer.embeddings.position_ids": torch.arange(64)[None],
                                         "transformer.embeddings.token_type_ids": torch.zeros(1, 64)})
    assert_same_weights(load_pretrained(type(model), str(folder)), model)


def test_tensorflow_layernorm_names_are_renamed(tmp_path, no_hub):
    # bert-base-uncased's own files: LayerNorm.gamma / LayerNorm.beta
    model = tiny_model("ForMaskedLM", arch="Bert")
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in model.state_dict().items()}
    assert sum(k.endswith("LayerNorm.gamma") for k in state) == 2 * 2 + 2   # 2 per layer, embeddings, MLM head
    folder = write_checkpoint(tmp_path / "old", model.config, state, "bin")
    assert_same_weights(load_pretrained(type(model), str(folder)), model)


# -- what is wrong with a checkpoint, by name ------------------------------------------------


def test_unexpected_tensor(tmp_path, no_hub):
    model = tiny_model()
    folder = saved(tmp_path, model, add={
        "transformer.encoder.layers.0.attention.extra.weight": torch.zeros(3),
        "classifier.scale": torch.ones(1)})
    with pytest.raises(CheckpointError, match=(
            rf"^{folder / 'model.safetensors'}: 2 unexpected tensors SqueezeBertForSequenceClassification has "
            r"no place for: classifier.scale, transformer.encoder.layers.0.attention.extra.weight$")):
        load_pretrained(type(model), str(folder))


def test_unknown_tensor_is_not_taken_for_another_head(tmp_path, no_hub):
    model = tiny_model("Model")
    folder = saved(tmp_path, model, add={"adapter.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError,
                       match=r"1 unexpected tensor SqueezeBertModel has no place for: adapter.weight$"):
        load_pretrained(type(model), str(folder))


def test_missing_tensor(tmp_path, no_hub):
    model = tiny_model()
    name = "transformer.encoder.layers.1.output.conv1d.weight"
    folder = saved(tmp_path, model, drop=(name,))
    for allow in (False, True):   # a backbone tensor is never allowed to be missing
        with pytest.raises(CheckpointError, match=(
                rf"^{folder / 'model.safetensors'}: missing 1 tensor SqueezeBertForSequenceClassification "
                rf"needs: {name}$")):
            load_pretrained(type(model), str(folder), allow_missing_head=allow)


def test_wrong_shape(tmp_path, no_hub):
    model = tiny_model()
    name = "transformer.encoder.layers.0.post_attention.layernorm.bias"
    folder = saved(tmp_path, model, fmt="sharded-safetensors", add={name: torch.zeros(31)})
    shard = next(f for f in folder.glob("model-*.safetensors")
                 if name in safe_open(f, "pt").keys())
    with pytest.raises(CheckpointError) as error:
        load_pretrained(type(model), str(folder))
    assert str(error.value) == (
        f"config and weights disagree for SqueezeBertForSequenceClassification: {name} in {shard}: "
        f"the config (hidden_size, intermediate_size, num_attention_heads) gives (32,), the file holds (31,)")


@pytest.mark.parametrize("change, tensor, field", [
    ({"vocab_size": 128}, "transformer.embeddings.word_embeddings.weight", "vocab_size"),
    ({"id2label": {0: "a", 1: "b", 2: "c"}}, "classifier.weight", "num_labels"),
    ({"q_groups": 4}, "transformer.encoder.layers.0.attention.query.weight", "q_groups"),
    ({"intermediate_groups": 4}, "transformer.encoder.layers.1.intermediate.conv1d.weight", "intermediate_groups"),
    ({"max_position_embeddings": 128}, "transformer.embeddings.position_embeddings.weight", "max_position_embeddings"),
])
def test_config_and_weights_disagree(tmp_path, change, tensor, field, no_hub):
    model = tiny_model()
    folder = saved(tmp_path, model, config=model.config.replace(**change))
    with pytest.raises(CheckpointError) as error:
        load_pretrained(type(model), str(folder))
    message = str(error.value)
    assert message.startswith("config and weights disagree")
    assert f"{tensor} in {folder / 'model.safetensors'}: the config (" in message
    assert field in message.split(tensor)[1].split(";")[0]


def test_layer_count_disagreement(tmp_path, no_hub):
    model = tiny_model()
    folder = saved(tmp_path, model, config=model.config.replace(num_hidden_layers=1))
    with pytest.raises(CheckpointError, match=(
            r"unexpected tensors .*transformer.encoder.layers.1.attention.key.bias.*config and weights disagree "
            r"on num_hidden_layers: the config says 1, the file has layer 1")):
        load_pretrained(type(model), str(folder))


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_corrupt_weights_file(tmp_path, name, no_hub):
    folder = saved(tmp_path, tiny_model(), fmt="safetensors" if name.endswith("safetensors") else "bin")
    (folder / name).write_bytes(os.urandom(4096))
    for read in (read_state_dict, lambda f: load_pretrained(modeling.SqueezeBertForSequenceClassification, str(f))):
        with pytest.raises(CheckpointError, match=rf"^{folder / name}: not a readable"):
            read(folder)


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_truncated_weights_file(tmp_path, name, no_hub):
    folder = saved(tmp_path, tiny_model(), fmt="safetensors" if name.endswith("safetensors") else "bin")
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"^{folder / name}: not a readable .*truncated"):
        read_state_dict(folder)


def test_bin_that_is_not_a_state_dict(tmp_path, no_hub):
    folder = saved(tmp_path, tiny_model(), fmt="bin")
    torch.save([torch.zeros(2)], folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: holds a list, not a state dict"):
        read_state_dict(folder)


def test_missing_shard(tmp_path, no_hub):
    folder = saved(tmp_path, tiny_model(), fmt="sharded-safetensors")
    shard = folder / "model-00002-of-00002.safetensors"
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    first = sorted(k for k, v in weight_map.items() if v == shard.name)[0]
    shard.unlink()
    with pytest.raises(CheckpointError,
                       match=rf"^{shard}: shard missing \(the index model.safetensors.index.json lists {first}, "):
        read_state_dict(folder)
    with pytest.raises(CheckpointError, match=rf"^{shard}: shard missing"):
        checkpoint_fingerprint(folder)


def test_index_names_a_tensor_its_shard_lacks(tmp_path, no_hub):
    folder = saved(tmp_path, tiny_model(), fmt="sharded-safetensors")
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["transformer.ghost"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError,
                       match=r"index.json: lists tensors its shards do not hold: transformer.ghost \(in model-00001"):
        read_state_dict(folder)


@pytest.mark.parametrize("text", ["{broken", '{"metadata": {}}', '{"weight_map": {"a": 1}}'])
def test_broken_index(tmp_path, text, no_hub):
    folder = saved(tmp_path, tiny_model(), fmt="sharded-safetensors")
    (folder / "model.safetensors.index.json").write_text(text)
    with pytest.raises(CheckpointError, match=r"model.safetensors.index.json: "):
        read_state_dict(folder)


# -- the real MiniLM checkpoint (a BERT) -------------------------------------------------------


def test_minilm_into_squeezebert_names_model_type(minilm_dir, no_hub):
    with pytest.raises(ConfigError, match=(
            r"config.json: model_type 'bert' cannot be loaded into SqueezeBertForSequenceClassification, "
            r"which needs model_type 'squeezebert'")):
        load_pretrained(modeling.SqueezeBertForSequenceClassification, str(minilm_dir))


def test_minilm_weights_read(minilm_dir):
    state = read_state_dict(minilm_dir)
    assert len(state) == 104   # 6 layers x 16 + embeddings 5 + pooler 2 + position_ids buffer
    assert state["embeddings.word_embeddings.weight"].shape == (30522, 384)
    assert {v.dtype for k, v in state.items() if k != "embeddings.position_ids"} == {torch.float32}
    assert len(checkpoint_fingerprint(minilm_dir)) == 64


# -- saving and the round trip with transformers ---------------------------------------------


@pytest.mark.parametrize("arch", ["SqueezeBert", "Bert"])
@pytest.mark.parametrize("head", HEADS)
def test_round_trip_with_transformers(tmp_path, head, arch, no_hub):
    ours = tiny_model(head, arch=arch)
    ours.save_pretrained(str(tmp_path / "ours"))

    theirs, info = getattr(transformers, arch + head).from_pretrained(
        tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"] and not info["mismatched_keys"], info
    theirs.eval()
    x = inputs(ours)
    with torch.no_grad():
        for a, b in zip(outputs(ours(**x)), outputs(theirs(**x)), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)

    # and back: transformers' own files into our class
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.01)   # weights that only a load from their files can give us
    theirs.save_pretrained(tmp_path / "theirs")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = load_pretrained(type(ours), str(tmp_path / "theirs"))
    with torch.no_grad():
        for a, b in zip(outputs(back(**x)), outputs(theirs(**x)), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_saved_files(tmp_path):
    model = tiny_model("ForMaskedLM")
    save_pretrained(model, tmp_path / "new" / "folder")
    folder = tmp_path / "new" / "folder"

    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["SqueezeBertForMaskedLM"]
    assert config["model_type"] == "squeezebert"
    with safe_open(folder / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        assert f.metadata() == {"format": "pt"}
    assert keys == set(model.state_dict()) - set(model.tied_weights)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]


def test_failed_save_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    old = tiny_model(seed=1)
    save_pretrained(old, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def half_write(path, tensors):
        open(path, "wb").write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "write_safetensors", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(tiny_model(seed=2, num_labels=3), tmp_path)

    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_fingerprint(tmp_path):
    a = saved(tmp_path, tiny_model(seed=0), name="a")
    b = saved(tmp_path, tiny_model(seed=0), name="b")
    c = saved(tmp_path, tiny_model(seed=1), name="c")
    sharded = saved(tmp_path, tiny_model(seed=0), name="s", fmt="sharded-safetensors")

    assert checkpoint_fingerprint(a) == checkpoint_fingerprint(b)
    assert checkpoint_fingerprint(a) != checkpoint_fingerprint(c)
    assert checkpoint_fingerprint(sharded) not in (checkpoint_fingerprint(a), checkpoint_fingerprint(c))
    (b / "vocab.txt").write_text("not a weight file")
    assert checkpoint_fingerprint(a) == checkpoint_fingerprint(b)
