"""int8 ONNX: every projection becomes an int8 QLinearConv that ONNX Runtime runs as such, the
accuracy guard keeps a good quantization and refuses a broken one (on the real MiniLM weights,
converted by convert-bert), and bad input fails in one line with nothing left behind.

The tiny artifacts are conftest's local checkpoints (one task per head, EXPORT_TINY: each
projection its own group count 1..32, perturbed weights, the tiny tokenizer).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import warnings
from collections import Counter
from importlib import resources

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import HEAD_TASKS
from onnx import TensorProto, numpy_helper

from sbexport.artifact import open_artifact, read_manifest, sha256_file
from sbexport.cli import main
from sbexport.errors import ParityError, SbexportError
from sbexport.eval.datasets import read_dataset
from sbexport.eval.runners import predict_examples, pytorch_runner
from sbexport.export import OnnxOptions, export_artifact
from sbexport.export import quantize as quantize_module
from sbexport.export.quantize import QuantizeOptions, quantize_artifact
from sbexport.source import resolve_source
from sbexport.tasks import TASKS
from sbexport.tokenizer import SqueezeBertTokenizer
from sbexport.verify import rebuild_reference, verify_folder

PROJECTIONS = {"attention.query": "query", "attention.key": "key", "attention.value": "value",
               "post_attention.conv1d": "post_attention", "intermediate.conv1d": "intermediate",
               "output.conv1d": "output"}
QUANT_WEIGHT = re.compile(r"encoder\.layers\.(\d+)\.(" + "|".join(map(re.escape, PROJECTIONS)) + r")\.weight")


@pytest.fixture(scope="module")
def int8_artifact(onnx_artifact, tmp_path_factory):
    """int8_artifact(task_name) -> the static int8 artifact quantized from the tiny local ONNX
    artifact of that task, made once per module (its log in `<folder>.log`).

    The guard's bar is 95% here, not 99%: these random, perturbed tiny heads separate their
    answers by less than int8's error in places (measured: fill-mask token argmax 98.7%, 770
    of 780, over a 99-token vocabulary; every other head 100%). What these artifacts test is
    the graph; the 99% bar is tested on the real MiniLM weights below."""
    root = tmp_path_factory.mktemp("int8")
    made = {}

    def get(task_name):
        if task_name not in made:
            lines = []
            made[task_name] = quantize_artifact(onnx_artifact(task_name, local=True), root / task_name,
                                                QuantizeOptions(min_agreement=0.95), log=lines.append)
            made[task_name].with_suffix(".log").write_text("\n".join(lines) + "\n")
        return made[task_name]
    return get


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("task_name", sorted(HEAD_TASKS.values()))
def test_every_projection_is_an_int8_qlinearconv(task_name, int8_artifact):
    """Per layer and projection one QLinearConv: int8 weights with one scale per output channel,
    u8 activations, the projection's group count; no fp32 Conv left."""
    folder = int8_artifact(task_name)
    manifest = open_artifact(folder)
    model = onnx.load(str(folder / manifest.model_file))
    config = rebuild_reference(folder, manifest, TASKS[task_name]).config
    inits = {i.name: i for i in model.graph.initializer}
    found = Counter()
    for node in model.graph.node:
        assert node.op_type not in ("Conv", "ConvInteger"), node.name
        if node.op_type != "QLinearConv":
            continue
        # QLinearConv inputs: x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, bias
        match = QUANT_WEIGHT.search(node.input[3])
        assert match, f"QLinearConv {node.name} reads {node.input[3]}, not a projection weight"
        layer, proj = int(match.group(1)), PROJECTIONS[match.group(2)]
        found[layer, proj] += 1
        weight, w_scale = inits[node.input[3]], numpy_helper.to_array(inits[node.input[4]])
        assert weight.data_type == TensorProto.INT8, (layer, proj)
        assert w_scale.shape == (weight.dims[0],) and len(np.unique(w_scale)) > 1, (layer, proj, w_scale)
        assert inits[node.input[2]].data_type == TensorProto.UINT8 == inits[node.input[7]].data_type
        assert _attrs(node).get("group", 1) == config.groups[proj], (layer, proj)
    assert found == Counter({(i, p): 1 for i in range(config.num_hidden_layers) for p in config.groups}), found


def test_onnx_runtime_runs_the_int8_kernels(int8_artifact, tmp_path):
    """What ONNX Runtime executes, not only what the file says: its profile of one run lists a
    QLinearConv kernel call for each of the 12 projections and no fp32 Conv (its optimizer
    could have turned a quantized pattern back into float ops)."""
    folder = int8_artifact("mnli")
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    feeds = {"input_ids": np.array([[2, 7, 8, 9, 3]]), "attention_mask": np.ones((1, 5), np.int64),
             "token_type_ids": np.zeros((1, 5), np.int64)}
    session.run(None, feeds)
    events = json.loads(open(session.end_profiling()).read())
    kernels = Counter(e["args"]["op_name"] for e in events
                      if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"))
    assert kernels["QLinearConv"] == 12 and kernels["Conv"] == 0 and kernels["ConvInteger"] == 0, kernels


def test_manifest_records_recipe_calibration_hash_and_figures(int8_artifact):
    folder = int8_artifact("ner")
    manifest = read_manifest(folder)
    quant = manifest.quantization
    builtin = resources.files("sbexport.data").joinpath("calibration_en.tsv").read_bytes()
    assert quant.calibration.sha256 == hashlib.sha256(builtin).hexdigest()
    assert quant.calibration.examples == 140   # ner takes one text: both texts of 70 lines
    assert quant.recipe.mode == "static" and quant.recipe.per_channel and quant.min_agreement == 0.95
    agreement = manifest.agreement
    assert agreement.passed and agreement.judged == "sentences" and agreement.agreement >= 0.95
    assert set(agreement.groups) == {"sweep", "sentences"}
    assert manifest.parity is None and quant.fp32_parity.passed
    assert "int8" in manifest.description
    # the int8 graph is recorded, not the fp32 one it was made from: 12 QLinearConv, no Conv
    assert manifest.details.graph.ops["QLinearConv"] == 12 and "Conv" not in manifest.details.graph.ops
    raw = json.loads((folder / "manifest.json").read_text())
    assert raw["schema"] == "sbexport.artifact/3" and raw["quantization"]["recipe"]["mode"] == "static"


def test_int8_fields_are_typed_and_absent_from_fp32_manifests(onnx_artifact, int8_artifact, tmp_path):
    """`quantization` and `agreement` are optional typed fields of the manifest: an fp32 one has
    neither (so it is what artifact/3 was before int8), and a mistyped one is refused naming it."""
    fp32 = json.loads((onnx_artifact("mnli", local=True) / "manifest.json").read_text())
    assert fp32["schema"] == "sbexport.artifact/3" and not {"quantization", "agreement"} & set(fp32)
    copy = shutil.copytree(int8_artifact("mnli"), tmp_path / "int8")
    raw = json.loads((copy / "manifest.json").read_text())
    raw["quantization"]["calibration"]["examples"] = "140"
    (copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(SbexportError, match=r"quantization\.calibration\.examples' is not an integer"):
        read_manifest(copy)


def test_quantize_leaves_the_fp32_artifact_alone(onnx_artifact, int8_artifact):
    source = onnx_artifact("squad", local=True)
    before = {p.name: sha256_file(p) for p in source.iterdir()}
    int8_artifact("squad")
    assert {p.name: sha256_file(p) for p in source.iterdir()} == before
    open_artifact(source)


def test_verify_judges_an_int8_artifact_by_agreement(int8_artifact, tmp_path):
    folder = shutil.copytree(int8_artifact("swag"), tmp_path / "swag-int8")
    lines = []
    report = verify_folder(folder, log=lines.append)
    text = "\n".join(lines)
    assert report.passed and "judged by agreement with fp32 PyTorch, not by the fp32 parity bound" in text
    assert "choices argmax" in text
    report.raise_on_failure()


# ---------------------------------------------------------------------------------------------
# real weights: the guard keeps a good quantization and refuses a broken one
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm_fp32(minilm_artifact):
    """minilm_fp32(task) -> the fp32 ONNX artifact of the converted MiniLM (max sequence 128),
    the one test_parity_real checks (conftest makes it once per run)."""
    return lambda task_name: minilm_artifact("onnx", task_name)


@pytest.mark.parametrize("task_name", ["features"])
def test_real_weights_pass_the_guard(task_name, minilm_fp32, tmp_path):
    """Measured on the Intel kind, static recipe: features (every weight real) 99.4-99.6% of
    real-sentence token embeddings at cosine >= 0.99 (min 0.977), every pooled one (min 0.997);
    on the AMD Zen 3 kind (judged through the u8 copy) 99.74%, pooled 72/72, min 0.976.
    Only features: the other heads on these weights are seeded random classifiers whose labels
    lie closer than int8's logit error. ner's 9-way head agrees on 92.8% of tags; mnli's 3-way
    head (logits spread 0.066) agreed 36/36 on Intel but 33/36 on Zen 3 (max logit error 4.4e-3,
    CI red there). A trained head's margins are units (benchmarks/NOTES.md)."""
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = quantize_artifact(minilm_fp32(task_name), tmp_path / "int8", log=lines.append)
    agreement = read_manifest(out).agreement
    assert agreement.passed and agreement.agreement >= 0.99, "\n".join(lines)


def test_guard_refuses_a_broken_quantization(minilm_fp32, tmp_path, monkeypatch, capsys):
    """Calibrating on [PAD] tokens only (ranges of nothing like text) clips real activations:
    agreement collapses, the CLI says so in one line, exits 1 and nothing lands."""
    def zeros(task, tokenizer, texts, manifest, log):
        return [{k: np.zeros((1, 8), np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
                for _ in range(4)]
    monkeypatch.setattr(quantize_module, "_calibration_feeds", zeros)
    out = tmp_path / "broken"
    monkeypatch.setattr(sys, "argv", ["sbexport", "quantize", str(minilm_fp32("features")), "-o", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.startswith(f"error: {out}: int8 accuracy guard FAILED for features: last_hidden_state cosine agrees")
    assert err.count("\n") == 1 and "under the bar 99% (--min-agreement)" in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".broken")]


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

def test_bad_calibration_files_fail_before_any_work(onnx_artifact, tmp_path):
    source = onnx_artifact("mnli", local=True)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("caf\xe9\n".encode("latin-1"))
    cases = [(empty, "no text in the calibration file"), (tmp_path / "missing.txt", "calibration file not found"),
             (tmp_path, "calibration file not found"), (binary, "not UTF-8 text (byte 3)")]
    for path, message in cases:
        with pytest.raises(SbexportError, match=re.escape(message)):
            quantize_artifact(source, tmp_path / "out", QuantizeOptions(calibration=str(path)))
        assert not (tmp_path / "out").exists()


def test_few_calibration_sentences_warn_with_the_count(onnx_artifact, tmp_path):
    texts = tmp_path / "three.tsv"
    texts.write_text("A man plays a guitar.\tSomeone makes music.\nThe cat sat.\tA cat.\nParis is in France.\n")
    lines = []
    quantize_artifact(onnx_artifact("mnli", local=True), tmp_path / "out", QuantizeOptions(calibration=str(texts)),
                      log=lines.append)
    warning = [line for line in lines if line.startswith("warning:")]
    assert warning == [f"warning: {texts} gives 3 calibration examples, fewer than the 32 recommended; "
                       f"quantizing with the 3 there are"]
    assert read_manifest(tmp_path / "out").quantization.calibration.lines == 3


@pytest.mark.parametrize("saturates", [True, False])
def test_predict_and_eval_say_when_this_cpu_saturates_the_int8_file(int8_artifact, monkeypatch, capsys, tmp_path,
                                                                     saturates):
    """On a CPU without VNNI, predict and eval ran the s8 file on ONNX Runtime's saturating
    kernel without a word, while verify and quantize said so (and judged a u8 copy)."""
    from test_cli import run_main

    monkeypatch.setattr(quantize_module, "saturates_u8s8", lambda cpuinfo=None: saturates)
    folder = int8_artifact("mnli")
    data = tmp_path / "dev.tsv"
    data.write_text("gold_label\tsentence1\tsentence2\nentailment\tA man plays.\tSomeone plays.\n")
    for args in (["predict", folder, "A man plays.", "Someone plays."],
                 ["eval", "--task", "mnli", "--data", data, "--artifact", folder]):
        code, out, err = run_main(monkeypatch, capsys, *args)
        assert code == 0, err
        noted = [line for line in err.splitlines() if "this CPU has no VNNI" in line]
        assert len(noted) == saturates, err
        assert all("quantize with --int8-weights u8" in line for line in noted), noted


def test_the_output_may_not_be_the_fp32_artifact_or_inside_it(onnx_artifact, tmp_path):
    """`quantize A -o A --overwrite` replaced the fp32 artifact it promised to leave alone with
    the int8 one; `-o A/int8` wrote a folder into it."""
    source = shutil.copytree(onnx_artifact("mnli", local=True), tmp_path / "mnli-onnx")
    before = {p.name: sha256_file(p) for p in source.iterdir()}
    with pytest.raises(SbexportError, match="mnli-onnx is the fp32 artifact .*, which this command only reads"):
        quantize_artifact(source, source, overwrite=True)
    with pytest.raises(SbexportError, match="int8 is inside the fp32 artifact"):
        quantize_artifact(source, source / "int8")
    assert {p.name: sha256_file(p) for p in source.iterdir()} == before


def test_already_quantized_and_executorch_artifacts_are_refused(int8_artifact, et_artifact, tmp_path):
    with pytest.raises(SbexportError, match="is already quantized .static int8.; quantize its fp32 artifact"):
        quantize_artifact(int8_artifact("mnli"), tmp_path / "again")
    with pytest.raises(SbexportError, match="is an executorch artifact; `sbexport quantize` takes an fp32 ONNX"):
        quantize_artifact(et_artifact("mnli"), tmp_path / "pte")
    assert not (tmp_path / "again").exists() and not (tmp_path / "pte").exists()


def test_metric_drop_beyond_the_bar_is_refused(onnx_artifact, tmp_path, monkeypatch):
    """--eval-data: gold labels are fp32 PyTorch's own predictions, so fp32 scores 100%; an
    int8 file whose logits were broken after quantization (+100 on the labels fp32 answers
    least: most rows change their answer) loses accuracy, and with the agreement bar set aside (1%) the metric bar alone
    refuses it."""
    source = onnx_artifact("mnli", local=True)

    pairs = [line.split("\t") for line in
             resources.files("sbexport.data").joinpath("guard_en.tsv").read_text().splitlines()]
    data = tmp_path / "dev.tsv"
    data.write_text("sentence1\tsentence2\tgold_label\n" + "".join(f"{a}\t{b}\tneutral\n" for a, b in pairs))
    reference = rebuild_reference(source, open_artifact(source), TASKS["mnli"])
    tokenizer = SqueezeBertTokenizer.from_pretrained(source)
    runner = pytorch_runner(reference, TASKS["mnli"], tokenizer, 64, 16)
    predicted = predict_examples(runner, TASKS["mnli"], read_dataset(data, TASKS["mnli"]).examples).values
    rows = "".join(f"{a}\t{b}\t{p}\n" for (a, b), p in zip(pairs, predicted))
    data.write_text("sentence1\tsentence2\tgold_label\n" + rows)

    quantize_onnx = quantize_module.quantize_onnx
    labels = reference.config.id2label
    shift = np.float32([100.0 if labels[i] != Counter(predicted).most_common(1)[0][0] else 0.0
                        for i in range(len(labels))])

    def broken(src, dst, recipe, feeds):
        quantize_onnx(src, dst, recipe, feeds)
        model = onnx.load(str(dst))
        producer = next(n for n in model.graph.node if "logits" in n.output)
        producer.output[list(producer.output).index("logits")] = "logits.unbroken"
        model.graph.initializer.append(numpy_helper.from_array(shift, "logits.shift"))
        model.graph.node.append(onnx.helper.make_node("Add", ["logits.unbroken", "logits.shift"], ["logits"]))
        onnx.save(model, str(dst))
    monkeypatch.setattr(quantize_module, "quantize_onnx", broken)
    options = QuantizeOptions(min_agreement=0.01, eval_data=str(data))
    lines = []
    with pytest.raises(ParityError, match=r"accuracy drops by \d+\.\d\d points on .*dev.tsv \(bar 1\)"):
        quantize_artifact(source, tmp_path / "out", options, log=lines.append)
    assert not (tmp_path / "out").exists()



def test_cli_onnx_quantize_int8_then_info(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """One command: fp32 export, its parity, quantization, the guard; only the int8 folder lands."""
    out = tmp_path / "mnli-int8"
    monkeypatch.setattr(sys, "argv", ["sbexport", "onnx", "--task", "mnli", "--model", str(tiny_checkpoint("mnli")),
                                      "--quantize", "int8", "--min-agreement", "99.5", "-o", str(out)])
    main()
    printed = capsys.readouterr().out
    assert "PASS: int8 judged by agreement" in printed and printed.rstrip().endswith(f"wrote {out}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnli-int8"]
    manifest = read_manifest(out)
    assert manifest.quantization.min_agreement == 0.995 and manifest.quantization.fp32_parity.passed
    monkeypatch.setattr(sys, "argv", ["sbexport", "info", str(out)])
    main()
    assert "  agreement PASS, int8 against fp32 PyTorch: lowest 100.00%" in capsys.readouterr().out


def test_cli_int8_embeddings_and_u8_weights(onnx_artifact, tmp_path, monkeypatch, capsys):
    """--int8-embeddings stores the embedding tables int8 (a Gather of a dequantized u8 table, the
    file smaller); --int8-weights u8 stores every projection's weights as u8 with zero point 128;
    the manifest's recipe records both."""
    fp32 = onnx_artifact("features", local=True)
    runs = {"plain": [], "embeddings": ["--int8-embeddings", "--int8-weights", "u8"]}
    for name, extra in runs.items():
        monkeypatch.setattr(sys, "argv", ["sbexport", "quantize", str(fp32), "-o", str(tmp_path / name),
                                          "--min-agreement", "95", *extra])
        main()
    capsys.readouterr()
    models = {name: onnx.load(str(tmp_path / name / "model.onnx")) for name in runs}
    word = {i.name: i.data_type for i in models["embeddings"].graph.initializer if "word_embeddings" in i.name}
    assert word.get("model.embeddings.word_embeddings.weight_quantized") == TensorProto.UINT8, word
    plain = [i for i in models["plain"].graph.initializer if "word_embeddings" in i.name]
    assert plain and all(i.data_type == TensorProto.FLOAT for i in plain)
    sizes = {name: (tmp_path / name / "model.onnx").stat().st_size for name in runs}
    assert sizes["embeddings"] < sizes["plain"]
    inits = {i.name: i for i in models["embeddings"].graph.initializer}
    for node in (n for n in models["embeddings"].graph.node if n.op_type == "QLinearConv"):
        assert inits[node.input[3]].data_type == TensorProto.UINT8, node.name
        assert set(numpy_helper.to_array(inits[node.input[5]]).ravel()) == {128}, node.name
    recipe = read_manifest(tmp_path / "embeddings").quantization.recipe
    assert recipe.op_types == ("Conv", "Gather") and recipe.weight_storage == "u8"
    assert read_manifest(tmp_path / "plain").quantization.recipe.weight_storage == "s8"


def test_a_model_without_convolutions_is_refused_by_the_static_recipe(tmp_path):
    """BERT-base has no convolution: a "static int8" file of it would quantize nothing."""
    from conftest import tiny_random_config

    task = TASKS["mnli"]
    fp32 = export_artifact("onnx", task, resolve_source(task, random_init=True, arch="bert"), tmp_path / "bert",
                           OnnxOptions(), config=tiny_random_config(task, "bert"), verify=False,
                           log=lambda line: None)
    with pytest.raises(SbexportError, match="is a bert model without convolutions: .* use --quantize-mode dynamic"):
        quantize_artifact(fp32, tmp_path / "out")
    assert not (tmp_path / "out").exists()

