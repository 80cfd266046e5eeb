"""The command line: one end-to-end run of the installed `sbexport` (onnx, verify, info, predict)
and every user error as one line on stderr with a non-zero exit and no traceback.

Most error cases call sbexport.cli.main in-process with sys.argv patched (a subprocess costs
seconds of imports); a representative few run the installed console script.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sbexport.artifact import read_manifest, write_manifest
from sbexport.cli import main
from sbexport.tasks import TASKS

SBEXPORT = str(Path(sys.executable).with_name("sbexport"))


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `sbexport ARGS` run in this process. An exception that
    escapes main() fails the test: that is a traceback a user would see."""
    monkeypatch.setattr(sys, "argv", ["sbexport", *map(str, args)])
    capsys.readouterr()   # what fixtures printed (an export's first ExecuTorch load logs) is not the command's
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    out, err = capsys.readouterr()
    return code, out, err


def run_script(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([SBEXPORT, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def assert_one_error_line(code, out, err, match):
    """Exit 1, and stderr is exactly one 'error: ...' line containing `match`."""
    assert code == 1, (code, out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert match in lines[0], lines[0]


# -- the whole path, through the installed script ----------------------------------------


def test_end_to_end_onnx_verify_info_predict(tmp_path, tiny_checkpoint):
    out = tmp_path / "mnli-onnx"
    export = run_script("onnx", "--task", "mnli", "--model", tiny_checkpoint("mnli"), "-o", out)
    assert export.returncode == 0, export.stderr
    assert "PASS: 8 cases" in export.stdout and f"wrote {out}" in export.stdout

    verify = run_script("verify", out, "--json", tmp_path / "report.json")
    assert verify.returncode == 0, verify.stderr
    assert "PASS" in verify.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] and report["task"] == "mnli" and report["cases"] == 8

    info = run_script("info", out)
    assert info.returncode == 0, info.stderr
    for expected in ("task      mnli (sequence-classification)", "entailment, neutral, contradiction",
                     "input     input_ids int64 [batch, sequence]", "parity    PASS", "model.onnx"):
        assert expected in info.stdout, info.stdout

    predict = run_script("predict", out, "A man plays the guitar.", "Someone makes music.", "--json")
    assert predict.returncode == 0, predict.stderr
    result = json.loads(predict.stdout)
    assert sorted(r["label"] for r in result["labels"]) == sorted(TASKS["mnli"].labels)

    # The representative failure, seen by a user: a tampered file.
    model = out / "model.onnx"
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF
    model.write_bytes(bytes(data))
    tampered = run_script("predict", out, "A man plays the guitar.", "Someone makes music.")
    assert_one_error_line(tampered.returncode, tampered.stdout, tampered.stderr, "sha256 does not match")


def test_unknown_task_lists_the_tasks():
    result = run_script("onnx", "--task", "summarize", "--random-init")
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert "'summarize' is not one of" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for name in TASKS:
        assert f"'{name}'" in result.stderr


def test_missing_option_is_one_line():
    result = run_script("onnx")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: Missing option '--task'. Choose from: mnli, sst2, qqp, qnli, rte, mrpc, cola, wnli, "
        "stsb, squad, ner, swag, fill-mask, features (see 'sbexport onnx --help')"]


# -- export errors -------------------------------------------------------------------------


def test_missing_checkpoint(monkeypatch, capsys, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, "onnx", "--task", "mnli", "--model", tmp_path / "no-such",
                              "-o", tmp_path / "out")
    assert_one_error_line(code, out, err, "no such checkpoint folder")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def corrupt_checkpoint(tmp_path, tiny_checkpoint):
    folder = shutil.copytree(tiny_checkpoint("mnli"), tmp_path / "corrupt")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])          # truncated
    return folder


def test_corrupt_weights(monkeypatch, capsys, tmp_path, corrupt_checkpoint):
    code, out, err = run_main(monkeypatch, capsys, "onnx", "--task", "mnli", "--model", corrupt_checkpoint,
                              "-o", tmp_path / "out")
    assert_one_error_line(code, out, err, "not a readable safetensors file")
    assert not (tmp_path / "out").exists()


def test_unwritable_output_folder(monkeypatch, capsys, tmp_path):
    (tmp_path / "a-file").write_text("")
    code, out, err = run_main(monkeypatch, capsys, "onnx", "--task", "sst2", "--random-init",
                              "-o", tmp_path / "a-file" / "out")
    assert_one_error_line(code, out, err, "not a writable folder")


@pytest.mark.parametrize("args", [["onnx", "--task", "sst2", "--random-init", "-o", ""],
                                  ["executorch", "--task", "sst2", "--random-init", "--output="],
                                  ["convert-bert", "no-such-bert", ""]])
def test_empty_output_path_is_refused(monkeypatch, capsys, tmp_path, args):
    """-o "" exported into the default folder artifacts/<task>-<format>."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert_one_error_line(code, out, err, "the output folder is empty")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def artifact_copy(tmp_path, onnx_artifact):
    return shutil.copytree(onnx_artifact("mnli", local=True), tmp_path / "mnli-onnx")


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_existing_output_folder_is_kept(monkeypatch, capsys, tmp_path, tiny_checkpoint, artifact_copy):
    before = _snapshot(artifact_copy)
    code, out, err = run_main(monkeypatch, capsys, "onnx", "--task", "mnli", "--model", tiny_checkpoint("mnli"),
                              "-o", artifact_copy)
    assert_one_error_line(code, out, err, "already exists; pass --overwrite")
    assert _snapshot(artifact_copy) == before


def test_failing_export_with_overwrite_keeps_the_old_folder(monkeypatch, capsys, artifact_copy, corrupt_checkpoint):
    before = _snapshot(artifact_copy)
    code, out, err = run_main(monkeypatch, capsys, "onnx", "--task", "mnli", "--model", corrupt_checkpoint,
                              "-o", artifact_copy, "--overwrite")
    assert_one_error_line(code, out, err, "not a readable safetensors file")
    assert _snapshot(artifact_copy) == before
    assert sorted(p.name for p in artifact_copy.parent.iterdir() if p.name.startswith(".")) == []


def test_max_seq_len_beyond_the_model(monkeypatch, capsys, tmp_path, tiny_checkpoint):
    code, out, err = run_main(monkeypatch, capsys, "onnx", "--task", "mnli", "--model", tiny_checkpoint("mnli"),
                              "--max-seq-len", 65, "-o", tmp_path / "out")
    assert_one_error_line(code, out, err, "--max-seq-len 65 is outside 2..64")


# -- reading artifacts ---------------------------------------------------------------------


def _tamper(folder):
    model = folder / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 3] ^= 0x01
    model.write_bytes(bytes(data))


@pytest.mark.parametrize("command", [["verify"], ["info"], ["predict", "TEXT", "A man.", "A woman."]])
def test_tampered_artifact_is_refused(monkeypatch, capsys, artifact_copy, command):
    _tamper(artifact_copy)
    args = [artifact_copy if a == "TEXT" else a for a in command]
    if command == ["verify"] or command == ["info"]:
        args.append(artifact_copy)
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert_one_error_line(code, out, err, "model.onnx: sha256 does not match the manifest")


@pytest.fixture
def garbage_model(tmp_path, onnx_artifact, et_artifact, request):
    """A manifest-valid folder whose model file is garbage (the hashes were rewritten)."""
    source = onnx_artifact("mnli", local=True) if request.param == "onnx" else et_artifact("mnli")
    folder = shutil.copytree(source, tmp_path / "garbage")
    manifest = read_manifest(folder)
    (folder / manifest.model_file).write_bytes(b"\x00garbage, not a model" * 40)
    write_manifest(folder, manifest)   # the files re-hashed
    return folder, manifest.model_file


@pytest.mark.parametrize("garbage_model", ["onnx", "executorch"], indirect=True)
@pytest.mark.parametrize("command", ["verify", "predict"])
def test_model_file_that_is_not_one(monkeypatch, capsys, garbage_model, command):
    folder, name = garbage_model
    args = [folder] if command == "verify" else [folder, "A man.", "A woman."]
    code, out, err = run_main(monkeypatch, capsys, command, *args)
    kind = "ONNX model" if name.endswith(".onnx") else "ExecuTorch program"
    assert_one_error_line(code, out, err, f"{name}: not a loadable {kind}")
    if name.endswith(".pte"):    # the runtime's own log names the cause, inside the one line
        assert "Program identifier" in err


@pytest.mark.parametrize("garbage_model", ["executorch"], indirect=True)
def test_garbage_program_is_one_line_from_the_script(garbage_model):
    """In a real process executorch's runtime logs to stderr and its import logs warnings:
    the user still sees one line."""
    folder, _ = garbage_model
    result = run_script("predict", folder, "A man.", "A woman.")
    assert_one_error_line(result.returncode, result.stdout, result.stderr, "not a loadable ExecuTorch program")


def test_not_an_artifact_folder(monkeypatch, capsys, tmp_path):
    for command in (["verify", tmp_path], ["info", tmp_path], ["predict", tmp_path, "text"]):
        code, out, err = run_main(monkeypatch, capsys, *command)
        assert_one_error_line(code, out, err, "not an artifact folder (no manifest.json)")


def test_verify_parity_failure_exits_1(monkeypatch, capsys, artifact_copy):
    import torch

    from sbexport import verify

    real = verify.rebuild_reference

    def off_by_a_bit(*args):
        model = real(*args)
        with torch.no_grad():
            model.classifier.bias += 1e-3
        return model
    monkeypatch.setattr(verify, "rebuild_reference", off_by_a_bit)
    code, out, err = run_main(monkeypatch, capsys, "verify", artifact_copy)
    assert "FAIL: 8 cases" in out
    assert_one_error_line(code, out, err, "parity FAILED for mnli: logits differs from PyTorch by 1.0")


# -- predict inputs ------------------------------------------------------------------------


def test_predict_long_text_is_truncated_with_a_warning(monkeypatch, capsys, onnx_artifact):
    long_text = " ".join(["the cat sat on the mat"] * 30)
    code, out, err = run_main(monkeypatch, capsys, "predict", onnx_artifact("mnli", local=True), long_text, "A cat.")
    assert code == 0, err
    (line,) = err.strip().splitlines()
    assert line.startswith("warning: input is 186 tokens; truncated to the model's maximum of 64"), line
    assert len(out.strip().splitlines()) == 3


@pytest.mark.parametrize("text", ["", "   "])
def test_predict_empty_text(monkeypatch, capsys, onnx_artifact, text):
    code, out, err = run_main(monkeypatch, capsys, "predict", onnx_artifact("mnli", local=True), text)
    assert_one_error_line(code, out, err, "empty text")


def test_info_lists_tasks(monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, "info", "--tasks")
    assert code == 0
    assert [line.split()[0] for line in out.strip().splitlines()] == list(TASKS)
    code, out, err = run_main(monkeypatch, capsys, "info", "--tasks", "artifacts/mnli-onnx")
    assert code == 2 and "--tasks lists the tasks and takes no folder" in err and out == "", (out, err)


def test_empty_options_are_refused_not_defaulted(monkeypatch, capsys, tmp_path):
    """--model "" exported the task's public checkpoint; --max-seq-len 1 passed click's check
    and was refused later."""
    code, out, err = run_main(monkeypatch, capsys, "onnx", "--task", "mnli", "--model", "", "-o", tmp_path / "o")
    assert_one_error_line(code, out, err, "--model is empty; name a checkpoint folder or a Hugging Face id")
    code, out, err = run_main(monkeypatch, capsys, "onnx", "--task", "mnli", "--max-seq-len", "1", "-o", tmp_path / "o")
    assert code == 2 and "'--max-seq-len': 1 is not in the range x>=2" in err, err
    assert not (tmp_path / "o").exists()


# -- options with an observable effect -------------------------------------------------------


@pytest.fixture(scope="module")
def headless_checkpoint(tmp_path_factory, tiny_vocab_dir):
    """A tiny bare backbone: exported under mnli its classifier is drawn from --seed."""
    from conftest import save_tiny_checkpoint
    return save_tiny_checkpoint(tmp_path_factory.mktemp("headless"), "mnli", tiny_vocab_dir, head=False)


def _onnx_opset(path: Path) -> int:
    import onnx
    return next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))


def _classifier_weight(path: Path):
    """The classifier's weight matrix in an ONNX file: the only initializer of shape [3, 32]."""
    import onnx
    from onnx import numpy_helper

    (weight,) = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer if list(t.dims) == [3, 32]]
    return weight


def test_seed_no_verify_and_opset(monkeypatch, capsys, tmp_path, headless_checkpoint):
    """--seed draws the missing head (seed 1 and 2 give other weights, the manifest records
    the seed); --no-verify leaves the manifest without parity; --opset lands in the file."""
    a, b = tmp_path / "seed1", tmp_path / "seed2"
    code, out, err = run_main(monkeypatch, capsys, "onnx", "--task", "mnli", "--model", headless_checkpoint,
                              "--seed", 1, "--no-verify", "--opset", 19, "-o", a)
    assert code == 0, err
    assert "PASS" not in out
    code, out, err = run_main(monkeypatch, capsys, "onnx", "--task", "mnli", "--model", headless_checkpoint,
                              "--seed", 2, "-o", b)
    assert code == 0, err
    assert "PASS: 8 cases" in out
    ma, mb = read_manifest(a), read_manifest(b)
    assert (ma.source.seed, mb.source.seed) == (1, 2)
    assert ma.parity is None and mb.parity.passed is True
    assert (ma.details.opset, mb.details.opset) == (19, 18)
    assert (_onnx_opset(a / "model.onnx"), _onnx_opset(b / "model.onnx")) == (19, 18)
    import numpy as np
    assert not np.allclose(_classifier_weight(a / "model.onnx"), _classifier_weight(b / "model.onnx"))
    code, out, err = run_main(monkeypatch, capsys, "info", a)
    assert code == 0 and "parity    not verified" in out


def test_executorch_command(monkeypatch, capsys, tmp_path, tiny_checkpoint):
    out_dir = tmp_path / "mnli-pte"
    code, out, err = run_main(monkeypatch, capsys, "executorch", "--task", "mnli", "--model", tiny_checkpoint("mnli"),
                              "--backend", "portable", "--batch", 2, "-o", out_dir)
    assert code == 0, err
    assert "PASS" in out and f"wrote {out_dir}" in out
    manifest = read_manifest(out_dir)
    assert manifest.format == "executorch" and manifest.model_file == "model.pte"
    assert manifest.details.backend == "portable" and manifest.dims.batch == (2, 2)
    assert manifest.parity.passed is True
    assert (out_dir / "model.pte").read_bytes()[4:8] == b"ET12"    # the ExecuTorch program identifier
    code, out, err = run_main(monkeypatch, capsys, "predict", out_dir,
                              "A man plays the guitar.", "Someone makes music.")
    assert code == 0, err
    assert sorted(line.split()[0] for line in out.strip().splitlines()) == sorted(TASKS["mnli"].labels)


@pytest.mark.parametrize("top_k", [1, 3, 7])
def test_predict_top_k(monkeypatch, capsys, onnx_artifact, top_k):
    code, out, err = run_main(monkeypatch, capsys, "predict", onnx_artifact("fill-mask", local=True),
                              "The [MASK] sat on the [MASK].", "--top-k", top_k, "--json")
    assert code == 0, err
    masks = json.loads(out)["masks"]
    assert [len(m) for m in masks] == [top_k, top_k]


def test_version_prints_the_package_version():
    from importlib.metadata import version

    result = run_script("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sbexport, version {version('sbexport')}"
    import sbexport
    assert version("sbexport") == sbexport.__version__


# -- every command's --help example ----------------------------------------------------------


def _help_examples(command: list[str]) -> list[list[str]]:
    """The command lines under 'Example:' in `sbexport COMMAND --help` (backslash-continued lines
    joined), split as a shell would."""
    import shlex

    from click.testing import CliRunner

    from sbexport.cli import cli

    text = CliRunner().invoke(cli, [*command, "--help"]).output
    assert "Example:" in text, f"sbexport {' '.join(command)} --help has no example"
    block = text.split("Example:", 1)[1].split("\n\n")[0]
    lines = block.replace("\\\n", " ").splitlines()
    return [shlex.split(line.strip())[1:] for line in lines if line.strip().startswith("sbexport ")]


COMMANDS = ["onnx", "executorch", "verify", "predict", "info", "convert-bert", "bench", "eval", "roofline", "quantize"]


def test_every_command_is_listed_here():
    from sbexport.cli import cli
    assert sorted(cli.commands) == sorted(COMMANDS)


@pytest.mark.parametrize("command", [[]] + [[c] for c in COMMANDS])
def test_help_example_is_accepted_by_the_parser(command):
    """Each example parses: its command exists and click accepts every option and value."""
    from sbexport.cli import cli

    examples = _help_examples(command)
    assert examples, command
    for args in examples:
        group = cli.make_context("sbexport", list(args))          # the group's own options (--verbose)
        name, rest = group.protected_args[0], group.protected_args[1:] + group.args
        assert name in cli.commands, args
        if command:
            assert name == command[0], args
        cli.commands[name].make_context(name, list(rest))      # raises click.UsageError when refused


def _same_work(args: list[str]) -> list[str]:
    """An example's arguments without --verbose and -o/--output FOLDER: what its run does."""
    kept, skip = [], False
    for arg in args:
        if not skip and arg not in ("--verbose", "-o", "--output"):
            kept.append(arg)
        skip = arg in ("-o", "--output")
    return kept


def test_help_examples_run(monkeypatch, capsys, tmp_path, tiny_checkpoint, minilm_dir):
    """Run each example for real, in a fresh folder, where it can run here. Stand-ins: a hub
    checkpoint or --random-init (full-size weights) becomes the tiny checkpoint of the task;
    ./bert-base-uncased the real MiniLM BERT; the GLUE file a small one written here. bench's
    examples time full-size models for minutes, roofline's full sweep too: parsed only
    (test_bench runs bench on tiny configs, test_roofline runs roofline --quick). So is
    `executorch --quantize int8` (about two minutes of CI for its int8 lowering alone):
    test_quantize_executorch runs the same command on a tiny checkpoint, then `info` on it. So
    is an example that another repeats without --verbose (to another output folder, maybe):
    test_help_example_is_accepted_by_the_parser parses it, and a second tiny ExecuTorch export
    costs 17 s."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "glue/MNLI").mkdir(parents=True)
    (tmp_path / "glue/MNLI/dev_matched.tsv").write_text(
        "index\tsentence1\tsentence2\tgold_label\n0\tA man plays the guitar.\tSomeone makes music.\tentailment\n"
        "1\tThe cat sat on the mat.\tA dog slept.\tcontradiction\n", encoding="utf-8")
    standins = {"./bert-base-uncased": str(minilm_dir), "./my-squad-checkpoint": str(tiny_checkpoint("squad"))}
    examples = []
    for command in [[], *[[c] for c in COMMANDS if c not in ("bench", "roofline")]]:
        for args in _help_examples(command):
            args = [standins.get(a, a) for a in args]
            name = next(a for a in args if not a.startswith("-"))    # after global options (--verbose)
            if name in ("onnx", "executorch"):
                task = args[args.index("--task") + 1]
                args = [a for a in args if a != "--random-init"]
                if "--model" not in args:
                    args += ["--model", str(tiny_checkpoint(task))]
            if not (name == "executorch" and "--quantize" in args or args in examples):
                examples.append(args)
    quiet_work = [_same_work(args) for args in examples if "--verbose" not in args]
    ran = []
    for args in examples:
        if "--verbose" in args and _same_work(args) in quiet_work:
            continue
        code, out, err = run_main(monkeypatch, capsys, *args)
        assert code == 0, (args, out, err)
        ran.append(args)
    assert len(ran) >= 10, ran
    assert (tmp_path / "artifacts/mnli-onnx/model.onnx").is_file() and (tmp_path / "eval.json").is_file()
    assert (tmp_path / "squeezebert-from-bert/config.json").is_file()
