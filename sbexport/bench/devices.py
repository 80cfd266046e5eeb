"""`sbexport bench --device adb [--serial S ...]`: the bench on Android devices, one report per
device (the host bench's table, JSON and plot, with the device described under "device") and a
table of all of them.

    results = bench_devices(config, serials, runner, json_path=..., plot_path=...)
    print(devices_text(results))

Every device is checked before any work (adb installed, listed, authorized, online, arm64-v8a);
then the models are exported once, shared by the devices.

Honesty: a device that says it is emulated (ro.kernel.qemu=1 and the like, probe.py) gives
timings of the emulator, not of a phone. Its report says EMULATED in the table, the JSON
(machine.cpu, method.emulated, device.emulated) and the plot's title, and gives no BERT-base /
SqueezeBERT ratio: the ratio is null in the JSON and absent from the tables.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..device import AdbClient, DeviceInfo, check_runner, describe, find_adb, select_devices
from ..errors import DeviceError, SbexportError
from ..reportfile import ReportsNotWritten, check_report_paths, write_reports
from . import report
from .adb import AdbTarget, DeviceOptions
from .inputs import BenchConfig

EMULATED_NOTE = ("EMULATED device ({marker}): these times measure an emulator (qemu), not a phone's CPU. "
                 "They are not performance figures, and no SqueezeBERT / BERT-base speed-up is reported.")


def bench_devices(config: BenchConfig, serials: list[str] | tuple[str, ...], runner: Path, *,
                  json_path: str | None = None, plot_path: str | None = None, cooldown_s: float = 5.0,
                  log: Callable[[str], None] | None = None, progress: bool = True,
                  verbose: bool = False) -> list[dict]:
    """Benchmark on each device (the one attached when `serials` is empty); the reports, in order.

    JSON and plot go to the paths given for one device, to PATH with the serial before the
    suffix for several (bench.json -> bench.SERIAL.json). Raises SbexportError before any work
    for a runtime other than ExecuTorch or a runner that is neither an arm64 executable nor a
    bundle (checked on the host, device.check_runner), DeviceError (sbexport.errors) when adb
    is missing or a device cannot be used, and when a device is lost during the run (after
    removing what was pushed, or saying what is left). Raises ReportsNotWritten (carrying
    every device's result) when some JSON or plot could not be written; every other one is."""
    log = log or (lambda line: None)
    if "executorch" not in config.formats:
        raise SbexportError("a device runs ExecuTorch only: use --runtimes executorch with --device adb")
    check_runner(Path(runner))
    check_report_paths({"--json": json_path, "--plot": plot_path})
    client = AdbClient(find_adb())
    infos = [describe(client, serial) for serial in select_devices(client, serials)]
    paths = [(report_path(json_path, i.serial, len(infos)), report_path(plot_path, i.serial, len(infos)))
             for i in infos]
    for json_out, plot_out in paths:
        check_report_paths({"--json": json_out, "--plot": plot_out})
    results, written, failures = [], [], []
    with _shared_workdir(config) as workdir:
        for info, (json_out, plot_out) in zip(infos, paths):
            options = DeviceOptions(runner=Path(runner), cooldown_s=cooldown_s)
            target = AdbTarget(client, info, options, log)
            device_config = replace(config, workdir=workdir)    # threads: the target's cores() by default
            log(f"benchmarking on {info.label}")
            result = device_result(_run_on(target, device_config, progress, log, verbose), target, device_config)
            results.append(result)
            try:     # a report that cannot be written does not cost the next device its run
                written += write_reports(result, [(json_out, report.write_json), (plot_out, report.plot)])
            except ReportsNotWritten as e:
                written, failures = written + e.written, failures + e.failures
    if failures:
        raise ReportsNotWritten(results, written, failures)
    return results


def _run_on(target: AdbTarget, config: BenchConfig, progress: bool, log, verbose: bool = False) -> dict:
    """run_bench on the device; what its cleanup could not remove is added to the error that
    ended the run, or is the error (DeviceError) when the run itself went well."""
    from .pipeline import run_bench

    try:
        result = run_bench(config, target=target, progress=progress, log=log, verbose=verbose)
    except SbexportError as e:
        if target.left:
            raise DeviceError(f"{e}; {target.left}") from None
        raise
    except BaseException:                # Ctrl-C (or a bug): it goes on, with what is left said
        if target.left:
            log(f"error: {target.left}")
        raise
    if target.left:
        raise DeviceError(target.left)
    return result


def device_result(result: dict, target: AdbTarget, config: BenchConfig) -> dict:
    """The pipeline's result with the device described ("device") and, for an emulated device,
    marked as such everywhere it is read and stripped of the speed-up ratio."""
    info: DeviceInfo = target.info
    result = {**result, "method": {**result["method"], **target.method_overrides(config)},
              "device": {**info.to_dict(), "runs": target.runs, "emulated_note": emulated_note(info)}}
    if info.emulated:
        result["method"] = {**result["method"], "emulated": emulated_note(info)}
        result["rows"] = [{**row, "ratio_bert_over_squeezebert": None} for row in result["rows"]]
    return result


def emulated_note(info: DeviceInfo) -> str | None:
    return EMULATED_NOTE.format(marker=info.emulation_marker) if info.emulated else None


def device_table(result: dict) -> str:
    """The host bench's table for one device, headed by the device (and the EMULATED note,
    repeated below the table so that neither end of it reads as a measurement)."""
    d = result["device"]
    pin = f"pinned to cores {d['big_cores']} (taskset {d['taskset_mask']})" if d["taskset_mask"] else "not pinned"
    head = [f"device {d['serial']}: {d['manufacturer']} {d['model']}, SoC {d['soc'] or '?'}, {d['cores']} cores "
            f"(max kHz {d['core_max_khz']}), {pin}, Android {d['android']}"]
    note = [d["emulated_note"]] if d["emulated"] else []
    return "\n".join(note + head + [report.table(result)] + note)


def combined_table(results: list[dict]) -> str:
    """One line per device and sequence length: both models' p50 and the ratio (none for an
    emulated device: "emulated" instead)."""
    head = f"{'device':<44}{'seq':>5}{'SqueezeBERT p50':>17}{'BERT-base p50':>15}{'ratio':>10}"
    lines = [head, "-" * len(head)]
    for result in results:
        d = result["device"]
        name = f"{d['model']} ({d['serial']})"[:43]
        by_key = {(r["model"], r["seq_len"]): r for r in result["rows"]}
        for seq_len in result["config"]["seq_lens"]:
            sb, bert = by_key.get(("squeezebert", seq_len)), by_key.get(("bert", seq_len))
            ratio = "emulated" if d["emulated"] else (
                f"{sb['ratio_bert_over_squeezebert']:.2f}x" if sb and bert and sb["ratio_bert_over_squeezebert"]
                else "-")
            lines.append(f"{name:<44}{seq_len:>5}{_ms(sb):>17}{_ms(bert):>15}{ratio:>10}")
    if any(r["device"]["emulated"] for r in results):
        lines.append("emulated: times of an emulator (qemu), not of a phone; no speed-up is reported for them")
    return "\n".join(lines)


def devices_text(results: list[dict]) -> str:
    """What the CLI prints: each device's table, then the combined table when there are several."""
    parts = [device_table(r) for r in results]
    if len(results) > 1:
        parts.append("all devices:\n" + combined_table(results))
    return "\n\n".join(parts)


def report_path(path: str | None, serial: str, devices: int) -> str | None:
    """`path` for one device; with several, the serial before the suffix (":" and "/" made "_")."""
    if path is None or devices == 1:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}.{re.sub(r'[^A-Za-z0-9._-]', '_', serial)}{p.suffix}"))


@contextlib.contextmanager
def _shared_workdir(config: BenchConfig):
    """The exports' folder: the user's --workdir, else one temporary folder for every device."""
    if config.workdir:
        yield config.workdir
        return
    with tempfile.TemporaryDirectory(prefix="sbexport-bench-") as tmp:
        yield tmp


def _ms(row: dict | None) -> str:
    return f"{row['p50_ms']:.2f} ms" if row else "-"
