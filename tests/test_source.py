"""Where the reference comes from: a checkpoint's labels against the task's."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_squeezebert_config

from sbexport.modeling import SqueezeBertForSequenceClassification
from sbexport.source import build_reference, resolve_source
from sbexport.tasks import get_task


@pytest.fixture(scope="module")
def three_way(tmp_path_factory):
    """A checkpoint with a 3-way classifier and placeholder labels, like squeezebert-mnli."""
    folder = tmp_path_factory.mktemp("three-way")
    model = SqueezeBertForSequenceClassification(tiny_squeezebert_config(num_labels=3))
    model.save_pretrained(str(folder))
    return folder, model


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
