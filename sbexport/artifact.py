"""Artifact folders: the exported model file, config.json, tokenizer files and manifest.json.

A folder is built in a temporary sibling and renamed into place only when complete, so an
interrupted or failed export leaves nothing half-written, and an existing folder is replaced
only when the caller says so. The manifest records the sha256 of every file; `open_artifact`
refuses a folder whose files no longer match it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import SbexportError

MANIFEST = "manifest.json"
SCHEMA = "sbexport.artifact/1"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_destination(out_dir: Path, overwrite: bool) -> None:
    """Fail early, before any work, when `out_dir` exists (and may not be replaced) or its
    parent cannot be written."""
    if out_dir.exists() and not overwrite:
        raise SbexportError(f"{out_dir} already exists; pass --overwrite to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise SbexportError(f"{out_dir} exists and is not a folder")
    parent = out_dir.parent
    with contextlib.suppress(OSError):
        parent.mkdir(parents=True, exist_ok=True)
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise SbexportError(f"cannot write to {parent}: not a writable folder")


@contextlib.contextmanager
def staged_folder(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder beside `out_dir`; on success rename it to `out_dir` (replacing
    an old one only when `overwrite`), on any failure delete it and leave `out_dir` untouched."""
    check_destination(out_dir, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_manifest(folder: Path, manifest: dict) -> dict:
    """Add the schema and every file's sha256 to `manifest` and write it as manifest.json."""
    files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = {"schema": SCHEMA, **manifest, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


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
    return manifest


def open_artifact(folder: str | os.PathLike) -> dict:
    """Read the manifest and check every listed file's sha256; raise SbexportError naming the
    first file that is missing or changed."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for name, entry in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise SbexportError(f"{path}: listed in the manifest but missing")
        if sha256_file(path) != entry["sha256"]:
            raise SbexportError(f"{path}: sha256 does not match the manifest; the file was modified "
                                f"after export (re-export it)")
    return manifest


def update_manifest(folder: Path, **fields) -> dict:
    """Set top-level fields of an existing manifest (e.g. new parity figures), keeping hashes."""
    manifest = read_manifest(folder)
    manifest.update(fields)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
