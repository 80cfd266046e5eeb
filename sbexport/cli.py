"""The `sbexport` command line. Thin: parse, call the library, print. Every user-facing failure
is an SbexportError, printed as one line on stderr with exit status 1 (click's usage errors
exit 2)."""

from __future__ import annotations

import sys

import click

from .errors import SbexportError
from .tasks import TASKS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sbexport")
def cli() -> None:
    """Export SqueezeBERT to ONNX and ExecuTorch, prove parity, benchmark against BERT-base.

    \b
    Example:
      sbexport onnx --task mnli --random-init -o artifacts/mnli-onnx
    """


def main() -> None:
    """Console-script entry point: run the CLI, turn SbexportError into one line and exit 1."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except SbexportError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


TASK_CHOICE = click.Choice(list(TASKS))


# --------------------------------------------------------------------------------------
# export, verify, predict, info
# --------------------------------------------------------------------------------------


def _export_options(f):
    """The options `onnx` and `executorch` share."""
    for option in reversed([
        click.option("--task", "task_name", required=True, type=TASK_CHOICE, help="What the model does; see `sbexport info --tasks`."),
        click.option("--model", default=None, metavar="PATH_OR_HUB_ID",
                     help="Checkpoint folder or Hugging Face id. Default: the task's public SqueezeBERT checkpoint."),
        click.option("--random-init", is_flag=True, help="Random weights (outputs meaningless; size and speed real)."),
        click.option("--arch", type=click.Choice(["squeezebert", "bert"]), default="squeezebert", show_default=True,
                     help="bert exports the BERT-base baseline."),
        click.option("--max-seq-len", type=click.IntRange(min=1), default=None,
                     help="Largest sequence the file accepts. Default: max_position_embeddings."),
        click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default=None,
                     help="Artifact folder. Default: artifacts/<task>-<format>."),
        click.option("--overwrite", is_flag=True, help="Replace an existing artifact folder."),
        click.option("--no-verify", is_flag=True, help="Skip the parity check against PyTorch."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of --random-init weights."),
    ]):
        f = option(f)
    return f


def _run_export(fmt: str, task_name, model, random_init, arch, max_seq_len, out_dir, overwrite, no_verify,
                seed, **format_options) -> None:
    from .export import ExportOptions, export_artifact
    from .source import resolve_source
    from .tasks import get_task

    task = get_task(task_name)
    source = resolve_source(task, model=model, random_init=random_init, arch=arch, seed=seed)
    options = ExportOptions(max_seq_len=max_seq_len, **format_options)
    out_dir = out_dir or f"artifacts/{task.name}-{fmt}"
    export_artifact(fmt, task, source, out_dir, options, overwrite=overwrite, verify=not no_verify, log=click.echo)


@cli.command()
@_export_options
@click.option("--opset", type=click.IntRange(min=18), default=18, show_default=True, help="ONNX opset.")
def onnx(opset, **kwargs) -> None:
    """Export a task to ONNX, then check parity against PyTorch.

    \b
    Example:
      sbexport onnx --task mnli -o artifacts/mnli-onnx
      sbexport onnx --task squad --model ./my-squad-checkpoint
    """
    _run_export("onnx", opset=opset, **kwargs)


@cli.command()
@_export_options
@click.option("--backend", type=click.Choice(["xnnpack", "portable"]), default="xnnpack", show_default=True,
              help="XNNPACK delegate, or ExecuTorch's portable kernels.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Fixed batch size of the program (the sequence stays dynamic).")
def executorch(backend, batch, **kwargs) -> None:
    """Export a task to an ExecuTorch program (.pte), then check parity against PyTorch.

    \b
    Example:
      sbexport executorch --task mnli -o artifacts/mnli-pte
      sbexport executorch --task fill-mask --random-init --backend portable
    """
    _run_export("executorch", backend=backend, batch=batch, **kwargs)


@cli.command()
@click.argument("folder", type=click.Path())
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Runtime threads (0: default).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the report as JSON.")
def verify(folder, threads, json_path) -> None:
    """Re-run the parity sweep of an artifact folder against its PyTorch reference.

    Exits 1 when any output differs by more than the task's tolerance, or when a file no
    longer matches the manifest's sha256.

    \b
    Example:
      sbexport verify artifacts/mnli-onnx
    """
    from .verify import report_json, verify_folder

    report = verify_folder(folder, threads=threads, log=click.echo)
    if json_path:
        _write_text(json_path, report_json(report))
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
    TEXT is the question and TEXT_PAIR the context; for swag, TEXT_PAIR holds the endings
    separated by '|'.

    \b
    Example:
      sbexport predict artifacts/mnli-onnx "A man plays guitar." "Someone makes music."
    """
    import json
    import warnings

    from .predict import predict as run_predict

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_predict(folder, text, text_pair, top_k=top_k)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    click.echo(json.dumps(result, indent=2, ensure_ascii=False) if as_json else _format_prediction(result))


def _format_prediction(result: dict) -> str:
    if "labels" in result:
        return "\n".join(f"{r['label']:<20} {r['score']:.4f}" for r in result["labels"])
    if "score" in result and "answer" not in result:
        return f"score {result['score']:.4f}"
    if "answer" in result:
        return f"answer: {result['answer']!r} (characters {result['start']}-{result['end']})"
    if "tokens" in result:
        return "\n".join(f"{t['token']:<20} {t['label']}" for t in result["tokens"])
    if "masks" in result:
        return "\n".join(" ".join(f"{c['token']}({c['score']:.3f})" for c in cands) for cands in result["masks"])
    if "choices" in result:
        return "\n".join(f"choice {c['choice']}: {c['score']:.4f}" for c in result["choices"])
    return f"last_hidden_state {result['last_hidden_state_shape']}, pooler_output {result['pooler_output']}"


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
    if list_tasks or folder is None:
        for task in TASKS.values():
            click.echo(f"{task.name:<10} {task.head:<24} {task.description}")
        return
    from .artifact import open_artifact

    m = open_artifact(folder)
    source = m["source"]
    origin = f"random weights, seed {source['seed']}" if source["random_init"] else source["checkpoint"]
    lines = [f"{folder}: {m['description']}",
             f"  task      {m['task']} ({m['head']}), {m['arch']} {m['model_class']}",
             f"  weights   {origin}"]
    if m["labels"]:
        lines.append(f"  labels    {', '.join(m['labels'])}")
    lines += [f"  input     {n} int64 [{', '.join(v['axes'])}]" for n, v in m["inputs"].items()]
    lines += [f"  output    {n} float32 [{', '.join(v['axes'])}]" for n, v in m["outputs"].items()]
    lines.append("  dims      " + ", ".join(f"{k} {lo}..{hi}" for k, (lo, hi) in m["dims"].items()))
    parity = m.get("parity")
    lines.append(f"  parity    {'PASS' if parity['passed'] else 'FAIL'}, worst "
                 f"{max(o['max_abs'] for o in parity['outputs'].values()):.2e} abs over {parity['cases']} cases"
                 if parity else "  parity    not verified (run `sbexport verify`)")
    lines += [f"  file      {n} {f['bytes'] / 1e6:.1f} MB sha256 {f['sha256'][:16]}" for n, f in m["files"].items()]
    click.echo("\n".join(lines))


def _write_text(path: str, text: str) -> None:
    """Write via a temporary file and rename, with one clear error when the place is unwritable."""
    import os
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".sbexport-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    except OSError as e:
        raise SbexportError(f"cannot write {path}: {e.strerror or e}") from None


@cli.command("convert-bert")
@click.argument("src")
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists.")
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
    click.echo(convert_bert_to_squeezebert(src, dst, overwrite=overwrite))
