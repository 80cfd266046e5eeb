"""int8 answers on an AVX2-only x86 CPU (the AMD Zen 3 kind of CI machine, many laptops and
servers), checked on any machine: `--int8-weights u8` and the guard's u8 copy are exact there,
where the default s8 file saturates.

ONNX Runtime's MLAS picks its int8 GEMM kernel by CPUID. Without VNNI its u8 x s8 kernel adds
pairs of u8 x s8 products in int16 (VPMADDUBSW), which saturates when both products are large;
its u8 x u8 kernel widens to int16 first and is exact. `qemu-x86_64 -cpu Haswell` (qemu-user,
installed by `make toolchain`) offers AVX2 without AVX-512 or VNNI, so MLAS takes that path
wherever the test runs.

The model is one grouped 1x1 convolution built to saturate: positive weights that quantize to
the top of the int8 range, positive inputs that fill u8 (two adjacent products 255 x 127 sum to
64770, twice int16's 32767). It is quantized by the product's own quantize_onnx; the guard's copy comes from
exact_int8_file, told that the CPU saturates.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sbexport.export import quantize as quantize_module
from sbexport.export.quantize import exact_int8_file, quantize_onnx, saturates_u8s8
from sbexport.manifest import Recipe

CHANNELS, GROUPS, SEQ = 64, 4, 16

# Runs each model on the saved input in ONNX Runtime, one thread, and saves the outputs.
RUN = """
import sys, numpy as np, onnxruntime as ort
x = np.load(sys.argv[1])
o = ort.SessionOptions(); o.intra_op_num_threads = 1
out = {}
for path in sys.argv[3:]:
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    out[path] = s.run(None, {"x": x})[0]
np.savez(sys.argv[2], *[out[p] for p in sys.argv[3:]])
"""


def _saturating_conv(path) -> np.ndarray:
    """Write a float model y = Conv(x) (1x1, GROUPS groups, [1, CHANNELS, SEQ]) to `path`; return
    an input that fills u8 when calibrated on itself."""
    rng = np.random.default_rng(0)
    weight = rng.uniform(0.9, 1.0, (CHANNELS, CHANNELS // GROUPS, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=GROUPS, kernel_shape=[1])], "saturate",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CHANNELS, SEQ])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CHANNELS, SEQ])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    x = rng.uniform(0.9, 1.0, (1, CHANNELS, SEQ)).astype(np.float32)
    x[..., 0] = 0.0                       # the calibrated range starts at 0: u8 zero point 0
    return x


def _run(tmp_path, x, models, emulate: bool) -> list[np.ndarray]:
    """Each of `models` run on `x` in ONNX Runtime, natively or under qemu-x86_64 -cpu Haswell."""
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / ("haswell.npz" if emulate else "native.npz")
    command = [sys.executable, "-c", RUN, str(tmp_path / "x.npy"), str(out), *map(str, models)]
    if emulate:
        command = ["qemu-x86_64", "-cpu", "Haswell", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = np.load(out)
    return [saved[f"arr_{i}"] for i in range(len(models))]


def test_u8_weights_and_the_guards_copy_are_exact_on_an_avx2_only_cpu(tmp_path, monkeypatch):
    """Measured (Intel kind natively, and under qemu Haswell): against the float convolution,
    s8 under Haswell is off by 46% of the output range (the saturation); u8 weights and the
    guard's u8 copy are off by 0.35% natively and under Haswell alike, equal to the u8 step.
    Bars: s8 under Haswell beyond 20%, so the emulated CPU is known to take the saturating path
    (else this test proves nothing); u8 and the copy within 2% (6x margin) and within one u8
    step of the native u8 file."""
    assert shutil.which("qemu-x86_64"), "qemu-x86_64 is missing: `make toolchain` installs qemu-user"
    x = _saturating_conv(tmp_path / "fp32.onnx")
    s8, u8, copy = tmp_path / "s8.onnx", tmp_path / "u8.onnx", tmp_path / "copy.onnx"
    quantize_onnx(tmp_path / "fp32.onnx", s8, Recipe(), [{"x": x}])
    quantize_onnx(tmp_path / "fp32.onnx", u8, replace(Recipe(), weight_storage="u8"), [{"x": x}])
    monkeypatch.setattr(quantize_module, "saturates_u8s8", lambda: True)
    with exact_int8_file(s8, log=lambda line: None) as judged:
        assert judged != s8
        shutil.copy(judged, copy)
    fp32, native = _run(tmp_path, x, [tmp_path / "fp32.onnx", u8], emulate=False)
    s8_haswell, u8_haswell, copy_haswell = _run(tmp_path, x, [s8, u8, copy], emulate=True)
    scale = float(np.abs(fp32).max())
    step = scale / 255                    # one u8 step of the output's calibrated range
    error = lambda got: float(np.abs(got - fp32).max()) / scale   # noqa: E731
    print(f"relative error: u8 native {error(native):.4f}; under Haswell s8 {error(s8_haswell):.4f}, "
          f"u8 {error(u8_haswell):.4f}, the guard's copy {error(copy_haswell):.4f}")
    assert error(s8_haswell) > 0.20, "the emulated CPU did not saturate u8 x s8: is it AVX2-only?"
    for got in (native, u8_haswell, copy_haswell):
        assert error(got) < 0.02
        assert float(np.abs(got - native).max()) <= step * 1.001


def test_the_guard_judges_the_file_itself_where_s8_is_exact(tmp_path, monkeypatch):
    """No copy where ONNX Runtime computes u8 x s8 exactly (VNNI, arm64), nor for a file
    whose weights are u8 already."""
    x = _saturating_conv(tmp_path / "fp32.onnx")
    quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "s8.onnx", Recipe(), [{"x": x}])
    monkeypatch.setattr(quantize_module, "saturates_u8s8", lambda: False)
    with exact_int8_file(tmp_path / "s8.onnx") as judged:
        assert judged == tmp_path / "s8.onnx"
    monkeypatch.setattr(quantize_module, "saturates_u8s8", lambda: True)
    quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "u8.onnx", replace(Recipe(), weight_storage="u8"), [{"x": x}])
    with exact_int8_file(tmp_path / "u8.onnx") as judged:
        assert judged == tmp_path / "u8.onnx"


@pytest.mark.parametrize("flags, saturates", [
    ("fpu sse2 avx avx2 fma", True),                                  # AMD Zen 3, Intel Haswell
    ("fpu avx2 avx512f avx512bw", True),                              # Skylake-SP: AVX-512 without VNNI
    ("fpu avx2 avx512f avx512_vnni amx_int8", False),                 # Sapphire Rapids, Zen 4
    ("fpu avx2 avx_vnni", False),                                     # Alder Lake
])
def test_which_cpus_saturate(flags, saturates):
    cpuinfo = f"processor\t: 0\nflags\t\t: {flags}\n"
    assert saturates_u8s8(cpuinfo) is saturates
