"""Batched prediction on evaluation examples, the same way for the PyTorch reference and for
every exported file: tokenize a batch (padded to its longest row, truncated to the runner's
maximum sequence; a question's long context cut into windows, a row each) with the head's
encoding, run it, decode each example's rows with the head's decoder (heads.py), as predict
does.

A fixed-batch file (ExecuTorch, manifest dims.batch [n, n]) gets calls of exactly n rows;
the last is filled with copies of its last row, whose outputs are dropped (runtime.run_rows).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..artifact import open_artifact
from ..errors import SbexportError
from ..heads import INPUT_NAMES
from ..manifest import Manifest
from ..runtime import TorchRunner, open_runner, run_rows
from ..tasks import Task
from ..tokenizer import SqueezeBertTokenizer, has_tokenizer
from .datasets import QAExample, TagExample, TextExample


@dataclass
class Runner:
    """One model to evaluate: PyTorch or an exported file, with how it must be fed."""

    name: str                                   # "pytorch" or the artifact folder
    kind: str                                   # "pytorch", "onnx" or "executorch"
    run: Callable[[dict[str, np.ndarray]], list[np.ndarray]]
    labels: list[str]
    tokenizer: SqueezeBertTokenizer
    max_seq: int
    batch: int
    fixed_batch: bool = False


@dataclass
class Predictions:
    values: list                 # one per example: label name, score, answer text or word tags
    seconds: float               # time inside the model only (not tokenizing or decoding)
    truncated: int               # examples longer than max_seq, cut to it


def pytorch_runner(model: torch.nn.Module, task: Task, tokenizer, max_seq: int, batch: int) -> Runner:
    """The PyTorch reference (eval mode) as a runner: runtime.TorchRunner."""
    run = TorchRunner(model, task.outputs).run
    return Runner("pytorch", "pytorch", run, model_labels(model, task), tokenizer, max_seq, batch)


def model_labels(model: torch.nn.Module, task: Task) -> list[str]:
    """The model's label names in column order ([] for a head without labels)."""
    config = model.config
    if task.head.has_labels:
        return [config.id2label[i] for i in range(config.num_labels)]
    return []


def open_artifact_for(folder: str | Path, task: Task) -> Manifest:
    """The manifest of the artifact at `folder`, checked to be an export of `task`."""
    manifest = open_artifact(folder)
    if manifest.task != task.name:
        raise SbexportError(f"{folder}: the artifact is a {manifest.task} export, not {task.name}; "
                            f"evaluate it with --task {manifest.task}")
    return manifest


def artifact_runner(folder: str | Path, task: Task, tokenizer, batch: int, labels: list[str]) -> Runner:
    """A runner for the artifact at `folder`, using its own tokenizer when it has one (else
    `tokenizer`, the reference's). Raises SbexportError when the artifact is of another task or
    names other labels than `labels`, the reference's."""
    folder = Path(folder)
    manifest = open_artifact_for(folder, task)
    if sorted(manifest.labels) != sorted(labels):
        raise SbexportError(f"{folder}: the artifact's labels ({', '.join(manifest.labels)}) are not "
                            f"the PyTorch model's ({', '.join(labels)})")
    if has_tokenizer(folder):
        tokenizer = SqueezeBertTokenizer.from_pretrained(folder)
    lo, hi = manifest.dims.batch
    runner = open_runner(folder / manifest.model_file, INPUT_NAMES)
    return Runner(str(folder), manifest.format, runner.run, list(manifest.labels), tokenizer,
                  manifest.dims.sequence[1], hi if lo == hi else max(lo, min(batch, hi)), lo == hi)


def predict_examples(runner: Runner, task: Task, examples: list) -> Predictions:
    """Predict every example, a batch at a time. The first batch runs once untimed first:
    first calls pay for lazy initialisation (allocators, thread pools, kernel selection)."""
    values, seconds, truncated = [], 0.0, 0
    for start in range(0, len(examples), runner.batch):
        chunk = examples[start:start + runner.batch]
        encoded = task.head.encode(runner.tokenizer, [example.texts for example in chunk], runner.max_seq,
                                   windows=True)
        if start == 0:
            run_rows(runner.run, encoded.feeds, runner.batch, runner.fixed_batch)
        started = time.perf_counter()
        outputs = dict(zip(task.outputs, run_rows(runner.run, encoded.feeds, runner.batch, runner.fixed_batch)))
        seconds += time.perf_counter() - started
        truncated += sum(length > runner.max_seq for length in encoded.lengths)
        for i, example in enumerate(chunk):
            rows = encoded.rows[i]
            decoded = task.head.decode({k: v[rows] for k, v in outputs.items()}, encoded.example(i), example.texts,
                                       labels=runner.labels, tokenizer=runner.tokenizer, top_k=1)
            values.append(_prediction(decoded, example))
    return Predictions(values, seconds, truncated)


def _prediction(decoded: dict, example):
    """What eval compares: an answer, word tags, a regression score or the best label."""
    if isinstance(example, QAExample):
        return decoded["answer"]
    if isinstance(example, TagExample):
        return word_tags(decoded["tokens"], example.words)
    assert isinstance(example, TextExample)
    return decoded["score"] if "score" in decoded else decoded["labels"][0]["label"]


def word_tags(tokens: list[dict], words) -> list[str]:
    """One tag per word: the tag of the word's first word piece. Words joined with single
    spaces, so word k starts at sum(len(words[:k])) + k; a word with no piece (cut by
    truncation, or only characters the tokenizer drops) gets O."""
    by_start = {}
    for token in tokens:
        by_start.setdefault(token["start"], token["label"])
    starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]])
    return [by_start.get(int(s), "O") for s in starts]
