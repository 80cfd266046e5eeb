"""An Android device over adb as a benchmark target (target.Target): the .pte files run in
android_demo's native runner on the device, pinned to its big cores; everything else (exports,
FLOPs, the report) stays on the host.

    target = AdbTarget(client, describe(client, serial), DeviceOptions(runner=Path(...)))
    result = run_bench(config, target=target)       # the target removes what it pushed on close()

On the device: one run folder (sbexport.device.DeviceRun) holds the runner, both models and
the inputs of each shape as .npy files (the same arrays the host gets). For each sequence
length the models are run alternately, `rounds` runner processes each (order reversed every
round), each process loading its model, running it once apart, `warmup` untimed and its share
of `runs` timed calls; between two processes the device cools down (`cooldown_s`, then until
the thermal service reports no throttling, up to `thermal_wait_s`). The ceiling is an fp32
matrix product [n, n] x [n, n] lowered to XNNPACK and timed by the same runner, n = sgemm_size.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..device import AdbClient, DeviceInfo, DeviceRun
from ..device.probe import THERMAL_STATUS, read_thermal_status
from .machine import INTERESTING_FLAGS
from .sgemm import matmul_program
from .target import Loaded, Peak, Timing

DEVICE_RUNTIMES = ("executorch", "executorch-per-group")   # .pte files, in the native runner
CEILING_REPEATS = 5


@dataclass(frozen=True)
class DeviceOptions:
    """How to run on a device. runner: the native runner (android_demo/README.md: the Android
    build's executable, or the arm64 Linux bundle folder); run_timeout_s bounds one runner
    process."""
    runner: Path
    cooldown_s: float = 5.0
    thermal_wait_s: float = 120.0
    rounds: int = 2
    run_timeout_s: float = 1800.0


class AdbTarget:
    """One device (target.Target). `log` gets progress lines; `runs` lists every runner process
    (model, length, round, thermal status before it, load and peak memory) for the report."""

    def __init__(self, client: AdbClient, info: DeviceInfo, options: DeviceOptions,
                 log: Callable[[str], None] | None = None):
        self.client, self.info, self.options = client, info, options
        self.name = f"adb:{info.serial}"
        self.log = log or (lambda line: None)
        self.runs: list[dict] = []
        self._run: DeviceRun | None = None
        self._runner: str | None = None
        self._pushed: dict[str, str] = {}     # local key -> device path
        self._last_end: float | None = None
        self.left: str | None = None          # set by close(): what could not be removed

    # --- target.Target
    def describe(self, threads: int) -> dict:
        info = self.info
        # The host's keys (machine.machine_info); what a phone does not have is None or "-". The
        # runner's ExecuTorch version is in each of the report's device runs.
        return {"cpu": info.label, "cpu_id": {"soc": info.soc} if info.soc else {}, "machine": "aarch64",
                "platform": f"Android {info.android} (SDK {info.sdk}), {info.abi}", "cores": info.cores or None,
                "cores_available": max(len(info.big_cores), 1), "load_average": self.load_average(),
                "flags": [f for f in INTERESTING_FLAGS if f in info.cpu_features], "virtualised": info.emulated,
                "python": "-", "versions": {"torch": None, "onnxruntime": None, "onnx": None, "executorch": None,
                                            "numpy": None},
                "threads": threads}

    def cores(self) -> int:
        """The threads a run uses without --threads: the big cores (all cores when their
        frequencies could not be read)."""
        return len(self.info.big_cores) or self.info.cores or 1

    def load_average(self) -> list[float] | None:
        done = self.client.shell(self.info.serial, "cat /proc/loadavg", "reading the load average")
        fields = done.stdout.split()
        try:
            return [float(x) for x in fields[:3]] if done.status == 0 and len(fields) >= 3 else None
        except ValueError:
            return None

    def unavailable(self, runtime: str) -> str | None:
        if runtime in DEVICE_RUNTIMES:
            return None
        return "runs on the host only: a device runs ExecuTorch .pte files through android_demo's native runner"

    def ceiling(self, threads: int, size: int, workdir: Path) -> dict:
        """The device's fp32 matrix-multiply rate: best of CEILING_REPEATS runs of an [n, n] x [n, n]
        product lowered to XNNPACK (sgemm.matmul_program, kept in `workdir`: the host's ceiling
        runs the same file), in the native runner on `threads` threads."""
        pte = matmul_program(size, workdir)
        model = self.push_once(pte, f"matmul-{size}.pte")
        a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
        inputs = self.push_inputs({"a": a}, f"matmul-{size}")
        report = self.run_process(model, inputs, 1, CEILING_REPEATS, threads, f"matmul-{size}")
        best_ms = min(report["run_ms"])
        return {"gflops": round(2 * size**3 / (best_ms / 1e3) / 1e9, 3), "size": size, "repeats": CEILING_REPEATS,
                "threads": threads, "best_ms": best_ms, "cpu_wait_pct": None,
                "op": f"ExecuTorch XNNPACK fp32 {size}x{size} @ {size}x{size} in the native runner on the device, "
                      f"best of {CEILING_REPEATS}"}

    def notes(self, config) -> dict:
        pin = f"taskset {self.info.taskset_mask} (cores {list(self.info.big_cores)})" if self.info.taskset_mask \
            else "not pinned (core frequencies or taskset not readable)"
        statuses = sorted({r["thermal_status_before"] for r in self.runs}, key=lambda s: (s is None, s))
        return {
            "timing": f"android_demo's native runner on the device ({self.name}), its own clock around each call; "
                      f"per model and length {self.options.rounds} runner processes alternating between the "
                      f"models, each: load, one first call (the first process's is reported), {config.warmup} "
                      f"untimed calls, its share of {config.runs} timed calls; {self.options.cooldown_s:g} s "
                      f"cooldown between processes, then waiting (up to {self.options.thermal_wait_s:g} s) until "
                      f"the thermal service reports no throttling; thermal status before the processes: "
                      f"{', '.join(_status_name(s) for s in statuses) or 'not read'}",
            "load": "the runner's load_ms of the first process (program with ExecuTorch's verification, method)",
            "threads": f"the runner's --threads (ExecuTorch's thread pool, XNNPACK runs on it); pinned: {pin}",
            "memory": "not measured on a device (the runner's peak RSS of each process is in the report's device "
                      "runs)",
            "ceiling": f"ExecuTorch XNNPACK fp32 matrix product {config.sgemm_size}^3 in the native runner on the "
                       f"device, best of {CEILING_REPEATS} calls",
            "cpu_wait_pct": "not measured on a device",
        }

    def method_overrides(self, config) -> dict:
        """The report's method note that the pipeline words for the host: how the models
        alternate, on a device."""
        return {"interleaving": f"per sequence length, runner processes alternate between the models "
                                f"({self.options.rounds} each, order reversed every round); one model per process"}

    @contextlib.contextmanager
    def session(self, task, runtime: str, threads: int) -> Iterator[AdbSession]:
        yield AdbSession(self, threads)

    def peak_memory(self, task, runtime, model, artifact, seq_lens, batch, threads) -> Peak | None:
        return None

    def close(self) -> None:
        """Remove the run folder from the device (DeviceRun.close: also after a lost connection).
        Never raises: what could not be removed is kept in `left` for the caller to report with
        whatever error ended the run."""
        run, self._run = self._run, None
        if run is not None:
            self.left = run.close()

    # --- the device side
    def _folder(self) -> DeviceRun:
        """The run folder, made on first use (so that nothing is pushed before the exports pass)."""
        if self._run is None:
            self._run = DeviceRun(self.client, self.info, log=self.log).__enter__()
            self._runner = self._run.push_runner(self.options.runner)
        return self._run

    def push_once(self, local: Path, name: str) -> str:
        key = str(local.resolve())
        if key not in self._pushed:
            self._pushed[key] = self._folder().push(local, name)
        return self._pushed[key]

    def push_inputs(self, arrays: dict[str, np.ndarray], name: str) -> list[str]:
        """Push the arrays as .npy files in one folder RUN/name; their device paths, in order."""
        if name not in self._pushed:
            with tempfile.TemporaryDirectory(prefix="sbexport-inputs-") as tmp:
                for i, array in enumerate(arrays.values()):
                    np.save(Path(tmp) / f"{i}.npy", np.ascontiguousarray(array))
                self._pushed[name] = self._folder().push(Path(tmp), name)
        return [f"{self._pushed[name]}/{i}.npy" for i in range(len(arrays))]

    def run_process(self, model: str, inputs: list[str], warmup: int, runs: int, threads: int, tag: str) -> dict:
        """One runner process after the cooldown; its JSON report."""
        status = self._cool_down()
        args = [a for path in inputs for a in ("--input", path)]
        args += ["--warmup", str(warmup), "--runs", str(runs), "--threads", str(threads)]
        self.log(f"{self.name}: running {tag}")
        try:
            report = self._folder().run_runner(self._runner, model, args, tag, self.options.run_timeout_s)
        finally:
            self._last_end = time.monotonic()
        self.runs.append({"tag": tag, "thermal_status_before": status, "load_ms": report["load_ms"],
                          "first_run_ms": report["first_run_ms"], "runs": report["runs"],
                          "peak_rss_kb": report.get("peak_rss_kb"),
                          "executorch_version": report.get("executorch_version")})
        return report

    def _cool_down(self) -> int | None:
        """Sleep what is left of the cooldown since the last process, then wait for the thermal
        status to fall to 0 (bounded). The status read last (None: no thermal service)."""
        if self._last_end is not None:
            time.sleep(max(0.0, self.options.cooldown_s - (time.monotonic() - self._last_end)))
        deadline = time.monotonic() + self.options.thermal_wait_s
        status = read_thermal_status(self.client, self.info.serial)
        while status and time.monotonic() < deadline:
            self.log(f"{self.name}: thermal status {_status_name(status)}, waiting for the device to cool")
            time.sleep(5)
            status = read_thermal_status(self.client, self.info.serial)
        return status


class AdbSession:
    """The models of one runtime on the device (target.Session)."""

    def __init__(self, target: AdbTarget, threads: int):
        self.target, self.threads = target, threads

    def load(self, model, artifact: Path | None) -> Loaded:
        """Push the model's .pte; load_s is filled from the first runner process (time())."""
        from ..artifact import read_manifest

        pte = Path(artifact) / read_manifest(Path(artifact)).model_file
        remote = self.target.push_once(pte, f"{model.arch}.pte")
        return Loaded(model.arch, pte.name, pte.stat().st_size, 0.0, remote)

    def time(self, loaded: list[Loaded], feeds: dict, warmup: int, runs: int) -> dict[str, Timing]:
        """The models alternately, `rounds` runner processes each, the timed calls split among them."""
        target = self.target
        rounds = max(1, min(target.options.rounds, runs))
        shares = [runs // rounds + (r < runs % rounds) for r in range(rounds)]
        order = [m.arch for m in loaded]
        by_arch = {m.arch: m for m in loaded}
        first, times = {}, {arch: [] for arch in order}
        for r, share in enumerate(shares):
            for arch in order if r % 2 == 0 else order[::-1]:
                shape = "x".join(map(str, next(iter(feeds[arch].values())).shape))
                inputs = target.push_inputs(feeds[arch], f"inputs-{arch}-{shape}")
                report = target.run_process(by_arch[arch].handle, inputs, warmup, share, self.threads,
                                             f"{arch}-{shape}-round{r}")
                if arch not in first:
                    first[arch] = report["first_run_ms"] / 1e3
                    if by_arch[arch].load_s == 0.0:
                        by_arch[arch].load_s = report["load_ms"] / 1e3
                times[arch] += [t / 1e3 for t in report["run_ms"]]
        return {arch: Timing(first[arch], times[arch], None) for arch in order}


def _status_name(status: int | None) -> str:
    return "not readable" if status is None else f"{THERMAL_STATUS[status]} ({status})"
