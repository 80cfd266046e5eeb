"""Android devices reached over adb: adb.py drives the platform adb client (bounded calls, its
quirks read from its output), probe.py reads what a device is (ABI, SoC, cores, big cores,
thermal state, emulated or not), session.py owns one run folder on a device (push, run the
native runner, pull its JSON, remove everything it pushed).

    client = AdbClient(find_adb())
    serial = select_devices(client, [])[0]
    info = describe(client, serial)           # DeviceError unless arm64-v8a
    with DeviceRun(client, info) as run:
        runner = run.push_runner(Path("build/runner-arm64/bundle"))
        pte = run.push(Path("model.pte"), "squeezebert.pte")
        report = run.run_runner(runner, pte, ["--seq-len", "128", "--runs", "20"], "sb-128")
"""

from .adb import AdbClient, find_adb, select_devices
from .probe import DeviceInfo, describe
from .session import DEVICE_ROOT, DeviceRun, check_runner

__all__ = ["AdbClient", "find_adb", "select_devices", "DeviceInfo", "describe", "DeviceRun", "DEVICE_ROOT",
           "check_runner"]
