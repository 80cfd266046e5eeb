"""ONNX export: every registered task, its inputs and outputs, and every grouped projection kept
as one native Conv node with its group count (no MatMul, Gemm or per-group split in its place).

The artifacts are the session-wide tiny exports of conftest (random init with EXPORT_TINY, whose
six projections each have their own group count, and tiny local checkpoints for one task per
head); every one of them passed the verify sweep when it was written.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from conftest import EXPORT_TINY, HEAD_TASKS
from onnx import TensorProto, numpy_helper

from sbexport.artifact import read_manifest, sha256_file
from sbexport.checkpoints import checkpoint_fingerprint
from sbexport.runtime import OnnxRunner
from sbexport.tasks import INPUT_NAMES, TASKS
from sbexport.verify import compare, rebuild_reference, reference_outputs

PROJECTIONS = {  # weight name inside a layer -> SqueezeBertConfig.groups key
    "attention.query": "query", "attention.key": "key", "attention.value": "value",
    "post_attention.conv1d": "post_attention", "intermediate.conv1d": "intermediate",
    "output.conv1d": "output",
}
CONV_WEIGHT = re.compile(r"encoder\.layers\.(\d+)\.(" + "|".join(map(re.escape, PROJECTIONS)) + r")\.weight$")


def _load(folder):
    manifest = read_manifest(folder)
    return onnx.load(str(folder / manifest.model_file)), manifest


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("task_name", list(TASKS))
def test_grouped_projections_stay_native_convs(task_name, onnx_artifact):
    """Per layer and projection exactly one Conv, kernel 1, group = the config's; MatMul only for
    the two attention products per layer; Gemm / weight-carrying MatMul only for head layers."""
    folder = onnx_artifact(task_name)
    model, manifest = _load(folder)
    onnx.checker.check_model(model, full_check=True)
    config = rebuild_reference(folder, manifest, TASKS[task_name]).config
    layers, groups = config.num_hidden_layers, config.groups
    assert len(set(groups.values())) == 6, "EXPORT_TINY must give each projection its own group count"
    inits = {i.name: i for i in model.graph.initializer}

    found = Counter()
    for node in (n for n in model.graph.node if n.op_type == "Conv"):
        match = CONV_WEIGHT.search(node.input[1])
        assert match, f"Conv {node.name} reads {node.input[1]}, not a projection weight"
        layer, proj = int(match.group(1)), PROJECTIONS[match.group(2)]
        found[layer, proj] += 1
        attrs = _attrs(node)
        assert attrs.get("group", 1) == groups[proj], (layer, proj, attrs)
        assert list(attrs.get("kernel_shape", [1])) == [1], (layer, proj, attrs)
        weight = inits[node.input[1]]
        cin, cout = {"intermediate": (config.hidden_size, config.intermediate_size),
                     "output": (config.intermediate_size, config.hidden_size)}.get(
            proj, (config.hidden_size, config.hidden_size))
        assert list(weight.dims) == [cout, cin // groups[proj], 1], (layer, proj)
    assert found == Counter({(i, p): 1 for i in range(layers) for p in groups}), found

    ops = Counter(n.op_type for n in model.graph.node)
    attention = [n for n in model.graph.node if n.op_type == "MatMul" and not set(n.input) & inits.keys()]
    assert len(attention) == 2 * layers, ops
    assert ops["MatMul"] + ops["Gemm"] == len(attention) + len(_head_weight_nodes(model, inits))
    _assert_head_nodes_are_head_layers(folder, manifest, model, inits)
    # No conv-derived op in disguise: the only matrix products are the ones counted above.
    assert not {"ConvInteger", "QLinearConv", "Einsum"} & ops.keys()


def _head_weight_nodes(model, inits) -> list:
    return [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and set(n.input) & inits.keys()]


def _assert_head_nodes_are_head_layers(folder, manifest, model, inits) -> None:
    """Each weight-carrying MatMul/Gemm holds (maybe transposed) the weight of one Linear outside
    the encoder (pooler, classifier, qa_outputs, the masked-LM transform and decoder)."""
    reference = rebuild_reference(folder, manifest, TASKS[manifest.task])
    linears = {name: m.weight.detach().numpy() for name, m in reference.named_modules()
               if isinstance(m, torch.nn.Linear)}
    assert linears and not any(".encoder." in f".{n}" for n in linears)
    used = []
    for node in _head_weight_nodes(model, inits):
        weights = [numpy_helper.to_array(inits[i]) for i in node.input
                   if i in inits and inits[i].dims and len(inits[i].dims) == 2]
        assert len(weights) == 1, node
        w = weights[0]
        owner = [n for n, lw in linears.items()
                 if (w.shape == lw.shape and np.array_equal(w, lw))
                 or (w.shape == lw.T.shape and np.array_equal(w, lw.T))]
        assert len(owner) == 1, f"{node.op_type} {node.name} carries a weight of no head Linear"
        used.append(owner[0])
    assert len(used) == len(set(used)) >= 1, used


@pytest.mark.parametrize("task_name", list(TASKS))
def test_inputs_outputs_and_dynamic_axes(task_name, onnx_artifact):
    """int64 input_ids, attention_mask, token_type_ids with symbolic batch (choices) and sequence;
    float outputs named as the task says; the manifest agrees."""
    task = TASKS[task_name]
    model, manifest = _load(onnx_artifact(task_name))
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert list(inputs) == list(INPUT_NAMES)
    for t in inputs.values():
        assert t.elem_type == TensorProto.INT64
        assert [d.dim_param for d in t.shape.dim] == list(task.input_axes)
    outputs = {o.name: o.type.tensor_type for o in model.graph.output}
    assert list(outputs) == list(task.outputs)
    for name, t in outputs.items():
        assert t.elem_type == TensorProto.FLOAT
        axes = task.output_axes(name)
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        assert len(dims) == len(axes)
        for axis, dim in zip(axes, dims):
            if axis in ("batch", "sequence", "choices"):
                assert dim == axis, (name, dims)
            else:
                assert isinstance(dim, int) and dim > 0, (name, dims)
    assert {n: (s.dtype, list(s.axes)) for n, s in manifest.inputs.items()} \
        == {n: ("int64", list(task.input_axes)) for n in INPUT_NAMES}
    assert list(manifest.outputs) == list(task.outputs)
    assert manifest.dims.sequence == (1, EXPORT_TINY["max_position_embeddings"])
    assert (manifest.dims.choices is not None) == (task.head.name == "multiple-choice")


@pytest.mark.parametrize("batch, choices, seq", [(2, 2, 5), (1, 5, 9), (3, 1, 3)])
def test_multiple_choice_number_of_choices_is_dynamic(batch, choices, seq, onnx_artifact):
    """The swag file was traced with 4 choices; it must take any count, as the reference does."""
    folder = onnx_artifact("swag")
    model, manifest = _load(folder)
    task = TASKS["swag"]
    reference = rebuild_reference(folder, manifest, task)
    rng = np.random.default_rng(batch * 100 + choices * 10 + seq)
    ids = rng.integers(1, EXPORT_TINY["vocab_size"], (batch, choices, seq))
    mask = np.ones_like(ids)
    mask[..., seq - 1:] = 0 if seq > 1 else 1
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    with torch.no_grad():
        (expected,) = reference_outputs(reference, task, feeds)
    (got,) = OnnxRunner(folder / "model.onnx").run(feeds)
    assert got.shape == (batch, choices)
    result = compare(task, "logits", expected, got, mask)
    assert result.passed, result


@pytest.mark.parametrize("task_name", sorted(set(HEAD_TASKS.values())))
def test_local_checkpoint_export(task_name, onnx_artifact, tiny_checkpoint):
    """From a save_pretrained folder: the manifest names the checkpoint and its weights' hash,
    the tokenizer is copied, the sweep included real sentences, every file is hashed."""
    folder = onnx_artifact(task_name, local=True)
    checkpoint = tiny_checkpoint(task_name)
    manifest = read_manifest(folder)
    task = TASKS[task_name]
    assert manifest.task == task_name and manifest.head == task.head.name
    assert manifest.source.random_init is False
    assert manifest.source.checkpoint == str(checkpoint)
    assert manifest.source.fingerprint == checkpoint_fingerprint(checkpoint)
    labelled = task.head.name in ("sequence-classification", "token-classification")
    assert list(manifest.labels) == (list(task.labels) if labelled else [])
    for name in ("model.onnx", "config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        assert manifest.files[name].sha256 == sha256_file(folder / name), name
    assert set(manifest.files) == {p.name for p in folder.iterdir()} - {"manifest.json"}
    for value in (manifest.sbexport_version, manifest.torch_version, manifest.details.onnx_version,
                  manifest.details.opset, manifest.reference_sha256):
        assert value
    parity = manifest.parity
    assert parity.passed and (parity.atol, parity.rtol) == (task.atol, task.rtol)
    # 2 batches x 3 lengths of random ids, and 2 batches of sentences through the tokenizer.
    assert parity.cases == 8
    for out in parity.outputs.values():
        assert out.max_abs <= out.bound and out.fraction <= 1.0
    assert not list(folder.parent.glob(f".{folder.name}.*")), "staging folder left behind"


def test_random_init_skips_a_tokenizer_too_big_for_the_model(onnx_artifact):
    """The bundled bert-base vocabulary (30522 tokens) would give ids a 99-row model cannot embed."""
    folder = onnx_artifact("mnli")
    assert not (folder / "tokenizer.json").exists() and not (folder / "vocab.txt").exists()
    assert read_manifest(folder).source.random_init is True


@pytest.mark.parametrize("task_name", ["mnli", "fill-mask"])
def test_exact_gelu_is_one_node(task_name, onnx_artifact):
    """Each exact GELU (one per layer, plus the masked-LM transform's) is one com.microsoft Gelu
    node, the exact erf kernel: nothing of the exporter's five-node form is left (no Erf), and no
    tanh approximation (FastGelu) took its place. The artifact passed its parity sweep."""
    folder = onnx_artifact(task_name)
    model, manifest = _load(folder)
    config = rebuild_reference(folder, manifest, TASKS[task_name]).config
    gelus = [n for n in model.graph.node if n.op_type == "Gelu"]
    expected = config.num_hidden_layers + (task_name == "fill-mask")
    assert len(gelus) == expected and {n.domain for n in gelus} == {"com.microsoft"}, Counter(
        (n.domain, n.op_type) for n in model.graph.node)
    assert not {"Erf", "FastGelu", "BiasGelu"} & {n.op_type for n in model.graph.node}
    assert manifest.parity.passed


def test_opset_20_writes_the_standard_gelu(tmp_path):
    """From opset 20, where ONNX defines Gelu, each exact GELU is one ai.onnx Gelu (approximate
    "none", the default) and the file imports no com.microsoft domain: it runs on any runtime
    with opset 20. The export's parity sweep (against the reference, at the fp32 bound) passed."""
    from conftest import tiny_random_config

    from sbexport.export import FORMATS, export_artifact
    from sbexport.source import resolve_source

    task = TASKS["mnli"]
    out = tmp_path / "mnli-opset20"
    export_artifact("onnx", task, resolve_source(task, random_init=True), out,
                    FORMATS["onnx"].Options(opset=20), config=tiny_random_config(task))
    model, manifest = _load(out)
    gelus = [n for n in model.graph.node if n.op_type == "Gelu"]
    assert len(gelus) == tiny_random_config(task).num_hidden_layers
    approximate = {onnx.helper.get_attribute_value(a) for n in gelus for a in n.attribute if a.name == "approximate"}
    assert {n.domain for n in gelus} == {""} and approximate <= {b"none"}, (approximate, gelus[0])
    assert {o.domain for o in model.opset_import} == {""} and manifest.details.opset == 20
    assert not {"Erf", "FastGelu"} & {n.op_type for n in model.graph.node}
    assert manifest.parity.passed


def test_graph_check_counts_the_projections(onnx_artifact):
    from sbexport.errors import ExportError
    from sbexport.export.onnx import graph_summary

    model, _ = _load(onnx_artifact("mnli"))
    assert graph_summary(model, 12).conv_groups == {"2": 2, "4": 2, "8": 2, "1": 2, "16": 2, "32": 2}
    with pytest.raises(ExportError, match="has 12 Conv nodes where the model has 13"):
        graph_summary(model, 13)


def test_bert_baseline_exports(tmp_path):
    """`sbexport onnx --arch bert` always failed: the exporter demanded Conv nodes of every model."""
    from conftest import TINY, tiny_random_config

    from sbexport.export import export_artifact
    from sbexport.source import resolve_source

    task = TASKS["sst2"]
    out = export_artifact("onnx", task, resolve_source(task, random_init=True, arch="bert"), tmp_path / "bert",
                          config=tiny_random_config(task, "bert"), log=lambda _: None)
    model, manifest = _load(out)
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["Conv"] == 0 and ops["MatMul"] + ops["Gemm"] >= 6 * TINY["num_hidden_layers"]
    assert manifest.arch == "bert" and manifest.parity.passed
