"""The host benchmark on tiny configs: the JSON schema, the arithmetic of its figures, the files
it writes, and its refusals. No timing assertions: speed is checked in benchmarks/."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import pytest
from conftest import tiny_bert_config, tiny_squeezebert_config
from test_cli import assert_one_error_line, run_main

from sbexport import cli
from sbexport.bench import BenchConfig, Loaded, Peak, Timing, machine, markdown_table, pipeline, run_bench, sgemm, table
from sbexport.errors import SbexportError
from sbexport.tasks import get_task

# Random weights at a tiny size: the configs a user would give as --config-squeezebert FILE.
TINY_CONFIGS = {"squeezebert": tiny_squeezebert_config(), "bert": tiny_bert_config()}
SEQ_LENS = (8, 16)
TASKS_MNLI = get_task("mnli")


def tiny(**changes) -> BenchConfig:
    fields = dict(seq_lens=SEQ_LENS, runs=2, warmup=1, formats=("eager", "onnx"), configs=TINY_CONFIGS,
                  sgemm_size=256)
    return BenchConfig(**{**fields, **changes})


@pytest.fixture(scope="session")
def bench_run(tmp_path_factory):
    """One smoke run, shared: every runtime (eager, ONNX Runtime, ExecuTorch), both models, two
    lengths, memory probes on."""
    out = tmp_path_factory.mktemp("bench")
    json_path, plot_path = out / "bench.json", out / "bench.png"
    result = run_bench(tiny(workdir=str(out / "work"), formats=("eager", "onnx", "executorch")),
                       json_path=str(json_path), plot_path=str(plot_path), progress=False, log=lambda msg: None)
    return result, json_path, plot_path, out


def _pinned_schema() -> dict:
    """The JSON Schema file shipped in the package (package data), read as a user would."""
    from importlib.resources import files

    return json.loads(files("sbexport.bench").joinpath("schema/bench-1.json").read_text(encoding="utf-8"))


def _validate(data: dict) -> None:
    import jsonschema

    schema = _pinned_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(data)


def test_json_output_conforms_to_the_pinned_schema(bench_run):
    """The JSON bench writes, as read back from disk, against schema/bench-1.json: a renamed or
    dropped key, a wrong type or a negative time in the output fails here."""
    result, json_path, _, _ = bench_run
    data = json.loads(json_path.read_text())
    _validate(data)
    assert data["schema"] == "sbexport.bench/1"
    assert data["config"]["seq_lens"] == list(SEQ_LENS) and data["config"]["runs"] == 2
    assert {r["runs"] for r in data["rows"]} == {2}
    ceiling = data["ceiling"]
    assert ceiling["gflops"] == max(ceiling["start_gflops"], ceiling["end_gflops"])
    # the host's ceiling is its fastest library's (tests/test_sgemm.py: how it is chosen)
    assert ceiling["gflops"] == ceiling["libraries"][ceiling["library"]]["gflops"]
    from sbexport.bench.report import json_schema
    assert json_schema() == _pinned_schema()


@pytest.mark.parametrize("breakage", ["row key renamed", "row key dropped", "negative time", "unknown runtime",
                                      "top key dropped", "schema version"])
def test_pinned_schema_refuses_a_changed_output(bench_run, breakage):
    """The schema is strict enough to notice each of these changes to the output."""
    import copy

    import jsonschema

    data = copy.deepcopy(json.loads(bench_run[1].read_text()))
    row = data["rows"][0]
    if breakage == "row key renamed":
        row["median_ms"] = row.pop("p50_ms")
    elif breakage == "row key dropped":
        del row["flops"]
    elif breakage == "negative time":
        row["min_ms"] = -row["min_ms"]
    elif breakage == "unknown runtime":
        row["runtime"] = "tflite"
    elif breakage == "top key dropped":
        del data["ceiling"]
    else:
        data["schema"] = "sbexport.bench/2"
    with pytest.raises(jsonschema.ValidationError):
        _validate(data)


def test_every_runtime_and_model_ran(bench_run):
    """Every runtime asked for is installed here: each model has a row per length on each, and
    nothing was skipped."""
    result = bench_run[0]
    ran = sorted((r["runtime"], r["model"], r["seq_len"]) for r in result["rows"])
    assert ran == sorted((rt, m, s) for rt in ("eager", "onnx", "executorch") for m in ("squeezebert", "bert")
                         for s in SEQ_LENS)
    assert result["skipped"] == []


def test_executorch_rows_are_timings_of_the_exported_programs(bench_run):
    """The ExecuTorch rows time the .pte files bench exported and verified: their size is the
    file's, every run was timed, and the times are the calls' (positive, ordered)."""
    result = bench_run[0]
    rows = [r for r in result["rows"] if r["runtime"] == "executorch"]
    assert len(rows) == 2 * len(SEQ_LENS)
    for r in rows:
        info = result["artifacts"][f"{r['model']}/executorch"]
        assert info["model_file"] == r["file"] == "model.pte"
        assert info["verified"] and info["parity_passed"]
        assert (Path(info["folder"]) / "model.pte").stat().st_size == info["bytes"] == r["file_bytes"]
        assert r["runs"] == 2 and 0 < r["min_ms"] <= r["p50_ms"] <= r["mean_ms"] * 2
        assert r["load_ms"] > 0 and r["first_run_ms"] > 0 and r["peak_rss_mb"] > 0
    onnx_bytes = {r["model"]: r["file_bytes"] for r in result["rows"] if r["runtime"] == "onnx"}
    assert all(r["file_bytes"] != onnx_bytes[r["model"]] for r in rows)   # not the ONNX file


def test_statistics_and_ratio_arithmetic(bench_run):
    result = bench_run[0]
    rows = {(r["runtime"], r["model"], r["seq_len"]): r for r in result["rows"]}
    for (runtime, model, seq_len), r in rows.items():
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["throughput_seq_per_s"] == pytest.approx(r["batch"] * 1000 / r["p50_ms"], rel=1e-2)
        assert r["gflops_per_s"] == pytest.approx(r["flops"] / r["p50_ms"] / 1e6, rel=1e-2)
        assert r["pct_of_ceiling"] == pytest.approx(100 * r["gflops_per_s"] / result["ceiling"]["gflops"], rel=1e-2)
        other = rows.get((runtime, "bert" if model == "squeezebert" else "squeezebert", seq_len))
        if other is None:
            assert r["ratio_bert_over_squeezebert"] is None
        else:
            bert, sb = (r, other) if model == "bert" else (other, r)
            assert r["ratio_bert_over_squeezebert"] == pytest.approx(bert["p50_ms"] / sb["p50_ms"], rel=1e-2)
        assert r["file_bytes"] > 0 and r["load_ms"] > 0 and r["first_run_ms"] > 0
        assert r["peak_rss_mb"] > 0 and r["rss_increase_mb"] is not None
        if sys.platform == "linux":
            assert r["cpu_wait_pct"] >= 0


def test_flops_counted_equal_across_runtimes_and_growing_with_length(bench_run):
    result = bench_run[0]
    by_shape = {}
    for r in result["rows"]:
        assert r["flops"] > 0 and sum(r["flops_by_op"].values()) == r["flops"]
        by_shape.setdefault((r["model"], r["seq_len"]), set()).add(r["flops"])
    assert all(len(v) == 1 for v in by_shape.values()), by_shape
    for model in ("squeezebert", "bert"):
        assert by_shape[model, 16].pop() > by_shape[model, 8].pop()
    sb_ops = next(r["flops_by_op"] for r in result["rows"] if r["model"] == "squeezebert")
    assert "convolution" in sb_ops, "SqueezeBERT's projections are convolutions"


def test_table_markdown_and_plot(bench_run):
    result, _, plot_path, _ = bench_run
    text = table(result)
    assert "p50 ms" in text and "sgemm ceiling" in text and "squeezebert" in text
    c = result["ceiling"]
    assert c["op"].startswith(sgemm.LABELS[c["library"]] + " fp32 ")     # which library set it
    assert f"threads; each library: {sgemm.libraries_text(c)});" in text and "torch.mm" in text
    assert "ratio = BERT (custom config) p50 / SqueezeBERT (custom config) p50" in text   # TINY_CONFIGS' sizes
    md = markdown_table(result)
    assert "| runtime | SqueezeBERT (custom config) | BERT (custom config) | ratio |" in md and "PyTorch eager" in md
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cached_exports_are_reused(bench_run):
    out = bench_run[3]
    messages = []
    result = run_bench(tiny(workdir=str(out / "work"), formats=("onnx",), models=("squeezebert",), runs=1,
                            memory=False, configs={"squeezebert": TINY_CONFIGS["squeezebert"]}),
                       progress=False, log=messages.append)
    assert any("using cached export" in m for m in messages), messages
    assert [r["model"] for r in result["rows"]] == ["squeezebert"] * len(SEQ_LENS)


def test_per_group_export_is_timed_beside_the_default(bench_run):
    """executorch-per-group (`bench --grouped-conv per-group`): rows for both models beside
    executorch's; SqueezeBERT's file is the per-group export, BERT-base's the executorch file
    itself (it has no grouped convolution: no second export)."""
    from sbexport.artifact import read_manifest

    out = bench_run[3]
    result = run_bench(tiny(workdir=str(out / "work"), formats=("executorch", "executorch-per-group"), runs=1,
                            memory=False), progress=False, log=lambda m: None)
    _validate(json.loads(json.dumps(result)))
    assert {(r["runtime"], r["model"]) for r in result["rows"]} == \
        {(rt, m) for rt in ("executorch", "executorch-per-group") for m in ("squeezebert", "bert")}
    folders = {key: facts["folder"] for key, facts in result["artifacts"].items()}
    assert folders["bert/executorch-per-group"] == folders["bert/executorch"]
    assert read_manifest(folders["squeezebert/executorch-per-group"]).details.grouped_conv == "per-group"
    assert read_manifest(folders["squeezebert/executorch"]).details.grouped_conv is None
    assert "ExecuTorch XNNPACK, per-group" in markdown_table(result)


def test_cli_grouped_conv_adds_the_per_group_runtime(monkeypatch, capsys):
    """--grouped-conv per-group puts executorch-per-group right after executorch; without
    executorch among the runtimes it refuses in one line, before any work."""
    configs = []
    monkeypatch.setattr("sbexport.bench.run_bench", lambda config, **kw: configs.append(config) or {})
    monkeypatch.setattr("sbexport.bench.table", lambda result: "")
    code, _, err = run_main(monkeypatch, capsys, "bench", "--grouped-conv", "per-group",
                            "--runtimes", "onnx,executorch,eager")
    assert code == 0 and configs[0].formats == ("onnx", "executorch", "executorch-per-group", "eager"), err
    code, out, err = run_main(monkeypatch, capsys, "bench", "--grouped-conv", "per-group", "--runtimes", "onnx")
    assert_one_error_line(code, out, err, "--grouped-conv per-group times ExecuTorch's per-group export beside")
    assert len(configs) == 1


def test_missing_runtime_is_skipped_with_its_reason(monkeypatch):
    real = machine.runtime_unavailable
    monkeypatch.setattr(machine, "runtime_unavailable",
                        lambda rt: "executorch.runtime does not import (test)" if rt == "executorch" else real(rt))
    result = run_bench(tiny(formats=("eager", "executorch"), runs=1, memory=False), progress=False, log=lambda m: None)
    assert {r["runtime"] for r in result["rows"]} == {"eager"}
    assert result["skipped"] == [{"runtime": "executorch", "model": "*",
                                  "reason": "executorch.runtime does not import (test)"}]
    assert "skipped executorch" in table(result)


def _failing_export(arch_to_fail: str):
    """An export_artifact that fails the way an exporter does (ExportError) for one model."""
    from sbexport import export
    from sbexport.errors import ExportError

    real = export.export_artifact

    def export_artifact(fmt, task, source, *args, **kwargs):
        if source.arch == arch_to_fail:
            raise ExportError(f"{fmt} export of {task.name} failed: 2 convolution(s) fell out of the delegate")
        return real(fmt, task, source, *args, **kwargs)
    return export_artifact


def test_failed_export_stops_the_bench(monkeypatch):
    """A model whose export fails is not quietly dropped from the comparison: bench stops and
    names the model, the runtime and the cause."""
    from sbexport import export
    from sbexport.errors import ExportError

    monkeypatch.setattr(export, "export_artifact", _failing_export("bert"))
    monkeypatch.setattr(pipeline, "_time_runtime", lambda *a, **k: pytest.fail("timed after a failed export"))
    with pytest.raises(ExportError, match=r"^bench stopped: the BERT-base export to onnx failed \(nothing was timed\): "
                                          r"onnx export of mnli failed: 2 convolution\(s\) fell out"):
        run_bench(tiny(formats=("onnx",), runs=1, memory=False), progress=False, log=lambda m: None)


def test_failed_export_is_one_line_and_exit_1_from_the_cli(monkeypatch, capsys, tmp_path):
    from sbexport import export

    monkeypatch.setattr(export, "export_artifact", _failing_export("squeezebert"))
    monkeypatch.setattr(sgemm, "sgemm_ceiling", lambda threads, size, folder: {"gflops": 1.0, "cpu_wait_pct": 0,
                                                                                  "op": "x"})
    monkeypatch.setattr(sys, "argv", ["sbexport", "bench", "--formats", "onnx", "--seq-lens", "8", "--runs", "1",
                                      "--json", str(tmp_path / "bench.json")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: bench stopped: the SqueezeBERT export to onnx failed"), err
    assert not any("Traceback" in line for line in err)
    assert not (tmp_path / "bench.json").exists()


def test_executorch_threads_follow_the_setting():
    from executorch.extension.pybindings import portable_lib

    from sbexport.threads import thread_settings

    before = portable_lib._threadpool_get_thread_count()
    target = 1 if before != 1 else 2
    with thread_settings(target, executorch=True):
        assert portable_lib._threadpool_get_thread_count() == target
    assert portable_lib._threadpool_get_thread_count() == before


# -- refusals: each before any work, one clear message -----------------------------------------


@pytest.fixture
def no_work(monkeypatch):
    """Fail loudly if the benchmark gets past its checks."""
    def started(*args, **kwargs):
        raise AssertionError("the benchmark started working before refusing")
    monkeypatch.setattr(sgemm, "sgemm_ceiling", started)


@pytest.mark.parametrize("config, message", [
    (tiny(runs=0), "--runs must be at least 1"),
    (tiny(seq_lens=(8, 65)), "sequence length 65 exceeds the SqueezeBERT model's maximum of 64"),
    (BenchConfig(seq_lens=(128, 1024)), "sequence length 1024 exceeds the SqueezeBERT model's maximum of 512"),
    (tiny(checkpoints={"bert": "/nonexistent/bert-base"}, configs={}), "no such checkpoint folder"),
    (tiny(formats=("tflite",)), "unknown runtime 'tflite'"),
    (tiny(models=("gpt2",)), "unknown model 'gpt2'"),
    (tiny(seq_lens=(8, 16, 8)), "--seq-lens names 8 twice"),
    (tiny(formats=("onnx", "eager", "onnx")), "--runtimes names onnx twice"),
    (tiny(models=("bert", "bert")), "--models names bert twice"),
    (tiny(models=("squeezebert",)), "--config-bert applies to the bert model, which --models leaves out"),
    (tiny(models=("bert",), configs={}, checkpoints={"squeezebert": "/x"}),
     "--model-squeezebert applies to the squeezebert model, which --models leaves out"),
])
def test_bad_input_refused(no_work, config, message):
    with pytest.raises(SbexportError, match=message.replace("(", r"\(")):
        run_bench(config, progress=False)


def test_unwritable_json_refused_before_the_run(no_work, tmp_path):
    with pytest.raises(SbexportError, match="cannot write .*folder .* does not exist"):
        run_bench(tiny(), json_path=str(tmp_path / "missing" / "bench.json"), progress=False)
    with pytest.raises(SbexportError, match="it is a folder"):
        run_bench(tiny(), plot_path=str(tmp_path), progress=False)


@pytest.mark.parametrize("args, message", [
    (["--runs", "0"], "error: --runs must be at least 1"),
    (["--seq-lens", "8,1024"], "error: sequence length 1024 exceeds"),
    (["--seq-lens", "8,abc"], "error: --seq-lens"),
    (["--model-bert", "/nonexistent/bert"], "error: /nonexistent/bert: no such checkpoint folder"),
    (["--json", "/nonexistent/dir/out.json"], "error: cannot write /nonexistent/dir/out.json"),
    (["--random-init", "--model-bert", "/x"], "error: --random-init and --model-bert exclude each other"),
    (["--runtimes", "onnx,tflite"], "error: unknown runtime 'tflite'"),
    (["--config-squeezebert", "/nonexistent/config.json"], "error: --config-squeezebert /nonexistent/config.json: "
                                                           "cannot read it"),
    (["--config-bert", "CONFIG", "--model-bert", "/x"], "error: --config-bert applies to random weights only"),
    (["--config-squeezebert", "CONFIG"], "error: --config-squeezebert CONFIG: a bert config was given for the "
                                         "squeezebert model"),
    (["--seq-lens", "8,32,8"], "error: --seq-lens names 8 twice"),
    (["--runtimes", "onnx,onnx"], "error: --runtimes names onnx twice"),
    (["--runtimes", "onnx,onnx", "--quantize", "int8"], "error: --runtimes names onnx twice"),
    (["--models", "bert,bert"], "error: --models names bert twice"),
    (["--models", "squeezebert", "--model-bert", "/nonexistent/bert"],
     "error: --model-bert applies to the bert model, which --models leaves out (squeezebert)"),
    (["--models", "squeezebert", "--config-bert", "CONFIG"],
     "error: --config-bert applies to the bert model, which --models leaves out (squeezebert)"),
    (["--models", "bert", "--model-squeezebert", "/nonexistent/sq"],
     "error: --model-squeezebert applies to the squeezebert model, which --models leaves out (bert)"),
    (["--models", "bert", "--config-squeezebert", "CONFIG"],
     "error: --config-squeezebert applies to the squeezebert model, which --models leaves out (bert)"),
    (["--cooldown", "1"], "error: --cooldown applies to --device adb only"),
    (["--serial", "x", "--cooldown", "0"], "error: --serial and --cooldown apply to --device adb only"),
    (["--json", "/proc/x.json"], "error: cannot write /proc/x.json"),
    (["--json", "CONFIG", "--plot", "CONFIG"], "error: --json and --plot name the same file"),
])
def test_cli_refuses_with_one_line(no_work, monkeypatch, capsys, tmp_path, args, message):
    tiny_bert_config().to_json_file(tmp_path / "config.json")     # CONFIG: a valid BERT config.json
    monkeypatch.setattr(sys, "argv", ["sbexport", "bench", *[str(tmp_path / "config.json") if a == "CONFIG" else a
                                                             for a in args]])
    message = message.replace("CONFIG", str(tmp_path / "config.json"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err


def test_formats_is_a_deprecated_name_of_runtimes(no_work, monkeypatch, capsys):
    """--formats held runtimes (eager is not an export format): it still works, saying so."""
    monkeypatch.setattr(sys, "argv", ["sbexport", "bench", "--formats", "onnx,tflite"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    warning, error = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith("warning: --formats is deprecated, use --runtimes")
    assert error.startswith("error: unknown runtime 'tflite'")


def test_random_init_beside_a_checkpoint_is_refused_where_the_source_is_resolved(no_work):
    """Not only by the CLI: a BenchConfig asking for both is refused before any work."""
    with pytest.raises(SbexportError, match="--random-init and --model-bert exclude each other"):
        run_bench(tiny(random_init=True, checkpoints={"bert": "/nonexistent/bert-base"}, configs={}),
                  progress=False)


# -- FLOPs against the closed form ------------------------------------------------------------
#
# What is counted (flops.COUNTED): 2 FLOPs per multiply-accumulate of the matrix ops, nothing
# element-wise, no bias adds. For one encoder layer at batch B, sequence S, hidden H,
# intermediate F (a 1x1 convolution of cin -> cout channels in g groups does cin/g * cout
# multiply-adds per position):
#   projections  2 B S (H H/g_q + H H/g_k + H H/g_v + H H/g_post + H F/g_int + F H/g_out)
#                (BERT: every g is 1 and they are Linear layers, counted as addmm)
#   attention    2 B S S H for Q K^T plus 2 B S S H for probs V (heads split H, not the sum)
# and once per sequence the pooler (2 B H H) and the classifier (2 B H labels), both addmm.
# SqueezeBERT-base at S 128: per layer 113M (Q/K/V) + 50M (attention) + 151M (post) + 302M
# (FFN), times 12 = 7.40 G; BERT-base 3 x 151M + 50M + 151M + 1208M, times 12 = 22.35 G.


def closed_form_flops(cfg, batch: int, seq: int, num_labels: int) -> dict[str, int]:
    """{op: FLOPs} of a sequence classifier, written from the architecture (see above)."""
    H, F, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    groups = [getattr(cfg, name, 1) for name in ("q_groups", "k_groups", "v_groups", "post_attention_groups",
                                                  "intermediate_groups", "output_groups")]
    macs = [H * H, H * H, H * H, H * H, H * F, F * H]
    projections = L * 2 * batch * seq * sum(m // g for m, g in zip(macs, groups))
    attention = L * 2 * (2 * batch * seq * seq * H)
    heads = 2 * batch * H * H + 2 * batch * H * num_labels
    if cfg.model_type == "squeezebert":
        return {"convolution": projections, "bmm": attention, "addmm": heads}
    return {"addmm": projections + heads, "bmm": attention}


def _count_on_meta(arch: str, cfg, batch: int, seq: int):
    """count_flops of the mnli classifier built on the meta device (no memory, no arithmetic:
    FlopCounterMode needs only shapes), so that full-size models count in a second."""
    import torch

    from sbexport.bench.flops import count_flops
    from sbexport.export import ExportWrapper

    task = TASKS_MNLI
    with torch.device("meta"):
        wrapper = ExportWrapper(task.model_class(arch)(cfg), task).eval()
        ids = torch.zeros(batch, seq, dtype=torch.long)
        return count_flops(wrapper, (ids, torch.ones_like(ids), ids))


@pytest.mark.parametrize("arch", ["squeezebert", "bert"])
@pytest.mark.parametrize("seq", [8, 32, 128, 512])
def test_full_size_flops_match_the_closed_form(arch, seq):
    from sbexport.config import BertConfig, SqueezeBertConfig

    cfg = (SqueezeBertConfig if arch == "squeezebert" else BertConfig)(**TASKS_MNLI.config_overrides())
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (768, 3072, 12)
    if arch == "squeezebert":   # the public checkpoints' groups (REFERENCE.md)
        assert [cfg.q_groups, cfg.k_groups, cfg.v_groups, cfg.post_attention_groups, cfg.intermediate_groups,
                cfg.output_groups] == [4, 4, 4, 1, 4, 4]
    total, by_op = _count_on_meta(arch, cfg, 1, seq)
    expected = closed_form_flops(cfg, 1, seq, num_labels=3)
    assert by_op == expected
    assert total == sum(expected.values())
    if seq == 128:   # the paper's figures
        assert round(total / 1e9, 2) == {"squeezebert": 7.40, "bert": 22.35}[arch]


@pytest.mark.parametrize("batch", [1, 3])
def test_tiny_flops_match_the_closed_form_with_every_group_distinct(batch):
    """Groups 2/4/8/1/16/32: a group count attached to the wrong projection changes the sum."""
    from conftest import EXPORT_TINY

    from sbexport.config import SqueezeBertConfig

    cfg = SqueezeBertConfig(**EXPORT_TINY, **TASKS_MNLI.config_overrides())
    for seq in (5, 16, 64):
        assert _count_on_meta("squeezebert", cfg, batch, seq)[1] == closed_form_flops(cfg, batch, seq, 3)


def test_bench_rows_carry_the_closed_form_flops(bench_run):
    """The figures bench reports (tiny configs, both models, each length) are the closed form's."""
    result = bench_run[0]
    configs = {arch: cfg.replace(**TASKS_MNLI.config_overrides()) for arch, cfg in TINY_CONFIGS.items()}
    assert result["rows"]
    for row in result["rows"]:
        expected = closed_form_flops(configs[row["model"]], row["batch"], row["seq_len"], 3)
        assert row["flops_by_op"] == expected, row
        assert row["flops"] == sum(expected.values())


# -- the runner interface: a device slots in --------------------------------------------------


class FakeDevice:
    """A target.Target as a remote device implements it, with made-up facts and times: what the
    pipeline reports must be these, arranged into rows, whatever runs the models."""

    name = "fake-device"
    TIMES_S = {"squeezebert": [0.004, 0.001, 0.002], "bert": [0.010, 0.006, 0.008]}   # p50 2 ms and 8 ms

    def __init__(self):
        self.calls = []

    def describe(self, threads):
        return {"cpu": "Fake Cortex-A76", "cpu_id": {"CPU part": "0xd0b"}, "machine": "aarch64",
                "platform": "Android 14", "cores": 8, "cores_available": 8, "load_average": [0.5, 0.4, 0.3],
                "flags": ["asimd", "asimddp"], "virtualised": False, "python": "3.11.7",
                "versions": {"torch": "2.13.0", "onnxruntime": None, "onnx": None, "executorch": "1", "numpy": "2"},
                "threads": threads}

    def cores(self):
        return 8

    def load_average(self):
        return [0.6, 0.4, 0.3]

    def unavailable(self, runtime):
        return None if runtime == "executorch" else f"no {runtime} runner on the device"

    def ceiling(self, threads, size, workdir):
        self.calls.append("ceiling")
        return {"gflops": 40.0, "size": size, "repeats": 5, "threads": threads, "best_ms": 1.0,
                "cpu_wait_pct": None, "op": "fake sgemm"}

    def notes(self, config):
        return {k: f"fake {k}" for k in ("timing", "load", "threads", "memory", "ceiling", "cpu_wait_pct")}

    @contextlib.contextmanager
    def session(self, task, runtime, threads):
        self.calls.append(("session", runtime, threads))
        yield FakeSession(self)
        self.calls.append("session closed")

    def peak_memory(self, task, runtime, model, artifact, seq_lens, batch, threads):
        self.calls.append(("memory", model.arch, Path(artifact).name))
        return Peak(100.0, {s: 100.0 + s for s in seq_lens}, True)

    def close(self):
        self.calls.append("close")


class FakeSession:
    def __init__(self, device):
        self.device = device

    def load(self, model, artifact):
        pte = Path(artifact) / "model.pte"
        self.device.calls.append(("load", model.arch))
        return Loaded(model.arch, f"/data/local/tmp/{pte.name}", pte.stat().st_size, 0.25, handle=pte)

    def time(self, loaded, feeds, warmup, runs):
        shapes = {arch: {k: v.shape for k, v in f.items()} for arch, f in feeds.items()}
        self.device.calls.append(("time", [m.arch for m in loaded], shapes, warmup, runs))
        return {m.arch: Timing(0.05, self.device.TIMES_S[m.arch], 1.5) for m in loaded}


@pytest.fixture
def device_run(bench_run, monkeypatch):
    """run_bench on the FakeDevice, reusing bench_run's cached ExecuTorch exports; the JSON
    written, and the progress bar kept for inspection."""
    from sbexport.bench import progress as progress_module

    bars = []
    real = progress_module.Progress

    def keep(*args, **kwargs):
        bars.append(real(*args, **kwargs))
        return bars[-1]
    monkeypatch.setattr(progress_module, "Progress", keep)
    device, out = FakeDevice(), bench_run[3]
    json_path = out / "device.json"
    result = run_bench(tiny(workdir=str(out / "work"), formats=("onnx", "executorch"), runs=3, warmup=2),
                       json_path=str(json_path), progress=True, log=lambda m: None, target=device)
    return result, json_path, device, bars[0]


def test_a_device_target_slots_into_the_pipeline(device_run):
    """Rows, machine, method and skipped come from the target; the statistics from its times."""
    result, json_path, device, _ = device_run
    _validate(json.loads(json_path.read_text()))
    assert result["machine"]["cpu"] == "Fake Cortex-A76" and result["machine"]["load_average_end"] == [0.6, 0.4, 0.3]
    assert result["skipped"] == [{"runtime": "onnx", "model": "*", "reason": "no onnx runner on the device"}]
    assert result["method"]["timing"] == "fake timing" and result["method"]["flops"].startswith("2 x")
    assert result["ceiling"]["gflops"] == 40.0
    rows = {(r["model"], r["seq_len"]): r for r in result["rows"]}
    assert sorted(rows) == sorted((m, s) for m in ("squeezebert", "bert") for s in SEQ_LENS)
    assert {r["runtime"] for r in result["rows"]} == {"executorch"}
    for (model, seq_len), r in rows.items():
        assert (r["min_ms"], r["p50_ms"], r["p90_ms"]) == {"squeezebert": (1.0, 2.0, 3.6),
                                                           "bert": (6.0, 8.0, 9.6)}[model]
        assert r["first_run_ms"] == 50.0 and r["load_ms"] == 250.0 and r["runs"] == 3
        assert r["ratio_bert_over_squeezebert"] == 4.0 and r["cpu_wait_pct"] == 1.5
        assert r["file"] == "/data/local/tmp/model.pte"
        assert r["file_bytes"] == result["artifacts"][f"{model}/executorch"]["bytes"]
        assert r["peak_rss_mb"] == 100.0 + seq_len and r["rss_increase_mb"] == seq_len
        assert r["gflops_per_s"] == pytest.approx(r["flops"] / r["p50_ms"] / 1e6, rel=1e-4)
        assert r["pct_of_ceiling"] == pytest.approx(100 * r["gflops_per_s"] / 40.0, rel=1e-4)


def test_the_pipeline_drives_a_target_in_order(device_run):
    """Both models are loaded in one session before any timing, timed together at each length
    on the benchmark's inputs with the asked warm-up and runs, the session ends before the
    memory probes, and the target is cleaned up once, at the end."""
    result, _, device, _ = device_run
    calls = device.calls
    assert calls[0] == "ceiling" and calls[-2:] == ["ceiling", "close"] and calls.count("close") == 1
    assert result["config"]["threads"] == 8      # no --threads: the device's cores, not the host's
    start = calls.index(("session", "executorch", 8))
    assert calls[start + 1:start + 3] == [("load", "squeezebert"), ("load", "bert")]
    timed = [c for c in calls if isinstance(c, tuple) and c[0] == "time"]
    assert [c[2]["squeezebert"]["input_ids"] for c in timed] == [(1, s) for s in SEQ_LENS]
    assert all(c[1] == ["squeezebert", "bert"] and c[3:] == (2, 3) for c in timed)
    memory = [c for c in calls if isinstance(c, tuple) and c[0] == "memory"]
    assert [(arch, folder.startswith(f"mnli-{arch}-executorch-")) for _, arch, folder in memory] == \
        [("squeezebert", True), ("bert", True)]
    assert calls.index("session closed") < calls.index(memory[0])


def test_progress_total_is_the_plan(device_run):
    """The bar counts exactly the steps of the plan: every planned step done, in order, once."""
    _, _, _, bar = device_run
    assert bar.done == bar.planned
    assert bar.bar.n == bar.bar.total == sum(s.size for s in bar.planned)
    kinds = [s.kind for s in bar.planned]
    assert kinds.count("time") == len(SEQ_LENS) and kinds.count("export") == 2 and kinds.count("memory") == 2
    # Steps of a minute and of milliseconds: a rate or a time left would be wrong by hours.
    shown = str(bar.bar)
    assert f"{bar.bar.total}/{bar.bar.total} steps" in shown and "/s" not in shown and "<" not in shown


def test_cli_benchmarks_a_custom_size_from_config_files(monkeypatch, capsys, tmp_path):
    """--config-squeezebert / --config-bert FILE: random weights at that size; the report records
    the fields that differ from the public architecture and counts the FLOPs of that size."""
    for arch, cfg in TINY_CONFIGS.items():
        cfg.to_json_file(tmp_path / f"{arch}.json")
    monkeypatch.setattr(sgemm, "sgemm_ceiling", lambda threads, size, folder: {
        "gflops": 1.0, "size": size, "repeats": 1, "threads": threads, "best_ms": 1.0, "cpu_wait_pct": 0, "op": "x"})
    monkeypatch.setattr(sys, "argv", ["sbexport", "bench", "--formats", "eager", "--seq-lens", "8", "--runs", "1",
                                      "--no-memory", "--config-squeezebert", str(tmp_path / "squeezebert.json"),
                                      "--config-bert", str(tmp_path / "bert.json"),
                                      "--json", str(tmp_path / "bench.json")])
    cli.main()
    assert "wrote" in capsys.readouterr().out
    data = json.loads((tmp_path / "bench.json").read_text())
    _validate(data)
    assert data["config"]["config_overrides"]["squeezebert"]["num_hidden_layers"] == 2
    assert data["config"]["config_overrides"]["bert"]["hidden_size"] == 32
    for row in data["rows"]:
        cfg = TINY_CONFIGS[row["model"]].replace(**TASKS_MNLI.config_overrides())
        assert row["flops_by_op"] == closed_form_flops(cfg, 1, 8, 3)



# -- what a run that went well keeps, and what it says ------------------------------------------


def _fake_ceiling(threads, size, folder):
    return {"gflops": 1.0, "size": size, "repeats": 1, "threads": threads, "best_ms": 1.0, "cpu_wait_pct": 0,
            "op": "x"}


def test_a_report_that_cannot_be_written_costs_nothing_else(monkeypatch, capsys, tmp_path, json_disk_full):
    """The disk under --json is full: the table is printed, the plot written, and the JSON's
    failure is one error line (exit 1), after the work rather than instead of its results."""
    for arch, cfg in TINY_CONFIGS.items():
        cfg.to_json_file(tmp_path / f"{arch}.json")
    monkeypatch.setattr(sgemm, "sgemm_ceiling", _fake_ceiling)
    json_path, plot_path = tmp_path / "full" / "keep.json", tmp_path / "out2.png"
    json_path.parent.mkdir()
    code, out, err = run_main(monkeypatch, capsys, "bench", "--runtimes", "eager", "--seq-lens", "8", "--runs", "1",
                              "--warmup", "0", "--no-memory", "--config-squeezebert", tmp_path / "squeezebert.json",
                              "--config-bert", tmp_path / "bert.json", "--json", json_path, "--plot", plot_path)
    assert code == 1 and "Traceback" not in out + err
    assert [line for line in err.splitlines() if "error" in line] == \
        [f"error: cannot write {json_path}: No space left on device"], err     # below the progress bar
    assert "p50 ms" in out and f"wrote {plot_path}" in out and f"wrote {json_path}" not in out
    assert plot_path.read_bytes()[:4] == b"\x89PNG" and not json_path.exists()


@pytest.mark.parametrize("verbose", [False, True])
def test_exports_lines_show_only_with_verbose(monkeypatch, verbose):
    """Bench's exports use random weights and no tokenizer by design: the exporter's notes about
    that, and its parity tables, are noise inside the progress bar. Its warnings and errors
    are not."""
    from sbexport import export
    from sbexport.errors import ExportError

    said = ["note: --random-init: exporting the squeezebert architecture with RANDOM weights (seed 0)",
            "note: the artifact is exported without a tokenizer, and predict needs one",
            "output   max abs err", "PASS: 6 cases", "warning: something the user must see", "FAIL: 1 of 6 cases"]

    def export_artifact(fmt, task, source, out, options, *, log, **kwargs):
        for line in said:
            log(line)
        raise ExportError("onnx export of mnli failed: parity")
    monkeypatch.setattr(export, "export_artifact", export_artifact)
    monkeypatch.setattr(sgemm, "sgemm_ceiling", _fake_ceiling)
    lines = []
    with pytest.raises(ExportError, match="bench stopped: the SqueezeBERT export to onnx failed"):
        run_bench(tiny(formats=("onnx",), models=("squeezebert",), configs={"squeezebert": TINY_CONFIGS["squeezebert"]},
                       memory=False), progress=False, log=lines.append, verbose=verbose)
    assert lines == (said if verbose else ["warning: something the user must see", "FAIL: 1 of 6 cases"])


def test_cli_passes_verbose_to_the_bench(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("sbexport.bench.run_bench", lambda config, **kwargs: calls.append(kwargs) or {})
    monkeypatch.setattr("sbexport.bench.table", lambda result: "")
    assert run_main(monkeypatch, capsys, "bench")[0] == 0
    assert run_main(monkeypatch, capsys, "--verbose", "bench")[0] == 0
    assert [c["verbose"] for c in calls] == [False, True]


def _plot_result(cpu: str = "AMD EPYC", overrides: dict | None = None) -> dict:
    """The part of a result the plot reads: both models on ExecuTorch at two lengths."""
    row = {"runtime": "executorch", "model": "squeezebert", "seq_len": 8, "p50_ms": 1.0, "min_ms": 0.9, "p90_ms": 1.2}
    rows = [{**row, "model": m, "seq_len": s} for m in ("squeezebert", "bert") for s in (8, 16)]
    return {"rows": rows, "machine": {"cpu": cpu},
            "config": {"task": "mnli", "batch": 1, "threads": 4, "config_overrides": overrides or {}}}


def test_a_custom_size_is_not_labelled_as_the_public_model():
    from sbexport.bench import report

    public = report.figure(_plot_result())
    custom = report.figure(_plot_result(overrides={"bert": {"hidden_size": 32}}))
    legends = [[t.get_text() for t in fig.axes[0].get_legend().get_texts()] for fig in (public, custom)]
    assert legends == [["SqueezeBERT, ExecuTorch XNNPACK", "BERT-base, ExecuTorch XNNPACK"],
                       ["SqueezeBERT, ExecuTorch XNNPACK", "BERT (custom config), ExecuTorch XNNPACK"]]


def test_a_devices_long_plot_title_stays_inside_the_figure():
    """An emulated device's title (EMULATED, model, SoC, serial) ran past the right edge."""
    from sbexport.bench import report

    cpu = "EMULATED, not a measurement: SB Standin 8 (SM8450, serial 127.0.0.1:40307)"
    fig = report.figure(_plot_result(cpu=cpu))
    fig.canvas.draw()
    title = fig.axes[0].title
    box = title.get_window_extent(fig.canvas.get_renderer())
    assert 0 <= box.x0 and box.x1 <= fig.bbox.x1, (box, fig.bbox)
    assert " ".join(title.get_text().split()).endswith("(SM8450, serial 127.0.0.1:40307)")


def _elf_header(machine: int) -> bytes:
    """The first 20 bytes of a 64-bit little-endian ELF executable for `machine` (e_machine)."""
    return b"\x7fELF\x02\x01\x01" + bytes(9) + (2).to_bytes(2, "little") + machine.to_bytes(2, "little")


@pytest.mark.parametrize("runner, runtimes, message", [
    ("README.md", "executorch", "is not an executable (no ELF header) nor a runner bundle folder"),
    ("x86_64", "executorch", "is an ELF file for machine 0x3e, not aarch64 (0xb7)"),
    ("empty-folder", "executorch", "a folder without `run`, not a runner bundle"),
    ("missing", "executorch", "does not exist"),
    ("aarch64", "onnx", "a device runs ExecuTorch only: use --runtimes executorch with --device adb"),
])
def test_device_runs_are_refused_on_the_host_before_adb(no_work, monkeypatch, capsys, tmp_path, runner, runtimes,
                                                        message):
    """A README pushed as the runner failed on the device after the exports; --formats, named
    in the runtime's refusal, is a hidden deprecated flag."""
    (tmp_path / "README.md").write_text("# not a runner\n")
    (tmp_path / "x86_64").write_bytes(_elf_header(0x3E) + bytes(100))
    (tmp_path / "aarch64").write_bytes(_elf_header(0xB7) + bytes(100))
    (tmp_path / "empty-folder").mkdir()
    monkeypatch.setattr("sbexport.bench.devices.find_adb", lambda: pytest.fail("adb was reached before refusing"))
    code, out, err = run_main(monkeypatch, capsys, "bench", "--device", "adb", "--runner", tmp_path / runner,
                              "--runtimes", runtimes)
    assert_one_error_line(code, out, err, message)
