"""kernels/ seen from Python: load the native grouped 1x1 convolution (ctypes) and call it.

    lib = load()                                   # build/kernels-host's library, or $SBEXPORT_KERNELS_LIB
    with lib.pool(2) as pool:
        y = lib.grouped_pointwise(x, weight, bias, groups, pool=pool)    # isa="auto"
        conv = lib.conv(weight, bias, groups, pool=pool)                # weights checked once
        y = conv(x)

The C ABI is kernels/include/sbexport/grouped_pointwise.h; `make kernels` builds the library
(kernels/build.sh, cached in build/kernels-host/). Layouts are PyTorch's: x [batch, cin, seq],
weight [cout, cin/groups] (or with PyTorch's trailing 1 or 1, 1), bias [cout] or None,
y [batch, cout, seq], all float32.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np

from .errors import SbexportError

ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = ROOT / "kernels" / "build.sh"
LIBRARY_NAME = "libsbexport_kernels.so"
ENV_LIBRARY = "SBEXPORT_KERNELS_LIB"

# The header's enum sbk_isa and return codes.
ISAS = {"auto": 0, "scalar": 1, "avx2": 2, "avx512": 3, "neon": 4}
EINVAL, EISA = -1, -2


def build_kernels(kind: str = "host", python: str = sys.executable, timeout: float = 600) -> Path:
    """Build kernels/ with kernels/build.sh (`kind` "host" or "arm64"; cached, so a second call
    compiles nothing). Returns the build folder (build/kernels-<kind>); raises SbexportError with
    the script's one-line reason (e.g. "run make toolchain")."""
    proc = subprocess.run(["bash", str(BUILD_SCRIPT), kind], env={**os.environ, "PYTHON": python},
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SbexportError(f"kernels/build.sh {kind} failed: {proc.stderr.strip()}")
    return Path(proc.stdout.strip().splitlines()[-1])


def library_path() -> Path:
    """$SBEXPORT_KERNELS_LIB when set, else build/kernels-host/libsbexport_kernels.so. Raises
    SbexportError when that file does not exist (saying to run `make kernels`)."""
    env = os.environ.get(ENV_LIBRARY)
    path = Path(env) if env else ROOT / "build" / "kernels-host" / LIBRARY_NAME
    if not path.is_file():
        origin = f"${ENV_LIBRARY}" if env else "the default place"
        raise SbexportError(f"the native kernels library is not built: no {path} ({origin}); run `make kernels`")
    return path


def load(path: str | Path | None = None) -> KernelLibrary:
    """The kernels library at `path` (default library_path()). Raises SbexportError when it is
    missing or cannot be loaded (not a shared library, another architecture)."""
    return KernelLibrary(Path(path) if path is not None else library_path())


class KernelLibrary:
    """One loaded libsbexport_kernels.so. `lib` is the ctypes handle with the header's
    signatures declared (tests call the C functions through it directly)."""

    def __init__(self, path: Path):
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as e:
            raise SbexportError(f"cannot load the kernels library {path}: {e}; run `make kernels`") from None
        size, fptr = ctypes.c_size_t, ctypes.c_void_p
        _declare(lib.sbk_isa_available, ctypes.c_int, [ctypes.c_int])
        _declare(lib.sbk_isa_selected, ctypes.c_int, [])
        _declare(lib.sbk_isa_name, ctypes.c_char_p, [ctypes.c_int])
        _declare(lib.sbk_grouped_pointwise_f32, ctypes.c_int,
                 [fptr] * 4 + [size] * 5 + [ctypes.c_int, fptr, fptr])
        _declare(lib.sbk_pool_create, fptr, [size])
        _declare(lib.sbk_pool_destroy, None, [fptr])
        _declare(lib.sbk_pool_parallel, None, [fptr, size, fptr, fptr])
        self.path, self.lib = path, lib

    def available(self, isa: str) -> bool:
        """Whether this build and CPU can run `isa` (a key of ISAS other than "auto")."""
        return bool(self.lib.sbk_isa_available(_isa_code(isa)))

    def selected(self) -> str:
        """The ISA "auto" runs here ("avx512", "avx2", "neon" or "scalar")."""
        return self.lib.sbk_isa_name(self.lib.sbk_isa_selected()).decode()

    def pool(self, threads: int) -> ThreadPool:
        """A thread pool of `threads` (the calling thread counts as one); raises SbexportError
        for threads < 1 or when the threads cannot be made."""
        return ThreadPool(self, threads)

    def conv(self, weight: np.ndarray, bias: np.ndarray | None, groups: int, isa: str = "auto",
             pool: ThreadPool | None = None) -> PointwiseConv:
        """The convolution with these weights (module docstring's layouts), checked once;
        call it with x. Raises SbexportError for a weight and bias that do not fit `groups`
        and for an unknown ISA name."""
        return PointwiseConv(self, weight, bias, groups, isa, pool)

    def grouped_pointwise(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, groups: int,
                          isa: str = "auto", pool: ThreadPool | None = None,
                          out: np.ndarray | None = None) -> np.ndarray:
        """y [batch, cout, seq] float32 of the grouped 1x1 convolution, in one call:
        conv(weight, bias, groups, isa, pool)(x, out)."""
        return self.conv(weight, bias, groups, isa, pool)(x, out)


class PointwiseConv:
    """One grouped 1x1 convolution bound to its weights, ISA and pool (KernelLibrary.conv): the
    weights are checked and their addresses taken once, so a call costs the kernel, a check
    of x and one ctypes call."""

    def __init__(self, library: KernelLibrary, weight, bias, groups: int, isa: str, pool: ThreadPool | None):
        self.library, self.isa, self.groups, self.pool = library, isa, groups, pool
        self.weight, self.bias = _weights(weight, bias, groups)     # kept alive: the kernel reads them
        self._isa = _isa_code(isa)
        self._w, self._b = self.weight.ctypes.data, None if self.bias is None else self.bias.ctypes.data
        lib = library.lib
        self._parallel = ctypes.cast(lib.sbk_pool_parallel, ctypes.c_void_p) if pool is not None else None
        self._handle = pool.handle if pool is not None else None

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """y [batch, cout, seq] float32 for x [batch, cin, seq], written into `out` when given
        (C-contiguous float32 of that shape); serial without a pool. Raises SbexportError for an
        x or out that does not fit, for sizes the kernel refuses (a zero size) and for an ISA
        this build or CPU cannot run."""
        cout, fan_in = self.weight.shape
        x = np.ascontiguousarray(x, np.float32)
        if x.ndim != 3 or x.shape[1] != fan_in * self.groups:
            raise SbexportError(f"expected x [batch, {fan_in * self.groups}, seq] for weight "
                                f"{list(self.weight.shape)} in {self.groups} groups; got {list(x.shape)}")
        batch, cin, seq = x.shape
        y = np.empty((batch, cout, seq), np.float32) if out is None else out
        if y.shape != (batch, cout, seq) or y.dtype != np.float32 or not y.flags.c_contiguous:
            raise SbexportError(f"out must be a C-contiguous float32 array of shape {[batch, cout, seq]}; "
                                f"got {y.dtype} {list(y.shape)}")
        code = self.library.lib.sbk_grouped_pointwise_f32(x.ctypes.data, self._w, self._b, y.ctypes.data, batch, cin,
                                                          cout, self.groups, seq, self._isa, self._parallel,
                                                          self._handle)
        if code == EISA:
            raise SbexportError(f"the kernels library {self.library.path} cannot run {self.isa} on this CPU "
                                f"(it runs {self.library.selected()})")
        if code != 0:
            raise SbexportError(f"the grouped pointwise kernel refused x {list(x.shape)}, weight "
                                f"{list(self.weight.shape)}, groups {self.groups} (code {code}): a size is zero")
        return y


class ThreadPool:
    """An sbk_pool_create pool; closed by close(), the end of a `with` block, or when collected."""

    def __init__(self, library: KernelLibrary, threads: int):
        if not isinstance(threads, int) or threads < 1:
            raise SbexportError(f"a kernels thread pool needs at least 1 thread (got {threads!r})")
        handle = library.lib.sbk_pool_create(threads)
        if not handle:
            raise SbexportError(f"cannot start {threads} kernel threads")
        self.threads, self.handle = threads, handle
        self._close = weakref.finalize(self, library.lib.sbk_pool_destroy, handle)

    def close(self) -> None:
        """Stop the pool's threads (idempotent)."""
        self._close()

    def __enter__(self) -> ThreadPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _declare(fn, restype, argtypes) -> None:
    fn.restype, fn.argtypes = restype, argtypes


def _isa_code(isa: str) -> int:
    if isa not in ISAS:
        raise SbexportError(f"unknown ISA {isa!r}; expected one of {', '.join(ISAS)}")
    return ISAS[isa]


def _weights(weight, bias, groups: int) -> tuple[np.ndarray, np.ndarray | None]:
    """weight as a C-contiguous float32 [cout, cin/groups] (PyTorch's trailing 1s dropped) and
    bias as float32 [cout] or None, after checking that they fit `groups` (a mismatch would make
    the kernel read past an array)."""
    w = np.asarray(weight)
    while w.ndim > 2 and w.shape[-1] == 1:            # PyTorch's [cout, cin/g, 1] or [cout, cin/g, 1, 1]
        w = w[..., 0]
    w = np.ascontiguousarray(w, np.float32)
    if w.ndim != 2:
        raise SbexportError(f"expected weight [cout, cin/groups]; got {list(np.shape(weight))}")
    if not isinstance(groups, int) or groups < 1 or w.shape[0] % groups:
        raise SbexportError(f"weight {list(np.shape(weight))} does not fit {groups!r} groups "
                            f"(cout must be a multiple of groups)")
    b = None if bias is None else np.ascontiguousarray(bias, np.float32)
    if b is not None and b.shape != (w.shape[0],):
        raise SbexportError(f"bias {list(b.shape)} does not fit weight's {w.shape[0]} output channels")
    return w, b
