"""`sbexport bench --device adb` end to end: the sbexport command (a subprocess, as a user runs
it) drives Debian's real adb client against the device stand-in (tests/adb_device.py), which
runs android_demo's arm64 runner under qemu-aarch64. Tiny models only (a full-size model takes
about 90 s per forward under qemu).

The stand-in says it is emulated (ro.kernel.qemu=1), so its reports must say EMULATED and give
no speed-up; a stand-in pretending to be real hardware (emulated=False) shows the other side.
Every call is bounded: the subprocess's timeout, the stand-in's idle and command limits.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from adb_device import ARM64_PHONE, X86_64_EMULATOR, Faults
from conftest import tiny_bert_config, tiny_squeezebert_config
from test_adb_device import adb, make_device  # noqa: F401 (fixtures: a private adb server, stand-ins)
from test_runner_native import build

from sbexport.device import DEVICE_ROOT

SBEXPORT = str(Path(sys.executable).with_name("sbexport"))
BENCH_TIMEOUT = 900      # s for one bench command; measured 60-150 s for the first (exports), under load
QEMU = "qemu-aarch64 -cpu cortex-a53"
RATIO = re.compile(r"\d\.\d\dx")


@pytest.fixture(scope="module")
def bundle() -> Path:
    """The arm64 runner bundle (make runner-arm64), the folder `--runner` takes."""
    return build("arm64").parent


@pytest.fixture(scope="module")
def bench_inputs(tmp_path_factory) -> dict:
    """Tiny config files for both models, and a work folder shared by the module's runs (each
    model exported once)."""
    folder = tmp_path_factory.mktemp("bench-device")
    paths = {}
    for arch, config in (("squeezebert", tiny_squeezebert_config()), ("bert", tiny_bert_config())):
        paths[arch] = folder / f"{arch}.json"
        config.to_json_file(paths[arch])
    return {"configs": paths, "workdir": folder / "work"}


def sbexport_bench(adb, bench_inputs, bundle, *args, env=None, timeout=BENCH_TIMEOUT, popen=False):  # noqa: F811
    """Run `sbexport bench --device adb` with the private adb server (ANDROID_ADB_SERVER_PORT,
    HOME holding its key), tiny models, few runs, no cooldown, a small ceiling."""
    argv = [SBEXPORT, "bench", "--device", "adb", "--runner", str(bundle),
            "--config-squeezebert", str(bench_inputs["configs"]["squeezebert"]),
            "--config-bert", str(bench_inputs["configs"]["bert"]), "--seq-lens", "8,16", "--warmup", "1",
            "--runs", "3", "--cooldown", "0", "--sgemm-size", "64", "--workdir", str(bench_inputs["workdir"]),
            *args]
    env = {**adb.env, "ANDROID_ADB_SERVER_PORT": str(adb.port), **(env or {})}
    if popen:
        # Ctrl-C's default disposition, as in a terminal: a shell starts background jobs (a CI
        # script run with `&`) with SIGINT ignored, which every child would inherit.
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


# The stand-in stops after this long without traffic; the host exports for minutes (under load)
# between the ceiling's run and the first model's push.
DEVICE_OPTIONS = {"shell_env": {"SBEXPORT_QEMU": QEMU}, "command_timeout": 300, "idle_limit": BENCH_TIMEOUT}


def emulated_phone(make_device, **options):  # noqa: F811
    return make_device(ARM64_PHONE, **DEVICE_OPTIONS, **options)


def left_on(device) -> list[str]:
    """What is left of sbexport's folder in the stand-in's scratch filesystem."""
    root = device.host_path(DEVICE_ROOT)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one error line sbexport printed (stderr's last line), after checking there is no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------
# The round trip
# ------------------------------------------------------------------------------------------

def test_round_trip_on_an_emulated_device(adb, make_device, bench_inputs, bundle, tmp_path):  # noqa: F811
    import jsonschema

    from sbexport.bench.report import json_schema

    phone = emulated_phone(make_device)
    adb.connect(phone)
    out = tmp_path / "bench.json"
    done = sbexport_bench(adb, bench_inputs, bundle, "--serial", phone.serial, "--json", str(out),
                          "--plot", str(tmp_path / "bench.png"))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    jsonschema.validate(result, json_schema())
    device = result["device"]
    assert (device["serial"], device["model"], device["soc"]) == (phone.serial, "SB Standin 8", "SM8450")
    assert device["big_cores"] == [4, 5, 6, 7] and device["taskset_mask"] == "f0"
    assert result["config"]["threads"] == 4                      # the big cores
    assert {"asimd", "asimddp"} <= set(result["machine"]["flags"])
    # Both models at both lengths, every timed call of the runner kept.
    rows = {(r["model"], r["runtime"], r["seq_len"]): r for r in result["rows"]}
    assert set(rows) == {(m, "executorch", s) for m in ("squeezebert", "bert") for s in (8, 16)}
    assert all(r["runs"] == 3 and r["p50_ms"] > 0 and r["file"] == "model.pte" for r in rows.values())
    # Alternating processes (order reversed every round), each pinned to the big cores.
    tags = [run["tag"] for run in device["runs"]]
    assert tags[0] == "matmul-64" and tags[-1] == "matmul-64"    # the ceiling, before and after
    assert tags[1:5] == ["squeezebert-1x8-round0", "bert-1x8-round0", "bert-1x8-round1", "squeezebert-1x8-round1"]
    runner_lines = phone.taskset_log()
    assert len(runner_lines) == len(tags) and all(line.startswith("f0 ") for line in runner_lines)
    assert all("--input" in line for line in runner_lines)     # the host's inputs, pushed as .npy
    # Emulated: said everywhere, no speed-up anywhere.
    assert device["emulated"] and device["emulation_marker"] == "ro.kernel.qemu=1"
    assert result["machine"]["cpu"].startswith("EMULATED") and "EMULATED" in result["method"]["emulated"]
    assert all(r["ratio_bert_over_squeezebert"] is None for r in result["rows"])
    assert done.stdout.startswith("EMULATED") and done.stdout.count("EMULATED") >= 2
    assert not RATIO.search(done.stdout), done.stdout
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Everything pushed was removed, the folder sbexport made too.
    assert "sync:SEND" in phone.events and left_on(phone) == []
    assert not phone.host_path(DEVICE_ROOT).exists()


def test_several_devices_one_report_each_and_a_combined_table(adb, make_device, bench_inputs, bundle,  # noqa: F811
                                                             tmp_path):
    emulated = emulated_phone(make_device)
    # Pretends to be hardware, to show how a phone's report reads; its times are qemu's all the same.
    real = make_device(dataclasses.replace(ARM64_PHONE, emulated=False), **DEVICE_OPTIONS)
    for device in (emulated, real):
        adb.connect(device)
    done = sbexport_bench(adb, bench_inputs, bundle, "--serial", emulated.serial, "--serial", real.serial,
                          "--json", str(tmp_path / "bench.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    reports = {}
    for device in (emulated, real):
        path = tmp_path / f"bench.{device.serial.replace(':', '_')}.json"
        assert f"wrote {path}" in done.stdout
        reports[device.serial] = json.loads(path.read_text())
        assert reports[device.serial]["device"]["serial"] == device.serial
        assert left_on(device) == []
    assert not (tmp_path / "bench.json").exists()
    assert all(r["ratio_bert_over_squeezebert"] is None for r in reports[emulated.serial]["rows"])
    assert all(r["ratio_bert_over_squeezebert"] > 0 for r in reports[real.serial]["rows"])
    assert "EMULATED" not in json.dumps(reports[real.serial])
    # The combined table: "SB Standin 8 (SERIAL)   SEQ   x ms   y ms   RATIO", one line per device and length.
    combined = done.stdout.split("all devices:\n", 1)[1]
    ratios = {(m["serial"], int(m["seq"])): m["ratio"]
              for m in re.finditer(r"\((?P<serial>[\d.:]+)\)\s+(?P<seq>\d+)\s.*\s(?P<ratio>\S+)$", combined, re.M)}
    assert set(ratios) == {(d.serial, s) for d in (emulated, real) for s in (8, 16)}, combined
    assert ratios[emulated.serial, 8] == ratios[emulated.serial, 16] == "emulated"
    assert RATIO.fullmatch(ratios[real.serial, 8]) and RATIO.fullmatch(ratios[real.serial, 16])


# ------------------------------------------------------------------------------------------
# Refusals, before any work
# ------------------------------------------------------------------------------------------

def test_no_adb_on_path(adb, bench_inputs, bundle, tmp_path):  # noqa: F811
    done = sbexport_bench(adb, bench_inputs, bundle, env={"PATH": str(tmp_path)}, timeout=60)
    assert done.returncode != 0
    assert error_line(done).startswith("error: adb is not on PATH: install Android's platform tools")


@pytest.mark.parametrize("case", ["unauthorized", "offline", "x86_64"])
def test_unusable_device_is_refused(adb, make_device, bench_inputs, bundle, tmp_path, case):  # noqa: F811
    if case == "unauthorized":
        device = make_device(faults=Faults(unauthorized=True))
        adb.connect(device)
        expected = f"error: device {device.serial} is unauthorized: unlock the phone and accept"
    elif case == "offline":
        device = make_device()
        adb.connect(device)
        device.set_faults(Faults(offline=True), drop_connections=True)
        deadline = time.monotonic() + 15          # adb reconnects after ~1 s and meets the silence
        while adb.state(device.serial) != "offline":
            assert time.monotonic() < deadline, "the device never showed offline"
            time.sleep(0.2)
        expected = f"error: device {device.serial} is offline: adb reaches it but it does not answer"
    else:
        device = make_device(X86_64_EMULATOR)
        adb.connect(device)
        expected = f"error: device {device.serial} (sdk_gphone64_x86_64) is x86_64, not arm64-v8a"
    work = tmp_path / "work"
    done = sbexport_bench(adb, bench_inputs, bundle, "--serial", device.serial, "--workdir", str(work),
                          timeout=120)
    assert done.returncode != 0
    assert error_line(done).startswith(expected), done.stderr
    assert not work.exists()                       # refused before any export
    assert not any(e.startswith("open:sync") for e in device.events)   # nothing pushed


# ------------------------------------------------------------------------------------------
# A device lost mid-run, and Ctrl-C
# ------------------------------------------------------------------------------------------

def run_until(proc: subprocess.Popen, device, event: str, timeout: float = BENCH_TIMEOUT) -> None:
    """Wait until the stand-in logs an event containing `event` (the bench reached that point)."""
    deadline = time.monotonic() + timeout
    while not any(event in e for e in device.events):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the bench ended or stalled before {event!r}: {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)


def test_connection_dropped_mid_run_then_back(adb, make_device, bench_inputs, bundle):  # noqa: F811
    # The link drops as the first model run starts; adb reconnects the device about 1 s later,
    # so the cleanup reaches it and removes everything.
    # (Its output file's name: "bert-1x8-round0" alone would match squeezebert's command too.)
    phone = emulated_phone(make_device, faults=Faults(drop_on="/bert-1x8-round0.json"))
    adb.connect(phone)
    done = sbexport_bench(adb, bench_inputs, bundle, "--serial", phone.serial)
    assert done.returncode != 0
    line = error_line(done)
    assert line.startswith(f"error: device {phone.serial}: running bert-1x8-round0 did not complete, the "
                           f"connection was lost"), done.stderr
    assert "could not remove" not in line
    assert any(e.startswith("fault:drop on") for e in phone.events)
    assert left_on(phone) == []


def test_connection_lost_for_good_lists_what_is_left(adb, make_device, bench_inputs, bundle):  # noqa: F811
    phone = emulated_phone(make_device)
    adb.connect(phone)
    proc = sbexport_bench(adb, bench_inputs, bundle, "--serial", phone.serial, popen=True)
    try:
        run_until(proc, phone, "squeezebert-1x8-round0")
        phone.set_faults(Faults(offline=True), drop_connections=True)   # gone, and silent when adb retries
        _, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode != 0
    line = stderr.strip().splitlines()[-1]
    assert "Traceback" not in stderr and line.startswith(f"error: device {phone.serial}: running squeezebert")
    folder = re.search(rf"could not remove ({DEVICE_ROOT}/[\w-]+) from device {re.escape(phone.serial)}", line)
    assert folder and f"`adb -s {phone.serial} shell rm -rf {folder.group(1)}`" in line
    assert left_on(phone)[0] == folder.group(1).rsplit("/", 1)[1]       # it is there, as said


def test_ctrl_c_removes_what_was_pushed(adb, make_device, bench_inputs, bundle):  # noqa: F811
    phone = emulated_phone(make_device)
    adb.connect(phone)
    proc = sbexport_bench(adb, bench_inputs, bundle, "--serial", phone.serial, popen=True)
    try:
        run_until(proc, phone, "squeezebert-1x8-round0")
        # A terminal's Ctrl-C goes to the whole foreground group: sbexport and its adb client.
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert f"removed {DEVICE_ROOT}/" in stderr and left_on(phone) == []
    assert not phone.host_path(DEVICE_ROOT).exists()
