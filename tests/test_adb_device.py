"""The device stand-in (tests/adb_device.py) against the real adb client (Debian's adb 1.0.41,
installed by `make toolchain`): what `sbexport bench --device adb` will be tested on.

Each test runs its own adb server on a private port with a private HOME (its key pair) and
TMPDIR (its log), kills it at teardown, and bounds every adb call with a timeout.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from adb_device import (  # noqa: E402
    A_CLSE,
    A_CNXN,
    A_OKAY,
    A_OPEN,
    A_WRTE,
    ARM64_PHONE,
    HEADER,
    X86_64_EMULATOR,
    AdbDevice,
    Faults,
    pack_message,
)

ADB_TIMEOUT = 30   # seconds for any one adb call; the slowest here (3 MB push) takes ~0.1 s


def free_port() -> int:
    """A port free now, below Linux's ephemeral range (32768-60999 by default). A port the
    kernel hands out for bind(0) was once taken, between this check and adb's own bind, by a
    device stand-in of the other xdist worker: the client then spoke to the stand-in
    ("protocol fault"). Ports below the range are never handed out that way."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 32768)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


class Adb:
    """The adb client with its own server on a private port."""

    def __init__(self, exe: str, home: Path):
        self.exe, self.port = exe, free_port()
        home.mkdir(parents=True, exist_ok=True)
        # No TERM: the client would pass it on in the service name (shell,v2,TERM=...,raw:).
        self.env = {**{k: v for k, v in os.environ.items() if k != "TERM"},
                    "HOME": str(home), "TMPDIR": str(home)}

    def __call__(self, *args: str, timeout: float = ADB_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run([self.exe, "-P", str(self.port), *args], env=self.env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)

    def connect(self, device: AdbDevice) -> str:
        """`adb connect`; returns its output (it exits 0 even when it fails)."""
        done = self("connect", device.serial)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def state(self, serial: str) -> str:
        """The device's state column in `adb devices`, "" when not listed."""
        for line in self("devices").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == serial:
                return fields[1]
        return ""


@pytest.fixture
def make_device(tmp_path):
    """make_device(profile=ARM64_PHONE, faults=Faults(), **options) -> a running AdbDevice,
    stopped at teardown."""
    devices = []

    def make(profile=ARM64_PHONE, faults=None, **options) -> AdbDevice:
        faults = Faults() if faults is None else faults
        options = {"idle_limit": 30.0, "io_timeout": 10.0, "command_timeout": 20.0, **options}
        device = AdbDevice(tmp_path / f"device{len(devices)}", profile, faults, **options).start()
        devices.append(device)
        return device

    yield make
    for device in devices:
        device.stop()


@pytest.fixture
def adb(tmp_path, make_device):
    """The adb client with a private server. It depends on make_device so that its server is
    killed before the devices stop: once (1 in ~30 runs) a server whose transport had just died
    hung in `adb kill-server` after "adb server killed by remote request"."""
    exe = shutil.which("adb")
    if exe is None:
        pytest.fail("adb is not on PATH: run `make toolchain` (Debian's adb package)")
    client = Adb(exe, tmp_path / "adb-home")
    # Started before any device binds its port, so that the two cannot meet on one port.
    started = client("start-server")
    assert started.returncode == 0, started.stderr
    yield client
    try:
        client("kill-server", timeout=10)
    except subprocess.TimeoutExpired:
        # The server's log starts with "--- adb starting (pid N) ---": end that process.
        log = next((tmp_path / "adb-home").glob("adb.*.log"), None)
        text = log.read_text() if log else ""
        if match := re.search(r"adb starting \(pid (\d+)\)", text):
            os.kill(int(match.group(1)), signal.SIGKILL)
        pytest.fail(f"adb kill-server hung; server log:\n{text[-3000:]}")


@pytest.fixture
def phone(adb, make_device):
    """An arm64 phone stand-in, connected."""
    device = make_device()
    assert adb.connect(device).startswith(f"connected to {device.serial}")
    return device


def shell(adb: Adb, device: AdbDevice, command: str) -> subprocess.CompletedProcess:
    return adb("-s", device.serial, "shell", command)


# ------------------------------------------------------------------------------------------
# A healthy device
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", [ARM64_PHONE, X86_64_EMULATOR], ids=lambda p: p.name)
def test_devices_and_getprop_answer_from_the_profile(adb, make_device, profile):
    device = make_device(profile)
    assert adb.connect(device).startswith(f"connected to {device.serial}")
    line = next(row for row in adb("devices", "-l").stdout.splitlines() if row.startswith(device.serial))
    # adb replaces spaces in the model with underscores
    assert line.split()[1:4] == ["device", f"product:{profile.product}",
                                 f"model:{profile.model.replace(' ', '_')}"]
    names = ["ro.product.cpu.abi", "ro.product.model", "ro.soc.model", "ro.board.platform",
             "ro.build.version.sdk", "no.such.property"]
    done = shell(adb, device, "; ".join(f"getprop {n}" for n in names))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:-1] == [profile.abi, profile.model, profile.soc_model,
                                            profile.board_platform, str(profile.sdk), ""]
    everything = shell(adb, device, "getprop").stdout
    assert f"[ro.product.cpu.abi]: [{profile.abi}]" in everything.splitlines()


def test_android_queries_read_the_profile_not_the_host(adb, phone):
    script = ("nproc; uname -m; dumpsys thermalservice | grep 'Thermal Status'; "
              "grep -c ^processor /proc/cpuinfo; grep 'CPU part' /proc/cpuinfo | tail -1; "
              "for f in /sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq; do "
              "echo $f $(cat $f); done")
    done = shell(adb, phone, script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:5] == ["8", "aarch64", "Thermal Status: 0", "8", "CPU part\t: 0xd48"]
    # Output names device paths: the scratch folder does not leak.
    assert lines[5:] == [f"/sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq {khz}"
                         for i, khz in enumerate(ARM64_PHONE.core_max_khz)]
    assert str(phone.root) not in done.stdout + done.stderr


def test_emulator_profile_has_no_cpufreq_and_no_thermal_service(adb, make_device):
    device = make_device(X86_64_EMULATOR)
    adb.connect(device)
    done = shell(adb, device, "uname -m; cat /sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    assert done.stdout.splitlines() == ["x86_64"]
    assert done.returncode != 0 and "No such file" in done.stderr
    assert shell(adb, device, "dumpsys thermalservice").returncode != 0


# The sync requests the client makes: with stat_v2/ls_v2 announced, and without (older phones).
SYNC_VERSIONS = {"sync-v2": (ARM64_PHONE.features, {"sync:STA2", "sync:LIS2"}),
                 "sync-v1": ((), {"sync:STAT", "sync:LIST"})}


@pytest.mark.parametrize("sync", SYNC_VERSIONS)
def test_push_then_pull_is_byte_identical(adb, make_device, tmp_path, sync):
    features, requests = SYNC_VERSIONS[sync]
    phone = make_device(dataclasses.replace(ARM64_PHONE, features=features))
    adb.connect(phone)
    big = tmp_path / "model.pte"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 17))    # several WRTE and sync DATA chunks
    small = tmp_path / "run.sh"
    small.write_text("#!/bin/sh\necho ran\n")
    small.chmod(0o755)
    run_dir = "/data/local/tmp/sbexport/run1"             # not there yet: push makes it
    for f in (big, small):
        done = adb("-s", phone.serial, "push", str(f), f"{run_dir}/{f.name}")
        assert done.returncode == 0, done.stderr
    assert (phone.host_path(f"{run_dir}/model.pte")).read_bytes() == big.read_bytes()
    assert os.access(phone.host_path(f"{run_dir}/run.sh"), os.X_OK)   # mode travels
    back = tmp_path / "back"
    done = adb("-s", phone.serial, "pull", run_dir, str(back))        # a folder: LIST + RECV
    assert done.returncode == 0, done.stderr
    assert (back / "model.pte").read_bytes() == big.read_bytes()
    assert (back / "run.sh").read_text() == "#!/bin/sh\necho ran\n"
    assert requests <= set(phone.events) and {"sync:SEND", "sync:RECV"} <= set(phone.events)
    missing = adb("-s", phone.serial, "pull", "/data/local/tmp/nothing", str(tmp_path / "x"))
    # adb 1.0.41 prints push/pull errors on stdout; STA2 carries errno, STAT only a zero mode
    why = "No such file" if sync == "sync-v2" else "does not exist"
    assert missing.returncode != 0 and why in missing.stdout


def test_device_paths_cannot_leave_the_scratch_root(adb, phone, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    done = adb("-s", phone.serial, "push", str(f), "/data/../../../../../escaped")
    assert done.returncode == 0, done.stderr
    assert (phone.root / "escaped").read_text() == "x"
    assert not (tmp_path.parent / "escaped").exists()


@pytest.mark.parametrize("features", [ARM64_PHONE.features,
                                      tuple(f for f in ARM64_PHONE.features if f != "shell_v2")],
                         ids=["shell-v2", "shell-v1"])
def test_shell_exit_status_and_streams(adb, make_device, features):
    device = make_device(dataclasses.replace(ARM64_PHONE, features=features))
    adb.connect(device)
    done = shell(adb, device, "echo out; echo err >&2; exit 7")
    opened = [e for e in device.events if e.startswith("open:shell")]
    if "shell_v2" in features:
        # v2 carries the exit status and keeps stderr apart.
        assert opened == ["open:shell,v2,raw:echo out; echo err >&2; exit 7"]
        assert (done.returncode, done.stdout, done.stderr) == (7, "out\n", "err\n")
    else:
        # v1: one mixed stream, no status; the caller appends `; echo $?`.
        assert opened == ["open:shell:echo out; echo err >&2; exit 7"]
        assert (done.returncode, done.stdout) == (0, "out\nerr\n")
        assert shell(adb, device, "(exit 7); echo $?").stdout == "7\n"


def test_shell_runs_programs_pushed_to_the_device(adb, phone, tmp_path):
    script = tmp_path / "runner.sh"
    script.write_text('#!/bin/sh\necho "args: $*"\ncat "$1"\n')
    script.chmod(0o755)
    run = "/data/local/tmp/sbexport/r1"
    for local in (script, Path(shutil.which("true")), Path(shutil.which("false"))):
        assert adb("-s", phone.serial, "push", str(local), f"{run}/{local.name}").returncode == 0
    done = shell(adb, phone, f"cd {run} && echo hello > in.txt && "
                             f"taskset f0 ./runner.sh {run}/in.txt")
    assert (done.returncode, done.stdout) == (0, f"args: {run}/in.txt\nhello\n"), done.stderr
    assert phone.taskset_log() == [f"f0 ./runner.sh {phone.root}{run}/in.txt"]
    assert shell(adb, phone, f"{run}/true").returncode == 0
    assert shell(adb, phone, f"{run}/false").returncode == 1
    # A mask naming cores the phone does not have is refused, as by the kernel.
    bad = shell(adb, phone, f"taskset 100 {run}/true")
    assert bad.returncode == 1 and "Invalid argument" in bad.stderr


def test_shell_runs_an_arm64_program_under_qemu(adb, make_device, tmp_path):
    # The arm64 runner's bundle runs through $SBEXPORT_QEMU when binfmt_misc has no qemu; a
    # static arm64 program stands for it here (the toolchain comes from `make toolchain`).
    for tool in ("aarch64-linux-gnu-gcc", "qemu-aarch64"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not on PATH: run `make toolchain`")
    source = tmp_path / "hello.c"
    source.write_text('#include <stdio.h>\n#include <sys/utsname.h>\n'
                      'int main(int argc, char **argv) { struct utsname u; uname(&u);\n'
                      '  printf("%s %s\\n", u.machine, argv[1]); return 3; }\n')
    subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O1", str(source), "-o",
                    str(tmp_path / "hello")], check=True, timeout=60)
    device = make_device(shell_env={"SBEXPORT_QEMU": "qemu-aarch64 -cpu cortex-a53"})
    adb.connect(device)
    run = "/data/local/tmp/sbexport/r2"
    assert adb("-s", device.serial, "push", str(tmp_path / "hello"), run + "/hello").returncode == 0
    done = shell(adb, device, f"cd {run} && $SBEXPORT_QEMU ./hello {run}")
    assert (done.returncode, done.stdout) == (3, f"aarch64 {run}\n"), done.stderr


def test_slow_device_still_answers(adb, make_device):
    delay = 0.1
    device = make_device(faults=Faults(delay=delay))
    adb.connect(device)
    start = time.monotonic()
    done = shell(adb, device, "getprop ro.product.cpu.abi")
    elapsed = time.monotonic() - start
    assert (done.returncode, done.stdout) == (0, "arm64-v8a\n")
    # The client cannot finish before the OKAY to its OPEN, the stdout WRTE and the exit WRTE
    # have come, one after the other (measured without the delay: 0.02-0.08 s in all).
    assert elapsed >= 3 * delay


# ------------------------------------------------------------------------------------------
# Faults, as the client reports them
# ------------------------------------------------------------------------------------------

def test_unauthorized_device(adb, make_device):
    device = make_device(faults=Faults(unauthorized=True))
    assert adb.connect(device).startswith(f"failed to authenticate to {device.serial}")
    assert adb.state(device.serial) == "unauthorized"
    done = shell(adb, device, "true")
    assert done.returncode != 0 and "device unauthorized" in done.stderr
    # the host tried its key, then offered its public key for the user to accept
    assert "auth:2" in device.events and "auth:3" in device.events
    assert not any(e.startswith("open:") for e in device.events)


def test_offline_device(adb, phone):
    # The connection breaks and the device no longer answers the host's CNXN when the adb
    # server reconnects (a first `adb connect` to such a device waits 10 s for nothing).
    phone.set_faults(Faults(offline=True), drop_connections=True)
    handshakes = sum(e.startswith("host:") for e in phone.events)
    deadline = time.monotonic() + 10     # the reconnect came after about 1 s here
    while sum(e.startswith("host:") for e in phone.events) == handshakes:
        assert time.monotonic() < deadline, "the adb server did not reconnect"
        time.sleep(0.1)
    time.sleep(0.3)                      # time for an answer that must not come
    assert adb.state(phone.serial) == "offline"
    done = shell(adb, phone, "true")
    assert done.returncode != 0 and "device offline" in done.stderr


def test_drop_on_a_command_fails_the_client(adb, make_device):
    device = make_device(faults=Faults(drop_on="./runner"))
    adb.connect(device)
    assert shell(adb, device, "echo fine").stdout == "fine\n"
    done = shell(adb, device, "cd /data/local/tmp && ./runner --json")
    assert done.returncode != 0 and "closed" in done.stderr
    assert "fault:drop on shell,v2,raw:cd /data/local/tmp && ./runner --json" in device.events


def test_drop_mid_push_fails_the_client(adb, make_device, tmp_path):
    device = make_device(faults=Faults(drop_after_bytes=1_000_000))
    adb.connect(device)
    f = tmp_path / "big"
    f.write_bytes(os.urandom(3_000_000))
    done = adb("-s", device.serial, "push", str(f), "/data/local/tmp/big")
    assert done.returncode != 0 and "failed to copy" in done.stdout


def test_drop_mid_output_truncates_the_shell_output(adb, make_device):
    device = make_device(faults=Faults(drop_after_bytes=1_000_000))
    adb.connect(device)
    done = subprocess.run([adb.exe, "-P", str(adb.port), "-s", device.serial, "shell",
                           "head -c 3000000 /dev/zero"], env=adb.env, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=ADB_TIMEOUT)
    # The client returns (no hang) with part of the output. Note for the bench: adb 1.0.41
    # then exits 0 even with shell v2 (no exit packet came), so completeness must be checked
    # on the output itself (e.g. the runner's JSON parses), not on the exit status alone.
    assert 0 < len(done.stdout) < 1_000_000
    assert any(e.startswith("fault:drop after") for e in device.events)


# ------------------------------------------------------------------------------------------
# What the client does not show: flow control and checksums, seen from a raw host
# ------------------------------------------------------------------------------------------

class RawHost:
    """A minimal adb host on a socket, for what the real client tolerates either way."""

    def __init__(self, device: AdbDevice):
        self.sock = socket.create_connection(("127.0.0.1", device.port), timeout=5)

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"", check=None) -> None:
        message = bytearray(pack_message(command, arg0, arg1, data))
        if check is not None:
            message[16:20] = check.to_bytes(4, "little")
        self.sock.sendall(message)

    def recv(self, timeout: float = 5.0):
        """(command, arg0, arg1, data), None when nothing came in `timeout`, b"" when closed."""
        self.sock.settimeout(timeout)
        try:
            header = self.sock.recv(24, socket.MSG_WAITALL)
        except TimeoutError:
            return None
        if len(header) < 24:
            return b""
        command, arg0, arg1, length, check, magic = HEADER.unpack(header)
        data = self.sock.recv(length, socket.MSG_WAITALL) if length else b""
        assert magic == command ^ 0xFFFFFFFF and check == sum(data) & 0xFFFFFFFF
        return command, arg0, arg1, data


def test_device_waits_for_okay_before_each_write(make_device):
    device = make_device(idle_limit=10)
    host = RawHost(device)
    host.send(A_CNXN, 0x01000001, 4096, b"host::features=shell_v2")
    command, version, max_payload, banner = host.recv()
    assert (command, version, max_payload) == (A_CNXN, 0x01000001, 256 * 1024)
    assert b"ro.product.model=SB Standin 8" in banner and b"features=shell_v2" in banner
    host.send(A_OPEN, 5, 0, b"shell:head -c 10000 /dev/zero\0")
    command, device_id, host_id, _ = host.recv()
    assert (command, host_id) == (A_OKAY, 5)
    received = 0
    while received < 10000:
        command, _, _, data = host.recv()
        assert command == A_WRTE and len(data) <= 4096     # the host's max payload
        received += len(data)
        if received < 10000:
            assert host.recv(timeout=0.3) is None          # nothing more until our OKAY
        host.send(A_OKAY, 5, device_id)
    assert host.recv()[0] == A_CLSE                         # v1: the end of output closes


def test_device_checks_checksums_of_an_old_host(make_device):
    device = make_device(idle_limit=10)
    host = RawHost(device)
    host.send(A_CNXN, 0x01000000, 4096, b"host::")         # before checksums were skipped
    assert host.recv()[0] == A_CNXN
    host.send(A_OPEN, 5, 0, b"sync:\0", check=12345)
    assert host.recv() == b""                               # a corrupt message ends it


# ------------------------------------------------------------------------------------------
# Bounded in time
# ------------------------------------------------------------------------------------------

def test_device_listens_on_loopback_and_stops_when_idle(tmp_path):
    device = AdbDevice(tmp_path / "dev", idle_limit=0.5).start()
    assert device.listener.getsockname()[0] == "127.0.0.1"
    device.thread.join(5)
    assert not device.thread.is_alive() and device.events[-1] == "idle: stopped"
    device.stop()


def test_device_runs_as_a_process_and_exits_when_idle(tmp_path):
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "adb_device.py"),
                             str(tmp_path / "dev"), "--idle-limit", "0.5"],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        assert 0 < port < 65536
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_shell_command_is_killed_after_command_timeout(adb, make_device):
    device = make_device(command_timeout=0.5)
    adb.connect(device)
    start = time.monotonic()
    done = shell(adb, device, "sleep 30")
    assert time.monotonic() - start < 10
    assert done.returncode == 128 + 9     # SIGKILL, as sh reports it
