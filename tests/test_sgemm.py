"""The measured sgemm ceiling (sbexport.bench.sgemm): the fastest library's rate with every
library's kept, a failing library recorded without stopping the others, and one real small
measurement in every installed library. No speed is asserted: only which figure wins."""

from __future__ import annotations

import contextlib
import importlib.util

import numpy as np
import pytest
import torch

from sbexport.bench import sgemm
from sbexport.errors import SbexportError


def _rates(**gflops) -> dict:
    """measure_library's dicts at known rates (None: failed)."""
    return {name: {"gflops": None, "error": "RuntimeError: broken"} if g is None else
            {"gflops": g, "best_ms": round(1e3 / g, 3), "cpu_wait_pct": 0.5} for name, g in gflops.items()}


@pytest.mark.parametrize("rates, winner", [
    (dict(torch=80.0, onnxruntime=190.0, executorch=120.0), "onnxruntime"),
    (dict(torch=80.0, onnxruntime=60.0, executorch=120.0), "executorch"),
    (dict(torch=150.0, onnxruntime=60.0, executorch=120.0), "torch"),
    (dict(torch=80.0, onnxruntime=None, executorch=None), "torch"),
], ids=["onnxruntime", "executorch", "torch", "torch-alone"])
def test_the_ceiling_is_the_fastest_library(monkeypatch, tmp_path, rates, winner):
    """Each library at a known rate: the ceiling is the winner's, every library's is kept, and
    the op names the winner; every library of LIBRARIES is measured, with the caller's folder."""
    known, asked = _rates(**rates), []

    def measure(name, threads, n, folder, repeats):
        asked.append((name, threads, n, folder, repeats))
        return known[name]
    monkeypatch.setattr(sgemm, "measure_library", measure)
    c = sgemm.sgemm_ceiling(2, 512, tmp_path, repeats=3)
    assert asked == [(name, 2, 512, tmp_path, 3) for name in ("torch", "onnxruntime", "executorch")]
    assert c["libraries"] == known
    assert (c["gflops"], c["best_ms"], c["library"]) == (rates[winner], known[winner]["best_ms"], winner)
    assert (c["size"], c["repeats"], c["threads"], c["cpu_wait_pct"]) == (512, 3, 2, 0.5)
    assert c["op"].startswith(f"{sgemm.LABELS[winner]} fp32 512x512 @ 512x512, best of 3")
    assert sgemm.libraries_text(c).startswith(f"torch.mm {rates['torch']:.1f}, ONNX Runtime MatMul ")


def _failing_on_entry(n, threads, folder):
    raise ImportError("No module named 'onnxruntime'\nsecond line")


@contextlib.contextmanager
def _failing_on_call(n, threads, folder):
    def call():
        raise RuntimeError("XNNPACK refused the call")
    yield call


def test_a_failing_library_is_recorded_and_the_others_measured(monkeypatch, tmp_path):
    """One library that does not import, one whose call raises: each is recorded with its
    one-line reason, torch still measures and sets the ceiling."""
    monkeypatch.setitem(sgemm.LIBRARIES, "onnxruntime", _failing_on_entry)
    monkeypatch.setitem(sgemm.LIBRARIES, "executorch", _failing_on_call)
    c = sgemm.sgemm_ceiling(1, 64, tmp_path, repeats=2)
    assert c["libraries"]["onnxruntime"] == {"gflops": None,
                                             "error": "ImportError: No module named 'onnxruntime'"}
    assert c["libraries"]["executorch"] == {"gflops": None, "error": "RuntimeError: XNNPACK refused the call"}
    assert c["library"] == "torch" and c["gflops"] == c["libraries"]["torch"]["gflops"] > 0
    assert sgemm.libraries_text(c).endswith("ONNX Runtime MatMul failed, ExecuTorch XNNPACK Linear failed")


def test_no_library_measured_is_one_error(monkeypatch, tmp_path):
    for name in sgemm.LIBRARIES:
        monkeypatch.setitem(sgemm.LIBRARIES, name, _failing_on_entry)
    with pytest.raises(SbexportError, match=r"^no library measured the sgemm ceiling: torch: ImportError: No module"):
        sgemm.sgemm_ceiling(1, 64, tmp_path)


def _installed(name: str) -> bool:
    return name == "torch" or importlib.util.find_spec(name) is not None


def test_every_installed_library_measures_a_positive_rate(tmp_path):
    """A real measurement at n=256 on one thread: every installed library gives a rate, the
    ceiling is the largest; the models are kept in the folder (no temporary file left) and
    reused; the thread pools are as they were."""
    pools = _pools()
    c = sgemm.sgemm_ceiling(1, 256, tmp_path)
    installed = [name for name in sgemm.LIBRARIES if _installed(name)]
    assert installed[0] == "torch"
    for name in installed:
        assert c["libraries"][name]["gflops"] > 0 and c["libraries"][name]["best_ms"] > 0, c["libraries"][name]
    assert c["gflops"] == max(c["libraries"][name]["gflops"] for name in installed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["matmul-256.onnx", "matmul-256.pte"]
    written = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    sgemm.sgemm_ceiling(2, 256, tmp_path, repeats=1)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == written
    assert _pools() == pools


def _pools() -> tuple[int, int | None]:
    """(torch's threads, ExecuTorch's pool's threads or None where it is not installed)."""
    if not _installed("executorch"):
        return torch.get_num_threads(), None
    from executorch.extension.pybindings import portable_lib
    return torch.get_num_threads(), portable_lib._threadpool_get_thread_count()


def test_the_onnx_model_is_the_product(tmp_path):
    """ONNX Runtime times a @ b (b the constant initializer): its output against a float64
    product. Measured here (Zen 4): max abs error 9.6e-6 on outputs up to 33, so 1e-4 leaves a
    10x margin for other kernels' summation order; b transposed or a wrong operand is off by O(1)."""
    from sbexport.runtime import OnnxRunner

    a = np.random.default_rng(5).standard_normal((64, 64), dtype=np.float32)
    out = OnnxRunner(sgemm.matmul_model(64, tmp_path), 1).run({"a": a})[0]
    expected = a.astype(np.float64) @ sgemm._operand(64, 1).astype(np.float64)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)
