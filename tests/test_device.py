"""sbexport.device: the adb client, the device probe and the run folder, against the real adb
client talking to the device stand-in (tests/adb_device.py), plus the parsers on adb's and
Android's own output formats. Every adb call is bounded (the client's timeouts, the stand-in's
idle and command limits)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from pathlib import Path

import pytest
from adb_device import ARM64_PHONE, X86_64_EMULATOR, Faults
from test_adb_device import adb, make_device  # noqa: F401 (fixtures: a private adb server, stand-ins)

from sbexport.device import DEVICE_ROOT, AdbClient, DeviceRun, check_runner, describe, select_devices
from sbexport.device.adb import parse_devices
from sbexport.device.probe import big_cores, emulation_marker, parse_cpu_temp, parse_getprop
from sbexport.errors import DeviceError, SbexportError

# `adb devices -l` as adb 1.0.41 prints it, with a USB phone lacking udev permissions.
DEVICES_OUTPUT = """* daemon not running; starting now at tcp:5037
* daemon started successfully
List of devices attached
127.0.0.1:40307        device product:sbstandin model:SB_Standin_8 device:standin8 transport_id:1
R58M12ABCDE            unauthorized usb:1-1 transport_id:2
emulator-5554          offline transport_id:3
0123456789ABCDEF       no permissions (user in plugdev group; are your udev rules wrong?); \
see [http://developer.android.com/tools/device.html] usb:1-2 transport_id:4

"""


def test_parse_devices_reads_every_state():
    devices = parse_devices(DEVICES_OUTPUT)
    assert [(d.serial, d.state) for d in devices] == [
        ("127.0.0.1:40307", "device"), ("R58M12ABCDE", "unauthorized"), ("emulator-5554", "offline"),
        ("0123456789ABCDEF", "no permissions")]
    assert devices[0].details["model"] == "SB_Standin_8"
    assert devices[3].details == {"usb": "1-2", "transport_id": "4"}


class ListingOnly:
    """An AdbClient that lists devices from `adb devices -l` output and does nothing else."""

    def __init__(self, text: str):
        self.text = text

    def devices(self):
        return parse_devices(f"List of devices attached\n{self.text}\n")


def test_a_stale_entry_does_not_block_the_one_online_device():
    """A phone that went offline (or is waiting for authorization) beside the one online is
    not a second choice: it could not run the bench. With none online, each is named."""
    assert select_devices(ListingOnly("emulator-5554 offline\nR58M12ABCDE device usb:1-1"), []) == ["R58M12ABCDE"]
    with pytest.raises(DeviceError, match=r"^several devices are attached \(A, B\): name one or more with --serial$"):
        select_devices(ListingOnly("A device\nB device\nC offline"), [])
    with pytest.raises(DeviceError, match=r"^no device is online: device C is offline: adb reaches it .*; "
                                          r"device D is unauthorized: unlock the phone"):
        select_devices(ListingOnly("C offline\nD unauthorized usb:1-2"), [])
    with pytest.raises(DeviceError, match=r"^device C is offline: adb reaches it"):
        select_devices(ListingOnly("C offline"), [])
    with pytest.raises(DeviceError, match=r"^no device: `adb devices` lists none"):
        select_devices(ListingOnly(""), [])


def test_runner_is_checked_on_the_host(tmp_path):
    """What push_runner can start on an arm64 device: a bundle folder with `run`, or an ELF
    executable whose e_machine is aarch64 (0xB7), in either byte order."""
    def elf(name: str, machine: bytes, data: int = 1) -> Path:
        (tmp_path / name).write_bytes(b"\x7fELF\x02" + bytes([data]) + bytes(12) + machine + bytes(40))
        return tmp_path / name
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "run").write_text("#!/bin/sh\n")
    for good in (tmp_path / "bundle", elf("runner", b"\xb7\x00"), elf("big-endian", b"\x00\xb7", data=2)):
        check_runner(good)
    for bad, message in ((elf("x86", b"\x3e\x00"), "is an ELF file for machine 0x3e, not aarch64"),
                         (elf("swapped", b"\x00\xb7"), "is an ELF file for machine 0xb700"),
                         (tmp_path / "bundle" / "run", "is not an executable (no ELF header)"),
                         (tmp_path, "a folder without `run`"),
                         (tmp_path / "missing", "does not exist")):
        with pytest.raises(SbexportError, match=rf"^--runner {re.escape(str(bad))}[ :].*{re.escape(message)}"):
            check_runner(bad)


def test_big_cores_are_outside_the_slowest_cluster():
    assert big_cores((1785600,) * 4 + (2496000,) * 3 + (2995200,)) == (4, 5, 6, 7)
    assert big_cores((1800000,) * 6 + (2400000,) * 2) == (6, 7)
    assert big_cores((2000000,) * 4) == (0, 1, 2, 3)          # one cluster: every core
    assert big_cores((1800000, None, 2400000)) == ()          # a frequency unknown: not pinned
    assert big_cores(()) == ()


def test_android_formats():
    props = parse_getprop(["[ro.product.cpu.abi]: [arm64-v8a]", "[ro.product.model]: [Pixel 7]",
                           "[ro.empty]: []", "[persist.multi]: [first line", "second]", "garbage"])
    assert props == {"ro.product.cpu.abi": "arm64-v8a", "ro.product.model": "Pixel 7", "ro.empty": "",
                     "persist.multi": "first line"}
    assert parse_cpu_temp(["36500 cpu-0-0", "41200 cpu-1-2", "31000 battery", " ", "x cpu"]) == 41.2
    assert parse_cpu_temp(["45 cpu0-thermal"]) == 45.0                 # whole degrees on some kernels
    assert parse_cpu_temp(["31000 battery"]) is None
    assert emulation_marker({"ro.kernel.qemu": "1"}) == "ro.kernel.qemu=1"
    assert emulation_marker({"ro.hardware": "ranchu"}) == "ro.hardware=ranchu"
    assert emulation_marker({"ro.kernel.qemu": "0", "ro.hardware": "qcom"}) is None


# ------------------------------------------------------------------------------------------
# Against the stand-in
# ------------------------------------------------------------------------------------------

@pytest.fixture
def client(adb, monkeypatch):  # noqa: F811 (the fixture imported above)
    """sbexport's AdbClient on the test's private adb server (the client finds it through
    ANDROID_ADB_SERVER_PORT and its key through HOME, as a user's adb would)."""
    for name in ("HOME", "TMPDIR"):
        monkeypatch.setenv(name, adb.env[name])
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(adb.port))
    monkeypatch.delenv("TERM", raising=False)
    return AdbClient(shutil.which("adb"))


def test_describe_reads_the_profile(adb, make_device, client):  # noqa: F811
    real = make_device(dataclasses.replace(ARM64_PHONE, emulated=False))
    emulated = make_device(ARM64_PHONE)
    for device in (real, emulated):
        adb.connect(device)
    info = describe(client, real.serial)
    assert (info.model, info.manufacturer, info.soc, info.abi, info.android, info.sdk) == \
        ("SB Standin 8", "sbexport", "SM8450", "arm64-v8a", "13", "33")
    assert info.core_max_khz == ARM64_PHONE.core_max_khz and info.cores == 8
    assert info.big_cores == (4, 5, 6, 7) and info.taskset_mask == "f0"
    assert (info.thermal_status, info.cpu_temp_c) == (0, 36.5)
    assert {"asimd", "asimddp", "atomics"} <= set(info.cpu_features)
    assert not info.emulated and "EMULATED" not in info.label
    info = describe(client, emulated.serial)
    assert info.emulated and info.emulation_marker == "ro.kernel.qemu=1"
    assert info.label.startswith("EMULATED")


def test_select_refuses_what_cannot_run(adb, make_device, client):  # noqa: F811
    x86 = make_device(X86_64_EMULATOR)
    locked = make_device(faults=Faults(unauthorized=True))
    for device in (x86, locked):
        adb.connect(device)
    assert select_devices(client, []) == [x86.serial]      # the only one online; describe refuses it below
    with pytest.raises(DeviceError, match=rf"device {locked.serial} is unauthorized: unlock the phone and accept"):
        select_devices(client, [x86.serial, locked.serial])
    with pytest.raises(DeviceError, match="device 127.0.0.1:1 is not listed"):
        select_devices(client, ["127.0.0.1:1"])
    assert select_devices(client, [x86.serial, x86.serial]) == [x86.serial]
    with pytest.raises(DeviceError, match=r"is x86_64, not arm64-v8a"):
        describe(client, x86.serial)


def _leftovers(device) -> list[str]:
    root = device.host_path(DEVICE_ROOT)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_run_folder_is_removed_on_error_and_interrupt(adb, make_device, client, tmp_path):  # noqa: F811
    phone = make_device()
    adb.connect(phone)
    info = describe(client, phone.serial)
    script = tmp_path / "runner"
    script.write_text("#!/bin/sh\necho 'error: not a runner' >&2\nexit 3\n")
    for exc in (KeyboardInterrupt, DeviceError):
        with pytest.raises(exc):
            with DeviceRun(client, info) as run:
                start = run.push_runner(script)
                assert _leftovers(phone) == [run.folder.rsplit("/", 1)[1],
                                             f"{run.folder.rsplit('/', 1)[1]}/sbexport_runner"]
                if exc is KeyboardInterrupt:
                    raise KeyboardInterrupt
                run.run_runner(start, "model.pte", [], "tag", timeout=20)
        assert _leftovers(phone) == [] and not phone.host_path(DEVICE_ROOT).exists()


def test_a_lost_device_leaves_a_clear_list(adb, make_device, client, tmp_path):  # noqa: F811
    phone = make_device()
    adb.connect(phone)
    info = describe(client, phone.serial)
    (tmp_path / "model.pte").write_bytes(b"x" * 1000)
    start = time.monotonic()
    with pytest.raises(DeviceError) as raised:
        with DeviceRun(client, info) as run:
            run.push(tmp_path / "model.pte", "model.pte")
            phone.set_faults(Faults(offline=True), drop_connections=True)
            run.push(tmp_path / "model.pte", "again.pte")
    message = str(raised.value)
    assert f"device {phone.serial}: pushing" in message and "did not complete" in message
    assert f"could not remove {run.folder} from device {phone.serial}" in message
    assert f"adb -s {phone.serial} shell rm -rf {run.folder}" in message
    assert _leftovers(phone)[:1] == [run.folder.rsplit("/", 1)[1]]      # what the message says is there
    assert time.monotonic() - start < 60                                   # bounded: one 10 s wait, 30 s calls
    assert "\n" not in message


def test_runner_failure_is_quoted(adb, make_device, client, tmp_path):  # noqa: F811
    phone = make_device()
    adb.connect(phone)
    script = tmp_path / "runner"
    script.write_text("#!/bin/sh\necho 'error: input 0 has shape [1, 100]' >&2\nexit 1\n")
    with pytest.raises(DeviceError, match=r"the runner failed on tag \(exit 1\): error: input 0 has shape"):
        with DeviceRun(client, describe(client, phone.serial)) as run:
            run.run_runner(run.push_runner(script), "model.pte", [], "tag", timeout=20)
    assert phone.taskset_log()[0].startswith("f0 ")          # pinned to the big cores
    assert not Path(phone.host_path(DEVICE_ROOT)).exists()
