"""Replacing a file atomically: the one way sbexport (re)writes a file it or a user may read
while it changes (manifest.json, config.json, checkpoint weights, reports).

The new content goes to a temporary file beside the target (same folder, so the rename stays
on one file system), which is renamed over the target only once complete. An interrupted or
failed write (a full disk, Ctrl-C) leaves the old file as it was and no temporary file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(target: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """Yield the path of a new, empty temporary file beside `target` for the block to write;
    when the block succeeds, rename it over `target`; on any failure remove it and re-raise.

    `mode`: the permission bits to give it (an existing file's, to keep them), or None for the
    umask's (what os.open with 0o666 gives; tempfile.mkstemp would give 0600).
    Raises OSError (cannot create, write or rename)."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
        finally:
            os.close(fd)
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_file(target: str | os.PathLike, data: bytes | str, mode: int | None = None) -> None:
    """Replace `target` by `data` (str: UTF-8) as `replacing` does. Raises OSError."""
    data = data.encode("utf-8") if isinstance(data, str) else data
    with replacing(target, mode) as tmp:
        fd = os.open(tmp, os.O_WRONLY)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
