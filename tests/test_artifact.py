"""Artifact folders: staged and renamed into place, never half-written, never replacing a good
folder unasked (nor a folder that is not an artifact), hashed, and refused once tampered with.

Most tests run export_artifact with the ONNX exporter replaced by a stub (what is tested is the
folder handling around it, not ONNX), or use the shared tiny artifacts after copying them.
"""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
from conftest import tiny_random_config

from sbexport import artifact
from sbexport.artifact import open_artifact, read_manifest, sha256_file, staged_folder, write_manifest
from sbexport.errors import ExportError, SbexportError
from sbexport.export import export_artifact
from sbexport.export import onnx as onnx_format
from sbexport.source import resolve_source
from sbexport.tasks import TASKS

MNLI = TASKS["mnli"]


def _export(out_dir, **kwargs):
    kwargs.setdefault("log", lambda _: None)
    return export_artifact("onnx", MNLI, resolve_source(MNLI, random_init=True), out_dir,
                           config=tiny_random_config(MNLI), verify=False, **kwargs)


@pytest.fixture
def stub_exporter(monkeypatch):
    """Replace the ONNX exporter by one that writes a few bytes (or fails as told)."""
    calls = {"fail": None}

    def export(wrapper, example, max_seq, path, options):
        path.write_bytes(b"half a model")
        if calls["fail"] is not None:
            raise calls["fail"]
        path.write_bytes(b"a whole model")
        return {"dims": {"batch": [1, 4]}}
    monkeypatch.setattr(onnx_format, "export", export)
    return calls


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_stub_export_writes_a_complete_hashed_folder(tmp_path, stub_exporter):
    out = _export(tmp_path / "art")
    manifest = open_artifact(out)
    assert sorted(manifest["files"]) == ["config.json", "model.onnx"]
    assert manifest["files"]["model.onnx"]["sha256"] == sha256_file(out / "model.onnx")
    assert _leftovers(tmp_path) == []


def test_artifact_folder_gets_the_umask_mode_not_0700(tmp_path, stub_exporter):
    """tempfile.mkdtemp made every artifact folder private (0700) to its creator."""
    mask = os.umask(0o022)
    try:
        out = _export(tmp_path / "art")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


@pytest.mark.parametrize("error", [RuntimeError("exporter crashed"), KeyboardInterrupt()])
def test_failed_or_interrupted_export_leaves_nothing(tmp_path, stub_exporter, error):
    stub_exporter["fail"] = error
    with pytest.raises(ExportError if isinstance(error, RuntimeError) else KeyboardInterrupt):
        _export(tmp_path / "art")
    assert not (tmp_path / "art").exists()
    assert _leftovers(tmp_path) == []


def test_failed_export_with_overwrite_keeps_the_good_folder(tmp_path, stub_exporter):
    good = _export(tmp_path / "art")
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    stub_exporter["fail"] = RuntimeError("exporter crashed")
    with pytest.raises(ExportError, match="exporter crashed"):
        _export(good, overwrite=True)
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert _leftovers(tmp_path) == []


def test_existing_folder_needs_overwrite(tmp_path, stub_exporter):
    good = _export(tmp_path / "art")
    manifest = (good / "manifest.json").read_bytes()
    with pytest.raises(SbexportError, match="already exists; pass --overwrite"):
        _export(good)
    assert (good / "manifest.json").read_bytes() == manifest
    _export(good, overwrite=True)          # replaced when asked
    open_artifact(good)
    assert _leftovers(tmp_path) == []


def test_overwrite_refuses_a_folder_that_is_not_an_artifact(tmp_path, stub_exporter):
    """--overwrite pointed at a checkpoint (or a home folder) would have deleted it."""
    precious = tmp_path / "my-checkpoint"
    precious.mkdir()
    (precious / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(SbexportError, match="not an sbexport artifact folder \\(no valid manifest.json\\)"):
        _export(precious, overwrite=True)
    assert (precious / "model.safetensors").read_bytes() == b"weights"
    empty = tmp_path / "empty"
    empty.mkdir()
    _export(empty, overwrite=True)         # an empty folder may be filled
    open_artifact(empty)


def _snapshot(folder):
    """Every path under `folder` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def _webapp(folder, manifest):
    """A web app that ships an exported model: its own files beside the artifact's."""
    (folder / "index.html").write_text("<html>my app</html>")
    (folder / "assets").mkdir()
    (folder / "assets" / "app.js").write_text("run()")
    if manifest is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("manifest", ["sbexport", {"name": "My App", "start_url": "/"}])
def test_overwrite_keeps_files_sbexport_did_not_write(tmp_path, stub_exporter, manifest):
    """`-o webapp --overwrite` on manifest.json + index.html + assets/ deleted the app: a
    folder holding anything its manifest does not list is refused, naming the first entry.
    Both an artifact folder the user added files to, and a web app's own manifest.json."""
    webapp = tmp_path / "webapp"
    if manifest == "sbexport":
        _export(webapp)
        _webapp(webapp, None)
        message = "webapp holds assets, which sbexport did not write there"
    else:
        webapp.mkdir()
        _webapp(webapp, manifest)
        message = "webapp is not an sbexport artifact folder \\(no valid manifest.json\\)"
    before = _snapshot(webapp)
    with pytest.raises(SbexportError, match=message):
        _export(webapp, overwrite=True)
    assert _snapshot(webapp) == before
    assert _leftovers(tmp_path) == []


def test_overwrite_refuses_a_subfolder_in_place_of_a_listed_file(tmp_path, stub_exporter):
    art = _export(tmp_path / "art")
    (art / "config.json").unlink()
    (art / "config.json").mkdir()
    (art / "config.json" / "mine.txt").write_text("mine")
    with pytest.raises(SbexportError, match="config.json is a folder where sbexport wrote a file"):
        _export(art, overwrite=True)
    assert (art / "config.json" / "mine.txt").read_text() == "mine"


def test_an_artifact_never_replaces_a_checkpoint(tmp_path, stub_exporter):
    """A folder convert-bert wrote (its record lists its files) is not an artifact to replace."""
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"weights")
    artifact.write_record(checkpoint, artifact.CHECKPOINT, {})
    before = _snapshot(checkpoint)
    with pytest.raises(SbexportError, match="ckpt is an sbexport checkpoint folder, not an sbexport artifact one"):
        _export(checkpoint, overwrite=True)
    assert _snapshot(checkpoint) == before


def test_file_added_during_the_export_stops_the_swap(tmp_path):
    """The proof is taken again right before the swap: a file that arrived meanwhile stays."""
    out = tmp_path / "art"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"old")
    write_manifest(out, {})
    with pytest.raises(SbexportError, match="art holds notes.txt, which sbexport did not write"):
        with staged_folder(out, overwrite=True) as tmp:
            (tmp / "model.onnx").write_bytes(b"new")
            (out / "notes.txt").write_text("written while the export ran")
    assert (out / "model.onnx").read_bytes() == b"old" and (out / "notes.txt").is_file()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("out", ["", " ", ".", ".."])
def test_output_folder_must_be_named(tmp_path, stub_exporter, monkeypatch, out):
    """-o "" silently wrote to the default folder (Path("") is the current folder)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SbexportError, match="output folder .*(empty|names no folder)"):
        _export(out, overwrite=True)
    assert list(tmp_path.iterdir()) == []


def test_failed_export_removes_only_the_parents_it_created(tmp_path, stub_exporter, monkeypatch):
    stub_exporter["fail"] = RuntimeError("exporter crashed")
    with pytest.raises(ExportError):
        _export(tmp_path / "new" / "deeper" / "art")
    assert list(tmp_path.iterdir()) == []                  # both created parents gone
    (tmp_path / "mine").mkdir()
    with pytest.raises(ExportError):
        _export(tmp_path / "mine" / "deeper" / "art")
    assert [p.name for p in tmp_path.iterdir()] == ["mine"] and list((tmp_path / "mine").iterdir()) == []

    def crash_after_someone_writes_beside(wrapper, example, max_seq, path, options):
        (tmp_path / "new" / "theirs.txt").write_text("theirs")
        raise RuntimeError("exporter crashed")
    monkeypatch.setattr(onnx_format, "export", crash_after_someone_writes_beside)
    with pytest.raises(ExportError):
        _export(tmp_path / "new" / "deeper" / "art")
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["theirs.txt"]   # not empty: kept


def test_folder_that_appears_during_the_export_is_not_replaced(tmp_path):
    out = tmp_path / "art"
    with pytest.raises(SbexportError, match="already exists"):
        with staged_folder(out, overwrite=False) as tmp:
            (tmp / "model.onnx").write_bytes(b"new")
            out.mkdir()                                    # another process, meanwhile
            (out / "theirs.txt").write_text("theirs")
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert _leftovers(tmp_path) == []


def test_failed_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    out = tmp_path / "art"
    out.mkdir()
    write_manifest(out, {"placeholder": True})
    before = (out / "manifest.json").read_bytes()
    real_replace, calls = os.replace, []

    def flaky_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:                                # the new folder's rename
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)
    with pytest.raises(SbexportError, match="No space left on device"):
        with staged_folder(out, overwrite=True) as tmp:
            (tmp / "model.onnx").write_bytes(b"new")
            monkeypatch.setattr(artifact.os, "replace", flaky_replace)
    assert (out / "manifest.json").read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_unwritable_destination_fails_before_any_work(tmp_path, stub_exporter):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SbexportError, match="cannot write to .*a-file: not a writable folder"):
        _export(blocker / "art")
    with pytest.raises(SbexportError, match="exists and is not a folder"):
        _export(blocker, overwrite=True)


# -- reading an artifact ------------------------------------------------------------------


@pytest.fixture
def onnx_copy(tmp_path, onnx_artifact):
    """A private copy of the shared mnli ONNX artifact (from a local checkpoint: it has a tokenizer)."""
    return shutil.copytree(onnx_artifact("mnli", local=True), tmp_path / "mnli-onnx")


def test_flipped_byte_is_refused_naming_the_file(onnx_copy):
    model = onnx_copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(SbexportError, match=r"model\.onnx: sha256 does not match the manifest"):
        open_artifact(onnx_copy)


@pytest.mark.parametrize("name", ["tokenizer.json", "config.json"])
def test_every_file_is_hashed_not_only_the_model(onnx_copy, name):
    (onnx_copy / name).write_text((onnx_copy / name).read_text() + " ")
    with pytest.raises(SbexportError, match=f"{name}: sha256 does not match"):
        open_artifact(onnx_copy)
    (onnx_copy / name).unlink()
    with pytest.raises(SbexportError, match=f"{name}: listed in the manifest but missing"):
        open_artifact(onnx_copy)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("files"), "field 'files' is missing"),
    (lambda m: m.update(model_file="other.onnx"), "not among the hashed files"),
    (lambda m: m["dims"].update(sequence=None), "dims.sequence must be"),
    (lambda m: m.update(schema="something/9"), "unknown manifest schema"),
])
def test_damaged_manifest_is_one_clear_error(onnx_copy, edit, message):
    manifest = json.loads((onnx_copy / "manifest.json").read_text())
    edit(manifest)
    (onnx_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SbexportError, match=message):
        read_manifest(onnx_copy)


def test_not_an_artifact(tmp_path):
    with pytest.raises(SbexportError, match="no such folder"):
        open_artifact(tmp_path / "nothing")
    with pytest.raises(SbexportError, match="no manifest.json"):
        open_artifact(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(SbexportError, match="not valid JSON"):
        open_artifact(tmp_path)


def test_manifest_update_is_all_or_nothing(onnx_copy, monkeypatch):
    """The manifest was rewritten in place: an interrupted write left it truncated and the
    artifact unreadable. Now a failed write leaves the old manifest and no temporary file."""
    from sbexport.artifact import update_manifest

    before = (onnx_copy / "manifest.json").read_bytes()

    def no_space(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(artifact.os, "replace", no_space)
    with pytest.raises(SbexportError, match="cannot write .*manifest.json: No space left on device"):
        update_manifest(onnx_copy, parity={"passed": True})
    assert (onnx_copy / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in onnx_copy.iterdir() if p.name.startswith(".")) == []


def test_read_only_artifact_can_still_be_verified(onnx_copy, monkeypatch):
    from sbexport.verify import verify_folder

    def read_only(src, dst):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(artifact.os, "replace", read_only)
    lines = []
    report = verify_folder(onnx_copy, log=lines.append)
    assert report.passed
    assert any("not recorded in the manifest" in line and "Read-only file system" in line for line in lines)


# -- what killed exports leave behind ------------------------------------------------------

# Holds a staging folder open the way an export does, then sleeps until killed.
HOLDER = """
import sys, time
from pathlib import Path
from sbexport.artifact import staged_folder
with staged_folder(Path(sys.argv[1]), overwrite=False, log=print) as tmp:
    (tmp / "model.onnx").write_bytes(b"a complete model")
    print(tmp, flush=True)
    time.sleep(600)
"""


def _holder(out):
    """(a process holding a staging folder of `out`, that folder)."""
    import subprocess
    import sys
    from pathlib import Path

    import sbexport
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(sbexport.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    return proc, Path(proc.stdout.readline().strip())


def _dead_pid():
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()                          # reaped: a zombie would still count as running
    return proc.pid


def test_next_export_removes_what_a_killed_export_left_and_spares_a_running_one(tmp_path, stub_exporter):
    """kill -9 left .partial folders (one with a complete model) that no later export cleaned
    or mentioned. A dead owner's is removed with one line; a live process's is not touched."""
    out = tmp_path / "art"
    killed, killed_tmp = _holder(out)
    running, running_tmp = _holder(out)
    try:
        killed.kill()
        killed.wait()
        assert killed_tmp.is_dir() and running_tmp.is_dir()
        lines = []
        _export(out, log=lines.append)
        assert not killed_tmp.exists()
        assert [line for line in lines if "left by" in line] == [
            f"note: removed {killed_tmp}, left by an export into {out} that was killed (pid {killed.pid})"]
        assert (running_tmp / "model.onnx").read_bytes() == b"a complete model"
        open_artifact(out)
    finally:
        running.kill()
        running.wait()


def test_interrupted_swap_is_undone_by_the_next_export(tmp_path, stub_exporter):
    """Killed between the two renames of a swap, an export left the old artifact in a hidden
    .old folder and no artifact at all. The next export puts it back (and then, without
    --overwrite, refuses to replace it); an .old left after a finished swap is removed."""
    pid, host = _dead_pid(), artifact._HOST
    previous = _export(tmp_path / "previous")
    before = _snapshot(previous)
    set_aside = tmp_path / f".art.{host}.{pid}.0123456789ab.old"
    os.replace(previous, set_aside)
    lines = []
    with pytest.raises(SbexportError, match="already exists; pass --overwrite"):
        _export(tmp_path / "art", log=lines.append)
    assert _snapshot(tmp_path / "art") == before and not set_aside.exists()
    assert [line for line in lines if "restored" in line][0].startswith(
        f"note: restored {tmp_path / 'art'} from {set_aside}")
    shutil.copytree(tmp_path / "art", set_aside)       # a swap that finished, but not its cleanup
    _export(tmp_path / "art", overwrite=True, log=lines.append)
    assert _leftovers(tmp_path) == []
    assert [line for line in lines if "left by" in line] == [
        f"note: removed {set_aside}, left by an export into {tmp_path / 'art'} that was killed (pid {pid})"]


def test_unknown_owner_is_mentioned_not_removed(tmp_path, stub_exporter):
    legacy = tmp_path / ".art.0123456789ab.partial"           # named before owners were recorded
    elsewhere = tmp_path / f".art.other-host.{os.getpid()}.0123456789ab.partial"
    for folder in (legacy, elsewhere):
        folder.mkdir()
    lines = []
    _export(tmp_path / "art", log=lines.append)
    assert legacy.is_dir() and elsewhere.is_dir()
    notes = [line for line in lines if "left by" in line]
    assert len(notes) == 2 and all("may still be running; delete it if no export into" in n for n in notes)


@pytest.mark.parametrize("owner", ["dead", "legacy"])
def test_a_staging_folder_is_not_an_artifact(tmp_path, onnx_artifact, owner):
    """verify passed a killed export's .partial folder holding a complete model."""
    name = (f".mnli-onnx.{artifact._HOST}.{_dead_pid()}.0123456789ab.partial" if owner == "dead"
            else ".mnli-onnx.0123456789ab.partial")
    staging = shutil.copytree(onnx_artifact("mnli", local=True), tmp_path / name)
    state = "killed before it finished" if owner == "dead" else "unfinished"
    with pytest.raises(SbexportError, match=f"not an artifact but the staging folder of an export .*{state}"):
        open_artifact(staging)
