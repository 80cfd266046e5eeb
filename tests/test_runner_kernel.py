"""sbexport's kernel in the ExecuTorch runner (issue 10): `executorch --grouped-conv runner-kernel`
leaves the grouped projections outside the XNNPACK delegate as native convolutions, and the
native runner (android_demo, which links kernels/executorch in) runs them with
sbk_grouped_pointwise_f32 instead of ExecuTorch's own convolution.

Read back from the .pte: every grouped projection is an aten::convolution instruction outside
the delegate, with its group count, and only the ungrouped ones are inside. Run by the host
runner and the arm64 runner under qemu: PyTorch's outputs over verify's sweep, and the runner's
--kernel-stats counting every grouped convolution as run by sbexport's kernel. A program of
convolutions the kernel must not run (a wider kernel, stride, padding, transposed, float64)
gives PyTorch's outputs through ExecuTorch's own kernel, counted as handed on.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import test_runner_native as native
import torch
from test_cli import assert_one_error_line, run_main
from test_export_executorch import expected_convs, read_pte

from sbexport.artifact import read_manifest
from sbexport.targets.runner import qemu_runner
from sbexport.tasks import TASKS
from sbexport.verify import rebuild_reference

# The runners, built as test_runner_native builds them (its fixtures, shared), and its bound.
host_runner, arm64_bundle = native.host_runner, native.arm64_bundle
parity, RUNNER_ATOL = native.parity, native.RUNNER_ATOL

TASK = "features"   # every position of the hidden states is an output: an error anywhere shows
CONV_OP = "aten::convolution"


@pytest.fixture(scope="session")
def kernel_artifact(et_artifact) -> Path:
    return et_artifact(TASK, grouped_conv="runner-kernel")


def grouped_count(config) -> int:
    return sum(g > 1 for g, _, _ in expected_convs(config))


def outside_convolutions(pte: Path) -> list[int]:
    """The group count of every convolution the program runs outside a delegate, in order."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    plan = deserialize_pte_binary(pte.read_bytes()).program.execution_plan[0]
    groups = []
    for chain in plan.chains:
        for instruction in chain.instructions:
            call = instruction.instr_args
            if type(call).__name__ == "KernelCall" and plan.operators[call.op_index].name == CONV_OP:
                groups.append(plan.values[call.args[8]].val.int_val)   # args[8]: groups
    return groups


def kernel_stats(runner, pte: Path, *args) -> tuple[dict, dict]:
    """(the runner's report, its "kernels" entry for aten::convolution.out) of one first run
    and one timed run with --kernel-stats."""
    proc = runner.run("--model", pte, *args, "--warmup", 0, "--runs", 1, "--kernel-stats")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    report = json.loads(proc.stdout)
    assert report["kernels"]["registered"] is True
    return report, report["kernels"]["ops"]["aten::convolution.out"]


# --------------------------------------------------------------------------------------
# The exported file
# --------------------------------------------------------------------------------------

def test_opt_in_program_keeps_every_grouped_projection_native_outside_the_delegate(kernel_artifact):
    manifest = read_manifest(kernel_artifact)
    config = rebuild_reference(kernel_artifact, manifest, TASKS[TASK]).config
    operators, delegates, nodes = read_pte(kernel_artifact / "model.pte")
    assert CONV_OP in operators and set(delegates) == {"XnnpackBackend"}
    # Graph order: layer by layer, the projections with groups > 1 (EXPORT_GROUPS gives each its own).
    assert outside_convolutions(kernel_artifact / "model.pte") == [g for g, _, _ in expected_convs(config) if g > 1]
    inside = [n["xnode_union"] for n in nodes if "Conv" in n["xnode_union_type"]]
    assert [(c["groups"], c["group_input_channels"], c["group_output_channels"]) for c in inside] == \
        [conv for conv in expected_convs(config) if conv[0] == 1]
    graph = manifest.details.graph
    assert (graph.convolutions_outside_delegate, graph.convolutions_in_delegate) == \
        (grouped_count(config), 6 * config.num_hidden_layers - grouped_count(config))
    assert manifest.details.grouped_conv == "runner-kernel" and manifest.parity.passed
    assert json.loads((kernel_artifact / "manifest.json").read_text())["details"]["grouped_conv"] == "runner-kernel"
    # A default program's manifest is as it was before the option: no grouped_conv at all.
    default = replace(manifest, details=replace(manifest.details, grouped_conv=None))
    assert "grouped_conv" not in default.to_json()["details"]


def test_info_shows_the_opt_in(kernel_artifact, monkeypatch, capsys):
    code, out, _ = run_main(monkeypatch, capsys, "info", kernel_artifact)
    assert code == 0
    config = rebuild_reference(kernel_artifact, read_manifest(kernel_artifact), TASKS[TASK]).config
    assert f"{grouped_count(config)} outside (grouped, for the runner's kernel)" in out


@pytest.mark.parametrize("form", ["runner-kernel", "per-group"])
@pytest.mark.parametrize("args, match", [
    (["--backend", "portable"], "--grouped-conv {form} is a form for the XNNPACK delegate; the portable backend"),
    (["--quantize", "int8"], "--grouped-conv {form} is for fp32 programs"),
])
def test_opt_in_refuses_what_it_cannot_mean(monkeypatch, capsys, tmp_path, form, args, match):
    """Both opt-ins of --grouped-conv (this one and export/layout.py's per-group form)."""
    out = tmp_path / "out"
    code, stdout, err = run_main(monkeypatch, capsys, "executorch", "--task", "mnli", "--random-init",
                                 "--grouped-conv", form, *args, "-o", out)
    assert_one_error_line(code, stdout, err, match.format(form=form))
    assert not out.exists()


# --------------------------------------------------------------------------------------
# The runner: parity, and which kernel ran
# --------------------------------------------------------------------------------------

# Parity is held to RUNNER_ATOL (1e-5), test_runner_native's bound for every runner. Worst
# |runner - PyTorch| measured over verify's sweep of the tiny features program (Intel kind, the
# kernel's scalar path): host last_hidden_state 9.5e-7, pooler_output 2.5e-7; qemu cortex-a53
# 7.2e-7 and 3.6e-7; the convolutions program at most 2.4e-7. A wrong group offset or a lost
# bias is off by 1e-1 or more on these perturbed weights.

def test_host_runner_runs_grouped_convolutions_with_sbexports_kernel(host_runner, kernel_artifact, tmp_path):
    worst = parity(host_runner, kernel_artifact, tmp_path / "sweep")
    print(f"host runner-kernel {TASK}: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    assert max(worst.values()) <= RUNNER_ATOL, worst
    config = rebuild_reference(kernel_artifact, read_manifest(kernel_artifact), TASKS[TASK]).config
    pte = kernel_artifact / "model.pte"
    one, stats = kernel_stats(host_runner, pte, "--seq-len", 40, "--threads", 1)
    assert stats["sbexport"]["calls"] == 2 * grouped_count(config), stats   # two runs: first and timed
    assert stats["fallback"]["calls"] == 0, stats
    # On two threads (the kernel's blocks on ExecuTorch's pool) the same bits: a block is one task.
    two, _ = kernel_stats(host_runner, pte, "--seq-len", 40, "--threads", 2)
    assert two["threads"] == 2
    assert [o["checksum"] for o in two["outputs"]] == [o["checksum"] for o in one["outputs"]]


def test_arm64_runner_runs_grouped_convolutions_with_sbexports_kernel(arm64_bundle, kernel_artifact, tmp_path):
    runner = qemu_runner(arm64_bundle, "cortex-a53")
    worst = parity(runner, kernel_artifact, tmp_path / "sweep")
    print(f"qemu cortex-a53 runner-kernel {TASK}: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    assert max(worst.values()) <= RUNNER_ATOL, worst
    config = rebuild_reference(kernel_artifact, read_manifest(kernel_artifact), TASKS[TASK]).config
    report, stats = kernel_stats(runner, kernel_artifact / "model.pte", "--seq-len", 16, "--threads", 1)
    assert report["arch"] == "aarch64" and report["kernels"]["isa"] == "neon"
    assert (stats["sbexport"]["calls"], stats["fallback"]["calls"]) == (2 * grouped_count(config), 0), stats


class Convolutions(torch.nn.Module):
    """Convolutions the kernel runs (NATIVE) and those it must hand to ExecuTorch's own kernel
    (HANDED_ON), on x [2, 8, S] (a batch of 2: the sbexport programs' fixed batch is 1); one
    output each."""

    NATIVE = ("grouped", "no_bias", "dense", "conv2d_h1", "conv2d_h2")
    HANDED_ON = ("wide", "strided", "padded", "transposed")

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.grouped = nn.Conv1d(8, 16, 1, groups=4)
        self.no_bias = nn.Conv1d(8, 8, 1, groups=2, bias=False)   # the kernel key without a bias
        self.dense = nn.Conv1d(8, 8, 1)
        self.conv2d = nn.Conv2d(8, 16, 1, groups=4)
        self.wide = nn.Conv1d(8, 8, 3, groups=2)
        self.strided = nn.Conv1d(8, 8, 1, stride=2, groups=2)
        self.padded = nn.Conv1d(8, 8, 1, padding=1, groups=2)
        self.transposed = nn.ConvTranspose1d(8, 8, 1, groups=2)
        self.float64 = nn.Conv1d(8, 8, 1, groups=2).double()   # another kernel key: never reaches the kernel

    def forward(self, x):
        h2 = torch.stack([x, -x], 2)                                # [2, 8, 2, S]
        return (self.grouped(x), self.no_bias(x), self.dense(x), self.conv2d(x.unsqueeze(2)), self.conv2d(h2),
                self.wide(x), self.strided(x), self.padded(x), self.transposed(x), self.float64(x.double()).float())


def test_other_convolutions_go_to_executorchs_own_kernel(host_runner, tmp_path):
    from executorch.exir import to_edge

    torch.manual_seed(0)
    module = Convolutions().eval()
    x = torch.randn(2, 8, 12)
    pte = tmp_path / "convs.pte"
    pte.write_bytes(to_edge(torch.export.export(module, (x,))).to_executorch().buffer)   # no delegate
    assert len(outside_convolutions(pte)) == 10
    with torch.no_grad():
        expected = [t.numpy() for t in module(x)]
    report, got = run_case_float(host_runner, pte, x.numpy(), tmp_path / "case")
    stats = report["kernels"]["ops"]["aten::convolution.out"]
    # Two runs (first and timed); the float64 convolution is the fallback kernel's by its key.
    assert (stats["sbexport"]["calls"], stats["fallback"]["calls"]) == \
        (2 * len(Convolutions.NATIVE), 2 * len(Convolutions.HANDED_ON)), stats
    errors = [float(np.abs(g - e).max()) for g, e in zip(got, expected)]
    print("convolutions: " + ", ".join(f"{e:.1e}" for e in errors))
    assert max(errors) <= RUNNER_ATOL, errors


def run_case_float(runner, pte: Path, x: np.ndarray, folder: Path) -> tuple[dict, list[np.ndarray]]:
    """One run of a program taking one float32 input, with --kernel-stats: (report, outputs)."""
    folder.mkdir()
    np.save(folder / "x.npy", x)
    proc = runner.run("--model", pte, "--input", folder / "x.npy", "--warmup", 0, "--runs", 1, "--threads", 1,
                      "--output-dir", folder / "out", "--kernel-stats")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    report = json.loads(proc.stdout)
    return report, [np.load(folder / "out" / f"output_{i}.npy") for i in range(len(report["outputs"]))]
