"""verify: the sweep it runs, the reference it rebuilds from a manifest, and that it fails (never
warns) when an exported file differs from PyTorch beyond the task's tolerance."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from conftest import SPECIAL_TOKENS, save_tiny_checkpoint, tiny_random_config

from sbexport import targets, verify
from sbexport.artifact import write_manifest
from sbexport.config import load_config
from sbexport.errors import ParityError, SbexportError
from sbexport.export import export_artifact
from sbexport.source import build_reference, resolve_source
from sbexport.tasks import TASKS
from sbexport.tokenizer import SqueezeBertTokenizer
from sbexport.verify import rebuild_reference, sweep, verify_folder


def _planted(task_name: str, output: str, error: float, where: str):
    """(ref, got, mask): a random reference of the output's shape with padded rows, and a copy
    with `error` times the bound added at one real (or padded) position."""
    task = TASKS[task_name]
    rng = np.random.default_rng(0)
    mask = np.ones((3, 9), dtype=np.int64)
    mask[1, 5:] = mask[2, 2:] = 0
    shape = {"last_hidden_state": (3, 9, 8), "logits": (3, 3)}[output]
    ref = rng.normal(0, 2.0, shape)
    real = verify.real_positions(task, output, mask, shape)
    ref[~real] *= 1e3   # padded values (garbage in a real model) must not widen the bound either
    scale = np.abs(ref[real]).max()
    got = ref.copy()
    index = tuple(np.argwhere(real if where == "real" else ~real)[-1])
    got[index] += error * (task.atol + task.rtol * scale)
    return task, ref, got, mask


@pytest.mark.parametrize("task_name, output", [("features", "last_hidden_state"), ("mnli", "logits")])
def test_bound_edge_from_both_sides(task_name, output):
    """An error just under atol + rtol x scale passes, just over fails, at a real position."""
    for factor, passes in ((1 - 1e-6, True), (1 + 1e-6, False), (-(1 + 1e-6), False)):
        task, ref, got, mask = _planted(task_name, output, factor, "real")
        result = verify.compare(task, output, ref, got, mask)
        assert result.passed is passes, (factor, result)
        assert result.scale == np.abs(ref[verify.real_positions(task, output, mask, ref.shape)]).max()
        assert abs(result.fraction - abs(factor)) < 1e-9


def test_padded_positions_are_not_judged():
    """A token-level output at a padded position is never read: any error there passes and
    is reported apart. A sequence-level output has no padded positions: every row counts."""
    task, ref, got, mask = _planted("features", "last_hidden_state", 1e6, "padded")
    result = verify.compare(task, "last_hidden_state", ref, got, mask)
    assert result.passed and result.max_abs == 0.0 and result.padded_max_abs > 1.0
    task, ref, got, mask = _planted("mnli", "logits", 1.01, "real")
    assert got[2, 2] != ref[2, 2] and mask[2].sum() == 2   # planted in the row of 2 real tokens
    assert not verify.compare(task, "logits", ref, got, mask).passed


def test_nan_or_inf_is_an_infinite_error():
    task, ref, got, mask = _planted("features", "last_hidden_state", 0.0, "real")
    for bad in (np.nan, np.inf, -np.inf):
        got[0, 0, 0] = bad
        result = verify.compare(task, "last_hidden_state", ref, got, mask)
        assert not result.passed and result.max_abs == float("inf")


@pytest.mark.parametrize("task_name", ["mnli", "sst2", "swag"])
def test_sweep_covers_batches_lengths_masks_pairs_and_sentences(task_name, tiny_vocab_dir):
    task = TASKS[task_name]
    config = tiny_random_config(task)
    manifest = {"dims": {"batch": [1, 1024], "sequence": [1, 64]}}
    cases = list(sweep(task, manifest, config, tiny_vocab_dir))
    shapes = [c["input_ids"].shape for c in cases]
    choices = (task.num_choices,) if task.num_choices else ()
    assert shapes[:6] == [(b, *choices, s) for b in (1, 3) for s in (1, 7, 64)]
    for case in cases:
        assert {k: v.dtype for k, v in case.items()} == dict.fromkeys(case, np.dtype("int64"))
    batch3 = cases[5]
    assert (batch3["attention_mask"] == 0).any(), "padded rows"
    assert (batch3["input_ids"][batch3["attention_mask"] == 0] == 0).all(), "padding uses id 0"
    assert (batch3["token_type_ids"] == 1).any(), "pair-style token types"
    sentences = cases[6:]
    assert [c["input_ids"].shape[0] for c in sentences] == [1, 3]
    tokenizer = SqueezeBertTokenizer.from_pretrained(tiny_vocab_dir)
    first = sentences[1]["input_ids"].reshape(-1, sentences[1]["input_ids"].shape[-1])[0]
    text = tokenizer.decode(first)
    assert text.startswith("a soccer game with multiple males playing.")
    assert ("some men are playing a sport" in text) == task.pair
    assert tokenizer.convert_ids_to_tokens(int(first[0])) == SPECIAL_TOKENS[2]


def test_sweep_lengths_include_128_and_the_maximum(tiny_vocab_dir):
    task = TASKS["sst2"]
    config = tiny_random_config(task)
    manifest = {"dims": {"batch": [1, 1], "sequence": [1, 512]}}
    lengths = [c["input_ids"].shape[-1] for c in sweep(task, manifest, config, tiny_vocab_dir)]
    assert lengths[:5] == [1, 7, 128, 512, 512] and len(lengths) == 6   # then the padded case, a sentence


@pytest.mark.parametrize("task_name, max_seq, sentences",
                         [("mnli", 4, 0), ("mnli", 5, 2), ("sst2", 2, 0), ("sst2", 3, 2)])
def test_short_files_skip_sentences_that_cannot_fit(tiny_vocab_dir, task_name, max_seq, sentences):
    """A --max-seq-len 2 export failed its own verify: the tokenizer cannot fit a pair in 2."""
    task = TASKS[task_name]
    config = tiny_random_config(task)
    manifest = {"dims": {"batch": [1, 3], "sequence": [1, max_seq]}}
    cases = list(sweep(task, manifest, config, tiny_vocab_dir))
    assert len(cases) == 2 * len({1, 7, max_seq} & set(range(1, max_seq + 1))) + sentences


def test_max_seq_len_must_leave_a_range():
    from sbexport.export import ExportOptions, max_sequence

    config = tiny_random_config(TASKS["sst2"])
    assert max_sequence(config, ExportOptions()) == 64
    assert max_sequence(config, ExportOptions(max_seq_len=2)) == 2
    for bad in (1, 65):
        with pytest.raises(SbexportError, match=f"--max-seq-len {bad} is outside 2..64"):
            max_sequence(config, ExportOptions(max_seq_len=bad))


def test_fixed_batch_file_sweeps_its_own_batch(et_artifact, tiny_vocab_dir):
    """ExecuTorch files have a fixed batch: the sweep uses it (1), every length, a padded case
    (before it, no case of a batch-1 file had padding), one sentence batch."""
    manifest = json.loads((et_artifact("mnli") / "manifest.json").read_text())
    assert manifest["parity"]["passed"] and manifest["parity"]["cases"] == 3 + 1 + 1
    config = tiny_random_config(TASKS["mnli"])
    cases = list(sweep(TASKS["mnli"], manifest, config, tiny_vocab_dir))
    assert [c["input_ids"].shape for c in cases[:4]] == [(1, 1), (1, 7), (1, 64), (1, 64)]
    assert not (cases[2]["attention_mask"] == 0).any() and (cases[3]["attention_mask"] == 0).any()


def test_standalone_verify_rebuilds_a_random_init_reference(tmp_path, onnx_artifact):
    folder = shutil.copytree(onnx_artifact("ner"), tmp_path / "ner")
    lines = []
    report = verify_folder(folder, log=lines.append)
    assert report.passed and report.cases == 6
    assert "PASS: 6 cases" in lines[-1]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["parity"] == json.loads(json.dumps(report.to_dict()))
    data = json.loads(verify.report_json(report))
    assert data["schema"] == "sbexport.verify/2" and data["folder"] == str(folder)
    assert (data["atol"], data["rtol"]) == (TASKS["ner"].atol, TASKS["ner"].rtol)
    logits = data["outputs"]["logits"]
    assert logits["scale"] > 0 and logits["bound"] == data["atol"] + data["rtol"] * logits["scale"]
    assert 0 < logits["fraction"] < 1   # the case nearest its bound...
    assert logits["fraction"] * logits["bound"] <= logits["max_abs"]   # ...within the worst error
    assert logits["padded_max_abs"] > 0   # padded positions measured and shown, not judged
    header = lines[-1].splitlines()[0]
    assert "padded err" in header and "scale" in header and "of bound" in header


@pytest.fixture(scope="module")
def headless_artifact(tmp_path_factory, tiny_vocab_dir):
    """mnli exported from a bare-backbone checkpoint (the classifier is initialised randomly) with
    a config that changes the checkpoint's (relu): verify must rebuild that same head and that
    same activation."""
    root = tmp_path_factory.mktemp("headless")
    checkpoint = save_tiny_checkpoint(root / "ckpt", "mnli", tiny_vocab_dir, head=False, seed=7)
    task = TASKS["mnli"]
    with pytest.warns(UserWarning, match="initialised randomly"):
        out = export_artifact("onnx", task, resolve_source(task, model=str(checkpoint)), root / "art",
                              config=load_config(checkpoint / "config.json").replace(hidden_act="relu"),
                              log=lambda _: None)
    return out, checkpoint


def test_standalone_verify_of_a_headless_export_with_overrides(headless_artifact):
    """Before: verify rebuilt another random classifier and ignored the override: parity FAILED."""
    folder, checkpoint = headless_artifact
    manifest = json.loads((folder / "manifest.json").read_text())
    assert json.loads((folder / "config.json").read_text())["hidden_act"] == "relu"
    first = rebuild_reference(folder, manifest, TASKS["mnli"])
    second = rebuild_reference(folder, manifest, TASKS["mnli"])
    assert first.config.hidden_act == "relu"
    assert torch.equal(first.classifier.weight, second.classifier.weight)
    report = verify_folder(folder, log=lambda _: None)
    assert report.passed, report.table()


def test_relative_checkpoint_path_is_recorded_absolute(tmp_path, monkeypatch, tiny_checkpoint):
    """A relative --model was recorded as given: verify from another folder could not find it."""
    checkpoint = tiny_checkpoint("mnli")
    monkeypatch.chdir(checkpoint.parent)
    source = resolve_source(TASKS["mnli"], model=checkpoint.name)
    assert source.checkpoint == checkpoint.name
    assert source.resolved_path == str(checkpoint.resolve())
    monkeypatch.chdir(tmp_path)
    assert build_reference(TASKS["mnli"], source).config.num_labels == 3


def test_changed_checkpoint_is_refused(tmp_path, headless_artifact):
    folder, checkpoint = headless_artifact
    copy = shutil.copytree(checkpoint, tmp_path / "ckpt")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["source"]["resolved_path"] = str(copy)
    art = shutil.copytree(folder, tmp_path / "art")
    write_manifest(art, manifest)   # re-hashed: a hand edit is refused (the manifest hashes its content)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(SbexportError, match="checkpoint's weights changed since the artifact was made"):
        verify_folder(art, log=lambda _: None)


def test_parity_failure_raises(tmp_path, onnx_artifact):
    folder = shutil.copytree(onnx_artifact("mnli", local=True), tmp_path / "mnli")
    manifest = json.loads((folder / "manifest.json").read_text())
    reference = rebuild_reference(folder, manifest, TASKS["mnli"])
    with torch.no_grad():
        reference.classifier.bias += 1e-3          # tens of times the bound
    report = verify_folder(folder, reference=reference, log=lambda _: None)
    assert not report.passed
    assert 9e-4 < report.outputs["logits"].max_abs < 1.1e-3
    with pytest.raises(ParityError, match="parity FAILED for mnli: logits differs from PyTorch by 1.0"):
        report.raise_on_failure()
    assert json.loads((folder / "manifest.json").read_text())["parity"]["passed"] is False


class PlantingRunner:
    """The artifact's runner with an error of `times` x the bound added to one value of
    `output` in every case: at the last real token of row 0 (every row is read for a
    sequence-level output), or at the first padded position when `where` is "padded". The
    bound is taken from the file's own output, which matches the reference's to ~1e-7."""

    def __init__(self, runner, task, output, times, where):
        self.runner, self.task, self.output, self.times, self.where = runner, task, output, times, where
        self.planted = 0

    def run(self, feeds):
        outputs = self.runner.run(feeds)
        i = self.task.outputs.index(self.output)
        got = outputs[i]
        real = verify.real_positions(self.task, self.output, feeds["attention_mask"], got.shape)
        if self.where == "padded" and real.all():
            return outputs
        index = tuple(np.argwhere(real if self.where == "real" else ~real)[-1 if self.where == "real" else 0])
        scale = np.abs(got[real]).max()
        got[index] += self.times * (self.task.atol + self.task.rtol * scale)
        self.planted += 1
        return outputs


@pytest.mark.parametrize("output, where, fails", [("last_hidden_state", "real", True),
                                                  ("pooler_output", "real", True),
                                                  ("last_hidden_state", "padded", False)])
def test_error_of_three_times_the_bound_at_one_position(tmp_path, onnx_artifact, monkeypatch, output, where, fails):
    """3x the bound at ONE real position of a token-level or a sequence-level output fails
    verify, naming the output and the folder; the same error at a padded position does not."""
    folder = shutil.copytree(onnx_artifact("features"), tmp_path / "features")
    real_open = targets.open_runner
    runners = []

    def planting_open(*args, **kwargs):
        runners.append(PlantingRunner(real_open(*args, **kwargs), TASKS["features"], output, 3.0, where))
        return runners[-1]
    monkeypatch.setattr(targets, "open_runner", planting_open)
    report = verify_folder(folder, log=lambda _: None)
    assert runners[0].planted >= (report.cases if where == "real" else 2)
    assert report.passed is not fails, report.table()
    if fails:
        assert 2.9 < report.outputs[output].fraction < 3.1
        with pytest.raises(ParityError, match=rf"^{re.escape(str(folder))}: parity FAILED for features: {output} "):
            report.raise_on_failure()
    else:
        assert report.outputs[output].padded_max_abs > 3 * report.atol   # the error was there, unjudged


def break_onnx_export(monkeypatch) -> None:
    """Make the ONNX exporter write a file whose classifier bias is off by 1e-3 (hundreds of
    times the bound); the reference keeps its own weights."""
    from sbexport.export import onnx as onnx_format

    real_export = onnx_format.export

    def export(wrapper, *args, **kwargs):
        bias = wrapper.model.classifier.bias
        saved = bias.detach().clone()
        with torch.no_grad():
            bias += 1e-3
        try:
            return real_export(wrapper, *args, **kwargs)
        finally:
            with torch.no_grad():
                bias.copy_(saved)
    monkeypatch.setattr(onnx_format, "export", export)


def test_export_failing_parity_never_lands(tmp_path, onnx_artifact, monkeypatch):
    """The export's own sweep fails: ParityError naming the folder the user gave, nothing at
    that place (nor its staging folder); an existing artifact under --overwrite is untouched."""
    from sbexport.artifact import sha256_file

    task = TASKS["mnli"]
    source = resolve_source(task, random_init=True)
    fresh = tmp_path / "out" / "mnli"
    good = shutil.copytree(onnx_artifact("mnli"), tmp_path / "good")
    before = {p.name: sha256_file(p) for p in good.iterdir()}
    break_onnx_export(monkeypatch)
    for out, overwrite in ((fresh, False), (good, True)):
        with pytest.raises(ParityError, match=rf"^{re.escape(str(out))}: parity FAILED for mnli: logits ") as caught:
            export_artifact("onnx", task, source, out, overwrite=overwrite, config=tiny_random_config(task),
                            log=lambda _: None)
        assert ".partial" not in str(caught.value)
    assert not fresh.exists()
    assert {p.name: sha256_file(p) for p in good.iterdir()} == before
    # no staging folder left, and not the parent folder "out" that the failed export created
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_dir()) == ["good"]


def test_nan_output_fails_parity(tmp_path, onnx_artifact, monkeypatch):
    """max() skipped NaN: a file answering NaN passed with error 0."""
    folder = shutil.copytree(onnx_artifact("sst2"), tmp_path / "sst2")
    real_open = targets.open_runner

    class NaNRunner:
        def __init__(self, runner):
            self.runner = runner

        def run(self, feeds):
            outputs = self.runner.run(feeds)
            outputs[0][..., 0] = np.nan
            return outputs
    monkeypatch.setattr(targets, "open_runner", lambda *a, **k: NaNRunner(real_open(*a, **k)))
    report = verify_folder(folder, log=lambda _: None)
    assert not report.passed and report.outputs["logits"].max_abs == float("inf")
    with pytest.raises(ParityError):
        report.raise_on_failure()


def test_garbage_model_file_is_one_clear_error(tmp_path, onnx_artifact):
    from sbexport.artifact import read_manifest, write_manifest

    folder = shutil.copytree(onnx_artifact("mnli", local=True), tmp_path / "mnli")
    (folder / "model.onnx").write_bytes(b"this is not an onnx file")
    manifest = read_manifest(folder)
    write_manifest(folder, {k: v for k, v in manifest.items() if k not in ("schema", "files")})
    with pytest.raises(SbexportError, match=r"model\.onnx: not a loadable ONNX model"):
        verify_folder(folder, log=lambda _: None)
