"""The `sbexport` command line. Thin: parse, call the library, print. Every user-facing failure
is an SbexportError, printed as one line on stderr with exit status 1 (click's usage errors
exit 2)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import warnings
from dataclasses import replace

import click

from .errors import SbexportError
from .targets import TARGET_NAMES
from .tasks import TASKS, evaluable_tasks


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sbexport")
@click.option("-v", "--verbose", is_flag=True,
              help="Also show what the libraries underneath print (warnings, runtime logs).")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Export SqueezeBERT to ONNX and ExecuTorch, prove parity, benchmark against BERT-base.

    \b
    Example:
      sbexport onnx --task mnli --random-init -o artifacts/mnli-onnx
      sbexport --verbose executorch --task mnli --random-init
    """
    ctx.with_resource(own_warnings_one_line())   # set once here, for the whole command, and undone when it ends
    if not verbose:
        ctx.with_resource(third_party_quiet())


class _NativeLogFilter:
    """sys.stderr without executorch's native log lines ("[cpuinfo_utils.cpp:71] Reading ...",
    "[threadpool.cpp:66] Resetting threadpool ..."), which its runtime writes in fragments.
    A write not at the start of such a line passes at once (progress bars redraw with '\r')."""

    NATIVE = re.compile(r"\[[\w./-]+\.(?:c|cc|cpp|h|hpp):\d+\] ")

    def __init__(self, stream):
        self._stream = stream
        self._held = ""     # the start of a line that may be a native log line

    def write(self, text: str) -> int:
        if not self._held and not text.startswith("["):
            return self._stream.write(text)
        self._held += text
        while "\n" in self._held:
            line, self._held = self._held.split("\n", 1)
            if not self.NATIVE.match(line):
                self._stream.write(line + "\n")
        if self._held and (not self._held.startswith("[")
                           or ("] " in self._held and not self.NATIVE.match(self._held))):
            self._stream.write(self._held)
            self._held = ""
        return len(text)

    def release(self) -> None:
        """Write out a held partial line that was not a log line after all."""
        if self._held and not self.NATIVE.match(self._held):
            self._stream.write(self._held)
        self._held = ""

    def __getattr__(self, name):   # flush, fileno, isatty, encoding: the real stream's
        return getattr(self._stream, name)


SBEXPORT_DIR = os.path.dirname(os.path.abspath(__file__))


@contextlib.contextmanager
def own_warnings_one_line():
    """Print sbexport's own warnings as one 'warning: ...' line, like its other messages, not
    Python's "path/source.py:106: UserWarning: ..." followed by the source line. Other
    libraries' warnings (shown with --verbose) keep Python's format. Restored on exit."""
    python_format = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if os.path.abspath(filename).startswith(SBEXPORT_DIR + os.sep):
            (file or sys.stderr).write(f"warning: {message}\n")
        else:
            python_format(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


@contextlib.contextmanager
def third_party_quiet():
    """Hide what the libraries underneath print on a successful run: torchao's "Failed to load
    ... .so" and torch's pytree notice (logging, below ERROR), FutureWarning and deprecation
    warnings raised in their code, executorch's cpuinfo and thread-pool log lines. sbexport's
    own warnings and every error still show; `--verbose` shows everything. Restores all of it
    on exit (the CLI is also run in-process by the tests)."""
    stderr, disabled = sys.stderr, logging.root.manager.disable
    quiet = _NativeLogFilter(stderr)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        warnings.filterwarnings("default", module=r"sbexport(\.|$)")
        logging.disable(logging.WARNING)
        sys.stderr = quiet
        try:
            yield
        finally:
            quiet.release()
            sys.stderr = stderr
            logging.disable(disabled)


# Signals that end a run the way Ctrl-C does: staged folders, temporary files and a phone's run
# folder are removed on the way out (their cleanup runs on KeyboardInterrupt), where the default
# action would kill the process and leave them.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_signals_interrupt(received: list[int]):
    """While in the block, SIGTERM and SIGHUP raise KeyboardInterrupt (the first one; later ones
    are ignored so that the cleanup it starts is not cut short) and are appended to `received`.
    The process's previous handlers are restored on exit."""
    def interrupt(signum, frame):
        received.append(signum)
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main() -> None:
    """Console-script entry point: run the CLI, turn SbexportError into one line and exit 1;
    Ctrl-C, SIGTERM and SIGHUP clean up and exit 128 + the signal's number."""
    received: list[int] = []
    try:
        with stop_signals_interrupt(received):
            cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        signum = received[0] if received else signal.SIGINT
        click.echo("aborted" if signum == signal.SIGINT else f"terminated by {signal.Signals(signum).name}",
                   err=True)
        sys.exit(128 + signum)
    except click.UsageError as e:   # one line, like every other error; usage is one --help away
        command = e.ctx.command_path if e.ctx else "sbexport"
        message = " ".join(e.format_message().split())
        click.echo(f"error: {message} (see '{command} --help')", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except SbexportError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


TASK_CHOICE = click.Choice(list(TASKS))


def _check_threads(ctx, param, threads: int | None) -> int | None:
    """--threads beyond the cores this process may use is allowed (the threads then share
    cores) but said, in one line: a slow run or a timing should not surprise."""
    if threads is not None:
        from .bench.machine import available_cores

        cores = available_cores()
        if threads > cores:
            click.echo(f"warning: --threads {threads} is more than the {cores} cores this process may use; "
                       f"the threads will share them", err=True)
    return threads


def _threads_option(default_help: str):
    """The --threads option of every command that runs a model, with one meaning everywhere."""
    return click.option("--threads", type=click.IntRange(min=1), default=None, callback=_check_threads,
                        help=f"Runtime threads. Default: {default_help}.")


# --------------------------------------------------------------------------------------
# export, verify, predict, info
# --------------------------------------------------------------------------------------


def _export_options(f):
    """The options `onnx` and `executorch` share."""
    for option in reversed([
        click.option("--task", "task_name", required=True, type=TASK_CHOICE,
                     help="What the model does; see `sbexport info --tasks`."),
        click.option("--model", default=None, metavar="PATH_OR_HUB_ID",
                     help="Checkpoint folder or Hugging Face id. Default: the task's public SqueezeBERT checkpoint."),
        click.option("--random-init", is_flag=True, help="Random weights (outputs meaningless; size and speed real)."),
        click.option("--arch", type=click.Choice(["squeezebert", "bert"]), default="squeezebert", show_default=True,
                     help="bert exports the BERT-base baseline."),
        click.option("--max-seq-len", type=click.IntRange(min=2), default=None,
                     help="Largest sequence the file accepts. Default: max_position_embeddings."),
        click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default=None,
                     help="Artifact folder. Default: artifacts/<task>-<format>."),
        click.option("--overwrite", is_flag=True,
                     help="Replace an existing artifact folder (only one sbexport wrote, holding nothing else)."),
        click.option("--no-verify", is_flag=True, help="Skip the parity check against PyTorch."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of random weights: --random-init, or a head the checkpoint lacks."),
    ]):
        f = option(f)
    return f


def _run_export(fmt: str, task_name, model, random_init, arch, max_seq_len, out_dir, overwrite, no_verify,
                seed, **format_options) -> None:
    """Export with the options every format shares and `format_options`, the format's own."""
    from .export import FORMATS, export_artifact
    from .source import resolve_source
    from .tasks import get_task

    task = get_task(task_name)
    source = resolve_source(task, model=model, random_init=random_init, arch=arch, seed=seed)
    options = FORMATS[fmt].Options(**format_options)
    out_dir = f"artifacts/{task.name}-{fmt}" if out_dir is None else out_dir   # "" is refused, not defaulted
    export_artifact(fmt, task, source, out_dir, options, max_seq_len=max_seq_len,
                    overwrite=overwrite, verify=not no_verify, log=click.echo)


def _quantize_options(f):
    """The options of int8 quantization (`onnx --quantize int8` and `quantize`): ONNX Runtime's
    recipe choices, then the calibration and guard options every int8 export shares."""
    f = _guard_options(f)
    for option in reversed([
        click.option("--quantize-mode", type=click.Choice(["static", "dynamic"]), default="static",
                     show_default=True, help="static: calibrated, every Conv a QLinearConv (the fast form); "
                     "dynamic: ONNX Runtime's runtime-range recipe (slower for SqueezeBERT)."),
        click.option("--int8-weights", type=click.Choice(["s8", "u8"]), default="s8", show_default=True,
                     help="How the static recipe stores its weights: s8, fastest on arm64 and on x86 CPUs with "
                     "VNNI; u8, the same numbers exact on every CPU (ONNX Runtime saturates s8 on x86 without "
                     "VNNI, e.g. AMD Zen 3), slower with VNNI."),
        click.option("--int8-embeddings", is_flag=True,
                     help="Static recipe: store the embedding tables int8 too, a file of about a quarter of fp32's "
                     "(MiniLM: 26% against 65%); the guard judges its answers as always."),
    ]):
        f = option(f)
    return f


def _guard_options(f):
    """The calibration and accuracy-guard options of every int8 export (ONNX and ExecuTorch)."""
    for option in reversed([
        click.option("--calibration", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                     help="Calibration texts: one per line, pairs tab-separated. Default: built-in English sentences."),
        click.option("--min-agreement", type=click.FloatRange(0, 100, min_open=True), default=99.0,
                     show_default=True, help="Refuse the int8 file when it agrees with fp32 PyTorch on fewer "
                     "decisions than this percentage (argmax, span, tags; cosine for features)."),
        click.option("--eval-data", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                     help="A labelled file (as for `sbexport eval`): also refuse when a metric drops too much."),
        click.option("--max-metric-drop", type=click.FloatRange(min=0), default=1.0, show_default=True,
                     help="With --eval-data: the largest drop of a metric allowed, in points."),
    ]):
        f = option(f)
    return f


QUANTIZE_ONLY = ("quantize_mode", "int8_weights", "int8_embeddings")     # ONNX Runtime's recipe
GUARD_ONLY = ("calibration", "min_agreement", "eval_data", "max_metric_drop")


def _refuse_unused(names, needs: str) -> None:
    """Raise a usage error for the first option of `names` given on the command line: it would
    do nothing without `needs`, and a user who wrote it expects it to (e.g. --calibration on an
    fp32 export)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    for param in ctx.command.params:
        if param.name in names and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
            raise click.UsageError(f"{max(param.opts, key=len)} applies with {needs} only", ctx)


def _quantize_settings(quantize_mode, int8_weights, int8_embeddings, calibration, min_agreement, eval_data,
                       max_metric_drop):
    from dataclasses import replace

    from .export.quantize import RECIPES, QuantizeOptions

    if eval_data is None:
        _refuse_unused(("max_metric_drop",), "--eval-data")
    recipe = RECIPES[quantize_mode] if int8_weights == "s8" else replace(RECIPES[quantize_mode], weight_storage="u8")
    if int8_embeddings and recipe.op_types is not None:     # the dynamic recipe covers every op already
        recipe = replace(recipe, op_types=(*recipe.op_types, "Gather"))
    return QuantizeOptions(recipe=recipe, calibration=calibration, min_agreement=min_agreement / 100,
                           eval_data=eval_data, max_metric_drop=max_metric_drop / 100)


@cli.command()
@_export_options
@click.option("--opset", type=int, default=18, show_default=True,
              help="ONNX opset, within what the installed exporter writes (18 to 25 with onnxscript 0.7.2).")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Write an int8 file instead, kept only when it agrees with fp32 PyTorch (see `quantize`).")
@_quantize_options
def onnx(opset, quantize, quantize_mode, int8_weights, int8_embeddings, calibration, min_agreement, eval_data,
         max_metric_drop, **kwargs) -> None:
    """Export a task to ONNX, then check parity against PyTorch.

    With --quantize int8 the fp32 file is exported and checked first, then quantized
    (static: per-channel u8 weights, u8 activations, calibrated on text), and the int8 file
    lands only when the accuracy guard passes (--min-agreement, and --eval-data when given).

    \b
    Example:
      sbexport onnx --task mnli -o artifacts/mnli-onnx
      sbexport onnx --task squad --model ./my-squad-checkpoint
      sbexport onnx --task mnli --quantize int8 -o artifacts/mnli-onnx-int8
    """
    if quantize is None:
        _refuse_unused(QUANTIZE_ONLY + GUARD_ONLY, "--quantize int8")
        _run_export("onnx", opset=opset, **kwargs)
        return
    from .export import OnnxOptions
    from .export.quantize import export_int8
    from .source import resolve_source
    from .tasks import get_task

    task = get_task(kwargs["task_name"])
    source = resolve_source(task, model=kwargs["model"], random_init=kwargs["random_init"], arch=kwargs["arch"],
                            seed=kwargs["seed"])
    out_dir = f"artifacts/{task.name}-onnx-int8" if kwargs["out_dir"] is None else kwargs["out_dir"]
    export_int8("onnx", task, source, out_dir, OnnxOptions(opset=opset),
                _quantize_settings(quantize_mode, int8_weights, int8_embeddings, calibration, min_agreement,
                                   eval_data, max_metric_drop),
                max_seq_len=kwargs["max_seq_len"], overwrite=kwargs["overwrite"], verify=not kwargs["no_verify"],
                log=click.echo)


@cli.command()
@click.argument("folder", type=click.Path())
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default=None,
              help="The new int8 artifact folder. Default: FOLDER-int8.")
@click.option("--overwrite", is_flag=True, help="Replace an existing artifact folder at --output.")
@_quantize_options
def quantize(folder, out_dir, overwrite, **kwargs) -> None:
    """Quantize the fp32 ONNX artifact FOLDER to int8 in a new artifact folder.

    FOLDER is left as it is. The new folder lands only when its accuracy guard passes: the
    int8 file must make the same decisions as fp32 PyTorch (argmax label, tags, answer span,
    choice, masked token; embedding cosine >= 0.99 for features) on at least --min-agreement
    percent of verify's sweep and of real sentences.

    \b
    Example:
      sbexport quantize artifacts/mnli-onnx -o artifacts/mnli-int8
      sbexport quantize artifacts/mnli-onnx --eval-data glue/MNLI/dev_matched.tsv -o artifacts/mnli-int8-checked
    """
    from .export.quantize import quantize_artifact

    out_dir = f"{str(folder).rstrip('/')}-int8" if out_dir is None else out_dir
    quantize_artifact(folder, out_dir, _quantize_settings(**kwargs), overwrite=overwrite, log=click.echo)


@cli.command()
@_export_options
@click.option("--backend", type=click.Choice(["xnnpack", "portable"]), default="xnnpack", show_default=True,
              help="XNNPACK delegate, or ExecuTorch's portable kernels.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Fixed batch size of the program (the sequence stays dynamic).")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Write an int8 program instead (XNNPACK), kept only when it agrees with fp32 PyTorch.")
@click.option("--grouped-conv", type=click.Choice(["xnnpack", "per-group", "runner-kernel"]), default="xnnpack",
              show_default=True, help="How the grouped 1x1 convolutions run: as grouped convolutions inside the "
              "XNNPACK delegate; as one dense convolution per group inside it (faster on x86 CPUs with AVX2 but "
              "no AVX-512); or left as native convolutions for the kernel registered in android_demo's runner "
              "(kernels/executorch; other runtimes run them with their portable kernel). fp32 only.")
@_guard_options
def executorch(backend, batch, quantize, grouped_conv, calibration, min_agreement, eval_data, max_metric_drop,
               **kwargs) -> None:
    """Export a task to an ExecuTorch program (.pte), then check parity against PyTorch.

    With --quantize int8 the fp32 program is exported and checked first, then the model is
    quantized with PT2E (static: per-channel int8 weights, int8 activations, calibrated on
    text) and lowered to XNNPACK, every convolution a quantized one inside the delegate; the
    int8 program lands only when the accuracy guard passes (--min-agreement, and --eval-data
    when given).

    Two opt-ins, recorded in the manifest (`sbexport info`): with --grouped-conv per-group each
    grouped convolution is exported as one dense convolution per group, which XNNPACK runs on
    its faster dense path where its grouped one is slow (measure with `sbexport bench
    --grouped-conv per-group`); with --grouped-conv runner-kernel the grouped convolutions stay
    out of the XNNPACK delegate as native convolutions, which android_demo's runner runs with
    sbexport's registered kernel (kernels/executorch/).

    \b
    Example:
      sbexport executorch --task mnli -o artifacts/mnli-pte
      sbexport executorch --task fill-mask --random-init --backend portable
      sbexport executorch --task mnli --quantize int8 -o artifacts/mnli-pte-int8
    """
    if quantize is None:
        _refuse_unused(GUARD_ONLY, "--quantize int8")
        _run_export("executorch", backend=backend, batch=batch, grouped_conv=grouped_conv, **kwargs)
        return
    from .export import ExecuTorchOptions
    from .export.quantize import export_int8
    from .source import resolve_source
    from .tasks import get_task

    task = get_task(kwargs["task_name"])
    source = resolve_source(task, model=kwargs["model"], random_init=kwargs["random_init"], arch=kwargs["arch"],
                            seed=kwargs["seed"])
    out_dir = f"artifacts/{task.name}-executorch-int8" if kwargs["out_dir"] is None else kwargs["out_dir"]
    settings = _quantize_settings("static", "s8", False, calibration, min_agreement, eval_data, max_metric_drop)
    export_int8("executorch", task, source, out_dir,
                ExecuTorchOptions(backend=backend, batch=batch, grouped_conv=grouped_conv), settings,
                max_seq_len=kwargs["max_seq_len"], overwrite=kwargs["overwrite"], verify=not kwargs["no_verify"],
                log=click.echo)


@cli.command()
@click.argument("folder", type=click.Path())
@_threads_option("the runtime's own choice")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the report as JSON.")
@click.option("--target", "target_name", type=click.Choice(list(TARGET_NAMES)), default="host",
              show_default=True, help="Where the file runs: this machine, or an arm64 CPU emulated by "
              "qemu-aarch64 (sequences up to 32; set up by `make arm64`).")
@click.option("--cpu", default=None, metavar="MODEL",
              help="The emulated CPU model of --target arm64-qemu (`qemu-aarch64 -cpu help`). "
              "Default: cortex-a53 (ARMv8.0); max has every extension qemu emulates.")
def verify(folder, threads, json_path, target_name, cpu) -> None:
    """Re-run the parity sweep of an artifact folder against its PyTorch reference.

    Exits 1 when any output differs beyond its bound (atol + rtol x the output's scale, at
    real tokens; the report shows each), or when a file no longer matches the manifest's sha256.

    \b
    Example:
      sbexport verify artifacts/mnli-onnx
      sbexport verify artifacts/mnli-pte --target arm64-qemu --cpu max
    """
    from .reportfile import check_not_an_input, check_report_path, write_report
    from .targets import open_target
    from .threads import thread_settings
    from .verify import report_json, verify_folder

    if json_path is not None:
        check_report_path(json_path)          # before the sweep, not after it
        check_not_an_input(json_path, [folder])
    target = open_target(target_name, cpu)    # a missing arm64 setup is refused before the reference is built
    with thread_settings(threads, executorch=threads is not None):   # this command owns the pools
        report = verify_folder(folder, threads=threads or 0, log=click.echo, target=target)
    if json_path is not None:
        write_report(json_path, report_json(report) + "\n")
    report.raise_on_failure()


@cli.command()
@click.argument("folder", type=click.Path())
@click.argument("text")
@click.argument("text_pair", required=False)
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Candidates per [MASK].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def predict(folder, text, text_pair, top_k, as_json) -> None:
    """Tokenize TEXT (and TEXT_PAIR), run the exported file, print the result.

    Texts longer than the file's maximum sequence are truncated with a warning. For squad,
    TEXT is the question and TEXT_PAIR the context, which is read whole: a long one in
    overlapping windows (128 tokens shared, or half a window), the answer the best span of
    any; for swag, TEXT_PAIR holds the endings separated by '|'.

    \b
    Example:
      sbexport predict artifacts/mnli-onnx "A man plays guitar." "Someone makes music."
    """
    import json
    import warnings

    from .predict import PredictWarning
    from .predict import predict as run_predict

    # Only predict's own warnings reach the user; the runtimes' deprecation notices are noise here.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", PredictWarning)
        result = run_predict(folder, text, text_pair, top_k=top_k)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    click.echo(json.dumps(result, indent=2, ensure_ascii=False) if as_json else _format_prediction(result))


def _format_prediction(result: dict) -> str:
    """predict's text, shown by the head of the task the result names (heads.Head.show)."""
    from .tasks import get_task

    return get_task(result["task"]).head.show(result)


@cli.command()
@click.argument("folder", type=click.Path(), required=False)
@click.option("--tasks", "list_tasks", is_flag=True, help="List the registered tasks instead.")
def info(folder, list_tasks) -> None:
    """Say what an artifact folder holds (task, labels, inputs, outputs, parity, files).

    \b
    Example:
      sbexport info artifacts/mnli-onnx
      sbexport info --tasks
    """
    if list_tasks and folder is not None:
        raise click.UsageError(f"--tasks lists the tasks and takes no folder; run `sbexport info {folder}` "
                               f"for the folder")
    if list_tasks or folder is None:
        for task in TASKS.values():
            click.echo(f"{task.name:<10} {task.head.name:<24} {task.description}")
        return
    from .artifact import open_artifact

    click.echo(_format_manifest(folder, open_artifact(folder)))


def _format_manifest(folder, m) -> str:
    """info's text: one line per fact of the manifest `m` (a manifest.Manifest)."""
    origin = f"random weights, seed {m.source.seed}" if m.source.random_init else m.source.checkpoint
    lines = [f"{folder}: {m.description}",
             f"  task      {m.task} ({m.head}), {m.arch} {m.model_class}",
             f"  weights   {origin}"]
    if m.labels:
        lines.append(f"  labels    {', '.join(m.labels)}")
    lines += [f"  input     {n} {v.dtype} [{', '.join(v.axes)}]" for n, v in m.inputs.items()]
    lines += [f"  output    {n} {v.dtype} [{', '.join(v.axes)}]" for n, v in m.outputs.items()]
    dims = [(name, value) for name, value in vars(m.dims).items() if value is not None]
    lines.append("  dims      " + ", ".join(f"{name} {lo}..{hi}" for name, (lo, hi) in dims))
    lines.append(f"  exported  {m.details.summary}, sbexport {m.sbexport_version}, torch {m.torch_version}")
    if m.quantization is not None:   # int8: judged by agreement with fp32, not by the parity bound
        lines.append(_agreement_line(m.agreement) if m.agreement
                     else "  agreement not measured (run `sbexport verify`)")
    else:
        lines.append(_parity_line(m.parity) if m.parity else "  parity    not verified (run `sbexport verify`)")
    lines += [f"  file      {n} {f.bytes / 1e6:.1f} MB sha256 {f.sha256[:16]}" for n, f in m.files.items()]
    return "\n".join(lines)


def _parity_line(parity) -> str:
    """info's parity line (parity: manifest.ParityFigures): the verdict and the output nearest
    its bound."""
    worst = parity.worst
    return (f"  parity    {'PASS' if parity.passed else 'FAIL'}, worst {worst.max_abs:.2e} abs "
            f"({worst.fraction:.0%} of its bound) over {parity.cases} cases")


def _agreement_line(agreement) -> str:
    """info's line for an int8 artifact (agreement: manifest.AgreementFigures): the guard's
    verdict and its lowest agreement."""
    return (f"  agreement {'PASS' if agreement.passed else 'FAIL'}, int8 against fp32 PyTorch: lowest "
            f"{agreement.agreement:.2%} over {agreement.cases} cases (bar {agreement.min_agreement:.0%})")


@cli.command("convert-bert")
@click.argument("src")
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True,
              help="Replace DST if an earlier convert-bert wrote it (and it holds nothing else).")
def convert_bert(src: str, dst: str, overwrite: bool) -> None:
    """Convert the BERT checkpoint SRC into an equivalent SqueezeBERT checkpoint DST.

    SRC is a folder with config.json and weights (or a Hub id in the local cache). DST gets a
    SqueezeBERT config with every group count 1, the weights as 1x1 convolutions, and the
    tokenizer files. The result computes what SRC computes (exact up to float rounding).

    \b
    Example:
      sbexport convert-bert ./bert-base-uncased ./squeezebert-from-bert
    """
    from .convert import convert_bert_to_squeezebert
    click.echo(convert_bert_to_squeezebert(src, dst, overwrite=overwrite, log=lambda line: click.echo(line, err=True)))


# --------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------


def _split(value: str, option: str, kind=str) -> tuple:
    """'8,32,128' -> (8, 32, 128); one SbexportError naming the option otherwise, a value given
    twice too (checked here as well as by the library: --quantize and --grouped-conv add
    runtimes without repeating them, which would hide a repeat of the user's)."""
    from .bench.inputs import refuse_duplicates

    try:
        values = tuple(kind(v.strip()) for v in value.split(",") if v.strip())
    except ValueError:
        raise SbexportError(f"{option}: expected comma-separated integers, got {value!r}") from None
    refuse_duplicates(values, option)
    return values


def _device_only_options(ctx, serials, runner) -> None:
    """Refuse --serial, --runner and a --cooldown given without --device adb: silently ignored,
    they would let the user believe the run was the one asked for."""
    cooldown = ctx.get_parameter_source("cooldown") is not click.core.ParameterSource.DEFAULT
    given = [name for name, value in (("--serial", serials), ("--runner", runner), ("--cooldown", cooldown)) if value]
    if given:
        raise SbexportError(f"{' and '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to --device adb only")


def _print_reports(text: str, written: list[str], failures: list[str] = ()) -> None:
    """Print the table and a line per report written (none for stdout, which holds it); then,
    when some could not be written, an error line each and exit 1 (SbexportError: the last)."""
    from .reportfile import is_stdout

    click.echo(text)
    for path in written:
        if not is_stdout(path):
            click.echo(f"wrote {path}")
    for failure in failures[:-1]:
        click.echo(f"error: {failure}", err=True)
    if failures:
        raise SbexportError(failures[-1])


@cli.command()
@click.option("--task", "task_name", type=TASK_CHOICE, default="mnli", show_default=True, help="The head to time.")
@click.option("--seq-lens", default="8,32,128,512", show_default=True, help="Sequence lengths, comma-separated.")
@click.option("--batch", type=int, default=1, show_default=True,
              help="Sequences per call (ExecuTorch files are exported at it).")
@_threads_option("all cores, for every runtime")
@click.option("--warmup", type=int, default=3, show_default=True, help="Untimed calls per shape, after the first.")
@click.option("--runs", type=int, default=20, show_default=True, help="Timed calls per model and shape.")
@click.option("--runtimes", default="eager,onnx,executorch", show_default=True, help="Runtimes, comma-separated.")
@click.option("--formats", "formats_alias", default=None, hidden=True,
              help="The old name of --runtimes (deprecated: it always held runtimes, not export formats).")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Also time each model's int8 file beside its fp32 one, where the runtime has one (onnx: "
                   "onnx-int8; SqueezeBERT static int8 convolutions, BERT-base ONNX Runtime's dynamic recipe).")
@click.option("--grouped-conv", type=click.Choice(["per-group"]), default=None,
              help="Also time ExecuTorch's opt-in export beside the default one (executorch-per-group: each grouped "
                   "convolution one dense convolution per group; `sbexport executorch --grouped-conv`).")
@click.option("--models", default="squeezebert,bert", show_default=True, help="Models, comma-separated.")
@click.option("--model-squeezebert", default=None, metavar="PATH_OR_HUB_ID",
              help="A SqueezeBERT checkpoint instead of random weights.")
@click.option("--model-bert", default=None, metavar="PATH_OR_HUB_ID",
              help="A BERT checkpoint instead of random weights.")
@click.option("--random-init", is_flag=True,
              help="Random weights for both models (the default; latency does not depend on them).")
@click.option("--config-squeezebert", default=None, metavar="CONFIG_JSON",
              help="Random SqueezeBERT weights at this config.json's size instead of the public one.")
@click.option("--config-bert", default=None, metavar="CONFIG_JSON",
              help="Random BERT weights at this config.json's size instead of BERT-base's.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the results as JSON (schema sbexport.bench/1).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write latency against sequence length as PNG.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Keep exported files here and reuse them. Default: a temporary folder.")
@click.option("--no-verify", is_flag=True, help="Time exports without checking their parity first.")
@click.option("--no-memory", is_flag=True, help="Skip the peak-RSS probes (one subprocess per model and runtime).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@click.option("--sgemm-size", type=click.IntRange(min=8), default=2048, show_default=True,
              help="n of the n x n fp32 matrix product that measures the ceiling (on the host: the fastest of "
                   "torch, ONNX Runtime and ExecuTorch XNNPACK).")
@click.option("--device", type=click.Choice(["adb"]), default=None,
              help="Time on an Android device over adb (ExecuTorch in android_demo's native runner) instead of "
                   "this CPU. See README: Benchmark on a phone.")
@click.option("--serial", "serials", multiple=True, metavar="SERIAL",
              help="With --device adb: the device, as `adb devices` lists it; repeat for several (one report "
                   "each, then a combined table). Default: the one device attached.")
@click.option("--runner", type=click.Path(), default=None, metavar="PATH",
              help="With --device adb: the native runner to push, the Android build's sbexport_runner or the arm64 "
                   "Linux bundle folder (android_demo/README.md).")
@click.option("--cooldown", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="With --device adb: seconds of rest between two runner processes.")
@click.pass_context
def bench(ctx, task_name, seq_lens, batch, threads, warmup, runs, runtimes, formats_alias, quantize, grouped_conv,
          models, model_squeezebert,
          model_bert, random_init, config_squeezebert, config_bert, json_path, plot_path, workdir, no_verify,
          no_memory, seed, sgemm_size, device, serials, runner, cooldown) -> None:
    """Time SqueezeBERT against BERT-base on this CPU: PyTorch eager, ONNX Runtime, ExecuTorch.

    Exports each model once per format, times both interleaved run by run, and prints per
    model, runtime and length: latency percentiles, load and first-run time, FLOPs, GFLOP/s,
    % of the machine's sgemm rate, file size, peak memory and the BERT / SqueezeBERT ratio.

    \b
    Example:
      sbexport bench --seq-lens 128 --json bench.json --plot bench.png
      sbexport bench --runtimes onnx --threads 1 --runs 50
      sbexport bench --runtimes onnx --quantize int8 --seq-lens 128
      sbexport bench --runtimes onnx,executorch --grouped-conv per-group --seq-lens 128
      sbexport bench --config-squeezebert small/config.json --models squeezebert
      sbexport bench --device adb --runner build/runner-android/sbexport_runner --seq-lens 128
    """
    from .bench import BenchConfig, run_bench, table
    from .reportfile import ReportsNotWritten

    checkpoints = {arch: path for arch, path in (("squeezebert", model_squeezebert), ("bert", model_bert)) if path}
    configs = {arch: path for arch, path in (("squeezebert", config_squeezebert), ("bert", config_bert)) if path}
    if formats_alias is not None:
        click.echo("warning: --formats is deprecated, use --runtimes (it names runtimes: eager, onnx, executorch)",
                   err=True)
        runtimes = formats_alias
    config = BenchConfig(task=task_name, seq_lens=_split(seq_lens, "--seq-lens", int), batch=batch, threads=threads,
                         warmup=warmup, runs=runs, formats=_split(runtimes, "--runtimes"),
                         models=_split(models, "--models"), checkpoints=checkpoints, configs=configs,
                         random_init=random_init,
                         workdir=workdir, verify=not no_verify, memory=not no_memory, seed=seed,
                         sgemm_size=sgemm_size)
    if device is None:
        _device_only_options(ctx, serials, runner)
    if quantize is not None:
        config = replace(config, formats=_with_int8(config.formats, device))
    default_runtimes = ctx.get_parameter_source("runtimes") is click.core.ParameterSource.DEFAULT
    if device == "adb" and default_runtimes and formats_alias is None:
        config = replace(config, formats=("executorch",))     # what a device runs
    if grouped_conv is not None:
        config = replace(config, formats=_with_per_group(config.formats))
    verbose = ctx.find_root().params.get("verbose", False)
    if device == "adb":
        _bench_devices(config, serials, runner, cooldown, json_path, plot_path, verbose)
        return
    try:
        result = run_bench(config, json_path=json_path, plot_path=plot_path, verbose=verbose)
    except ReportsNotWritten as e:       # the run's figures are printed all the same
        _print_reports(table(e.result), e.written, e.failures)
    _print_reports(table(result), [p for p in (json_path, plot_path) if p is not None])


def _with_int8(runtimes: tuple[str, ...], device) -> tuple[str, ...]:
    """`runtimes` with the int8 form of each that has one after it (bench --quantize int8).
    Raises SbexportError when none has (eager alone, or a device: it runs fp32 .pte only)."""
    from .bench.inputs import INT8_RUNTIMES

    added = tuple(r for rt in runtimes for r in ((rt, INT8_RUNTIMES[rt]) if rt in INT8_RUNTIMES else (rt,)))
    if device is not None or added == runtimes:
        raise SbexportError(f"--quantize int8 needs a runtime with an int8 form ({', '.join(INT8_RUNTIMES)}); "
                            f"{'a device runs fp32 .pte files only' if device else 'got ' + ','.join(runtimes)}")
    return tuple(dict.fromkeys(added))


def _with_per_group(runtimes: tuple[str, ...]) -> tuple[str, ...]:
    """`runtimes` with executorch-per-group after executorch (bench --grouped-conv per-group).
    Raises SbexportError when executorch is not among them."""
    from .bench.inputs import PER_GROUP_RUNTIMES

    if not set(runtimes) & set(PER_GROUP_RUNTIMES):
        raise SbexportError(f"--grouped-conv per-group times ExecuTorch's per-group export beside its default one; "
                            f"add executorch to --runtimes (got {','.join(runtimes)})")
    return tuple(dict.fromkeys(r for rt in runtimes for r in (rt, PER_GROUP_RUNTIMES.get(rt, rt))))


def _bench_devices(config, serials, runner, cooldown, json_path, plot_path, verbose) -> None:
    """`bench --device adb`: bench.devices does the work; each device's table, then all of them."""
    from pathlib import Path

    from .bench.devices import bench_devices, devices_text, report_path
    from .reportfile import ReportsNotWritten

    if runner is None:
        raise SbexportError("--device adb needs --runner: the Android build of android_demo's runner "
                            "(build/runner-android/sbexport_runner) or the arm64 Linux bundle "
                            "(build/runner-arm64/bundle); see android_demo/README.md")
    try:
        results = bench_devices(config, serials, Path(runner), json_path=json_path, plot_path=plot_path,
                                cooldown_s=cooldown, log=lambda line: click.echo(line, err=True), verbose=verbose)
    except ReportsNotWritten as e:
        _print_reports(devices_text(e.result), e.written, e.failures)
    _print_reports(devices_text(results), [report_path(path, result["device"]["serial"], len(results))
                                           for result in results for path in (json_path, plot_path)
                                           if path is not None])


# --------------------------------------------------------------------------------------
# roofline
# --------------------------------------------------------------------------------------


@cli.command()
@_threads_option("all cores")
@click.option("--seq-lens", default=None, help="Sequence lengths, comma-separated. Default: 8,16,...,512.")
@click.option("--runtimes", default=None,
              help="Runtimes, comma-separated: torch, onnx, executorch, executorch-per-group (each grouped "
                   "convolution one dense convolution per group, as `executorch --grouped-conv per-group` exports it), "
                   "kernels (kernels/, after `make kernels`). Default: torch,onnx,executorch.")
@click.option("--repeats", type=int, default=None, help="Timed calls per shape, runtime and length. Default: 20.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the results as JSON (schema sbexport.roofline/1).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write the roofline (GFLOP/s against arithmetic intensity) as PNG.")
@click.option("--quick", is_flag=True,
              help="A tiny sweep (lengths 8 and 32, 3 calls, small ceilings) for a first look.")
def roofline(threads, seq_lens, runtimes, repeats, json_path, plot_path, quick) -> None:
    """Measure this CPU's fp32 ceilings and the GFLOP/s of every SqueezeBERT projection shape
    (grouped 1x1 convolutions, batch 1) in each runtime: torch conv1d, ONNX Runtime's Conv,
    ExecuTorch XNNPACK, and on request sbexport's own kernel (--runtimes kernels).

    Ceilings: a large sgemm in torch, ONNX Runtime and ExecuTorch XNNPACK, the fastest setting
    the measured sgemm ceiling, and a large copy (memory bandwidth), on one core and on all.
    Each runtime's output is checked against a float64 reference before it is timed.

    \b
    Example:
      sbexport roofline --json roofline.json --plot roofline.png
      sbexport roofline --quick --runtimes onnx,executorch --threads 1
      sbexport roofline --seq-lens 128 --runtimes kernels,onnx,executorch
    """
    from .reportfile import ReportsNotWritten
    from .roofline import RooflineConfig, quick_config, run_roofline, table

    changes = {"threads": threads}
    if seq_lens is not None:
        changes["seq_lens"] = _split(seq_lens, "--seq-lens", int)
    if runtimes is not None:
        changes["runtimes"] = _split(runtimes, "--runtimes")
    if repeats is not None:
        changes["repeats"] = repeats
    config = quick_config(**changes) if quick else RooflineConfig(**changes)
    try:
        result = run_roofline(config, json_path=json_path, plot_path=plot_path,
                              log=lambda line: click.echo(line, err=True))
    except ReportsNotWritten as e:       # the measurements are printed all the same
        _print_reports(table(e.result), e.written, e.failures)
    _print_reports(table(result), [p for p in (json_path, plot_path) if p is not None])


# --------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------


@cli.command("eval")
@click.option("--task", "task_name", required=True, type=click.Choice(evaluable_tasks()),
              help="The task whose metric to compute.")
@click.option("--data", required=True, metavar="FILE", help="The labelled file (a dev set; see above).")
@click.option("--format", "fmt", default="auto", show_default=True, metavar="auto|glue|jsonl|squad|conll",
              help="File layout; auto decides from the task and the file name.")
@click.option("--model", default=None, metavar="PATH_OR_HUB_ID",
              help="Checkpoint of the PyTorch model. Default: the first artifact's source, else the task's checkpoint.")
@click.option("--random-init", is_flag=True, help="Random weights for the PyTorch model (scores meaningless).")
@click.option("--arch", type=click.Choice(["squeezebert", "bert"]), default="squeezebert", show_default=True,
              help="Architecture of --model / --random-init.")
@click.option("--artifact", "artifacts", multiple=True, type=click.Path(), metavar="DIR",
              help="Exported artifact folder to evaluate beside PyTorch; repeat for several.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate only the first N valid rows.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Rows per call (a fixed-batch ExecuTorch file uses its own).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the report as JSON (schema sbexport.eval/1).")
def eval_command(task_name, data, fmt, model, random_init, arch, artifacts, limit, batch_size, json_path) -> None:
    """Score the PyTorch model and each artifact on a labelled file: the task's metric, its
    delta to PyTorch and how often each artifact predicts what PyTorch predicts.

    Metrics: accuracy (F1 too for mrpc and qqp), Matthews correlation (cola), Pearson and
    Spearman (stsb), exact match and F1 (squad), entity F1 (ner). Malformed rows are skipped,
    counted and listed by line. Long inputs are truncated to the file's maximum sequence,
    except SQuAD contexts: those are read in overlapping windows (doc stride 128 tokens, or
    half a window), as transformers' run_qa reads them.

    \b
    The dev sets are not shipped; download them yourself:
      GLUE       gluebenchmark.com, or the `glue` dataset on the Hugging Face Hub
                 (MNLI dev_matched.tsv / dev_mismatched.tsv, SST-2 dev.tsv, ...)
      SQuAD 1.1  dev-v1.1.json from rajpurkar.github.io/SQuAD-explorer
      CoNLL-2003 eng.testa / eng.testb from the CoNLL-2003 shared task distribution

    \b
    Example:
      sbexport eval --task mnli --data glue/MNLI/dev_matched.tsv \\
          --artifact artifacts/mnli-onnx --artifact artifacts/mnli-pte --json eval.json
    """
    from .eval import report_json, run_eval
    from .reportfile import check_not_an_input, check_report_path, write_report

    if json_path is not None:
        check_report_path(json_path)          # before the evaluation, not after it
        check_not_an_input(json_path, [data, *artifacts, *([model] if model and os.path.exists(model) else [])])
    report = run_eval(task_name, data, fmt, model=model, random_init=random_init, artifacts=artifacts,
                      arch=arch, limit=limit, batch_size=batch_size, log=lambda line: click.echo(line, err=True))
    click.echo(report.table())
    if json_path is not None:
        write_report(json_path, report_json(report) + "\n")
        click.echo(f"wrote {json_path}")
