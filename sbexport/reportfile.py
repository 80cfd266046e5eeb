"""Reports written where the user names (verify --json, eval --json, bench --json and --plot).

The user's path is honoured for what it is: a regular file (or a new one) is replaced
atomically, through any symlinks, keeping an existing file's permissions and giving a new one
the umask's; a FIFO or a character device (a pipe a reader waits on, /dev/stdout, /dev/null) is
written straight into, since renaming a file over it would replace it and its reader would get
nothing. Anything else (a folder, a block device, a socket) is refused with one line.
`check_report_path` says so before the expensive work; `write_report` writes afterwards.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .atomic import replace_file
from .errors import SbexportError


def check_report_path(path: str | os.PathLike) -> None:
    """Raise SbexportError (one line naming `path`) when a report cannot be written there.
    Opens nothing: opening a FIFO to test it would hand its reader an empty report."""
    _destination(path)


def write_report(path: str | os.PathLike, data: str | bytes) -> None:
    """Write `data` (str: UTF-8) to `path` as described in the module docstring.
    Raises SbexportError naming `path` when it cannot (unwritable, disk full, reader gone);
    a regular file is then left as it was and no temporary file remains."""
    data = data.encode("utf-8") if isinstance(data, str) else data
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
