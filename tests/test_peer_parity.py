"""Peer check: an exported file gives the logits of transformers' SqueezeBertFor* holding the same
weights (our reference's state_dict loaded strictly into transformers' class), within the task's
tolerance (verify.compare), on the whole verify sweep, for every registered task.

Random-init artifacts (every task) have init-time biases and LayerNorms (0 and 1); the local
checkpoint artifacts (one per head) have every parameter perturbed, so a lost bias, a swapped
LayerNorm or a wrong group shows there.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import transformers
from conftest import HEAD_TASKS

from sbexport.runtime import OnnxRunner
from sbexport.tasks import TASKS
from sbexport.verify import compare, rebuild_reference, sweep


def transformers_twin(reference, task) -> torch.nn.Module:
    """transformers' class for the task's head with the reference's weights, in eval mode."""
    config = reference.config
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
              if f.name not in ("extra", "id2label", "label2id")}
    if task.head.name == "question-answering":
        fields["num_labels"] = 2          # transformers sizes qa_outputs from num_labels
    cls = getattr(transformers, task.model_class("squeezebert").__name__)   # our class names are theirs
    twin = cls(transformers.SqueezeBertConfig(**fields))
    result = twin.load_state_dict(reference.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return twin.eval()


def _check(folder, task_name):
    task = TASKS[task_name]
    manifest = json.loads((folder / "manifest.json").read_text())
    reference = rebuild_reference(folder, manifest, task)
    twin = transformers_twin(reference, task)
    runner = OnnxRunner(folder / manifest["model_file"])
    cases = 0
    for feeds in sweep(task, manifest, reference.config, folder):
        with torch.no_grad():
            theirs = twin(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        for name, got in zip(task.outputs, runner.run(feeds)):
            expected = getattr(theirs, name).numpy()
            assert got.shape == expected.shape, name
            result = compare(task, name, expected, got, feeds["attention_mask"])
            assert result.passed, f"{task_name} {name} {feeds['input_ids'].shape}: {result}"
            assert result.scale > 10 * result.bound, "outputs too small to prove anything"
        cases += 1
    return cases


@pytest.mark.parametrize("task_name", list(TASKS))
def test_onnx_matches_transformers_random_init(task_name, onnx_artifact):
    assert _check(onnx_artifact(task_name), task_name) == 6


@pytest.mark.parametrize("task_name", sorted(HEAD_TASKS.values()))
def test_onnx_matches_transformers_perturbed_checkpoint(task_name, onnx_artifact):
    assert _check(onnx_artifact(task_name, local=True), task_name) == 8
