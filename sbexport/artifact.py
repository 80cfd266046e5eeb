"""Artifact folders: the exported model file, config.json, tokenizer files and manifest.json.

A folder is built in a temporary sibling and renamed into place only when complete, so an
interrupted or failed export leaves nothing half-written, and an existing folder is replaced
only when the caller says so. The manifest records the sha256 of every file and of its own
content; `open_artifact` refuses a folder whose files or manifest no longer match, or whose
manifest contradicts its config.json (label names, sequence range).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator

from .config import load_config
from .errors import SbexportError

MANIFEST = "manifest.json"
# /2: the manifest records the sha256 of its own content (CONTENT_HASH); /1 folders lack it.
SCHEMA = "sbexport.artifact/2"
CONTENT_HASH = "content_sha256"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_destination(out_dir: Path, overwrite: bool, marker: str = MANIFEST) -> None:
    """Fail early, before any work, when `out_dir` exists (and may not be replaced) or its
    parent cannot be written. Only a folder of the kind being written (one holding `marker`:
    manifest.json for artifacts, config.json for checkpoints) or an empty folder may be
    replaced: --overwrite pointed at a home folder must not delete it."""
    if out_dir.exists() and not overwrite:
        raise SbexportError(f"{out_dir} already exists; pass --overwrite to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise SbexportError(f"{out_dir} exists and is not a folder")
    if out_dir.exists() and not (out_dir / marker).is_file() and any(out_dir.iterdir()):
        kind = "an sbexport artifact" if marker == MANIFEST else "a checkpoint"
        raise SbexportError(f"{out_dir} is not {kind} folder (no {marker}) and not "
                            f"empty; refusing to replace it: choose another output folder")
    parent = out_dir.parent
    with contextlib.suppress(OSError):
        parent.mkdir(parents=True, exist_ok=True)
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise SbexportError(f"cannot write to {parent}: not a writable folder")


@contextlib.contextmanager
def staged_folder(out_dir: Path, overwrite: bool, marker: str = MANIFEST) -> Iterator[Path]:
    """Yield a temporary folder beside `out_dir`; on success rename it to `out_dir` (replacing
    an old one only when `overwrite`, see check_destination), on any failure delete it and
    leave `out_dir` untouched."""
    check_destination(out_dir, overwrite, marker)
    # os.mkdir, not tempfile.mkdtemp: mkdtemp makes the folder 0700, and the artifact keeps the
    # mode of its staging folder; os.mkdir applies the umask like any other new folder.
    tmp = out_dir.parent / f".{out_dir.name}.{secrets.token_hex(6)}.partial"
    try:
        os.mkdir(tmp)
    except OSError as e:
        raise SbexportError(f"cannot write to {out_dir.parent}: {e.strerror or e}") from None
    try:
        yield tmp
        _move_into_place(tmp, out_dir, overwrite, marker)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, out_dir: Path, overwrite: bool, marker: str) -> None:
    """Rename the finished `tmp` to `out_dir`. The destination is checked again: it may have
    appeared while the export ran. A replaced folder is restored if the second rename fails."""
    check_destination(out_dir, overwrite, marker)
    try:
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.{secrets.token_hex(6)}.old"
            os.replace(out_dir, old)
            try:
                os.replace(tmp, out_dir)
            except OSError:
                os.replace(old, out_dir)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)   # fails (ENOTEMPTY) rather than replace a folder that just appeared
    except OSError as e:
        raise SbexportError(f"cannot move the finished artifact into {out_dir}: {e.strerror or e}") from None


def write_manifest(folder: Path, manifest: dict) -> dict:
    """Add the schema, every file's sha256 and the content hash to `manifest` and write it as
    manifest.json; returns what was written. Raises SbexportError when it cannot be written."""
    files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = {k: v for k, v in manifest.items() if k not in ("schema", "files", CONTENT_HASH)}
    return _write_hashed(folder, {"schema": SCHEMA, **manifest, "files": files})


def content_sha256(manifest: dict) -> str:
    """The sha256 of a manifest's content without its own hash field: every other field,
    canonical JSON (sorted keys, no spaces), so that the hash does not depend on layout."""
    content = {k: v for k, v in manifest.items() if k != CONTENT_HASH}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_hashed(folder: Path, manifest: dict) -> dict:
    """Write `manifest` with its content hash (sbexport's own writes are the only legitimate
    edits: export, and verify recording its figures)."""
    manifest = {**manifest, CONTENT_HASH: content_sha256(manifest)}
    _write_json(Path(folder) / MANIFEST, manifest)
    return manifest


def _write_json(path: Path, data: dict) -> None:
    """Write via a temporary file and a rename, so that an interrupted write never leaves a
    truncated manifest (which would make the artifact unreadable). Raises SbexportError."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise SbexportError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def read_manifest(folder: Path) -> dict:
    """The manifest of an artifact folder, checked for schema; raises SbexportError."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise SbexportError(f"{folder}: not an artifact folder (no such folder)")
    if not path.is_file():
        raise SbexportError(f"{folder}: not an artifact folder (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SbexportError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise SbexportError(f"{path}: unknown manifest schema {manifest.get('schema') if isinstance(manifest, dict) else None!r}; "
                            f"expected {SCHEMA!r}")
    _check_fields(path, manifest)
    if manifest.get(CONTENT_HASH) != content_sha256(manifest):
        raise SbexportError(f"{path}: the manifest was edited after export (its {CONTENT_HASH} does not "
                            f"match its content); re-export the artifact rather than editing it")
    return manifest


# Manifest fields every reader relies on, with their JSON types.
REQUIRED_FIELDS = {"task": str, "head": str, "arch": str, "model_class": str, "format": str,
                   "description": str, "model_file": str, "files": dict, "dims": dict,
                   "source": dict, "inputs": dict, "outputs": dict, "labels": list}


def _check_fields(path: Path, manifest: dict) -> None:
    """Raise SbexportError naming the first missing or mistyped field of a manifest."""
    for name, kind in REQUIRED_FIELDS.items():
        if not isinstance(manifest.get(name), kind):
            raise SbexportError(f"{path}: field {name!r} is missing or not a JSON {kind.__name__}; "
                                f"the manifest is damaged (re-export the artifact)")
    files = manifest["files"]
    if not all(isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values()):
        raise SbexportError(f"{path}: every entry of 'files' needs a sha256; the manifest is damaged")
    if manifest["model_file"] not in files:
        raise SbexportError(f"{path}: the model file {manifest['model_file']!r} is not among the hashed "
                            f"files; the manifest is damaged (re-export the artifact)")
    for axis in ("batch", "sequence"):
        value = manifest["dims"].get(axis)
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value)
                and 1 <= value[0] <= value[1]):
            raise SbexportError(f"{path}: dims.{axis} must be [min, max] with 1 <= min <= max; "
                                f"the manifest is damaged")


def open_artifact(folder: str | os.PathLike) -> dict:
    """Read the manifest, check every listed file's sha256 and the manifest against config.json;
    returns the manifest. Raises SbexportError naming the first file that is missing or changed,
    or the manifest field that contradicts the model."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for name, entry in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise SbexportError(f"{path}: listed in the manifest but missing")
        if sha256_file(path) != entry["sha256"]:
            raise SbexportError(f"{path}: sha256 does not match the manifest; the file was modified "
                                f"after export (re-export it)")
    _check_against_config(folder, manifest)
    return manifest


def _check_against_config(folder: Path, manifest: dict) -> None:
    """Raise SbexportError where the manifest contradicts the model's config.json (hashed with
    the model file, so it is what the model was built from): a labelled head's label names
    must be the config's id2label in id order, one per output column, and the sequence range
    must lie within max_position_embeddings."""
    path, damaged = folder / MANIFEST, "the manifest is damaged (re-export the artifact)"
    if "config.json" not in manifest["files"]:
        raise SbexportError(f"{path}: config.json is not among the hashed files; {damaged}")
    config = load_config(folder / "config.json")
    # A labelled head has an output axis of labels ([batch, labels] or [batch, sequence, labels]).
    if any("labels" in (spec.get("axes") or ()) for spec in manifest["outputs"].values() if isinstance(spec, dict)):
        expected = [config.id2label[i] for i in range(config.num_labels)]
        if manifest["labels"] != expected:
            raise SbexportError(f"{path}: labels {manifest['labels']} are not the model's "
                                f"{config.num_labels} outputs {expected} (config.json); {damaged}")
    limit, longest = config.max_position_embeddings, manifest["dims"]["sequence"][1]
    if longest > limit:
        raise SbexportError(f"{path}: dims.sequence allows {longest} tokens, more than the model's "
                            f"{limit} positions (config.json max_position_embeddings); {damaged}")


def update_manifest(folder: Path, **fields) -> dict:
    """Set top-level fields of an existing, intact manifest (e.g. new parity figures), keeping
    the file hashes and renewing the content hash. Raises SbexportError as read_manifest does,
    or when the manifest cannot be written."""
    manifest = read_manifest(folder)
    manifest.update(fields)
    return _write_hashed(folder, manifest)
