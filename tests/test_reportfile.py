"""Reports (verify/eval/bench --json, bench --plot) land in what the user named: a symlink's
target, straight into a FIFO or a character device, a new file with the umask's mode; a full
disk or an unwritable place is one line, checked before the expensive work.

Every FIFO, symlink and device here lives in tmp_path; a full disk is os.write raising ENOSPC.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import sys
import threading

import pytest

from sbexport import reportfile
from sbexport.bench import report as bench_report
from sbexport.cli import main
from sbexport.errors import SbexportError
from sbexport.reportfile import check_report_path, write_report


def _read_fifo_in_background(fifo):
    """Start a reader of `fifo`; returns (thread, list that gets what it read)."""
    got = []

    def read():
        with open(fifo, "rb") as f:
            got.append(f.read())
    thread = threading.Thread(target=read, daemon=True)   # daemon: a writer that never comes leaves it blocked
    thread.start()
    return thread, got


def test_fifo_reader_gets_the_report(tmp_path):
    """The temporary file renamed over the FIFO left its reader waiting for nothing."""
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    thread, got = _read_fifo_in_background(fifo)
    check_report_path(fifo)                    # does not open it (that would hand the reader EOF)
    write_report(fifo, '{"ok": true}\n')
    thread.join(timeout=20)
    assert got == [b'{"ok": true}\n']
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_symlink_is_followed_not_replaced(tmp_path):
    (tmp_path / "reports").mkdir()
    target = tmp_path / "reports" / "latest.json"
    target.write_text("old")
    link = tmp_path / "report.json"
    link.symlink_to(target)
    write_report(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new"
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["latest.json"]   # no temporary left
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "reports" / "first.json")
    write_report(dangling, "first")
    assert dangling.is_symlink() and (tmp_path / "reports" / "first.json").read_text() == "first"


def test_character_device_is_written_into_through_a_symlink(tmp_path):
    """/dev/null through a link in tmp_path: written into, link and device left as they were."""
    link = tmp_path / "sink"
    link.symlink_to("/dev/null")
    check_report_path(link)
    write_report(link, b"x" * 100_000)
    assert link.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sink"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root (the symlink-to-/dev/null test covers devices)")
def test_character_device_is_not_replaced_as_root(tmp_path):
    """As root the rename replaced a device node by a plain file. The node is made in tmp_path."""
    device = tmp_path / "null"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))       # what /dev/null is
    write_report(device, "report")
    assert stat.S_ISCHR(os.lstat(device).st_mode)


def test_new_report_honours_the_umask_and_an_old_one_keeps_its_mode(tmp_path):
    """mkstemp made every report 0600, unreadable by the group the umask allowed."""
    mask = os.umask(0o022)
    try:
        write_report(tmp_path / "new.json", "{}")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o644
    shared = tmp_path / "shared.json"
    shared.write_text("old")
    shared.chmod(0o664)
    write_report(shared, "new")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o664 and shared.read_text() == "new"


def test_full_disk_keeps_the_old_report_and_leaves_no_temporary(tmp_path, monkeypatch):
    report = tmp_path / "report.json"
    report.write_text("old report")

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with monkeypatch.context() as m:
        m.setattr(reportfile.os, "write", full)
        with pytest.raises(SbexportError, match="cannot write .*report.json: No space left on device"):
            write_report(report, "new report")
    assert report.read_text() == "old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "it is a folder"),
    (lambda p: None, "folder .*missing does not exist"),
    (lambda p: __import__("socket").socket(__import__("socket").AF_UNIX).bind(str(p)), "not a regular file, FIFO"),
])
def test_unusable_places_are_refused_in_one_line(tmp_path, make, message):
    path = tmp_path / "place"
    make(path)
    if message.startswith("folder"):
        path = tmp_path / "missing" / "report.json"
    with pytest.raises(SbexportError, match=message):
        check_report_path(path)
    with pytest.raises(SbexportError, match="the report path is empty"):
        check_report_path("")


def test_bench_json_and_plot_go_through_the_same_writer(tmp_path):
    """bench had its own copy of the rename-over writer: its JSON and PNG reach a FIFO too."""
    row = {"runtime": "onnx", "model": "squeezebert", "seq_len": 8, "p50_ms": 1.0, "min_ms": 0.9, "p90_ms": 1.2}
    result = {"rows": [row, {**row, "seq_len": 16}], "machine": {"cpu": "test"},
              "config": {"task": "mnli", "batch": 1, "threads": 1}}
    for name, write, head in (("json", bench_report.write_json, b"{"), ("png", bench_report.plot, b"\x89PNG")):
        fifo = tmp_path / f"bench.{name}"
        os.mkfifo(fifo)
        thread, got = _read_fifo_in_background(fifo)
        write(result, fifo)
        thread.join(timeout=20)
        assert got and got[0].startswith(head), name
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        if name == "json":
            assert json.loads(got[0]) == result


# -- the CLI checks the --json path before the work ----------------------------------------


def _run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["sbexport", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def test_verify_json_through_a_symlink(monkeypatch, capsys, tmp_path, onnx_artifact):
    folder = shutil.copytree(onnx_artifact("mnli", local=True), tmp_path / "mnli-onnx")
    (tmp_path / "reports").mkdir()
    link = tmp_path / "verify.json"
    link.symlink_to(tmp_path / "reports" / "verify.json")
    monkeypatch.setattr(sys, "argv", ["sbexport", "verify", str(folder), "--json", str(link)])
    main()
    assert link.is_symlink()
    assert json.loads((tmp_path / "reports" / "verify.json").read_text())["schema"].startswith("sbexport.verify/")


def _no_work(*args, **kwargs):
    raise AssertionError("the expensive work ran before the --json path was checked")


@pytest.mark.parametrize("command", ["verify", "eval"])
@pytest.mark.parametrize("where, message", [("missing/report.json", "does not exist"), ("", "report path is empty")])
def test_unwritable_json_fails_before_the_work(monkeypatch, capsys, tmp_path, command, where, message):
    import sbexport.eval
    import sbexport.verify

    monkeypatch.setattr(sbexport.verify, "verify_folder", _no_work)
    monkeypatch.setattr(sbexport.eval, "run_eval", _no_work)
    json_path = str(tmp_path / where) if where else ""
    args = (["verify", tmp_path] if command == "verify" else
            ["eval", "--task", "sst2", "--data", tmp_path / "dev.tsv", "--random-init"])
    code, err = _run(monkeypatch, capsys, *args, "--json", json_path)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


# -- standard output, one file named twice, a folder that takes no file, partial failures ----


@pytest.mark.parametrize("name", ["/dev/stdout", "-"])
def test_stdout_is_written_straight_even_when_redirected_to_a_file(tmp_path, name):
    """`bench --json /dev/stdout > out.txt` renamed a temporary file over out.txt: the lines
    printed before and after the report went to the replaced inode and were lost. "-" made a
    file named "-"."""
    import subprocess

    code = ("from sbexport.reportfile import check_report_path, write_report\n"
            f"check_report_path({name!r}); print('table before', flush=True)\n"
            f"write_report({name!r}, 'REPORT\\n'); print('wrote after')\n")
    with open(tmp_path / "out.txt", "w") as out:
        subprocess.run([sys.executable, "-c", code], stdout=out, cwd=tmp_path, check=True, timeout=120)
    assert (tmp_path / "out.txt").read_text() == "table before\nREPORT\nwrote after\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_folder_that_takes_no_new_file_is_refused_before_the_work(monkeypatch):
    """As root, os.access says yes to /proc; no file can be created there all the same."""
    monkeypatch.setattr(reportfile.os, "access", lambda *args, **kwargs: True)      # root's answer
    with pytest.raises(SbexportError, match=r"^cannot write /proc/x.json: cannot create a file in /proc \("):
        check_report_path("/proc/x.json")


def test_two_options_naming_one_file_are_refused(tmp_path):
    (tmp_path / "r.json").write_text("old")
    (tmp_path / "link.json").symlink_to(tmp_path / "r.json")
    for second in (tmp_path / "r.json", tmp_path / "." / "r.json", tmp_path / "link.json"):
        with pytest.raises(SbexportError, match=r"^--json and --plot name the same file .*: the second report "):
            reportfile.check_report_paths({"--json": str(tmp_path / "r.json"), "--plot": str(second)})
    with pytest.raises(SbexportError, match="--json and --plot name the same file"):
        reportfile.check_report_paths({"--json": "-", "--plot": "/dev/stdout"})
    reportfile.check_report_paths({"--json": "/dev/null", "--plot": "/dev/null"})     # replaces nothing
    reportfile.check_report_paths({"--json": str(tmp_path / "r.json"), "--plot": None})
    assert (tmp_path / "r.json").read_text() == "old"


def test_every_report_that_can_be_written_is(tmp_path):
    """One unwritable report does not cost the others: each failure is one line, and the
    result travels with the error for the caller to print."""
    def write(result, path):
        write_report(path, result)

    def full(result, path):
        raise SbexportError(f"cannot write {path}: No space left on device")
    with pytest.raises(reportfile.ReportsNotWritten) as raised:
        reportfile.write_reports("data", [("a.json", full), (tmp_path / "b.png", write), (None, full),
                                          ("c.json", full)])
    e = raised.value
    assert e.result == "data" and e.written == [str(tmp_path / "b.png")]
    assert e.failures == [f"cannot write {name}: No space left on device" for name in ("a.json", "c.json")]
    assert (tmp_path / "b.png").read_text() == "data"
    assert reportfile.write_reports("x", [(tmp_path / "d.json", write)]) == [str(tmp_path / "d.json")]
