"""The benchmark's exports: one artifact folder per (model, runtime) in the work folder, reused
when a folder of the same cache key is there (and valid), exported otherwise.

The key is a hash of everything that shapes the file: format, task, model source, the config
of random weights, the export options, sbexport's version and source code, torch's version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import torch

from .. import __version__
from ..errors import ExportError, SbexportError
from ..tasks import Task
from .inputs import LABELS, BenchConfig, BenchModel

EXPORTED = {"onnx": "onnx", "executorch": "executorch"}    # runtime -> export format; eager needs none


@contextlib.contextmanager
def work_folder(path: str | None) -> Iterator[Path]:
    """The folder exports go to: `path` (created, kept: a cache for the next run) or, when
    None, a temporary folder removed at the end of the block."""
    if path:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="sbexport-bench-") as tmp:
        yield Path(tmp)


def cache_key(runtime: str, task: Task, model: BenchModel, options) -> str:
    """12 hex digits naming everything that shapes the exported file."""
    built = model.build_config.to_dict() if model.build_config is not None else None
    key = json.dumps({"fmt": EXPORTED[runtime], "task": task.name, "source": model.source.to_dict(),
                      "config": built, "options": asdict(options), "sbexport": __version__,
                      "code": code_fingerprint(), "torch": torch.__version__}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def export_cached(runtime: str, task: Task, model: BenchModel, config: BenchConfig, workdir: Path,
                  log: Callable[[str], None]) -> Path:
    """The artifact folder of `model` for `runtime`, exported unless the work folder holds one
    made from the same inputs and the same sbexport source (and verified, when asked).

    Raises ExportError naming the model and runtime when the export fails or fails its parity
    check: a benchmark that quietly drops a model is read as a complete one, and a fast wrong
    graph is not worth timing."""
    from ..export import ExportOptions, export_artifact

    options = ExportOptions(max_seq_len=max(config.seq_lens), batch=config.batch,
                            max_batch=max(1024, config.batch))
    folder = workdir / f"{task.name}-{model.arch}-{runtime}-{cache_key(runtime, task, model, options)}"
    try:
        if folder.is_dir() and _reusable(folder, config.verify, log):
            log(f"using cached export {folder}")
            return folder
        return export_artifact(EXPORTED[runtime], task, model.source, folder, options, overwrite=True,
                               verify=config.verify, config=model.build_config, log=log)
    except SbexportError as e:
        raise ExportError(f"bench stopped: the {LABELS[model.arch]} export to {runtime} failed "
                          f"(nothing was timed): {e}") from None


def _reusable(folder: Path, verify: bool, log: Callable[[str], None]) -> bool:
    """Whether the cached artifact opens (sha256 of every file); verified now when asked and
    it was not verified at export. Raises ParityError when that verification fails."""
    from ..artifact import open_artifact
    from ..verify import verify_folder

    try:
        manifest = open_artifact(folder)
    except SbexportError as e:
        log(f"re-exporting: cached {e}")
        return False
    if verify and not manifest.get("parity", {}).get("passed"):
        verify_folder(folder, log=log).raise_on_failure()
    return True


def code_fingerprint() -> str:
    """sha256 of the package's source outside bench/: a change to the model or an exporter
    makes the cached exports stale."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if "bench" not in path.relative_to(root).parts:
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def artifact_info(folder: Path) -> dict:
    """The report's facts about one exported folder: file, size, export time, parity."""
    from ..artifact import read_manifest

    m = read_manifest(folder)
    parity = m.get("parity")
    return {"folder": str(folder), "model_file": m["model_file"], "bytes": m["files"][m["model_file"]]["bytes"],
            "export_seconds": m.get("export_seconds"), "verified": bool(parity),
            "parity_passed": parity["passed"] if parity else None,
            "parity_max_abs": max(o["max_abs"] for o in parity["outputs"].values()) if parity else None}
