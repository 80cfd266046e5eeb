"""int8 ExecuTorch: every projection runs inside the XNNPACK delegate as a quantized convolution
(read back from the .pte), the accuracy guard keeps a good quantization of real weights (the
MiniLM's first two layers) and refuses a broken one, bad input fails in one line with nothing
left behind, and the int8 program is judged by agreement on emulated arm64 too (XNNPACK's
arm64 int8 kernels are not its x86 ones).

The tiny artifacts are quantized from conftest's shared fp32 ExecuTorch artifacts (tiny local
checkpoints, EXPORT_TINY: each projection its own group count 1..32).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from importlib import resources

import numpy as np
import pytest
from test_cli import run_main
from test_export_executorch import expected_convs, read_pte_graphs
from test_verify_arm64 import arm64_setup, tampering_setup  # noqa: F401  (arm64_setup: a fixture)

from sbexport.artifact import read_manifest, sha256_file
from sbexport.errors import ExportError, ParityError, SbexportError
from sbexport.export import quantize_executorch as pte_int8
from sbexport.export.quantize import QuantizeOptions
from sbexport.export.quantize_executorch import quantize_pte_artifact
from sbexport.targets.arm64 import SETUP_ENV, QemuArm64Target
from sbexport.tasks import TASKS
from sbexport.verify import rebuild_reference, verify_folder

# The tiny int8 programs: a 2-D input (mnli, a text pair) and a 3-D one (swag, choices). Each
# int8 lowering costs about a minute of CI whatever the model's size (ExecuTorch's passes run
# per graph node), so not every head gets one: the quantizer and the guard do not depend on the
# head (every projection is in the shared encoder; the per-head agreement rules are tested on
# int8 ONNX in test_quantize.py), and the MiniLM slice's features program below is read back too.
INT8_TASKS = ["mnli", "swag"]


@pytest.fixture(scope="module")
def int8_pte(et_artifact, tmp_path_factory):
    """int8_pte(task_name) -> the int8 artifact quantized from the task's shared fp32 XNNPACK
    artifact, made once per module (its log in `<folder>.log`).

    The bar is 95%, as for the tiny int8 ONNX artifacts (test_quantize.py): these random,
    perturbed heads separate some answers by less than int8's error. The 99% bar is tested on
    the real MiniLM weights below."""
    root = tmp_path_factory.mktemp("pte-int8")
    made = {}

    def get(task_name):
        if task_name not in made:
            lines, source = [], et_artifact(task_name)
            get.source_hashes[task_name] = {p.name: sha256_file(p) for p in source.iterdir()}
            made[task_name] = quantize_pte_artifact(source, root / task_name,
                                                    QuantizeOptions(min_agreement=0.95), log=lines.append)
            made[task_name].with_suffix(".log").write_text("\n".join(lines) + "\n")
        return made[task_name]
    get.source_hashes = {}   # task -> {file name: sha256} of its fp32 artifact before quantizing
    return get


def _values(graph: dict) -> dict[int, tuple[str, str | None, dict]]:
    """An XNNPACK graph's values by id: (datatype, quantization kind or None, its params)."""
    values = {}
    for value in graph["xvalues"]:
        union = value["xvalue_union"]
        tensor = union.get("tensor_value", union)
        values[tensor.get("id_out", 0)] = (tensor["datatype"], union.get("quant_params_type"),
                                           union.get("quant_params", {}))
    return values


def assert_every_projection_is_int8_in_the_delegate(folder, task_name: str) -> None:
    """Read from the .pte itself: no convolution outside the XNNPACK delegates, and inside them
    exactly the model's projections, six per layer in order with their group counts, each
    an int8 convolution (qint8 input and output, per-channel qcint8 weights, qcint32 bias):
    no fp32 convolution anywhere."""
    config = rebuild_reference(folder, read_manifest(folder), TASKS[task_name]).config
    operators, delegates, graphs = read_pte_graphs(folder / "model.pte")
    assert delegates and set(delegates) == {"XnnpackBackend"}
    assert not [op for op in operators if "conv" in op or "quantize" in op], operators
    convs = []
    for graph in graphs:
        values = _values(graph)
        for node in graph["xnodes"]:
            if node["xnode_union_type"] != "XNNConv2d":
                continue
            conv = node["xnode_union"]
            groups, cin, cout = conv.get("groups", 1), conv["group_input_channels"], conv["group_output_channels"]
            convs.append((groups, cin, cout))
            x, w, b, y = (values[conv.get(k, 0)] for k in ("input1_id", "filter_id", "bias_id", "output_id"))
            assert x[:2] == y[:2] == ("xnn_datatype_qint8", "PerTensorQuant"), (x, y)
            assert w[:2] == ("xnn_datatype_qcint8", "PerChannelQuant") and w[2]["num_scales"] == groups * cout, w
            assert b[:2] == ("xnn_datatype_qcint32", "PerChannelQuant"), b
    assert convs == expected_convs(config)
    graph = read_manifest(folder).details.graph
    assert graph.quantized_convolutions == graph.convolutions_in_delegate == 6 * config.num_hidden_layers


@pytest.mark.parametrize("task_name", INT8_TASKS)
def test_every_projection_is_a_quantized_convolution_in_the_delegate(task_name, int8_pte):
    folder = int8_pte(task_name)
    manifest = read_manifest(folder)
    assert_every_projection_is_int8_in_the_delegate(folder, task_name)
    assert manifest.agreement.passed and manifest.agreement.judged == "sentences"


def test_manifest_records_recipe_calibration_hash_and_figures(int8_pte, et_artifact):
    folder = int8_pte("mnli")
    manifest = read_manifest(folder)
    quant = manifest.quantization
    builtin = resources.files("sbexport.data").joinpath("calibration_en.tsv").read_bytes()
    assert quant.calibration.sha256 == hashlib.sha256(builtin).hexdigest()
    assert quant.calibration.examples == 70   # mnli takes a pair: one example per line of 70
    assert quant.recipe.quant_format == "PT2E" and quant.recipe.per_channel and quant.recipe.equalize
    assert quant.min_agreement == 0.95 and quant.fp32_parity == read_manifest(et_artifact("mnli")).parity
    agreement = manifest.agreement
    assert agreement.passed and agreement.agreement >= 0.95 and set(agreement.groups) == {"sweep", "sentences"}
    assert manifest.parity is None and "int8" in manifest.description and manifest.format == "executorch"
    # an fp32 program's manifest has no int8 field, not even an empty one
    raw = json.loads((et_artifact("mnli") / "manifest.json").read_text())
    assert "quantized_convolutions" not in raw["details"]["graph"] and "quantization" not in raw


def test_quantizing_leaves_the_fp32_artifact_alone(et_artifact, int8_pte):
    int8_pte("swag")
    source = et_artifact("swag")
    assert {p.name: sha256_file(p) for p in source.iterdir()} == int8_pte.source_hashes["swag"]


def test_verify_judges_the_int8_program_by_agreement(int8_pte, tmp_path, monkeypatch, capsys):
    folder = shutil.copytree(int8_pte("swag"), tmp_path / "swag-int8")
    code, out, err = run_main(monkeypatch, capsys, "verify", folder, "--json", tmp_path / "report.json")
    assert code == 0, err
    assert "choices argmax" in out and "PASS: int8 judged by agreement with fp32 PyTorch" in out
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["judged_by"] == "agreement" and data["passed"] and data["target"]["name"] == "host"


def test_a_convolution_left_in_fp32_is_refused(et_artifact, tmp_path, monkeypatch):
    """A quantizer that annotates nothing leaves every convolution fp32 inside the delegate:
    the export says so and nothing lands."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    monkeypatch.setattr(pte_int8, "quantizer", XNNPACKQuantizer)
    with pytest.raises(ExportError, match="12 of the 12 convolutions run in fp32 inside the XNNPACK delegate"):
        quantize_pte_artifact(et_artifact("mnli"), tmp_path / "out", log=lambda line: None)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# real weights: the guard keeps a good quantization and refuses a broken one
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm_features_pte(minilm_slice, tmp_path_factory):
    """The fp32 XNNPACK program of the MiniLM slice (conftest's minilm_slice: its first two
    layers, every weight real), features task, sequences up to 128."""
    from sbexport.export import export_artifact
    from sbexport.source import resolve_source

    out, task = tmp_path_factory.mktemp("minilm-slice-pte") / "features", TASKS["features"]
    export_artifact("executorch", task, resolve_source(task, model=str(minilm_slice)), out, max_seq_len=128,
                    log=lambda line: None)
    return out


def test_real_weights_pass_the_guard(minilm_features_pte, tmp_path):
    """Measured on AMD Zen 3 and on the Intel kind alike, the lowered .pte of the slice: 781/782
    real-sentence token embeddings (99.87%) at cosine >= 0.99 (min 0.988), 72/72 pooled ones.
    Without the channel equalization: 72/782 (checked by turning it off), so this test guards
    it too."""
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = quantize_pte_artifact(minilm_features_pte, tmp_path / "int8", log=lines.append)
    agreement = read_manifest(out).agreement
    assert agreement.passed and agreement.judged == "sentences" and agreement.agreement >= 0.99, "\n".join(lines)
    assert_every_projection_is_int8_in_the_delegate(out, "features")
    print("\n".join(lines[-6:]))


def test_guard_refuses_a_broken_quantization(minilm_features_pte, tmp_path, monkeypatch):
    """Calibrating on [PAD] tokens only (ranges of nothing like text) clips real activations:
    the guard refuses the program in one line and nothing lands."""
    def pads(task, tokenizer, texts, manifest, log):
        return [{k: np.zeros((1, 8), np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
                for _ in range(4)]
    monkeypatch.setattr(pte_int8, "_calibration_feeds", pads)
    out = tmp_path / "broken"
    with pytest.raises(ParityError) as error:
        quantize_pte_artifact(minilm_features_pte, out, log=lambda line: None)
    message = str(error.value)
    assert message.startswith(f"{out}: int8 accuracy guard FAILED for features: last_hidden_state cosine agrees")
    assert "under the bar 99% (--min-agreement)" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

def test_bad_calibration_files_fail_before_any_work(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """Through the CLI: one error line, exit 1, no export started (export_artifact is not
    reached), nothing written."""
    def no_export(*args, **kwargs):
        raise AssertionError("the export started before the calibration file was read")
    monkeypatch.setattr("sbexport.export.export_artifact", no_export)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("caf\xe9\n".encode("latin-1"))
    cases = [(empty, "no text in the calibration file"), (tmp_path / "missing.txt", "calibration file not found"),
             (binary, "not UTF-8 text (byte 3)")]
    for path, message in cases:
        code, out, err = run_main(monkeypatch, capsys, "executorch", "--task", "mnli", "--model",
                                  tiny_checkpoint("mnli"), "--quantize", "int8", "--calibration", path,
                                  "-o", tmp_path / "out")
        assert code == 1 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "out").exists()


def test_already_quantized_onnx_and_portable_artifacts_are_refused(int8_pte, onnx_artifact, et_artifact, tmp_path):
    cases = [(int8_pte("mnli"), "is already quantized (static int8); quantize its fp32 artifact instead"),
             (onnx_artifact("mnli", local=True), "is an ONNX artifact; ExecuTorch int8 takes an fp32 XNNPACK"),
             (et_artifact("mnli", backend="portable"), "is an ExecuTorch portable artifact; ExecuTorch int8 takes")]
    for folder, message in cases:
        with pytest.raises(SbexportError, match=message.replace("(", r"\(").replace(")", r"\)")):
            quantize_pte_artifact(folder, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_the_output_may_not_be_the_fp32_program_or_inside_it(et_artifact, tmp_path):
    source = shutil.copytree(et_artifact("mnli"), tmp_path / "mnli-pte")
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    for out, message in [(source, "mnli-pte is the fp32 artifact"), (source / "int8", "is inside the fp32 artifact")]:
        with pytest.raises(SbexportError, match=message):
            quantize_pte_artifact(source, out, overwrite=True)
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before


def test_portable_backend_with_quantize_is_refused(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, "executorch", "--task", "mnli", "--model", tiny_checkpoint("mnli"),
                              "--backend", "portable", "--quantize", "int8", "-o", tmp_path / "out")
    assert code == 1 and err == "error: --quantize int8 runs on the XNNPACK backend, not 'portable'\n", err
    assert list(tmp_path.iterdir()) == []


def test_cli_executorch_quantize_int8_then_info(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """One command: fp32 export, its parity, quantization, the guard; only the int8 folder lands."""
    out = tmp_path / "sst2-int8"
    code, printed, err = run_main(monkeypatch, capsys, "executorch", "--task", "sst2", "--model",
                                  tiny_checkpoint("sst2"), "--quantize", "int8", "--min-agreement", "97.5",
                                  "-o", out)
    assert code == 0, err
    assert "PASS: int8 judged by agreement" in printed and printed.rstrip().endswith(f"wrote {out}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sst2-int8"]
    manifest = read_manifest(out)
    assert manifest.quantization.min_agreement == 0.975 and manifest.quantization.fp32_parity.passed
    code, printed, err = run_main(monkeypatch, capsys, "info", out)
    assert code == 0 and "  agreement PASS, int8 against fp32 PyTorch: lowest" in printed, printed
    assert "convolutions 12 inside (12 int8), 0 outside" in printed, printed


# ---------------------------------------------------------------------------------------------
# emulated arm64
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cpu", ["cortex-a53", "max"])
def test_int8_program_is_judged_by_agreement_on_emulated_arm64(arm64_setup, int8_pte, cpu):  # noqa: F811
    """cortex-a53 has no dot product (XNNPACK's plain NEON int8 kernels), max has it (its
    dot-product kernels): both must make fp32 PyTorch's decisions, judged as on the host."""
    folder = int8_pte("mnli")
    before = read_manifest(folder)
    report = verify_folder(folder, target=QemuArm64Target(arm64_setup, cpu), log=lambda _: None)
    print(report.table())
    assert report.passed and report.judged == "sentences", report.table()
    assert report.target["arch"] == "aarch64" and report.target["cpu"] == cpu and report.target["emulated"]
    assert read_manifest(folder) == before   # the manifest keeps the host's figures


def test_a_wrong_arm64_int8_output_fails(arm64_setup, int8_pte, tmp_path, monkeypatch, capsys):  # noqa: F811
    """A setup whose runner runs the real one and then negates its first output: every argmax
    moves, the guard on arm64 fails through the CLI in one line."""
    negate = "import sys, numpy; p = sys.argv[1] + '/output_0.npy'; numpy.save(p, -numpy.load(p))"
    monkeypatch.setenv(SETUP_ENV, str(tampering_setup(tmp_path, arm64_setup, negate)))
    code, out, err = run_main(monkeypatch, capsys, "verify", int8_pte("mnli"), "--target", "arm64-qemu")
    # err too: a CI run (stop 21, Zen 3) once failed here with code 1 and nothing on stdout, and
    # did not say why; alone and under -n 2 it passed every time since.
    assert code == 1 and "FAIL: int8 judged by agreement" in out and out.startswith("ran on arm64-qemu"), (out, err)
    assert err.startswith("error: ") and "int8 accuracy guard FAILED for mnli: labels argmax agrees" in err, err


def test_int8_onnx_is_judged_by_agreement_on_emulated_arm64(arm64_setup, onnx_artifact, tmp_path):  # noqa: F811
    """The same target path serves an int8 ONNX artifact: arm64 ONNX Runtime's QLinearConv,
    judged by agreement (verify refused int8 on any target but the host before)."""
    from sbexport.export.quantize import quantize_artifact

    folder = quantize_artifact(onnx_artifact("mnli", local=True), tmp_path / "int8",
                               QuantizeOptions(min_agreement=0.95), log=lambda _: None)
    report = verify_folder(folder, target=QemuArm64Target(arm64_setup, "cortex-a53"), log=lambda _: None)
    print(report.table())
    assert report.passed and report.judged == "sentences", report.table()
    assert report.target["arch"] == "aarch64" and report.target["runtime"].startswith("onnxruntime"), report.target
