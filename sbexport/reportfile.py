"""Reports written where the user names (verify --json, eval --json, bench --json and --plot).

The user's path is honoured for what it is: a regular file (or a new one) is replaced
atomically, through any symlinks, keeping an existing file's permissions and giving a new one
the umask's; a FIFO or a character device (a pipe a reader waits on, /dev/stdout, /dev/null) is
written straight into, since renaming a file over it would replace it and its reader would get
nothing. "-" and "/dev/stdout" name this process's standard output, written straight through
sys.stdout whatever it is (a regular file it is redirected to too: renaming over that file would
leave the lines printed after the report in an unlinked inode). Anything else (a folder, a block
device, a socket) is refused with one line. `check_report_paths` says so before the expensive
work; `write_reports` writes afterwards, each report whatever becomes of the others.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from .atomic import replace_file
from .errors import SbexportError

STDOUT_NAMES = ("-", "/dev/stdout")


class ReportsNotWritten(SbexportError):
    """Reports that could not be written after the work was done. `result` is the work's
    result (for the caller to print), `written` the paths written, `failures` one line each."""

    def __init__(self, result, written: list[str], failures: list[str]):
        super().__init__("; ".join(failures))
        self.result, self.written, self.failures = result, written, failures


def is_stdout(path: str | os.PathLike) -> bool:
    """Whether `path` names standard output ("-" or "/dev/stdout")."""
    return str(path) in STDOUT_NAMES


def check_report_path(path: str | os.PathLike) -> None:
    """Raise SbexportError (one line naming `path`) when a report cannot be written there.
    Opens no existing file: opening a FIFO to test it would hand its reader an empty report.
    A regular file's folder gets a temporary file created and removed: os.access says yes to
    root everywhere, and a folder such as /proc takes no new file from anyone."""
    if is_stdout(path):
        return
    target, st = _destination(path)
    if st is None or stat.S_ISREG(st.st_mode):
        _probe_folder(target.parent, path)


def check_report_paths(paths: dict[str, str | os.PathLike | None]) -> None:
    """check_report_path on each of `paths` (option -> path, None: not asked for), then refuse
    two options naming one file: the second report would replace the first. A character device
    other than standard output (/dev/null) may take both."""
    seen: dict[str, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        check_report_path(path)
        key = _identity(path)
        if key in seen:
            raise SbexportError(f"{seen[key]} and {option} name the same file ({path}): the second report would "
                                f"replace the first; give each its own path")
        if key is not None:
            seen[key] = option


def write_reports(result, writers: Iterable[tuple[str | os.PathLike | None, Callable]]) -> list[str]:
    """Call write(result, path) for each (path, write) of `writers` whose path is not None, each
    whatever becomes of the others: work done is not lost to one unwritable place. Returns the
    paths written; raises ReportsNotWritten (carrying `result`) when any write failed."""
    written, failures = [], []
    for path, write in writers:
        if path is None:
            continue
        try:
            write(result, path)
            written.append(str(path))
        except SbexportError as e:
            failures.append(str(e))
    if failures:
        raise ReportsNotWritten(result, written, failures)
    return written


def write_report(path: str | os.PathLike, data: str | bytes) -> None:
    """Write `data` (str: UTF-8) to `path` as described in the module docstring.
    Raises SbexportError naming `path` when it cannot (unwritable, disk full, reader gone);
    a regular file is then left as it was and no temporary file remains."""
    data = data.encode("utf-8") if isinstance(data, str) else data
    if is_stdout(path):
        _write_stdout(path, data)
        return
    target, st = _destination(path)
    try:
        if st is not None and (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            with open(path, "wb") as f:       # through the name the user gave: /dev/stdout is a link
                f.write(data)
        else:
            replace_file(target, data, None if st is None else stat.S_IMODE(st.st_mode))
    except OSError as e:
        raise SbexportError(f"cannot write {path}: {e.strerror or e}") from None


def _destination(path: str | os.PathLike) -> tuple[Path, os.stat_result | None]:
    """(the real path a regular file is written at, the stat of what exists there or None).
    Raises SbexportError for an empty path, a missing or unwritable folder, or a kind of file
    a report cannot go into."""
    if not str(path).strip():
        raise SbexportError("the report path is empty; name a file")
    try:   # follows symlinks, /dev/stdout's to a pipe too (whose realpath names no file)
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise SbexportError(f"cannot write {path}: {e.strerror or e}") from None
    target = Path(os.path.realpath(path))      # a symlink's target (it may not exist yet)
    if st is None or stat.S_ISREG(st.st_mode):
        folder = target.parent
        if not folder.is_dir():
            raise SbexportError(f"cannot write {path}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK) or (st is not None and not os.access(target, os.W_OK)):
            raise SbexportError(f"cannot write {path}: permission denied")
    elif stat.S_ISDIR(st.st_mode):
        raise SbexportError(f"cannot write {path}: it is a folder")
    elif stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
        if not os.access(path, os.W_OK):
            raise SbexportError(f"cannot write {path}: permission denied")
    else:
        raise SbexportError(f"cannot write {path}: it is not a regular file, FIFO or character device "
                            f"(a block device or socket); name a file")
    return target, st


def check_not_an_input(path: str | os.PathLike, inputs) -> None:
    """Raise SbexportError (one line) when the report at `path` would replace one of the
    command's `inputs` (files or folders it reads: an artifact folder, a data file) or land
    inside one of those folders: `verify A --json A/model.onnx` replaced the model it had just
    verified. Changes nothing."""
    if _identity(path) in ("stdout", None):     # standard output, /dev/null: no file is replaced
        return
    target = Path(os.path.realpath(path))
    for item in inputs:
        real = Path(os.path.realpath(item))
        if target == real or real in target.parents:
            where = "is" if target == real else "is inside"
            raise SbexportError(f"cannot write {path}: it {where} {item}, which this command reads; "
                                f"name a file elsewhere")


def _probe_folder(folder: Path, path) -> None:
    """Create and remove a temporary file in `folder`. Raises SbexportError naming `path` when
    no file can be made there (read-only file system, /proc, no permission)."""
    probe = folder / f".sbexport-probe-{secrets.token_hex(4)}.tmp"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as e:
        raise SbexportError(f"cannot write {path}: cannot create a file in {folder} ({e.strerror or e})") from None
    probe.unlink(missing_ok=True)


def _identity(path) -> str | None:
    """What `path` writes into, to tell two paths naming one file: "stdout", the resolved path,
    or None for a character device other than stdout (writing twice replaces nothing)."""
    if is_stdout(path):
        return "stdout"
    try:
        if stat.S_ISCHR(os.stat(path).st_mode):
            return None
    except OSError:
        pass
    return os.path.realpath(path)


def _write_stdout(path, data: bytes) -> None:
    """`data` onto sys.stdout's bytes after what was printed before it (flushed first)."""
    try:
        sys.stdout.flush()
        out = getattr(sys.stdout, "buffer", None)
        if out is None:                   # a text-only stream in place of stdout
            sys.stdout.write(data.decode("utf-8", errors="replace"))
        else:
            out.write(data)
            out.flush()
    except OSError as e:
        raise SbexportError(f"cannot write {path}: {e.strerror or e}") from None
