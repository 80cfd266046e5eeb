"""One run folder on a device, DEVICE_ROOT/RUN_ID: push the native runner and the models into
it, run the runner there (pinned to the big cores), pull its JSON back, and remove the folder.

The folder goes when the `with` block ends, however it ends: normally, on an error, on Ctrl-C
(KeyboardInterrupt) or on a lost connection. A runner still running is stopped first (its pid
is kept in the folder: closing adb's stream need not end it on every Android version). When the
device cannot be reached to clean up, adb gets one wait for the device to come back (it
reconnects a dropped network device by itself), then the error says what is left and the
command that removes it.
"""

from __future__ import annotations

import json
import secrets
import shlex
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from ..errors import DeviceError, SbexportError
from .adb import AdbClient
from .probe import DeviceInfo

DEVICE_ROOT = "/data/local/tmp/sbexport"   # shell-writable and executable on every Android
RUNNER_SCHEMA = "sbexport.runner/1"        # android_demo/README.md
RECONNECT_WAIT = 10.0                      # seconds given to adb to bring a dropped device back


ELF_MAGIC = b"\x7fELF"
EM_AARCH64 = 0xB7                          # the ELF header's e_machine of 64-bit ARM
RUNNER_HINT = ("give the Android build's sbexport_runner (build/runner-android/sbexport_runner) or the arm64 "
               "Linux bundle folder (make runner-arm64: build/runner-arm64/bundle); see android_demo/README.md")


def check_runner(runner: Path) -> None:
    """Check on the host that `runner` is what push_runner can start on an arm64 device: a
    bundle folder with its `run` script, or an ELF executable for aarch64. Raises SbexportError
    (one line) otherwise, before any device is touched: pushing a README and running it would
    only fail on the device, after the exports."""
    if runner.is_dir():
        if not (runner / "run").is_file():
            raise SbexportError(f"--runner {runner}: a folder without `run`, not a runner bundle; {RUNNER_HINT}")
        return
    if not runner.exists():
        raise SbexportError(f"--runner {runner} does not exist; {RUNNER_HINT}")
    try:
        with open(runner, "rb") as f:
            head = f.read(20)              # e_ident (16 bytes), e_type (2), e_machine (2)
    except OSError as e:
        raise SbexportError(f"--runner {runner}: cannot read it ({e.strerror or e})") from None
    if len(head) < 20 or not head.startswith(ELF_MAGIC):
        raise SbexportError(f"--runner {runner} is not an executable (no ELF header) nor a runner bundle folder; "
                            f"{RUNNER_HINT}")
    machine = int.from_bytes(head[18:20], "big" if head[5] == 2 else "little")    # EI_DATA 2: big-endian
    if machine != EM_AARCH64:
        raise SbexportError(f"--runner {runner} is an ELF file for machine {machine:#x}, not aarch64 "
                            f"({EM_AARCH64:#x}): the device runs 64-bit ARM; {RUNNER_HINT}")


def new_run_id() -> str:
    """"20261202T003012-a1b2c3": UTC time plus random hex, unique per run and sortable."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


class DeviceRun:
    """The run folder of `info`'s device. `log` receives progress and cleanup lines."""

    def __init__(self, client: AdbClient, info: DeviceInfo, run_id: str | None = None,
                 log: Callable[[str], None] | None = None):
        self.client, self.info, self.serial = client, info, info.serial
        self.folder = f"{DEVICE_ROOT}/{run_id or new_run_id()}"
        self.log = log or (lambda line: None)
        self._local: tempfile.TemporaryDirectory | None = None

    # --- the folder's life
    def __enter__(self) -> DeviceRun:
        self._local = tempfile.TemporaryDirectory(prefix="sbexport-device-")
        try:
            self._shell(f"mkdir -p {self.folder}", "creating the run folder")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        left = self.close()
        if left is None:
            return False
        if exc is None:
            raise DeviceError(left)
        if isinstance(exc, SbexportError):
            raise DeviceError(f"{exc}; {left}") from None
        self.log(f"error: {left}")       # Ctrl-C or a bug: that exception goes on, with this said
        return False

    def close(self) -> str | None:
        """Clean up (cleanup()); None when nothing is left on the device (logged), otherwise
        the line saying what is left, for the caller to report with the error that ended the run."""
        left = self.cleanup()
        if self._local is not None:
            self._local.cleanup()
        if left is None:
            self.log(f"removed {self.folder} from device {self.serial}")
        return left

    def cleanup(self) -> str | None:
        """Stop the runner if it runs and remove the run folder (and DEVICE_ROOT when empty).
        None when the folder is gone; otherwise the line saying what is left and how to remove it."""
        pid = f"{self.folder}/runner.pid"
        script = (f"if [ -f {pid} ]; then kill $(cat {pid}) 2>/dev/null; fi; rm -rf {self.folder}; "
                  f"rmdir {DEVICE_ROOT} 2>/dev/null; [ ! -e {self.folder} ]")
        for attempt in range(2):
            try:
                if self._shell(script, "removing the run folder", check=False).status == 0:
                    return None
                break
            except DeviceError:
                if attempt == 0 and not self.client.wait_for_device(self.serial, RECONNECT_WAIT):
                    break
        return (f"could not remove {self.folder} from device {self.serial}, it may be left there: remove it with "
                f"`adb -s {self.serial} shell rm -rf {self.folder}`")

    # --- pushing and running
    def push(self, local: Path, name: str) -> str:
        """Push the file or folder `local` to RUN/name; its device path."""
        remote = f"{self.folder}/{name}"
        self.log(f"pushing {name} to {self.serial}:{remote}")
        self.client.push(self.serial, local, remote, f"pushing {local}")
        return remote

    def push_runner(self, runner: Path) -> str:
        """Push the native runner: the arm64 Linux bundle (a folder with `run`, make runner-arm64)
        or one executable (the Android build, android_demo/README.md). The device path to start it."""
        if runner.is_dir():
            if not (runner / "run").is_file():
                raise DeviceError(f"--runner {runner}: a folder without `run`; give build/runner-arm64/bundle "
                                  f"(make runner-arm64) or the Android build's sbexport_runner")
            start = self.push(runner, "runner") + "/run"
        elif runner.is_file():
            start = self.push(runner, "sbexport_runner")
        else:
            raise DeviceError(f"--runner {runner} does not exist; build it (android_demo/README.md)")
        self._shell(f"chmod 755 {start}", "making the runner executable")
        return start

    def run_runner(self, start: str, model: str, args: list[str], tag: str, timeout: float) -> dict:
        """Run the runner on `model` (device paths) with `args`, pinned to the big cores when they
        are known; its JSON report (schema RUNNER_SCHEMA), pulled from the device.
        Raises DeviceError when it fails (its error line quoted) or the connection is lost."""
        mask = self.info.taskset_mask
        pin = f"taskset {mask} " if mask else ""
        argv = " ".join(shlex.quote(a) for a in ["--model", model, *args])
        out, err = f"{self.folder}/{tag}.json", f"{self.folder}/{tag}.err"
        # In the background with its pid kept, so that cleanup can stop it; `wait` gives its status.
        command = (f"cd {self.folder} && ({pin}{start} {argv} > {out} 2> {err} & echo $! > runner.pid; "
                   f"wait $!)")
        done = self._shell(command, f"running {tag}", timeout=timeout, check=False)
        if done.status != 0:
            why = self._shell(f"cat {err}", f"reading the error of {tag}", check=False).stdout.strip()
            raise DeviceError(f"device {self.serial}: the runner failed on {tag} (exit {done.status}): "
                              f"{why.splitlines()[-1] if why else 'no message'}")
        local = Path(self._local.name) / f"{tag}.json"
        self.client.pull(self.serial, out, local, f"pulling the result of {tag}")
        try:
            report = json.loads(local.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise DeviceError(f"device {self.serial}: the runner's report for {tag} is not JSON ({e})") from None
        if not isinstance(report, dict) or report.get("schema") != RUNNER_SCHEMA:
            raise DeviceError(f"device {self.serial}: the runner's report for {tag} is not {RUNNER_SCHEMA}")
        return report

    def _shell(self, command: str, what: str, timeout: float = 30.0, check: bool = True):
        done = self.client.shell(self.serial, command, what, timeout=timeout)
        if check and done.status != 0:
            raise DeviceError(f"device {self.serial}: {what} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done
