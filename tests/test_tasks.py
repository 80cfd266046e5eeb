"""The registry: every head record agrees with its model classes, no module outside the
registry branches on a head's name, and a new task on an existing head is one entry: it
exports, verifies, predicts and evaluates with no other change."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import EXPORT_TINY, save_tiny_checkpoint

import sbexport
from sbexport import tasks
from sbexport.config import BertConfig, SqueezeBertConfig
from sbexport.eval.datasets import FORMATS
from sbexport.heads import HEADS, INPUT_NAMES, SEQUENCE_CLASSIFICATION

# A task the package does not ship: five-way sentiment (SST-5), one text, on the classifier head.
SST5 = tasks.Task("sst5", SEQUENCE_CLASSIFICATION, "five-way sentiment (SST-5)",
                  ("very negative", "negative", "neutral", "positive", "very positive"), pair=False,
                  problem_type="single_label_classification")


def _task_on(head) -> tasks.Task:
    return next(t for t in tasks.TASKS.values() if t.head is head)


@pytest.mark.parametrize("arch", ["squeezebert", "bert"])
@pytest.mark.parametrize("head_name", list(HEADS))
def test_every_head_record_matches_its_model(head_name, arch):
    """The outputs a head names, in its order, with one dimension per axis it names; the fixed
    axes the size the config gives; the inputs of the shape the task builds."""
    head = HEADS[head_name]
    task = _task_on(head)
    tiny = {k: v for k, v in EXPORT_TINY.items() if arch == "squeezebert" or k in BertConfig.__dataclass_fields__}
    config = (SqueezeBertConfig if arch == "squeezebert" else BertConfig)(**tiny, **task.config_overrides())
    model = head.model_class(arch)(config).eval()
    shape = task.input_shape(2, 5)
    assert len(shape) == len(task.input_axes)
    inputs = {name: torch.ones(shape, dtype=torch.long) for name in INPUT_NAMES}
    with torch.no_grad():
        out = model(**inputs)
    sizes = {"batch": 2, "sequence": 5, "choices": task.num_choices, "labels": config.num_labels,
             "vocab": config.vocab_size, "hidden": config.hidden_size}
    produced = [name for name, value in vars(out).items() if isinstance(value, torch.Tensor)]
    assert produced[:len(task.outputs)] == list(task.outputs)
    for name, axes in head.outputs.items():
        assert tuple(getattr(out, name).shape) == tuple(sizes[a] for a in axes), name


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # scores of no examples are nan: only names are read
def test_every_head_is_scored_with_what_eval_reads():
    """A head eval scores names formats eval has readers for, a scorer and metrics it knows."""
    for head in HEADS.values():
        assert set(head.eval_formats) <= set(FORMATS), head.name
        assert bool(head.eval_formats) == (head.score is not None), head.name
    for task in tasks.TASKS.values():
        if task.head.eval_formats:
            assert set(task.score([], [], None)) == set(task.metric_names), task.name


def test_no_module_outside_the_registry_names_a_head():
    """Behaviour per head lives in heads.py: a head's name quoted anywhere else is a branch on it."""
    package = Path(sbexport.__file__).parent
    names = "|".join(re.escape(name) for name in HEADS)
    pattern = re.compile(rf"""["']({names})["']""")
    found = [f"{path.relative_to(package)}:{n}: {line.strip()}"
             for path in sorted(package.rglob("*.py")) if path.name not in ("heads.py", "tasks.py")
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not found, "\n".join(found)


@pytest.fixture
def sst5(monkeypatch):
    """SST5 registered as one more entry of the registry, for this test only."""
    monkeypatch.setitem(tasks.TASKS, SST5.name, SST5)
    return SST5


def test_a_task_on_an_existing_head_is_one_entry(sst5, tmp_path, tiny_vocab_dir):
    """Export (with its parity check), verify, predict and eval of a task that exists only as
    one registry entry."""
    from sbexport.eval import run_eval
    from sbexport.export import export_artifact
    from sbexport.predict import predict
    from sbexport.source import resolve_source
    from sbexport.verify import verify_folder

    checkpoint = save_tiny_checkpoint(tmp_path / "checkpoint", "sst5", tiny_vocab_dir)
    folder = export_artifact("onnx", sst5, resolve_source(sst5, model=str(checkpoint)), tmp_path / "sst5-onnx",
                             log=lambda _: None)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["task"] == "sst5" and manifest["labels"] == list(sst5.labels)
    assert verify_folder(folder, log=lambda _: None).passed

    result = predict(folder, "A good film.")
    assert sorted(r["label"] for r in result["labels"]) == sorted(sst5.labels)

    data = tmp_path / "dev.jsonl"
    rows = [("a good film .", "positive"), ("a bad movie .", "negative"), ("the day is great !", "4")]
    data.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows))
    report = run_eval("sst5", data, artifacts=(folder,), log=lambda _: None)
    assert [r.examples for r in report.runners] == [3, 3] and not report.malformed
    assert all(set(r.metrics) == {"accuracy"} for r in report.runners)
    assert (report.runners[1].agree, report.runners[1].compared) == (3, 3)   # ONNX predicts what PyTorch does


def test_the_cli_starts_without_torch():
    """The CLI reads the registry for its choices; the registry names its model classes and
    imports them only when asked (heads.ARCHITECTURE_MODULES), so `sbexport --help` does not pay
    for torch (measured: 0.2 s of CPU without, ~2 s unloaded with it)."""
    code = "import sys, sbexport.cli; print(sorted(m for m in ('torch', 'onnxruntime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout
