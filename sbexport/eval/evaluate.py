"""Accuracy on a labelled file for the PyTorch model and each exported artifact: the task's
metrics, their delta to PyTorch and how often each artifact predicts what PyTorch predicts.

PyTorch runs at the shortest maximum sequence among the artifacts (at max_position_embeddings
without artifacts), so that a delta measures the runtime, not a difference in truncation.
Gold labels map onto the PyTorch model's labels by name (case-insensitive) or, for GLUE's
numeric labels, by the task's label order (sst2 0 = negative, 1 = positive, ...).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import SbexportError
from ..export.quantize import saturation_note
from ..source import ModelSource, build_reference, load_tokenizer, resolve_source
from ..tasks import Task, get_task
from ..tokenizer import SqueezeBertTokenizer, has_tokenizer
from .datasets import Dataset, Malformed, QAExample, TagExample, read_dataset
from .report import EvalReport, RunnerResult
from .runners import artifact_runner, model_labels, open_artifact_for, predict_examples, pytorch_runner

DEFAULT_BATCH = 16


def run_eval(task_name: str, data: str | Path, fmt: str = "auto", *, model: str | None = None,
             random_init: bool = False, artifacts: tuple = (), arch: str = "squeezebert", seed: int = 0,
             limit: int | None = None, batch_size: int = DEFAULT_BATCH,
             log: Callable[[str], None] = print) -> EvalReport:
    """What `sbexport eval` does: read the file, build the PyTorch model (from --model,
    --random-init, else the first artifact's manifest, else the task's default checkpoint) and
    evaluate it and the artifacts. Raises SbexportError on bad input, before building models
    where it can (missing file, unknown format, artifact of another task)."""
    task = get_task(task_name)
    dataset = read_dataset(data, task, fmt)
    manifests = [open_artifact_for(folder, task) for folder in artifacts]
    for folder, manifest in zip(artifacts, manifests):
        note = saturation_note(manifest)
        if note:
            log(f"note: {folder}: {note}")
    if model is not None or random_init or not artifacts:
        source = resolve_source(task, model=model, random_init=random_init, arch=arch, seed=seed)
        reference = build_reference(task, source)
        tokenizer = load_tokenizer(source)
    else:
        from ..verify import rebuild_reference

        folder = Path(artifacts[0])
        source = manifests[0].source
        log(f"PyTorch model: rebuilt from {folder}'s manifest")
        reference = rebuild_reference(folder, manifests[0], task)
        tokenizer = SqueezeBertTokenizer.from_pretrained(folder) if has_tokenizer(folder) else load_tokenizer(source)
    return evaluate(task, dataset, reference, tokenizer, artifacts, limit=limit, batch_size=batch_size,
                    source=source, log=log)


def evaluate(task: Task, dataset: Dataset, reference: torch.nn.Module, tokenizer: SqueezeBertTokenizer | None,
             artifacts: tuple = (), *, limit: int | None = None, batch_size: int = DEFAULT_BATCH,
             source: ModelSource | None = None, log: Callable[[str], None] = print) -> EvalReport:
    """Evaluate `reference` (with `tokenizer`) and the artifact folders on `dataset`.

    Returns the EvalReport. Raises SbexportError when there is no usable tokenizer, an artifact
    is of another task or has other labels, or no row of the file is valid.
    """
    if tokenizer is None:
        raise SbexportError("the PyTorch model has no tokenizer (no vocab.txt or tokenizer.json beside its weights)")
    if tokenizer.vocab_size > reference.config.vocab_size:
        raise SbexportError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model embeds only "
                            f"{reference.config.vocab_size}; give a checkpoint whose tokenizer fits it")
    labels = model_labels(reference, task)
    exported = [artifact_runner(folder, task, tokenizer, batch_size, labels) for folder in artifacts]
    max_seq = min([reference.config.max_position_embeddings] + [r.max_seq for r in exported])
    runners = [pytorch_runner(reference, task, tokenizer, max_seq, batch_size)] + exported
    examples, gold, malformed = prepare(task, dataset, labels, tokenizer, max_seq)
    if limit is not None:
        examples, gold = examples[:limit], gold[:limit]
    if not examples:
        first = f"; first: {malformed[0]}" if malformed else ""
        raise SbexportError(f"{dataset.path}: no valid {task.name} rows in this {dataset.format} file "
                            f"({len(malformed)} malformed{first})")
    positive = _positive_label(task, labels)
    report = EvalReport(task.name, dataset.path, dataset.format, len(examples), malformed,
                        task.head.eval_unit, limit,
                        source.to_dict() if source else None)
    reference_values = None
    for runner in runners:
        log(f"evaluating {runner.name} on {len(examples)} examples "
            f"(batch {runner.batch}, max sequence {runner.max_seq})")
        predictions = predict_examples(runner, task, examples)
        values = predictions.values       # label names, so an artifact's label order does not matter
        metrics = task.score(gold, values, positive)
        reference_values = reference_values if reference_values is not None else values
        agree, compared = agreement(task, reference_values, values)
        base = report.runners[0].metrics if report.runners else metrics
        report.runners.append(RunnerResult(runner.name, runner.kind, runner.max_seq, runner.batch, metrics,
                                           {k: v - base[k] for k, v in metrics.items()}, agree, compared,
                                           len(examples), predictions.truncated, predictions.seconds))
    return report


def prepare(task: Task, dataset: Dataset, labels: list[str], tokenizer, max_seq: int):
    """Map gold labels onto the model's; returns (examples, gold, malformed), where malformed
    adds the file's own bad rows to those whose label the model does not know."""
    examples, gold, malformed = [], [], list(dataset.malformed)
    for example in dataset.examples:
        try:
            gold.append(_gold(task, example, labels, tokenizer, max_seq))
            examples.append(example)
        except ValueError as e:
            malformed.append(Malformed(example.where, str(e)))
    return examples, gold, sorted(malformed, key=_file_order)


def _file_order(m: Malformed) -> list:
    """Sort key putting "line 9" before "line 10" and qas[2] before qas[10]."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", m.where)]


def _gold(task: Task, example, labels: list[str], tokenizer, max_seq: int):
    """The gold value of one example, in the model's label names; raises ValueError for texts
    that cannot fit max_seq (heads.Head.unfit) or a label the model does not know."""
    reason = task.head.unfit(tokenizer, example.texts, max_seq)
    if reason:
        raise ValueError(reason)
    if isinstance(example, QAExample):
        return list(example.answers)
    if isinstance(example, TagExample):
        unknown = sorted(set(example.tags) - set(labels))
        if unknown:
            raise ValueError(f"tag {unknown[0]!r} is not one of the model's labels ({', '.join(labels)})")
        return list(example.tags)
    if task.problem_type == "regression":
        return float(example.label)
    return map_label(example.label, labels, task)


def map_label(raw: str, labels: list[str], task: Task) -> str:
    """A file's label as one of the model's `labels`: by name (case-insensitive), or a GLUE
    index (the task's label at that index, or the model's when the model names its labels
    otherwise but has as many: an index means nothing across label sets of other sizes).
    Raises ValueError for a label neither way finds."""
    by_name = {label.lower(): label for label in labels}
    if raw.lower() in by_name:
        return by_name[raw.lower()]
    if raw.isdigit():
        index = int(raw)
        if index < len(task.labels) and task.labels[index].lower() in by_name:
            return by_name[task.labels[index].lower()]
        if len(labels) != len(task.labels):
            raise ValueError(f"label {raw!r} is an index of {task.name}'s {len(task.labels)} labels, but the "
                             f"model has {len(labels)} ({', '.join(labels)}): it was not fine-tuned for {task.name}")
        if index < len(labels):
            return labels[index]
    raise ValueError(f"label {raw!r} is not one of the model's labels ({', '.join(labels)}) or their index")


def _positive_label(task: Task, labels: list[str]) -> str | None:
    """The positive class of binary F1 / MCC: the task's second label (equivalent, duplicate,
    acceptable), or the model's second label when it names them otherwise."""
    if len(labels) != 2:
        return None
    wanted = task.labels[1] if len(task.labels) == 2 else None
    return wanted if wanted in labels else labels[1]


def agreement(task: Task, reference: list, values: list) -> tuple[int, int]:
    """How many predictions equal PyTorch's, out of how many: words for NER, examples
    otherwise; an STS-B score agrees within the task's parity tolerance (verify.compare)."""
    if task.head.eval_unit == "word":
        pairs = [(a, b) for ref, got in zip(reference, values) for a, b in zip(ref, got)]
    else:
        pairs = list(zip(reference, values))
    if task.problem_type == "regression":
        from ..verify import compare
        return sum(compare(task, task.outputs[0], [a], [b]).passed for a, b in pairs), len(pairs)
    return sum(a == b for a, b in pairs), len(pairs)
