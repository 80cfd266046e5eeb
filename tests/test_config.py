"""Configs: transformers' defaults, JSON in and out (unknown keys kept, transformers' files
read), and a ConfigError naming the field for every value that cannot build a model."""

from __future__ import annotations

import dataclasses
import json

import pytest
import transformers
from conftest import tiny_bert_config, tiny_squeezebert_config

from sbexport.config import BertConfig, SqueezeBertConfig, load_config
from sbexport.errors import ConfigError

PAIRS = [(SqueezeBertConfig, transformers.SqueezeBertConfig),
         (BertConfig, transformers.BertConfig)]


def _fields(config) -> list[str]:
    return [f.name for f in dataclasses.fields(config) if f.name != "extra"]


# -- defaults and transformers' files --------------------------------------------------


@pytest.mark.parametrize("ours, theirs", PAIRS, ids=["squeezebert", "bert"])
def test_defaults_equal_transformers(ours, theirs):
    mine, reference = ours(), theirs()
    for name in _fields(mine):
        if name == "position_embedding_type" and not hasattr(reference, name):
            continue   # transformers 5 dropped the field; "absolute" is what it implements
        assert getattr(mine, name) == getattr(reference, name), name
    assert mine.model_type == reference.model_type


@pytest.mark.parametrize("ours, theirs", PAIRS, ids=["squeezebert", "bert"])
def test_reads_config_json_written_by_transformers(tmp_path, ours, theirs):
    tiny = tiny_squeezebert_config() if ours is SqueezeBertConfig else tiny_bert_config()
    values = {n: getattr(tiny, n) for n in _fields(tiny)
              if n not in ("id2label", "label2id", "num_labels", "problem_type",
                           "position_embedding_type")}
    labels = {0: "entailment", 1: "neutral", 2: "contradiction"}
    theirs(**values, id2label=labels, label2id={v: k for k, v in labels.items()},
           problem_type="single_label_classification").save_pretrained(tmp_path)

    config = load_config(tmp_path / "config.json")

    assert type(config) is ours
    for name, value in values.items():
        assert getattr(config, name) == value, name
    assert config.id2label == labels
    assert config.label2id == {"entailment": 0, "neutral": 1, "contradiction": 2}
    assert config.num_labels == 3
    assert "transformers_version" in config.extra   # kept, written back unchanged


def test_json_round_trip_keeps_unknown_keys(tmp_path):
    data = {**tiny_squeezebert_config().to_dict(), "architectures": ["SqueezeBertForMaskedLM"],
            "custom_setting": {"nested": [1, 2.5, "x"]}, "transformers_version": "4.8.2"}
    (tmp_path / "in.json").write_text(json.dumps(data))

    config = SqueezeBertConfig.from_json_file(tmp_path / "in.json")
    config.to_json_file(tmp_path / "out.json")

    assert config.extra["custom_setting"] == {"nested": [1, 2.5, "x"]}
    assert json.loads((tmp_path / "out.json").read_text()) == data
    assert SqueezeBertConfig.from_json_file(tmp_path / "out.json") == config


@pytest.mark.parametrize("failure", ["disk full", "unserialisable value"])
def test_config_json_write_is_all_or_nothing(tmp_path, monkeypatch, failure):
    """config.json was written in place: a failure mid-write left it truncated, and the
    checkpoint or artifact holding it unreadable. Now the old file stays, with no temporary."""
    import errno

    from sbexport import atomic

    path = tmp_path / "config.json"
    tiny_squeezebert_config().to_json_file(path)
    before = path.read_bytes()
    if failure == "disk full":
        def full(fd, data):   # the disk is full when the content is written
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(atomic.os, "write", full)
        expected = OSError
    else:                     # json stops at the value it cannot write, after the keys before it
        monkeypatch.setattr(SqueezeBertConfig, "to_dict", lambda self: {"a_first": 1, "z_last": object()})
        expected = TypeError
    with pytest.raises(expected):
        tiny_squeezebert_config(num_hidden_layers=3).to_json_file(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_id2label_string_keys_become_ints():
    config = SqueezeBertConfig.from_dict({"id2label": {"0": "neg", "1": "pos"}})
    assert config.id2label == {0: "neg", 1: "pos"}
    assert config.label2id == {"neg": 0, "pos": 1}
    assert config.to_dict()["id2label"] == {"0": "neg", "1": "pos"}


# -- invalid values --------------------------------------------------------------------

POSITIVE_INTS = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels"]
GROUPS = ["q_groups", "k_groups", "v_groups", "post_attention_groups", "intermediate_groups",
          "output_groups"]


@pytest.mark.parametrize("make", [tiny_squeezebert_config, tiny_bert_config], ids=["squeezebert", "bert"])
@pytest.mark.parametrize("name, value", [
    (name, value) for name in POSITIVE_INTS for value in (0, -4, 2.0, True)
    if (name, value) != ("num_labels", 2.0)])   # see test_float_num_labels_is_a_config_error
def test_non_positive_or_non_int_size_names_the_field(make, name, value):
    with pytest.raises(ConfigError, match=rf"^{name}: must be a positive integer"):
        make(**{name: value})


@pytest.mark.parametrize("make", [tiny_squeezebert_config, tiny_bert_config], ids=["squeezebert", "bert"])
def test_hidden_not_divisible_by_heads(make):
    with pytest.raises(ConfigError, match=r"hidden_size \(32\) is not divisible by num_attention_heads \(5\)"):
        make(num_attention_heads=5)


@pytest.mark.parametrize("name", GROUPS)
def test_group_count_must_divide_channels(name):
    # hidden 32, intermediate 64: 3 divides neither
    with pytest.raises(ConfigError, match=rf"^{name} \(3\) must divide"):
        tiny_squeezebert_config(**{name: 3})


@pytest.mark.parametrize("name", GROUPS)
def test_group_count_must_be_positive(name):
    with pytest.raises(ConfigError, match=rf"^{name}: must be a positive integer"):
        tiny_squeezebert_config(**{name: 0})


def test_intermediate_groups_checked_against_intermediate_size():
    # 64 divides hidden 64 but not intermediate 96
    with pytest.raises(ConfigError, match=r"^intermediate_groups \(64\).*\(96\)"):
        tiny_squeezebert_config(hidden_size=64, intermediate_size=96, embedding_size=64,
                                intermediate_groups=64)


@pytest.mark.parametrize("make", [tiny_squeezebert_config, tiny_bert_config], ids=["squeezebert", "bert"])
def test_unknown_activation(make):
    with pytest.raises(ConfigError, match=r"^hidden_act: unknown activation 'swish'"):
        make(hidden_act="swish")


def test_embedding_size_must_equal_hidden_size():
    with pytest.raises(ConfigError, match=r"^embedding_size \(64\) must equal hidden_size \(32\)"):
        tiny_squeezebert_config(embedding_size=64)


@pytest.mark.parametrize("make", [tiny_squeezebert_config, tiny_bert_config], ids=["squeezebert", "bert"])
@pytest.mark.parametrize("name", ["hidden_dropout_prob", "attention_probs_dropout_prob"])
@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, "0.1", None])
def test_bad_dropout(make, name, value):
    with pytest.raises(ConfigError, match=rf"^{name}: must be in \[0, 1\)"):
        make(**{name: value})


@pytest.mark.parametrize("make", [tiny_squeezebert_config, tiny_bert_config], ids=["squeezebert", "bert"])
@pytest.mark.parametrize("changes, text", [
    ({"layer_norm_eps": 0}, r"^layer_norm_eps: must be positive"),
    ({"pad_token_id": 99}, r"^pad_token_id \(99\) is outside the vocabulary"),
    ({"pad_token_id": -1}, r"^pad_token_id \(-1\)"),
    ({"problem_type": "ranking"}, r"^problem_type: unknown 'ranking'"),
])
def test_other_invalid_values(make, changes, text):
    with pytest.raises(ConfigError, match=text):
        make(**changes)


def test_bert_position_embedding_type():
    with pytest.raises(ConfigError, match=r"^position_embedding_type: only 'absolute'"):
        tiny_bert_config(position_embedding_type="relative_key")


@pytest.mark.parametrize("cls, other", [(SqueezeBertConfig, "bert"), (BertConfig, "squeezebert")])
def test_wrong_model_type(cls, other):
    with pytest.raises(ConfigError, match=rf"^model_type: expected '{cls.model_type}', got '{other}'"):
        cls.from_dict({"model_type": other})


def test_load_config_unknown_model_type_names_file_and_field(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(ConfigError, match=r"config\.json: model_type 'roberta' is not one of squeezebert, bert"):
        load_config(path)


@pytest.mark.parametrize("text", ["{not json", '{"vocab_size": 10,}', ""])
def test_invalid_json_names_the_file(tmp_path, text):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"config\.json: not valid JSON"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"config\.json: not valid JSON"):
        SqueezeBertConfig.from_json_file(path)


def test_json_that_is_not_an_object(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"config\.json: expected a JSON object, got list"):
        load_config(path)


def test_replace_validates():
    with pytest.raises(ConfigError, match=r"^q_groups"):
        tiny_squeezebert_config().replace(q_groups=3)


# -- label count, classifier dropout and label types ---------------------------------------


def test_replace_num_labels_changes_the_label_count():
    assert tiny_squeezebert_config().replace(num_labels=3).num_labels == 3


def test_bert_classifier_dropout_validated():
    with pytest.raises(ConfigError, match="classifier_dropout"):
        tiny_bert_config(classifier_dropout=1.5)


def test_float_num_labels_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^num_labels: must be a positive integer"):
        tiny_squeezebert_config(num_labels=2.0)


def test_label2id_that_disagrees_with_id2label_is_rebuilt_from_it():
    config = tiny_squeezebert_config(id2label={0: "neg", 1: "pos"}, label2id={"a": 0, "b": 1})
    assert config.label2id == {"neg": 0, "pos": 1}


def test_replace_num_labels_gives_placeholder_labels():
    config = tiny_squeezebert_config(id2label={0: "neg", 1: "pos"}).replace(num_labels=3)
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
