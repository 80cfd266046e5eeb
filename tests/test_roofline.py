"""`sbexport roofline`: the shape list and FLOP formula against independent counts, the command
end to end (--quick) against its pinned schema, the check that refuses a wrong kernel, the hook
a kernel plugs into, and the refusals. No timing is asserted as speed: only finite and > 0."""

from __future__ import annotations

import copy
import json
import math
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import EXPORT_TINY

from sbexport import cli
from sbexport.bench import sgemm
from sbexport.bench.sgemm import LABELS, libraries_text
from sbexport.config import SqueezeBertConfig
from sbexport.errors import SbexportError
from sbexport.roofline import RUNTIMES, json_schema, projections, quick_config, run, run_roofline, table
from sbexport.roofline.runtimes import ConvWeights
from sbexport.roofline.shapes import Projection

# The four shapes issue 10 names: q/k/v 768->768 in 4 groups, post-attention 768->768 dense,
# intermediate 768->3072 and output 3072->768 in 4 groups.
PUBLIC_SHAPES = {"768x768/g4", "768x768/g1", "768x3072/g4", "3072x768/g4"}
QUICK_SEQS = (8, 32)


# -- the shape list and the FLOP formula ------------------------------------------------------


def _model_projections(config: SqueezeBertConfig) -> dict[tuple[int, int, int], list[str]]:
    """(cin, cout, groups) -> projection names, read from the Conv1d modules of the model's
    first layer (built on the meta device): independent of roofline.shapes' channel table."""
    from sbexport.modeling import SqueezeBertModel

    with torch.device("meta"):
        layer = SqueezeBertModel(config).encoder.layers[0]
    found: dict[tuple[int, int, int], list[str]] = {}
    for path, module in layer.named_modules():
        if isinstance(module, torch.nn.Conv1d):
            parts = path.split(".")
            name = parts[0] if parts[-1] == "conv1d" else parts[-1]    # post_attention.conv1d, attention.query
            found.setdefault((module.in_channels, module.out_channels, module.groups), []).append(name)
    return {k: sorted(v) for k, v in found.items()}


@pytest.mark.parametrize("config", [SqueezeBertConfig(), SqueezeBertConfig(**EXPORT_TINY)],
                         ids=["public", "every-group-distinct"])
def test_shapes_are_the_models_convolutions(config):
    """Each distinct (cin, cout, groups) of a layer's convolutions, with the projections that
    have it; the tiny config gives every projection its own group count, so a group count or a
    channel count attached to the wrong projection shows."""
    shapes = projections(config)
    assert {(s.cin, s.cout, s.groups): sorted(s.names) for s in shapes} == _model_projections(config)
    assert sum(len(s.names) for s in shapes) == 6


def test_public_shapes_are_the_four_of_the_issue():
    assert {s.key for s in projections()} == PUBLIC_SHAPES
    assert {s.key: s.names for s in projections()}["768x768/g4"] == ("query", "key", "value")


@pytest.mark.parametrize("seq", [1, 8, 77, 512])
def test_flops_match_torchs_count_of_each_convolution(seq):
    """torch's FlopCounterMode counts a real conv1d of each shape: the formula must agree."""
    from torch.utils.flop_counter import FlopCounterMode

    for shape in projections(SqueezeBertConfig()) + projections(SqueezeBertConfig(**EXPORT_TINY)):
        counter = FlopCounterMode(display=False)
        with torch.device("meta"), counter:
            torch.nn.functional.conv1d(torch.empty(1, shape.cin, seq),
                                       torch.empty(shape.cout, shape.cin // shape.groups, 1), groups=shape.groups)
        assert shape.flops(seq) == counter.get_total_flops(), shape.key


def test_flops_of_a_layer_are_the_papers():
    """The paper's per-layer count at sequence 128 (REFERENCE.md): 113M for Q/K/V, 151M for the
    post-attention projection, 302M for the feed-forward pair; and literal closed forms."""
    by_key = {s.key: s for s in projections()}
    assert 3 * by_key["768x768/g4"].flops(128) == 113_246_208          # 3 x 2 x 768 x 192 x 128
    assert by_key["768x768/g1"].flops(128) == 150_994_944              # 2 x 768 x 768 x 128
    assert by_key["768x3072/g4"].flops(128) + by_key["3072x768/g4"].flops(128) == 301_989_888
    # least traffic: 4 bytes x (8 x (768 + 768) inputs and outputs + 768 x 192 weights + 768 biases)
    assert by_key["768x768/g4"].bytes_moved(8) == 642_048
    assert by_key["768x768/g4"].intensity(8) == pytest.approx(2_359_296 / 642_048)


# -- the command end to end ------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`sbexport roofline --quick` through the CLI, JSON and plot written; the thread pools
    before and after it."""
    from executorch.extension.pybindings import portable_lib

    out = tmp_path_factory.mktemp("roofline")
    json_path, plot_path = out / "roofline.json", out / "roofline.png"
    pools_before = torch.get_num_threads(), portable_lib._threadpool_get_thread_count()
    argv, code = sys.argv, 0
    sys.argv = ["sbexport", "roofline", "--quick", "--threads", "1", "--json", str(json_path),
                "--plot", str(plot_path)]
    try:
        cli.main()
    except SystemExit as e:     # main exits only on an error
        code = e.code
    finally:
        sys.argv = argv
    pools_after = torch.get_num_threads(), portable_lib._threadpool_get_thread_count()
    return code, json.loads(json_path.read_text()), plot_path, pools_before, pools_after


def _validate(data: dict) -> None:
    import jsonschema

    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(data)


def test_quick_run_conforms_to_the_pinned_schema(quick_run):
    code, data, *_ = quick_run
    assert code == 0
    _validate(data)
    assert data["schema"] == "sbexport.roofline/1"
    assert data["config"]["seq_lens"] == list(QUICK_SEQS) and data["config"]["threads"] == 1
    from importlib.resources import files
    assert json_schema() == json.loads(files("sbexport.roofline").joinpath("schema/roofline-1.json").read_text())


def test_every_shape_runtime_and_length_ran(quick_run):
    data = quick_run[1]
    ran = Counter((r["shape"], r["runtime"], r["seq_len"]) for r in data["rows"])
    assert ran == Counter({(s, rt, q): 1 for s in PUBLIC_SHAPES for rt in ("torch", "onnx", "executorch")
                           for q in QUICK_SEQS})
    assert data["skipped"] == [] and set(data["runtimes"]) == {"torch", "onnx", "executorch"}
    assert {s["shape"] for s in data["shapes"]} == PUBLIC_SHAPES


def test_rows_carry_the_formulas_flops_and_consistent_rates(quick_run):
    """FLOPs, bytes and each rate recomputed from the row's own times and the ceilings."""
    data = quick_run[1]
    roof = next(c for c in data["ceilings"] if c["threads"] == data["config"]["threads"])
    by_key = {(r["shape"], r["runtime"], r["seq_len"]): r for r in data["rows"]}
    for r in data["rows"]:
        assert r["flops"] == 2 * r["cin"] * r["cout"] // r["groups"] * r["seq_len"], r
        assert r["bytes"] == 4 * (r["seq_len"] * (r["cin"] + r["cout"]) + r["cout"] * r["cin"] // r["groups"]
                                  + r["cout"])
        for field in ("median_ms", "min_ms", "gflops", "gflops_best", "pct_of_sgemm", "intensity"):
            assert math.isfinite(r[field]) and r[field] > 0, (field, r)
        # figures are rounded to 5 significant digits: 1e-4 relative covers two roundings
        assert r["gflops"] == pytest.approx(r["flops"] / (r["median_ms"] * 1e6), rel=1e-4)
        assert r["gflops_best"] == pytest.approx(r["flops"] / (r["min_ms"] * 1e6), rel=1e-4)
        assert r["gflops_best"] >= r["gflops"] * (1 - 1e-4)
        assert r["pct_of_sgemm"] == pytest.approx(100 * r["gflops"] / roof["sgemm"]["gflops"], rel=1e-4)
        attainable = min(roof["sgemm"]["gflops"], roof["bandwidth"]["gbytes_per_s"] * r["flops"] / r["bytes"])
        assert r["attainable_gflops"] == pytest.approx(attainable, rel=1e-4)
        if r["groups"] == 1:
            assert r["dense_shape"] is None and r["pct_of_dense"] is None
        else:
            assert r["dense_shape"] == "768x768/g1"
            dense = by_key["768x768/g1", r["runtime"], r["seq_len"]]
            assert r["pct_of_dense"] == pytest.approx(100 * r["gflops"] / dense["gflops"], rel=1e-4)


def test_executorch_rows_carry_the_convolution_events_own_time(quick_run):
    """ExecuTorch's rows (and only theirs) carry XNNPACK's convolution event from ETDump: above 0
    and below the whole Method::execute of the same calls (it is one event inside it, beside the
    transposes and the delegate call's own work, several us per call; the event's 1 us
    resolution cannot close that gap), and its rate and share recomputed from its own times."""
    data = quick_run[1]
    by_key = {(r["shape"], r["runtime"], r["seq_len"]): r for r in data["rows"]}
    for r in data["rows"]:
        assert ("op_median_ms" in r) == (r["runtime"] == "executorch"), r
        if r["runtime"] != "executorch":
            continue
        assert 0 < r["op_median_ms"] < r["op_call_median_ms"], r
        assert r["op_gflops"] == pytest.approx(r["flops"] / (r["op_median_ms"] * 1e6), rel=1e-4)
        if r["groups"] == 1:
            assert r["pct_of_dense_op"] is None
        else:
            dense = by_key["768x768/g1", "executorch", r["seq_len"]]
            assert r["pct_of_dense_op"] == pytest.approx(100 * r["op_gflops"] / dense["op_gflops"], rel=1e-4)


def test_table_shows_executorchs_op_based_share(quick_run):
    """The share table gives ExecuTorch's operator-based share (row "executorch*"), not the whole
    call's, and the legend says what it is; the rate table shows both rates."""
    data = quick_run[1]
    text = table(data)
    rates, _, shares = text.partition("% of the dense shape's GFLOP/s")
    by_key = {(r["shape"], r["runtime"], r["seq_len"]): r for r in data["rows"]}
    for shape in ("768x768/g4", "768x3072/g4", "3072x768/g4"):
        cells = "".join(f"{by_key[shape, 'executorch', q]['pct_of_dense_op']:.0f}%".rjust(10) for q in QUICK_SEQS)
        assert f"{shape:<14}{'executorch*':<12}{cells}" in shares.splitlines()
        assert not any(line.startswith(f"{shape:<14}executorch ") for line in shares.splitlines())
        op_rates = "".join(f"{by_key[shape, 'executorch', q]['op_gflops']:.1f}".rjust(10) for q in QUICK_SEQS)
        assert f"{shape:<14}{'executorch*':<12}{op_rates}" in rates.splitlines()
    assert "executorch*: XNNPACK's convolution event alone (ETDump), without the transposes" in text


def test_ceilings_on_one_core_and_all(quick_run):
    data = quick_run[1]
    from sbexport.bench.machine import available_cores
    assert [c["threads"] for c in data["ceilings"]] == sorted({1, available_cores()})
    for c in data["ceilings"]:
        assert c["sgemm"]["gflops"] > 0 and c["bandwidth"]["gbytes_per_s"] > 0
        assert c["sgemm"]["threads"] == c["bandwidth"]["threads"] == c["threads"]
        # measured before and after the sweep, the better kept
        assert c["sgemm"]["gflops"] == max(c["sgemm"]["start_gflops"], c["sgemm"]["end_gflops"])
        # the fastest library's rate, every library's kept (tests/test_sgemm.py: how it is chosen)
        assert c["sgemm"]["gflops"] == c["sgemm"]["libraries"][c["sgemm"]["library"]]["gflops"]
        # the terminal line says which library set it
        assert (f"sgemm {c['sgemm']['gflops']:.1f} GFLOP/s (set by {LABELS[c['sgemm']['library']]}; "
                f"{libraries_text(c['sgemm'])})," in table(data))
        assert c["bandwidth"]["gbytes_per_s"] == max(c["bandwidth"]["start_gbytes_per_s"],
                                                     c["bandwidth"]["end_gbytes_per_s"])


def test_outputs_were_checked_and_pools_restored(quick_run):
    _, data, plot_path, before, after = quick_run
    assert all(0 <= r["max_abs_error"] < 1e-3 for r in data["rows"])
    assert before == after
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("breakage", ["row key renamed", "row key dropped", "negative time", "bad shape name",
                                      "top key dropped", "schema version", "ceiling dropped", "op time alone"])
def test_pinned_schema_refuses_a_changed_output(quick_run, breakage):
    import jsonschema

    data = copy.deepcopy(quick_run[1])
    row = data["rows"][0]
    if breakage == "row key renamed":
        row["gflops_median"] = row.pop("gflops")
    elif breakage == "row key dropped":
        del row["flops"]
    elif breakage == "negative time":
        row["min_ms"] = -row["min_ms"]
    elif breakage == "bad shape name":
        row["shape"] = "768 to 768"
    elif breakage == "top key dropped":
        del data["ceilings"]
    elif breakage == "ceiling dropped":
        del data["ceilings"][0]["bandwidth"]
    elif breakage == "op time alone":    # an op time without the whole call's beside it
        del next(r for r in data["rows"] if "op_median_ms" in r)["op_call_median_ms"]
    else:
        data["schema"] = "sbexport.roofline/2"
    with pytest.raises(jsonschema.ValidationError):
        _validate(data)


# -- the kernel hook and the output check ---------------------------------------------------


class NumpyKernel:
    """A stand-in for a kernel of kernels/: the grouped 1x1 convolution as float32 matmuls,
    with a switch to plant a bug."""

    name, label = "numpy-kernel", "numpy grouped matmul"

    def __init__(self, bug: str | None = None, missing: str | None = None):
        self.bug, self.missing = bug, missing

    def unavailable(self):
        return self.missing

    def prepare(self, conv: ConvWeights, max_seq, folder, threads):
        g = conv.shape.groups
        w = conv.weight[:, :, 0].reshape(g, conv.shape.cout // g, -1)            # [g, cout/g, cin/g]
        bias = conv.bias if self.bug != "no bias" else np.zeros_like(conv.bias)

        def run(x):
            xs = x[0].reshape(g, w.shape[2], -1)                                 # [g, cin/g, seq]
            if self.bug == "groups swapped":
                xs = xs[::-1]
            y = np.matmul(w, xs).reshape(conv.shape.cout, -1) + bias[:, None]
            if self.bug == "nan":
                y[0, 0] = np.nan
            return y[None, :, :-1] if self.bug == "short" else y[None]
        return run


def test_a_kernel_plugs_in_and_is_timed():
    table = {**RUNTIMES, "numpy-kernel": NumpyKernel()}
    result = run_roofline(quick_config(runtimes=("numpy-kernel",), seq_lens=(8,), sgemm_size=64, bandwidth_mb=1),
                          runtimes=table, progress=False)
    _validate(result)
    assert {(r["shape"], r["runtime"]) for r in result["rows"]} == {(s, "numpy-kernel") for s in PUBLIC_SHAPES}
    assert result["runtimes"] == {"numpy-kernel": "numpy grouped matmul"}


@pytest.mark.parametrize("bug, message", [("no bias", "computes the 768x768/g4 convolution wrongly"),
                                          ("groups swapped", "computes the 768x768/g4 convolution wrongly"),
                                          ("nan", "computes the 768x768/g4 convolution wrongly"),
                                          ("short", "returned shape \\[1, 768, 7\\]")])
def test_a_wrong_kernel_is_refused_before_timing(bug, message):
    table = {**RUNTIMES, "numpy-kernel": NumpyKernel(bug)}
    with pytest.raises(SbexportError, match=message):
        run_roofline(quick_config(runtimes=("numpy-kernel",), seq_lens=(8,), sgemm_size=64, bandwidth_mb=1),
                     runtimes=table, progress=False)


def test_per_group_runtime_runs_the_projection_as_one_dense_convolution_per_group(tmp_path):
    """executorch-per-group times the projection as `executorch --grouped-conv per-group`
    exports it: a program of `groups` dense convolutions inside the delegate, the grouped
    convolution's outputs (checked as every runtime's are), and an operator time that is the
    groups' events summed, inside the whole call's."""
    from sbexport.roofline.run import check_output

    shape = Projection(cin=64, cout=128, groups=4, names=("intermediate",))   # small: a fast export
    conv = ConvWeights.random(shape, seed=0)
    run = RUNTIMES["executorch-per-group"].prepare(conv, 32, tmp_path, threads=1)
    # Measured 8.9e-7 on Zen 3, the same as the grouped program's; a group in the wrong place
    # or a lost bias is off by O(1) (check_output's own bound: 2e-5 x scale).
    assert check_output("executorch-per-group", conv, run, (2, 32), np.random.default_rng(0)) < 1e-5
    assert run.convolutions == 4
    op, call = run.op_times(np.ones((1, 64, 32), np.float32), warmup=1, repeats=3)
    assert len(op) == len(call) == 3 and all(0 < o < c for o, c in zip(op, call))


def test_an_unavailable_runtime_is_skipped_with_its_reason():
    table = {**RUNTIMES, "numpy-kernel": NumpyKernel(missing="libkernel.so not built")}
    result = run_roofline(quick_config(runtimes=("torch", "numpy-kernel"), seq_lens=(8,), repeats=1,
                                       sgemm_size=64, bandwidth_mb=1), runtimes=table, progress=False)
    assert result["skipped"] == [{"runtime": "numpy-kernel", "reason": "libkernel.so not built"}]
    assert {r["runtime"] for r in result["rows"]} == {"torch"}


def test_runtimes_that_cannot_run_are_said_before_the_work(no_work):
    """Those that can run are measured; those that cannot are named before the first ceiling
    (which no_work turns into an error here), not after minutes of measuring."""
    said = []
    table = {**RUNTIMES, "numpy-kernel": NumpyKernel(missing="libkernel.so not built")}
    with pytest.raises(AssertionError, match="started working"):
        run_roofline(quick_config(runtimes=("torch", "numpy-kernel")), runtimes=table, progress=False, log=said.append)
    assert said == ["skipping numpy-kernel: libkernel.so not built"]


def test_the_plot_is_written_when_the_json_cannot_be(monkeypatch, tmp_path, json_disk_full):
    from sbexport import reportfile

    monkeypatch.setattr(sgemm, "sgemm_ceiling", lambda threads, size, folder: {         # seconds saved
        "gflops": 1.0, "size": size, "repeats": 1, "threads": threads, "best_ms": 1.0, "cpu_wait_pct": 0, "op": "x"})
    table = {**RUNTIMES, "numpy-kernel": NumpyKernel()}
    with pytest.raises(reportfile.ReportsNotWritten) as raised:
        run_roofline(quick_config(runtimes=("numpy-kernel",), seq_lens=(8,), repeats=1, sgemm_size=64, bandwidth_mb=1),
                     runtimes=table, json_path=str(tmp_path / "r.json"), plot_path=str(tmp_path / "r.png"),
                     progress=False)
    assert raised.value.failures == [f"cannot write {tmp_path / 'r.json'}: No space left on device"]
    assert raised.value.written == [str(tmp_path / "r.png")] and raised.value.result["rows"]
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG" and not (tmp_path / "r.json").exists()


def test_measurements_are_printed_when_a_report_cannot_be_written(monkeypatch, capsys, tmp_path):
    """As bench's: the table and the reports written, then one error line per failure, exit 1."""
    import sbexport.roofline
    from sbexport.reportfile import ReportsNotWritten

    failures = [f"cannot write {tmp_path}/r.json: No space left on device"]

    def measured(config, **kwargs):
        raise ReportsNotWritten({"rows": []}, [str(tmp_path / "r.png")], failures)
    monkeypatch.setattr(sbexport.roofline, "run_roofline", measured)
    monkeypatch.setattr(sbexport.roofline, "table", lambda result: "TABLE")
    monkeypatch.setattr(sys, "argv", ["sbexport", "roofline", "--quick", "--json", str(tmp_path / "r.json"),
                                      "--plot", str(tmp_path / "r.png")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out, err = capsys.readouterr()
    assert exit_info.value.code == 1
    assert out == f"TABLE\nwrote {tmp_path / 'r.png'}\n" and err == f"error: {failures[0]}\n"


def test_reference_is_the_grouped_convolution():
    """The float64 reference every runtime is checked against, against torch's conv1d."""
    for shape in projections(SqueezeBertConfig(**EXPORT_TINY)):
        conv = ConvWeights.random(shape, seed=3)
        x = np.random.default_rng(4).standard_normal((1, shape.cin, 5), dtype=np.float32)
        expected = torch.nn.functional.conv1d(torch.from_numpy(x).double(), torch.from_numpy(conv.weight).double(),
                                              torch.from_numpy(conv.bias).double(), groups=shape.groups)
        np.testing.assert_allclose(conv.reference(x), expected.numpy(), rtol=1e-12, atol=1e-12)


# -- refusals: each before any work, one clear line -------------------------------------------


@pytest.fixture
def no_work(monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError("the roofline started working before refusing")
    monkeypatch.setattr(run, "ceilings", started)


@pytest.mark.parametrize("changes, message", [
    (dict(runtimes=("tflite",)), "unknown runtime 'tflite'"),
    (dict(runtimes=()), "no runtime given"),
    (dict(seq_lens=(8, 0)), "--seq-lens must be positive integers"),
    (dict(seq_lens=()), "--seq-lens must be positive integers"),
    (dict(repeats=0), "--repeats must be at least 1"),
    (dict(seq_lens=(8, 32, 8)), "--seq-lens names 8 twice"),
    (dict(runtimes=("torch", "onnx", "torch")), "--runtimes names torch twice"),
])
def test_bad_input_refused(no_work, changes, message):
    with pytest.raises(SbexportError, match=message):
        run_roofline(quick_config(**changes), progress=False)


def test_unwritable_outputs_refused_before_the_run(no_work, tmp_path):
    with pytest.raises(SbexportError, match="folder .* does not exist"):
        run_roofline(quick_config(), json_path=str(tmp_path / "missing" / "r.json"), progress=False)
    with pytest.raises(SbexportError, match="it is a folder"):
        run_roofline(quick_config(), plot_path=str(tmp_path), progress=False)


@pytest.mark.parametrize("args, message", [
    (["--runtimes", "onnx,tflite"], "error: unknown runtime 'tflite'"),
    (["--seq-lens", "8,abc"], "error: --seq-lens: expected comma-separated integers"),
    (["--repeats", "0"], "error: --repeats must be at least 1"),
    (["--json", "/nonexistent/dir/r.json"], "error: cannot write /nonexistent/dir/r.json"),
    (["--seq-lens", "8,8"], "error: --seq-lens names 8 twice"),
    (["--runtimes", "onnx,onnx"], "error: --runtimes names onnx twice"),
    (["--json", "TMP/r.json", "--plot", "TMP/./r.json"], "error: --json and --plot name the same file"),
    (["--runtimes", "kernels"], "error: none of the runtimes asked for can run here (kernels: the native kernels "
                                "library is not built: no /nonexistent/lib.so"),
])
def test_cli_refuses_with_one_line(no_work, monkeypatch, capsys, tmp_path, args, message):
    monkeypatch.setenv("SBEXPORT_KERNELS_LIB", "/nonexistent/lib.so")
    args = [a.replace("TMP", str(tmp_path)) for a in args]
    monkeypatch.setattr(sys, "argv", ["sbexport", "roofline", "--quick", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err


# -- the convolution event picked out of ETDump ------------------------------------------------


def _event(name: str, times: list[float], delegated: bool = True):
    """An Inspector event as etdump reads it: name, is_delegated_op, perf_data.raw (ms per call)."""
    from types import SimpleNamespace

    return SimpleNamespace(name=name, is_delegated_op=delegated, perf_data=SimpleNamespace(raw=times))


def _one_conv_events(conv_name: str) -> list:
    """The events of one call pair of the one-convolution program (the order ETDump gives them):
    the layout changes are each as long as the convolution or longer, so a wrong pick shows."""
    return [_event("Static Reshape (NC) #1", [0.001, 0.002, 0.003]),
            _event("Transpose (ND, X32) #1", [0.5, 0.6, 0.7]),
            _event(conv_name, [0.4, 0.3, 0.2]),
            _event("Transpose (ND, X32) #2", [0.45, 0.55, 0.65]),
            _event("Static Reshape (NC) #2", [0.001, 0.001, 0.001]),
            _event("DELEGATE_CALL", [1.5, 1.6, 1.7], delegated=False),
            _event("Method::execute", [1.6, 1.7, 1.8], delegated=False)]


@pytest.mark.parametrize("conv_name", ["Convolution (NHWC, F32) IGEMM #1", "Fully Connected (NC, F32) GEMM #1"])
def test_the_convolution_event_is_picked_not_the_layout_changes(monkeypatch, conv_name):
    """convolution_times gives the convolution (grouped: IGEMM; dense: XNNPACK's fully-connected
    GEMM) and the whole execute per call, the first `skip` calls (untimed) left out."""
    from sbexport.bench import etdump

    events = _one_conv_events(conv_name)
    monkeypatch.setattr(etdump, "_execute_events", lambda dump: iter(events))
    assert [e.name for e in etdump.pick_convolutions(events, 1)] == [conv_name]
    assert etdump.convolution_times("unused.etdp", skip=1) == ([0.3, 0.2], [1.7, 1.8])


def test_the_per_group_forms_convolution_events_are_summed_per_call(monkeypatch):
    """With count=g (the per-group form: one dense convolution per group) convolution_times sums
    the g fully-connected events of each call, and leaves the copies and transposes out."""
    from sbexport.bench import etdump

    events = [_event("Transpose (ND, X32) #1", [0.5, 0.6, 0.7]),
              _event("Fully Connected (NC, F32) GEMM #1", [0.4, 0.3, 0.2]),
              _event("Fully Connected (NC, F32) GEMM #2", [0.04, 0.03, 0.02]),
              _event("Copy (NC, X32) #1", [0.45, 0.55, 0.65]),
              _event("Method::execute", [1.6, 1.7, 1.8], delegated=False)]
    monkeypatch.setattr(etdump, "_execute_events", lambda dump: iter(events))
    op, call = etdump.convolution_times("unused.etdp", skip=1, count=2)
    assert op == pytest.approx([0.33, 0.22]) and call == [1.7, 1.8]
    with pytest.raises(SbexportError, match="expected 3 XNNPACK convolution events"):
        etdump.convolution_times("unused.etdp", skip=1, count=3)


def test_per_op_leaves_the_untimed_first_call_out(monkeypatch):
    """per_op's medians are over the timed calls: the untimed first one (cold caches, XNNPACK's
    first-run setup; 10x the others here) would move a median of few runs."""
    from sbexport.bench import etdump

    events = [_event("Convolution (NHWC, F32) IGEMM #1", [4.0, 4.0, 0.4, 0.3]),
              _event("Convolution (NHWC, F32) IGEMM #1", [2.0, 2.0, 0.2, 0.2]),
              _event("native_layer_norm.out", [1.0, 1.0, 0.1, 0.1], delegated=False),
              _event("Method::execute", [9.0, 9.0, 0.9, 0.9], delegated=False)]
    monkeypatch.setattr(etdump, "_execute_events", lambda dump: iter(events))
    total, ops = etdump.per_op("unused.etdp")
    assert total == 0.9
    assert ops == {"Convolution (NHWC, F32) IGEMM #1": [2, pytest.approx(0.6)],
                   "outside:native_layer_norm.out": [1, pytest.approx(0.1)]}


@pytest.mark.parametrize("names", [[], ["Convolution (NHWC, F32) IGEMM #1", "Convolution (NHWC, F32) IGEMM #2"]])
def test_no_or_two_convolution_events_refused(names):
    from sbexport.bench.etdump import pick_convolutions

    events = [_event("Transpose (ND, X32) #1", [0.5])] + [_event(n, [0.3]) for n in names]
    with pytest.raises(SbexportError, match="expected one XNNPACK convolution event"):
        pick_convolutions(events, 1)


# -- thread pools: torch's idle OpenMP workers must not run beside the other runtimes ----------


class RecordingKernel(NumpyKernel):
    """NumpyKernel that logs, per call, its name and torch's pool size at that moment."""

    name = "numpy-kernel"

    def __init__(self, log: list):
        super().__init__()
        self.log = log

    def prepare(self, conv, max_seq, folder, threads):
        run = super().prepare(conv, max_seq, folder, threads)

        def logged(x):
            self.log.append(("kernel", torch.get_num_threads()))
            return run(x)
        return logged


@pytest.mark.parametrize("threads", [1, 2])
def test_torch_runs_alone_on_its_pool_when_threaded(monkeypatch, threads):
    """On more than one thread, the other runtimes are timed with torch's pool at one thread and
    torch's calls in a block of their own after theirs (its OpenMP workers spin after each call:
    measured 69-82% of the wall time waiting for a core with them interleaved, 0-3% without);
    torch's own calls run on the run's threads. On one thread, all interleave call by call."""
    log = []
    conv1d = torch.nn.functional.conv1d

    def logged_conv1d(*args, **kwargs):
        log.append(("torch", torch.get_num_threads()))
        return conv1d(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv1d", logged_conv1d)
    table = {**RUNTIMES, "numpy-kernel": RecordingKernel(log)}
    config = quick_config(runtimes=("torch", "numpy-kernel"), seq_lens=(8,), repeats=3, sgemm_size=64,
                          bandwidth_mb=1, threads=threads)
    run_roofline(config, runtimes=table, progress=False)
    assert {n for name, n in log if name == "kernel"} == {1}
    assert {n for name, n in log if name == "torch"} == {threads}
    rounds = config.warmup + config.repeats
    timed = [name for name, _ in log][-2 * rounds:]          # the last shape's timing at its length
    if threads > 1:
        assert timed == ["kernel"] * rounds + ["torch"] * rounds
    else:   # call by call, the order reversed every other round
        assert timed == [n for i in range(rounds) for n in (("torch", "kernel") if i % 2 == 0 else ("kernel", "torch"))]
