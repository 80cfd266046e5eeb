"""`sbexport bench --quantize int8`: each model's int8 ONNX file is timed beside its fp32 one
in the same run, with the recipe a user of that model would choose, and reported as such. Tiny
random configs (test_bench.TINY_CONFIGS); no timing assertions."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import onnx
import pytest
from test_bench import SEQ_LENS, TINY_CONFIGS, _validate, tiny

from sbexport import cli
from sbexport.bench import run_bench, sgemm, table

# The int8 op of each model's recipe, and the fp32 op it replaces wherever that op reads a weight
# (the heads' Gemm stays fp32 in both; attention's activation products stay fp32 in BERT-base).
QUANTIZED_OPS = {"squeezebert": ("QLinearConv", "Conv"), "bert": ("MatMulInteger", "MatMul")}


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-int8")
    result = run_bench(tiny(workdir=str(out / "work"), formats=("onnx", "onnx-int8")), json_path=str(out / "b.json"),
                       plot_path=str(out / "b.png"), progress=False, log=lambda msg: None)
    return result, out


def test_int8_rows_time_the_quantized_files(int8_run):
    """Per model an onnx-int8 row at each length, whose file is the int8 artifact: SqueezeBERT's
    convolutions QLinearConv (no fp32 Conv left), BERT-base's matrix products MatMulInteger
    (ONNX Runtime's dynamic recipe); smaller than the fp32 file; the guard's figures recorded."""
    result, out = int8_run
    _validate(json.loads((out / "b.json").read_text()))
    assert sorted((r["runtime"], r["model"], r["seq_len"]) for r in result["rows"]) == sorted(
        (rt, m, s) for rt in ("onnx", "onnx-int8") for m in TINY_CONFIGS for s in SEQ_LENS)
    for arch, (op, replaced) in QUANTIZED_OPS.items():
        fp32, int8 = result["artifacts"][f"{arch}/onnx"], result["artifacts"][f"{arch}/onnx-int8"]
        graph = onnx.load(str(Path(int8["folder"]) / int8["model_file"])).graph
        weights = {i.name for i in graph.initializer}
        ops = Counter(n.op_type for n in graph.node)
        fp32_weighted = [n.name for n in graph.node if n.op_type == replaced and any(i in weights for i in n.input)]
        assert ops[op] > 0 and not fp32_weighted, (arch, ops, fp32_weighted)
        assert int8["bytes"] < fp32["bytes"]
        assert int8["int8"]["recipe"] == ("static" if arch == "squeezebert" else "dynamic")
        assert 0 <= int8["int8"]["agreement"] <= 1 and "int8" not in fp32
        rows = [r for r in result["rows"] if r["runtime"] == "onnx-int8" and r["model"] == arch]
        assert all(r["file_bytes"] == int8["bytes"] and r["pct_of_ceiling"] is None for r in rows)
    assert all(r["pct_of_ceiling"] > 0 for r in result["rows"] if r["runtime"] == "onnx")


def test_table_says_the_int8_speedup_of_each_model(int8_run):
    result = int8_run[0]
    p50 = {(r["runtime"], r["model"], r["seq_len"]): r["p50_ms"] for r in result["rows"]}
    text = table(result)
    for seq in SEQ_LENS:
        want = ", ".join(f"{label} {p50['onnx', m, seq] / p50['onnx-int8', m, seq]:.2f}x"
                         for m, label in (("squeezebert", "SqueezeBERT (custom config)"),     # TINY_CONFIGS
                                          ("bert", "BERT (custom config)")))
        assert f"int8 speed-up over fp32 (onnx-int8 / onnx, p50), seq {seq}: {want}" in text
    assert "int8 files:" in text


def test_cached_int8_files_are_reused(int8_run, tmp_path):
    """A second run on the same work folder quantizes nothing again."""
    result, out = int8_run
    lines = []
    run_bench(tiny(workdir=str(out / "work"), formats=("onnx-int8",), memory=False), progress=False,
              log=lines.append)
    assert sum("using cached export" in line for line in lines) == 4, lines   # fp32 and int8, both models
    assert not any(line.startswith("quantizing") for line in lines), lines


def test_cli_quantize_adds_the_int8_runtime_after_its_fp32_one(monkeypatch, capsys, tmp_path):
    """--quantize int8 on --runtimes eager,onnx runs eager, onnx, onnx-int8 (the JSON's config
    says so); on eager alone it refuses in one line, before any work."""
    for arch, cfg in TINY_CONFIGS.items():
        cfg.to_json_file(tmp_path / f"{arch}.json")
    monkeypatch.setattr(sgemm, "sgemm_ceiling", lambda threads, size, folder: {
        "gflops": 1.0, "size": size, "repeats": 1, "threads": threads, "best_ms": 1.0, "cpu_wait_pct": 0, "op": "x"})
    base = ["sbexport", "bench", "--seq-lens", "8", "--runs", "1", "--no-memory", "--quantize", "int8",
            "--config-squeezebert", str(tmp_path / "squeezebert.json"), "--config-bert", str(tmp_path / "bert.json")]
    monkeypatch.setattr(sys, "argv", [*base, "--runtimes", "eager,onnx", "--json", str(tmp_path / "b.json")])
    cli.main()
    assert json.loads((tmp_path / "b.json").read_text())["config"]["formats"] == ["eager", "onnx", "onnx-int8"]
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", [*base, "--runtimes", "eager"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1
    assert err.startswith("error: --quantize int8 needs a runtime with an int8 form (onnx); got eager"), err
