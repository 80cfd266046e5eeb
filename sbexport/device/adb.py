"""The platform adb client, run as a subprocess, every call bounded in time.

adb's quirks, seen with Debian's adb 1.0.41 (tests/test_adb_device.py) and read from its
output rather than trusted from its exit status:
- `adb push` / `adb pull` print their errors on stdout ("adb: error: failed to copy ...").
- A shell whose connection drops mid-command exits 0 with its output cut short, even with
  the shell protocol v2 that normally carries the exit status; devices without shell v2 never
  give one. So every shell command here ends by printing a status marker (STATUS_MARK), and a
  command whose output lacks it did not finish: the connection was lost.
- `adb connect` exits 0 when it fails (sbexport does not connect; the user does, see README).
The adb server is the user's: this module starts none by hand and kills none (the client
starts it on first use, as every adb command does; ANDROID_ADB_SERVER_PORT picks its port).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DeviceError

INSTALL_HINT = ("install Android's platform tools (https://developer.android.com/tools/releases/platform-tools; "
                "on Debian or Ubuntu: apt-get install adb) and put adb on PATH")

# What to do about a device listed in each state other than "device" (adb's own words).
STATE_ADVICE = {
    "unauthorized": "unlock the phone and accept its 'Allow USB debugging?' prompt (tick 'Always allow from "
                    "this computer'); no prompt: in Developer options choose 'Revoke USB debugging "
                    "authorizations', reconnect the cable and accept the new prompt",
    "offline": "adb reaches it but it does not answer: reconnect the cable (or run `adb reconnect offline`), "
               "unlock the phone, and check that `adb devices` lists it as 'device'",
    "no permissions": "this user may not open the phone's USB device: add a udev rule for it "
                      "(https://developer.android.com/studio/run/device) and reconnect",
    "authorizing": "the phone is still checking this computer's key: wait a moment and run again",
    "connecting": "adb is still connecting to it: wait a moment and run again",
}
BOOT_ADVICE = "it is not running Android (bootloader, recovery or sideload): boot it normally"

STATUS_MARK = "__sbexport_status="       # printed after every shell command with its exit status
DEFAULT_TIMEOUT = 30.0                   # seconds for a quick call (devices, getprop, mkdir, rm)
PUSH_BYTES_PER_S = 2e6                   # the slowest link assumed for a push's time bound (USB 2 gives ~30e6)


@dataclass(frozen=True)
class ListedDevice:
    """One line of `adb devices -l`: serial, state ("device", "unauthorized", "offline",
    "no permissions", ...) and its key:value details (product, model, device, transport_id)."""
    serial: str
    state: str
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ShellResult:
    """A shell command that ran to its end on the device: its exit status and output."""
    status: int
    stdout: str
    stderr: str


def find_adb() -> str:
    """The adb executable on PATH. Raises DeviceError saying how to install it."""
    exe = shutil.which("adb")
    if exe is None:
        raise DeviceError(f"adb is not on PATH: {INSTALL_HINT}")
    return exe


def parse_devices(text: str) -> list[ListedDevice]:
    """The devices of `adb devices -l` output (the header, daemon notices and blank lines skipped).
    "SERIAL  device product:x model:y transport_id:1"; "no permissions (...); see [...]" has spaces."""
    devices = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or line.startswith(("List of devices", "*", "adb ")):
            continue
        serial, rest = fields[0], line[len(fields[0]):].strip()
        if rest.startswith("no permissions"):
            state, tail = "no permissions", rest.split("]", 1)[-1] if "]" in rest else ""
        else:
            state, _, tail = rest.partition(" ")
        details = dict(f.split(":", 1) for f in tail.split() if ":" in f)
        devices.append(ListedDevice(serial, state, details))
    return devices


def unusable_reason(device: ListedDevice) -> str | None:
    """Why a listed device cannot run the bench and what to do, or None when its state is "device"."""
    if device.state == "device":
        return None
    advice = STATE_ADVICE.get(device.state, BOOT_ADVICE)
    return f"device {device.serial} is {device.state}: {advice}"


class AdbClient:
    """The adb executable `exe`; every method runs it once with a timeout (seconds) and raises
    DeviceError naming the device when it fails, does not finish in time, or loses the device."""

    def __init__(self, exe: str):
        self.exe = exe

    def call(self, args: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
        """`adb ARGS` with stdin closed (adb would read the user's terminal), text output.
        Raises DeviceError when it cannot start or runs past `timeout` (it is then killed)."""
        try:
            return subprocess.run([self.exe, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{what}: adb did not finish within {timeout:.0f} s") from None
        except OSError as e:
            raise DeviceError(f"cannot run {self.exe}: {e.strerror or e}; {INSTALL_HINT}") from None

    def devices(self) -> list[ListedDevice]:
        """What `adb devices -l` lists. Raises DeviceError when adb fails (e.g. no server can start)."""
        done = self.call(["devices", "-l"], DEFAULT_TIMEOUT, "listing devices")
        if done.returncode != 0:
            raise DeviceError(f"`adb devices` failed: {_last_line(done.stderr or done.stdout)}")
        return parse_devices(done.stdout)

    def state(self, serial: str) -> str | None:
        """The device's state in `adb devices`, None when it is not listed."""
        return next((d.state for d in self.devices() if d.serial == serial), None)

    def shell(self, serial: str, command: str, what: str, timeout: float = DEFAULT_TIMEOUT) -> ShellResult:
        """Run the sh `command` on the device to its end. Raises DeviceError when adb cannot reach
        the device or the output lacks the status marker (the connection was lost on the way)."""
        wrapped = f"{command}\nprintf '\\n{STATUS_MARK}%d\\n' $?"
        done = self.call(["-s", serial, "shell", wrapped], timeout, f"device {serial}: {what}")
        head, mark, tail = done.stdout.rpartition("\n" + STATUS_MARK)
        if not mark or not re.fullmatch(r"\d+\n?", tail):
            raise self.lost(serial, what, done.stderr or done.stdout)
        return ShellResult(int(tail), head, done.stderr)

    def push(self, serial: str, local: Path, remote: str, what: str) -> None:
        """Copy the file or folder `local` to the device path `remote` (a folder's contents go
        into `remote`, which must not exist yet). Raises DeviceError when adb reports a failure."""
        size = sum(p.stat().st_size for p in local.rglob("*") if p.is_file()) if local.is_dir() \
            else local.stat().st_size
        done = self.call(["-s", serial, "push", str(local), remote], DEFAULT_TIMEOUT + size / PUSH_BYTES_PER_S,
                         f"device {serial}: {what}")
        if done.returncode != 0 or "error:" in done.stdout:
            raise self.lost(serial, what, done.stdout + done.stderr)

    def pull(self, serial: str, remote: str, local: Path, what: str) -> None:
        """Copy the device file `remote` to `local`. Raises DeviceError when adb reports a failure."""
        done = self.call(["-s", serial, "pull", remote, str(local)], DEFAULT_TIMEOUT, f"device {serial}: {what}")
        if done.returncode != 0 or "error:" in done.stdout or not local.exists():
            raise self.lost(serial, what, done.stdout + done.stderr)

    def wait_for_device(self, serial: str, timeout: float) -> bool:
        """Wait up to `timeout` s for the device to be back in state "device" (after a dropped
        link adb reconnects a network device by itself, ~1 s here). True when it is."""
        try:
            done = self.call(["-s", serial, "wait-for-device"], timeout, f"device {serial}: waiting")
        except DeviceError:
            return False
        return done.returncode == 0

    def lost(self, serial: str, what: str, output: str) -> DeviceError:
        """The error for a call that did not complete: adb's reason, with advice when the device
        is no longer usable (unplugged, offline, unauthorized)."""
        reason = _last_line(output).removeprefix("adb: ") or "no output"
        try:
            listed = next((d for d in self.devices() if d.serial == serial), None)
        except DeviceError:
            listed = None
        if listed is None:
            now = "it is no longer listed by `adb devices` (unplugged?)"
        else:
            now = unusable_reason(listed) or "it is listed again now"
        return DeviceError(f"device {serial}: {what} did not complete, the connection was lost or failed "
                           f"(adb: {reason}); {now}")


def select_devices(client: AdbClient, serials: list[str] | tuple[str, ...]) -> list[str]:
    """The serials to benchmark: those given (each must be listed, in state "device"), or the one
    online device when none is given. Raises DeviceError saying what to do otherwise."""
    listed = {d.serial: d for d in client.devices()}
    if not serials:
        serials = [_the_online_device(list(listed.values()))]
    for serial in serials:
        if serial not in listed:
            known = ", ".join(f"{d.serial} ({d.state})" for d in listed.values()) or "none"
            raise DeviceError(f"device {serial} is not listed by `adb devices` (listed: {known}); check the "
                              f"serial, the cable, or `adb connect {serial}` for a network device")
        reason = unusable_reason(listed[serial])
        if reason:
            raise DeviceError(reason)
    return list(dict.fromkeys(serials))


def _the_online_device(listed: list[ListedDevice]) -> str:
    """The serial of the one device in state "device" among `listed`. A stale entry (offline,
    unauthorized) beside it is not a second choice: it could not run the bench anyway. Raises
    DeviceError when none is online (naming each listed one and what to do) or several are."""
    if not listed:
        raise DeviceError("no device: `adb devices` lists none. Plug in the phone with USB debugging on "
                          "(Settings > Developer options), or `adb connect HOST:PORT` for wireless debugging")
    online = [d.serial for d in listed if d.state == "device"]
    if len(online) > 1:
        raise DeviceError(f"several devices are attached ({', '.join(online)}): name one or more with --serial")
    if not online:
        reasons = [unusable_reason(d) for d in listed]
        raise DeviceError(reasons[0] if len(reasons) == 1 else f"no device is online: {'; '.join(reasons)}")
    return online[0]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
