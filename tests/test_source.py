"""Where the reference comes from: a checkpoint's labels against the task's."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_squeezebert_config

from sbexport.modeling import SqueezeBertForSequenceClassification, SqueezeBertForTokenClassification
from sbexport.source import build_reference, resolve_source
from sbexport.tasks import get_task


def _three_way_checkpoint(folder, **labels):
    """(folder, model): a tiny checkpoint with a 3-way classifier, saved in `folder`."""
    model = SqueezeBertForSequenceClassification(tiny_squeezebert_config(num_labels=3, **labels))
    model.save_pretrained(str(folder))
    return folder, model


@pytest.fixture(scope="module")
def three_way(tmp_path_factory):
    """A checkpoint with a 3-way classifier and placeholder labels, like squeezebert-mnli."""
    return _three_way_checkpoint(tmp_path_factory.mktemp("three-way"))


def test_same_label_count_keeps_the_trained_head_and_names_the_labels(three_way):
    folder, trained = three_way
    task = get_task("mnli")
    model = build_reference(task, resolve_source(task, model=str(folder)))
    assert model.config.id2label == dict(enumerate(task.labels))
    assert torch.equal(model.classifier.weight, trained.classifier.weight)


def test_other_label_count_keeps_the_backbone_and_warns_about_the_new_head(three_way):
    folder, trained = three_way
    task = get_task("sst2")
    source = resolve_source(task, model=str(folder))
    with pytest.warns(UserWarning, match="classifier has 3 labels, the task has 2"):
        model = build_reference(task, source)
    assert model.classifier.weight.shape == (2, 32)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    for ours, theirs in zip(model.transformer.parameters(), trained.transformer.parameters()):
        assert torch.equal(ours, theirs)
    # verify rebuilds the same model from the artifact's config: the new head is seeded
    with pytest.warns(UserWarning):
        again = build_reference(task, source, config=model.config)
    assert torch.equal(again.classifier.weight, model.classifier.weight)


@pytest.fixture(scope="module")
def named_three_way(tmp_path_factory):
    """A checkpoint whose 3-way classifier names its labels, like a user's own mnli fine-tune."""
    return _three_way_checkpoint(tmp_path_factory.mktemp("named-three-way"),
                                 id2label={0: "entailment", 1: "neutral", 2: "contradiction"})


def test_named_labels_of_the_task_count_are_kept(tmp_path):
    """A checkpoint naming 3 labels in its own order (roberta-large-mnli's) keeps them under
    mnli, with its trained head: the task's names would put the columns in another order."""
    own = {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}
    folder, trained = _three_way_checkpoint(tmp_path, id2label=own)
    task = get_task("mnli")
    model = build_reference(task, resolve_source(task, model=str(folder)))
    assert model.config.id2label == own
    assert torch.equal(model.classifier.weight, trained.classifier.weight)


@pytest.mark.parametrize("task_name, labels", [("sst2", {0: "negative", 1: "positive"}), ("stsb", {0: "score"})])
def test_named_labels_of_another_count_give_way_to_the_task(named_three_way, task_name, labels):
    """A named 3-way classifier cannot answer sst2's 2 labels or stsb's one score: the task's
    head replaces it, with a warning naming both label sets (it used to keep mnli's 3 labels
    under the sst2 name, silently)."""
    folder, trained = named_three_way
    task = get_task(task_name)
    with pytest.warns(UserWarning, match=r"3 labels \(entailment, neutral, contradiction\), the task has "
                                         rf"{len(labels)} \({', '.join(labels.values())}\)"):
        model = build_reference(task, resolve_source(task, model=str(folder)))
    assert model.config.id2label == labels
    assert model.classifier.weight.shape == (len(labels), 32)
    for ours, theirs in zip(model.transformer.parameters(), trained.transformer.parameters()):
        assert torch.equal(ours, theirs)


def test_a_token_classifier_keeps_its_own_tags_under_ner(tmp_path):
    """ner's tag set varies with the data (CoNLL-2003's 9 are only the default): a checkpoint's
    own 3 tags and their trained head are kept."""
    tags = {0: "O", 1: "B-DRUG", 2: "I-DRUG"}
    trained = SqueezeBertForTokenClassification(tiny_squeezebert_config(num_labels=3, id2label=tags))
    trained.save_pretrained(str(tmp_path))
    task = get_task("ner")
    model = build_reference(task, resolve_source(task, model=str(tmp_path)))
    assert model.config.id2label == tags
    assert torch.equal(model.classifier.weight, trained.classifier.weight)
