"""Artifact folders: the exported model file, config.json, tokenizer files and manifest.json.

A folder is built in a temporary sibling and renamed into place only when complete, so an
interrupted or failed export leaves nothing half-written, and an existing folder is replaced
only when the caller says so and only when it is provably what sbexport wrote, of the same
kind (an artifact, or a checkpoint written by convert-bert): see check_destination. The
manifest (its fields, types and schema: manifest.py) records the sha256 of every file and of
its own content; `open_artifact` refuses a folder whose files or manifest no longer match,
whose manifest contradicts its config.json (label names, sequence range), and a staging folder
a killed export left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .atomic import replace_file
from .config import load_config
from .errors import SbexportError
from .manifest import SCHEMA, FileEntry, Manifest, ManifestInvalid, schema_refusal

MANIFEST = "manifest.json"
# The record's own hash field (since artifact/2): the sha256 of every other field.
CONTENT_HASH = "content_sha256"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class FolderKind:
    """A kind of folder sbexport writes, and the record file in it that lists (name -> sha256,
    bytes) every other file sbexport wrote there: the proof that lets --overwrite replace it."""

    name: str      # "an sbexport artifact": reads "X is not an sbexport artifact folder"
    record: str    # the record's file name
    schema: str    # the record's "schema" field


ARTIFACT = FolderKind("an sbexport artifact", MANIFEST, SCHEMA)
CHECKPOINT = FolderKind("an sbexport checkpoint", "sbexport-checkpoint.json", "sbexport.checkpoint/1")
KINDS = (ARTIFACT, CHECKPOINT)

# Staging (.partial) and set-aside (.old) folders are named after their owner, so that a later
# export can tell one left by a killed process from one a running export is still filling:
#   .<output name>.<host>.<pid>.<12 hex>.partial|old
# Names without host and pid (before this scheme) have an owner nobody can check.
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "localhost"
_SCRATCH = r"\.(?:(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.)?[0-9a-f]{12}\.(?P<suffix>partial|old)"


def output_folder(value: str | os.PathLike) -> Path:
    """The output folder a user named, as a Path. Raises SbexportError for "" (Path("") would
    silently mean the current folder) or a path with no name of its own ("." or "..")."""
    if not str(value).strip():
        raise SbexportError("the output folder is empty; name a folder, e.g. artifacts/mnli-onnx")
    path = Path(value)
    if path.name in ("", ".", ".."):
        raise SbexportError(f"output folder {str(value)!r} names no folder of its own; "
                            f"name one, e.g. {os.path.join(str(value), 'mnli-onnx')}")
    return path


def check_destination(out_dir: Path, overwrite: bool, kind: FolderKind = ARTIFACT) -> None:
    """Fail early, before any work, when `out_dir` may not be replaced or cannot be created.

    An existing `out_dir` may be replaced only with `overwrite`, and only when it is empty or
    provably a folder of `kind` that sbexport wrote: its record (valid, of that kind) lists
    every entry it holds. Anything else (a file the user added, a folder of the other kind, a
    web app's own manifest.json) is refused naming the first entry sbexport did not write.
    Changes nothing on disk. Raises SbexportError.
    """
    if os.path.lexists(out_dir):
        if not overwrite:
            raise SbexportError(f"{out_dir} already exists; pass --overwrite to replace it")
        if out_dir.is_symlink() or not out_dir.is_dir():
            what = "a symbolic link" if out_dir.is_symlink() else "not a folder"
            raise SbexportError(f"{out_dir} exists and is {what}; refusing to replace it")
        _prove_ours(out_dir, kind)
    ancestor = out_dir.parent       # the nearest existing folder is where the first mkdir happens
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise SbexportError(f"cannot write to {ancestor}: not a writable folder")


def check_outside(source: Path, out_dir: Path, what: str) -> None:
    """Raise SbexportError when `out_dir` is the folder `source` (the `what` a command reads,
    e.g. "fp32 artifact") or lies inside it: replacing it, or writing into it, would change the
    input that the command promises to leave as it is. Changes nothing on disk."""
    src, out = source.resolve(), out_dir.resolve()
    if out == src or src in out.parents:
        where = "is" if out == src else "is inside"
        raise SbexportError(f"{out_dir} {where} the {what} {source}, which this command only reads; "
                            f"choose an output folder outside it")


def _prove_ours(folder: Path, kind: FolderKind) -> None:
    """Raise SbexportError unless `folder` is empty or holds only what its `kind` record lists."""
    entries = sorted(os.listdir(folder))
    if not entries:
        return
    record = _read_record(folder / kind.record, kind)
    if record is None:
        other = next((k for k in KINDS if k != kind and _read_record(folder / k.record, k)), None)
        if other is not None:
            raise SbexportError(f"{folder} is {other.name} folder, not {kind.name} one; refusing to "
                                f"replace it: choose another output folder")
        raise SbexportError(f"{folder} is not {kind.name} folder (no valid {kind.record}) and not empty; "
                            f"refusing to replace it: choose another output folder")
    listed = set(record["files"]) | {kind.record}
    for name in entries:
        if name not in listed:
            raise SbexportError(f"{folder} holds {name}, which sbexport did not write there (not in its "
                                f"{kind.record}); refusing to replace the folder: move {name} out or "
                                f"choose another output folder")
        if (folder / name).is_dir() and not (folder / name).is_symlink():
            raise SbexportError(f"{folder / name} is a folder where sbexport wrote a file; refusing to "
                                f"replace {folder}: choose another output folder")


def _read_record(path: Path, kind: FolderKind) -> dict | None:
    """The record at `path` when it is a JSON object of `kind`'s schema with a "files" object;
    None otherwise (missing, unreadable, another kind, or a file of the same name not ours)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and record.get("schema") == kind.schema and isinstance(record.get("files"), dict)
    return record if ok else None


@contextlib.contextmanager
def staged_folder(out_dir: Path, overwrite: bool, kind: FolderKind = ARTIFACT,
                  log: Callable[[str], None] = print) -> Iterator[Path]:
    """Yield a temporary folder beside `out_dir`; on success rename it to `out_dir` (replacing
    an old one only as check_destination allows, checked again right before the swap). On any
    failure delete it and the parent folders this call created (when still empty), and leave
    `out_dir` untouched. First removes what killed exports of `out_dir` left (see clean_stale)."""
    clean_stale(out_dir, log)
    check_destination(out_dir, overwrite, kind)
    created = []
    try:
        created = _make_parents(out_dir.parent)
        # os.mkdir, not tempfile.mkdtemp: mkdtemp makes the folder 0700, and the artifact keeps the
        # mode of its staging folder; os.mkdir applies the umask like any other new folder.
        tmp = _scratch_name(out_dir, "partial")
        os.mkdir(tmp)
    except OSError as e:
        _remove_empty(created)
        raise SbexportError(f"cannot write to {out_dir.parent}: {e.strerror or e}") from None
    try:
        yield tmp
        _move_into_place(tmp, out_dir, overwrite, kind)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise


def _make_parents(folder: Path) -> list[Path]:
    """mkdir `folder` and its missing ancestors; return those it created, outermost first.
    Raises OSError (after removing what it created)."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    created = []
    try:
        for path in reversed(missing):
            os.mkdir(path)
            created.append(path)
    except OSError:
        _remove_empty(created)
        raise
    return created


def _remove_empty(created: list[Path]) -> None:
    """rmdir the folders in `created` (outermost first), innermost first, while they are empty."""
    for path in reversed(created):
        try:
            os.rmdir(path)
        except OSError:     # something else was put there meanwhile: it stays, with its parents
            return


def _scratch_name(out_dir: Path, suffix: str) -> Path:
    return out_dir.parent / f".{out_dir.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(6)}.{suffix}"


def _owner(match: re.Match) -> tuple[str, bool | None]:
    """(who owns the scratch folder `match` parsed, whether it runs: True, False, or None when
    this process cannot tell: another host, or a name without an owner)."""
    if match["pid"] is None:
        return "an export of an older sbexport", None
    pid = int(match["pid"])
    if match["host"] != _HOST:
        return f"pid {pid} on host {match['host']}", None
    try:
        os.kill(pid, 0)          # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return f"pid {pid}", False
    except PermissionError:      # exists, another user's
        pass
    return f"pid {pid}", True


def clean_stale(out_dir: Path, log: Callable[[str], None] = print) -> None:
    """Deal with what exports of `out_dir` that were killed (kill -9, power loss) left in its
    parent, saying so in one line each: a .partial staging folder whose owner is dead is removed;
    a set-aside .old folder is put back as `out_dir` when the swap it was part of never finished
    (`out_dir` missing), removed otherwise. Folders of a live process, of another host or of
    an unknown owner are left alone (the last two mentioned)."""
    pattern = re.compile(re.escape(f".{out_dir.name}") + _SCRATCH)
    try:
        names = sorted(os.listdir(out_dir.parent))
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if not match or match["pid"] == str(os.getpid()) and match["host"] == _HOST:
            continue
        path, (owner, alive) = out_dir.parent / name, _owner(match)
        if alive is None:
            log(f"note: {path} was left by {owner}, which may still be running; delete it "
                f"if no export into {out_dir} is")
        elif alive is False and match["suffix"] == "old" and not os.path.lexists(out_dir):
            os.replace(path, out_dir)
            log(f"note: restored {out_dir} from {path}: the export that was replacing it ({owner}) "
                f"was killed in the middle of the swap")
        elif alive is False:
            shutil.rmtree(path, ignore_errors=True)
            log(f"note: removed {path}, left by an export into {out_dir} that was killed ({owner})")


def scratch_owner(folder: Path) -> str | None:
    """None when `folder` is not an sbexport staging or set-aside folder of another process;
    else a phrase saying whose it is and whether it still runs (for read_manifest's refusal)."""
    match = re.fullmatch(r"\..+?" + _SCRATCH, Path(os.path.abspath(folder)).name)
    if not match or match["pid"] == str(os.getpid()) and match["host"] == _HOST:
        return None
    owner, alive = _owner(match)
    state = {True: "still running", False: "killed before it finished", None: "unfinished"}[alive]
    return f"of an export by {owner} ({state})"


def _move_into_place(tmp: Path, out_dir: Path, overwrite: bool, kind: FolderKind) -> None:
    """Rename the finished `tmp` to `out_dir`. The destination is checked again: it may have
    appeared, or gained a file, while the export ran. A replaced folder is restored if the
    second rename fails."""
    check_destination(out_dir, overwrite, kind)
    try:
        if os.path.lexists(out_dir):
            old = _scratch_name(out_dir, "old")
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
        raise SbexportError(f"cannot move the finished folder into {out_dir}: {e.strerror or e}") from None


def write_manifest(folder: Path, manifest: Manifest) -> Manifest:
    """Write `manifest` as manifest.json with the schema, every file's sha256 and the content
    hash; returns it with its `files` filled in. Raises SbexportError when it cannot be written."""
    record = write_record(folder, ARTIFACT, manifest.to_json())
    return dataclasses.replace(manifest, files=_files(record["files"]))


def write_record(folder: Path, kind: FolderKind, fields: dict) -> dict:
    """Write `kind`'s record into `folder`: its schema, `fields`, the sha256 and size of every
    other file there (what check_destination later reads as the proof of ownership) and the
    sha256 of its own content. Returns what was written; raises SbexportError."""
    files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != kind.record}
    return _write_hashed(folder / kind.record, {"schema": kind.schema, **fields, "files": files})


def content_sha256(manifest: dict) -> str:
    """The sha256 of a manifest's content without its own hash field: every other field,
    canonical JSON (sorted keys, no spaces), so that the hash does not depend on layout."""
    content = {k: v for k, v in manifest.items() if k != CONTENT_HASH}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_hashed(path: Path, record: dict) -> dict:
    """Write `record` with its content hash (sbexport's own writes are the only legitimate
    edits: export, and verify recording its figures)."""
    record = {**record, CONTENT_HASH: content_sha256(record)}
    _write_json(path, record)
    return record


def _write_json(path: Path, data: dict) -> None:
    """Write via a temporary file and a rename, so that an interrupted write never leaves a
    truncated manifest (which would make the artifact unreadable). Raises SbexportError."""
    try:
        replace_file(path, json.dumps(data, indent=2) + "\n")
    except OSError as e:
        raise SbexportError(f"cannot write {path}: {e.strerror or e}") from None


def read_manifest(folder: Path) -> Manifest:
    """The manifest of an artifact folder, checked for schema, field types and content hash
    (not the files: see open_artifact). Raises SbexportError in one line naming the file and
    the first problem: an unknown or older schema (which one, which is read, what to do), a
    missing, mistyped or out-of-range field, an edit after export."""
    path = _manifest_path(folder)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SbexportError(f"{path}: not valid JSON ({e})") from None
    refusal = schema_refusal(data.get("schema") if isinstance(data, dict) else None)
    if refusal is not None:
        raise SbexportError(f"{path}: {refusal}")
    try:
        manifest = Manifest.from_json({k: v for k, v in data.items() if k not in ("schema", CONTENT_HASH)})
    except ManifestInvalid as e:
        raise SbexportError(f"{path}: {e}; the manifest is damaged (re-export the artifact)") from None
    if data.get(CONTENT_HASH) != content_sha256(data):
        raise SbexportError(f"{path}: the manifest was edited after export (its {CONTENT_HASH} does not "
                            f"match its content); re-export the artifact rather than editing it")
    return manifest


def _manifest_path(folder: Path) -> Path:
    """`folder`'s manifest.json; raises SbexportError when `folder` is a staging folder, not a
    folder, or has no manifest."""
    folder = Path(folder)
    if (owner := scratch_owner(folder)) is not None:
        raise SbexportError(f"{folder}: not an artifact but the staging folder {owner}; export again "
                            f"(the next export into the same folder removes it once its owner is gone)")
    if not folder.is_dir():
        raise SbexportError(f"{folder}: not an artifact folder (no such folder)")
    if not (folder / MANIFEST).is_file():
        raise SbexportError(f"{folder}: not an artifact folder (no {MANIFEST})")
    return folder / MANIFEST


def _files(files: dict) -> dict[str, FileEntry]:
    return {name: FileEntry(**entry) for name, entry in files.items()}


def open_artifact(folder: str | os.PathLike) -> Manifest:
    """Read the manifest, check every listed file's sha256 and the manifest against config.json;
    returns the manifest. Raises SbexportError naming the first file that is missing or changed,
    or the manifest field that contradicts the model."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for name, entry in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise SbexportError(f"{path}: listed in the manifest but missing")
        if sha256_file(path) != entry.sha256:
            raise SbexportError(f"{path}: sha256 does not match the manifest; the file was modified "
                                f"after export (re-export it)")
    _check_against_config(folder, manifest)
    return manifest


def _check_against_config(folder: Path, manifest: Manifest) -> None:
    """Raise SbexportError where the manifest contradicts the model's config.json (hashed with
    the model file, so it is what the model was built from): a labelled head's label names
    must be the config's id2label in id order, one per output column, and the sequence range
    must lie within max_position_embeddings."""
    path, damaged = folder / MANIFEST, "the manifest is damaged (re-export the artifact)"
    if "config.json" not in manifest.files:
        raise SbexportError(f"{path}: config.json is not among the hashed files; {damaged}")
    config = load_config(folder / "config.json")
    # A labelled head has an output axis of labels ([batch, labels] or [batch, sequence, labels]).
    if any("labels" in spec.axes for spec in manifest.outputs.values()):
        expected = [config.id2label[i] for i in range(config.num_labels)]
        if list(manifest.labels) != expected:
            raise SbexportError(f"{path}: labels {list(manifest.labels)} are not the model's "
                                f"{config.num_labels} outputs {expected} (config.json); {damaged}")
    limit, longest = config.max_position_embeddings, manifest.dims.sequence[1]
    if longest > limit:
        raise SbexportError(f"{path}: dims.sequence allows {longest} tokens, more than the model's "
                            f"{limit} positions (config.json max_position_embeddings); {damaged}")


def update_manifest(folder: Path, **fields) -> Manifest:
    """Replace fields of an existing, intact manifest (e.g. parity=ParityFigures after a
    verify), keeping the file hashes and renewing the content hash; returns the new manifest.
    Raises SbexportError as read_manifest does, or when the manifest cannot be written."""
    manifest = dataclasses.replace(read_manifest(folder), **fields)
    files = {name: dataclasses.asdict(entry) for name, entry in manifest.files.items()}
    _write_hashed(Path(folder) / MANIFEST, {"schema": SCHEMA, **manifest.to_json(), "files": files})
    return manifest
