"""A stand-in for an Android phone that the real adb client talks to over loopback TCP.

It speaks the adb transport protocol as `adbd` does for `adb connect 127.0.0.1:PORT`, so that
`sbexport bench --device adb` can be tested without a phone. Facts used (AOSP adb's
protocol.txt, SERVICES.TXT, SYNC.TXT and the shell protocol of shell_protocol.h):

- A message is a 24-byte header of six little-endian uint32 (command, arg0, arg1, payload
  length, payload checksum = sum of its bytes, magic = command ^ 0xffffffff) plus the payload.
  From protocol version 0x01000001 on, the checksum is no longer checked.
- CNXN(version, maxdata, "host::features=...") from the host; the device answers with its own
  CNXN(version, maxdata, "device::ro.product.name=..;ro.product.model=..;ro.product.device=..;
  features=..") or with AUTH(TOKEN=1, 0, 20 random bytes). The host signs the token with its
  keys (AUTH SIGNATURE=2); each refusal is a fresh TOKEN; when its keys run out it sends its
  public key (AUTH RSAPUBLICKEY=3) and reports the device `unauthorized` until the user accepts.
- Streams: OPEN(host id, 0, "service\\0") -> OKAY(device id, host id) or CLSE(0, host id);
  WRTE(sender id, receiver id, data), answered by OKAY before the sender writes again;
  CLSE(sender id, receiver id) ends a stream.
- `shell:CMD` (protocol v1: stdout and stderr mixed, no exit status) and, when the device
  announces the feature `shell_v2`, `shell,v2,raw:CMD`: packets of [id: u8][length: u32 LE]
  [data], ids 0 stdin, 1 stdout, 2 stderr, 3 exit (1 byte), 4 close stdin, 5 window size.
- `sync:`: requests [id: 4 bytes][length: u32 LE][path]. STAT/LIST/SEND/RECV/QUIT, and with
  the features `stat_v2` and `ls_v2` STA2/LST2/LIS2. SEND's path is "PATH,MODE" and is followed
  by DATA(length, bytes <= 64 KiB) chunks and DONE(mtime), answered by OKAY or FAIL(message).

What Debian's adb 1.0.41 used of it (host banner features: remount_shell, abb_exec, abb, apex,
fixed_push_mkdir, ls_v2, stat_v2, fixed_push_symlink_timestamp, cmd, shell_v2): protocol
version 0x01000001 (no checksums), no AUTH unless asked; `shell,v2,raw:CMD` (`shell:CMD` when
shell_v2 is not announced), `exec:CMD` for exec-out; sync STA2 (STAT), SEND, RECV, LIS2 (LIST)
for a folder pull, QUIT. It never sent LST2, and it reads push/pull errors out on stdout.

The device's filesystem is a scratch folder (`root`): every sync path is a path under it.
Shell commands run with /bin/sh in `root` on the host: the device paths below DEVICE_PREFIXES
in a command are rewritten to their place under `root` (textually, see `rewrite_command`), and
`root` is rewritten back out of the output, so `ls /data/local/tmp` shows device paths. Android
queries (getprop, nproc, uname, taskset, dumpsys thermalservice, /proc/cpuinfo, the cpufreq
files of /sys) are answered from the chosen `DeviceProfile` by small sh scripts in
`root/system/bin`, first on PATH. Programs the host pushes run on the host's CPU (an arm64 one
through binfmt/qemu when registered).

Bounded in time: loopback only, every socket has a timeout, shells are killed after
`command_timeout`, and the server stops by itself after `idle_limit` seconds without traffic
or open streams. Use it as a context manager in a test (a thread), or as a subprocess:
`python tests/adb_device.py SCRATCH [--profile arm64-phone] [--unauthorized] ...` prints the
port on its first line and serves until idle.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# ------------------------------------------------------------------------------------------
# Device profiles and faults: what the test chooses.
# ------------------------------------------------------------------------------------------

# The features this stand-in implements; a profile may announce fewer (e.g. no shell_v2, to
# make the client fall back to shell protocol v1 and STAT/LIST).
IMPLEMENTED_FEATURES = ("shell_v2", "stat_v2", "ls_v2", "fixed_push_mkdir")


@dataclass(frozen=True)
class DeviceProfile:
    """What the device says about itself. `core_max_khz[i]` is cpu i's cpuinfo_max_freq
    (None: no cpufreq folder, as on many emulators); `thermal_status` is the thermal service's
    status (0 none .. 6 shutdown), None when the device has no thermal service.

    `emulated`: the stand-in runs what it is sent on the host, an arm64 program through
    qemu-user, so by default it says it is emulated the way the Android emulator does
    (ro.kernel.qemu=1) and sbexport marks its timings as emulation. False pretends to be real
    hardware: only for tests of how a real phone's report reads, never for a figure."""
    name: str
    abi: str
    abilist: str
    model: str
    product: str
    device: str
    manufacturer: str
    soc_model: str
    board_platform: str
    sdk: int
    release: str
    machine: str                        # `uname -m`
    core_max_khz: tuple[int | None, ...]
    cpu_parts: tuple[str, ...] = ()     # /proc/cpuinfo "CPU part" per core (ARM only)
    thermal_status: int | None = 0
    thermal_zones: tuple[tuple[str, int], ...] = (("cpu-0-0", 36500), ("battery", 31000))
    features: tuple[str, ...] = IMPLEMENTED_FEATURES
    extra_props: tuple[tuple[str, str], ...] = ()
    emulated: bool = True

    @property
    def cores(self) -> int:
        return len(self.core_max_khz)

    def props(self) -> dict[str, str]:
        """The `getprop` table."""
        props = {
            "ro.product.cpu.abi": self.abi, "ro.product.cpu.abilist": self.abilist,
            "ro.product.model": self.model, "ro.product.name": self.product,
            "ro.product.device": self.device, "ro.product.manufacturer": self.manufacturer,
            "ro.soc.model": self.soc_model, "ro.board.platform": self.board_platform,
            "ro.build.version.sdk": str(self.sdk), "ro.build.version.release": self.release,
            "ro.serialno": f"STANDIN{self.name.upper().replace('-', '')}",
        }
        if self.emulated:
            props["ro.kernel.qemu"] = "1"
        props.update(self.extra_props)
        return props

    def cpuinfo(self) -> str:
        """/proc/cpuinfo in the kernel's format for the profile's architecture."""
        blocks = []
        for i in range(self.cores):
            if self.machine == "aarch64":
                part = self.cpu_parts[i] if self.cpu_parts else "0xd05"
                blocks.append(f"processor\t: {i}\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm "
                              f"aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                              f"lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
                              f"CPU variant\t: 0x1\nCPU part\t: {part}\nCPU revision\t: 0\n")
            else:
                blocks.append(f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: "
                              f"Android virtual processor\nflags\t\t: fpu sse sse2 ssse3 sse4_1 "
                              f"sse4_2 popcnt avx avx2\n")
        return "\n".join(blocks)


# Eight cores, big.LITTLE in three clusters (4 x Cortex-A55, 3 x A710, 1 x X2), like a 2022
# flagship: the bench must pin to cpus 4-7 (mask f0) or 7 (mask 80).
ARM64_PHONE = DeviceProfile(
    name="arm64-phone", abi="arm64-v8a", abilist="arm64-v8a,armeabi-v7a,armeabi",
    model="SB Standin 8", product="sbstandin", device="standin8", manufacturer="sbexport",
    soc_model="SM8450", board_platform="taro", sdk=33, release="13", machine="aarch64",
    core_max_khz=(1785600,) * 4 + (2496000,) * 3 + (2995200,),
    cpu_parts=("0xd05",) * 4 + ("0xd47",) * 3 + ("0xd48",),
)

# An x86_64 emulator image: what `sbexport bench --device adb` must refuse (ABI not arm64-v8a).
X86_64_EMULATOR = DeviceProfile(
    name="x86_64-emulator", abi="x86_64", abilist="x86_64,x86", model="sdk_gphone64_x86_64",
    product="sdk_gphone64_x86_64", device="emu64x", manufacturer="Google",
    soc_model="", board_platform="ranchu", sdk=34, release="14", machine="x86_64",
    core_max_khz=(None,) * 4, thermal_status=None, thermal_zones=(),
)

PROFILES = {p.name: p for p in (ARM64_PHONE, X86_64_EMULATOR)}


@dataclass(frozen=True)
class Faults:
    """Misbehaviour chosen by the test.

    unauthorized: answer the host's CNXN with AUTH and never accept a key (`unauthorized`).
    offline: accept the TCP connection and never answer (`offline`).
    drop_after_bytes: close the TCP connection once this many bytes of stream data (WRTE
        payloads, both directions) have passed on it.
    drop_on: close the TCP connection when a service whose string contains this text is
        opened (e.g. a shell command), before running it.
    delay: seconds to wait before sending each message (a slow device or link).
    """
    unauthorized: bool = False
    offline: bool = False
    drop_after_bytes: int | None = None
    drop_on: str | None = None
    delay: float = 0.0


# ------------------------------------------------------------------------------------------
# Wire format.
# ------------------------------------------------------------------------------------------

def _cmd(name: bytes) -> int:
    return int.from_bytes(name, "little")


A_CNXN, A_AUTH, A_OPEN, A_OKAY, A_WRTE, A_CLSE = map(_cmd, (b"CNXN", b"AUTH", b"OPEN", b"OKAY",
                                                            b"WRTE", b"CLSE"))
COMMAND_NAMES = {v: k for k, v in dict(CNXN=A_CNXN, AUTH=A_AUTH, OPEN=A_OPEN, OKAY=A_OKAY,
                                       WRTE=A_WRTE, CLSE=A_CLSE).items()}
A_VERSION = 0x01000001            # the first version that skips the checksum
A_VERSION_SKIP_CHECKSUM = 0x01000001
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
MAX_PAYLOAD = 256 * 1024          # what a current adbd announces
SYNC_DATA_MAX = 64 * 1024
HEADER = struct.Struct("<6I")

# shell protocol v2 packet ids
SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN, SHELL_WINDOW = range(6)

# Device path prefixes that live under the scratch root when a shell command names them;
# everything else (/bin/sh, /dev/null, /proc/self, /tmp) is the host's own.
DEVICE_PREFIXES = ("/data", "/sdcard", "/storage", "/sys", "/system", "/vendor", "/proc/cpuinfo")
_PREFIX_RE = re.compile(r"(?<![\w.~/-])(" + "|".join(map(re.escape, DEVICE_PREFIXES))
                        + r")(?=/|$|[^\w.-])")


def pack_message(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    """One adb message: the 24-byte header followed by `data`."""
    return HEADER.pack(command, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF,
                       command ^ 0xFFFFFFFF) + data


def rewrite_command(command: str, root: str) -> str:
    """Put `root` in front of every device path of DEVICE_PREFIXES that starts a word of
    `command` ("cat /proc/cpuinfo" -> "cat ROOT/proc/cpuinfo"; "/database" is left alone)."""
    return _PREFIX_RE.sub(lambda m: root + m.group(1), command)


class _OutputRewriter:
    """Takes `root` back out of a stream of output (ROOT/data/x -> /data/x, ROOT -> /),
    holding back a tail that may be the start of `root` split across two chunks."""

    def __init__(self, root: str):
        self.root = root.encode()
        self.pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = (self.pending + chunk).replace(self.root + b"/", b"/")
        keep = 0
        marker = self.root + b"/"
        for k in range(min(len(marker), len(data)), 0, -1):
            if data.endswith(marker[:k]):
                keep = k
                break
        data, self.pending = (data[:-keep], data[-keep:]) if keep else (data, b"")
        return data.replace(self.root, b"/")

    def flush(self) -> bytes:
        data, self.pending = self.pending.replace(self.root, b"/"), b""
        return data


# ------------------------------------------------------------------------------------------
# The device's filesystem.
# ------------------------------------------------------------------------------------------

GETPROP_SH = """#!/bin/sh
# getprop [NAME]: the device profile's properties ({props}, one NAME=VALUE a line).
if [ $# -eq 0 ]; then
  while IFS='=' read -r k v; do printf '[%s]: [%s]\\n' "$k" "$v"; done < '{props}'
  exit 0
fi
while IFS='=' read -r k v; do
  if [ "$k" = "$1" ]; then printf '%s\\n' "$v"; exit 0; fi
done < '{props}'
printf '%s\\n' "$2"   # Android prints the default (or an empty line) for an unknown name
"""

TASKSET_SH = """#!/bin/sh
# taskset MASK COMMAND...: checks MASK against the profile's {cores} cores, logs it, runs
# COMMAND unpinned (the host has other cores). `taskset -p PID` prints the full mask.
if [ "$1" = "-p" ]; then printf "pid %s's current affinity mask: %x\\n" "$2" {full}; exit 0; fi
case "$1" in ''|*[!0-9a-fA-Fx]*) echo "taskset: bad mask '$1'" >&2; exit 1;; esac
m=$(( 0x${{1#0x}} ))
if [ "$m" -eq 0 ] || [ $(( m & ~{full} )) -ne 0 ]; then
  echo "taskset: sched_setaffinity: Invalid argument" >&2; exit 1
fi
mask=$1
shift
echo "$mask $*" >> '{log}'
exec "$@"
"""

UNAME_SH = """#!/bin/sh
# uname: the device's kernel and machine ({machine}).
case "$1" in
  -m) echo {machine};;
  -a) echo "Linux localhost 5.10.0-android13 #1 SMP PREEMPT {machine} Toybox";;
  *) echo Linux;;
esac
"""

DUMPSYS_SH = """#!/bin/sh
# dumpsys thermalservice: the profile's thermal status; other services: nothing.
if [ "$1" = thermalservice ] && [ -n "{status}" ]; then
  printf 'IsStatusOverride: false\\nThermal Status: %s\\n' "{status}"; exit 0
fi
echo "Can't find service: $1" >&2; exit 1
"""


def make_device_tree(root: Path, state: Path, profile: DeviceProfile) -> None:
    """Fill `root` with what the device shows of itself: /data/local/tmp, /sdcard,
    /system/bin (sh, getprop, nproc, uname, taskset, dumpsys), /proc/cpuinfo and the cpu and
    thermal files of /sys. `state` (outside root) holds the property table and taskset's log."""
    for folder in ("data/local/tmp", "sdcard", "system/bin", "proc", "sys/devices/system/cpu",
                   "sys/class/thermal"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    props = state / "props"
    props.write_text("".join(f"{k}={v}\n" for k, v in profile.props().items()))
    full = (1 << profile.cores) - 1
    bin_ = root / "system/bin"
    scripts = {
        "getprop": GETPROP_SH.format(props=props),
        "nproc": f"#!/bin/sh\necho {profile.cores}\n",
        "uname": UNAME_SH.format(machine=profile.machine),
        "taskset": TASKSET_SH.format(cores=profile.cores, full=full, log=state / "taskset.log"),
        "dumpsys": DUMPSYS_SH.format(status="" if profile.thermal_status is None
                                     else profile.thermal_status),
    }
    for name, text in scripts.items():
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    if not (bin_ / "sh").exists():
        (bin_ / "sh").symlink_to("/bin/sh")
    (root / "proc/cpuinfo").write_text(profile.cpuinfo())
    cpu = root / "sys/devices/system/cpu"
    span = f"0-{profile.cores - 1}\n"
    for name in ("possible", "present", "online"):
        (cpu / name).write_text(span)
    for i, khz in enumerate(profile.core_max_khz):
        (cpu / f"cpu{i}").mkdir(exist_ok=True)
        if khz is not None:
            (cpu / f"cpu{i}/cpufreq").mkdir(exist_ok=True)
            (cpu / f"cpu{i}/cpufreq/cpuinfo_max_freq").write_text(f"{khz}\n")
    for i, (kind, millideg) in enumerate(profile.thermal_zones):
        zone = root / f"sys/class/thermal/thermal_zone{i}"
        zone.mkdir(exist_ok=True)
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(f"{millideg}\n")


# ------------------------------------------------------------------------------------------
# Streams.
# ------------------------------------------------------------------------------------------

class StreamClosed(Exception):
    """The host closed the stream, or the connection went away."""


class Stream:
    """One adb stream on the device side: bytes from the host queue up in `inbox`; `write`
    sends WRTE messages one at a time, each after the host's OKAY for the previous one."""

    def __init__(self, conn: Connection, local_id: int, remote_id: int):
        self.conn, self.local_id, self.remote_id = conn, local_id, remote_id
        self.inbox = bytearray()
        self.cond = threading.Condition()
        self.ready = True           # the host has acknowledged our last WRTE
        self.closed = False         # by either side
        self.on_close = []          # callbacks run once when the host closes

    # --- from the connection's reader thread
    def feed(self, data: bytes) -> None:
        with self.cond:
            self.inbox += data
            self.cond.notify_all()

    def acked(self) -> None:
        with self.cond:
            self.ready = True
            self.cond.notify_all()

    def host_closed(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        for callback in self.on_close:
            callback()

    # --- from the service thread
    def read_exact(self, n: int) -> bytes:
        """`n` bytes from the host; raises StreamClosed on close or after io_timeout."""
        deadline = time.monotonic() + self.conn.server.io_timeout
        with self.cond:
            while len(self.inbox) < n:
                if self.closed and len(self.inbox) < n:
                    raise StreamClosed()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StreamClosed()
                self.cond.wait(left)
            data = bytes(self.inbox[:n])
            del self.inbox[:n]
            return data

    def read_some(self) -> bytes:
        """Whatever the host has sent (at least one byte), b"" once closed."""
        with self.cond:
            while not self.inbox and not self.closed:
                self.cond.wait(1.0)
            data = bytes(self.inbox)
            self.inbox.clear()
            return data

    def write(self, data: bytes) -> None:
        """Send `data` as WRTE messages of at most the connection's payload size."""
        view = memoryview(data)
        while view:
            chunk, view = bytes(view[:self.conn.max_payload]), view[self.conn.max_payload:]
            deadline = time.monotonic() + self.conn.server.io_timeout
            with self.cond:
                while not self.ready:
                    if self.closed or time.monotonic() > deadline:
                        raise StreamClosed()
                    self.cond.wait(0.5)
                if self.closed:
                    raise StreamClosed()
                self.ready = False
            self.conn.send_data(self, chunk)

    def close(self) -> None:
        """Close from the device side (CLSE), once."""
        with self.cond:
            if self.closed:
                self.conn.forget(self)
                return
            self.closed = True
        self.conn.send(A_CLSE, self.local_id, self.remote_id)
        self.conn.forget(self)


def run_shell(stream: Stream, service: str) -> None:
    """shell:CMD and shell,v2,...:CMD. Runs CMD (an interactive shell when empty) with /bin/sh
    in the device root; v2 frames stdout/stderr and ends with the exit status, v1 sends the
    mixed output raw and just closes."""
    head, _, command = service.partition(":")
    v2 = "v2" in head.split(",")[1:]
    server = stream.conn.server
    root = str(server.root)
    argv = ["/bin/sh", "-c", rewrite_command(command, root)] if command else ["/bin/sh"]
    env = {"PATH": f"{root}/system/bin:/usr/local/bin:/usr/bin:/bin", "HOME": root,
           "TMPDIR": f"{root}/data/local/tmp", "ANDROID_DATA": f"{root}/data",
           "ANDROID_ROOT": f"{root}/system", "LANG": "C.UTF-8", **server.shell_env}
    proc = subprocess.Popen(argv, cwd=root, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE if v2 else subprocess.STDOUT,
                            start_new_session=True)
    stream.conn.processes.add(proc)
    stream.on_close.append(lambda: _kill(proc))
    send_lock = threading.Lock()

    def send(kind: int, data: bytes) -> None:
        if not data:
            return
        packet = struct.pack("<BI", kind, len(data)) + data if v2 else data
        with send_lock:
            stream.write(packet)

    def pump(pipe, kind: int) -> None:
        rewriter = _OutputRewriter(root)
        try:
            for chunk in iter(lambda: os.read(pipe.fileno(), 65536), b""):
                send(kind, rewriter.feed(chunk))
            send(kind, rewriter.flush())
        except (StreamClosed, OSError):
            _kill(proc)

    def feed_stdin() -> None:
        # v2: [id][len][data] packets; v1: raw bytes. Stops at close-stdin or stream end.
        buffer = b""
        try:
            while not stream.closed or stream.inbox:
                buffer += stream.read_some()
                if not v2:
                    proc.stdin.write(buffer)
                    proc.stdin.flush()
                    buffer = b""
                    continue
                while len(buffer) >= 5:
                    kind, length = struct.unpack("<BI", buffer[:5])
                    if len(buffer) < 5 + length:
                        break
                    data, buffer = buffer[5:5 + length], buffer[5 + length:]
                    if kind == SHELL_STDIN:
                        proc.stdin.write(data)
                        proc.stdin.flush()
                    elif kind == SHELL_CLOSE_STDIN:
                        proc.stdin.close()
                        return
        except (OSError, ValueError):
            pass

    pumps = [threading.Thread(target=pump, args=(proc.stdout, SHELL_STDOUT), daemon=True)]
    if v2:
        pumps.append(threading.Thread(target=pump, args=(proc.stderr, SHELL_STDERR), daemon=True))
    for t in pumps:
        t.start()
    threading.Thread(target=feed_stdin, daemon=True).start()
    try:
        status = proc.wait(timeout=server.command_timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        status = proc.wait()
    for t in pumps:
        t.join(server.io_timeout)
    stream.conn.processes.discard(proc)
    # A signal ends a shell with 128 + its number, as the device's sh would report it.
    code = status if status >= 0 else 128 - status
    try:
        if v2:
            send(SHELL_EXIT, bytes([code & 0xFF]))
    except StreamClosed:
        pass
    stream.close()


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_sync(stream: Stream, service: str) -> None:
    """sync: requests until QUIT or the stream ends."""
    try:
        while True:
            rid, length = struct.unpack("<4sI", stream.read_exact(8))
            payload = stream.read_exact(length)
            stream.conn.server.log(f"sync:{rid.decode(errors='replace')}")
            if rid == b"QUIT":
                break
            handler = SYNC_HANDLERS.get(rid)
            if handler is None:
                _sync_fail(stream, f"unknown sync request {rid!r}")
                break
            handler(stream, payload.decode("utf-8", "surrogateescape"))
    except StreamClosed:
        pass
    stream.close()


def _sync_fail(stream: Stream, message: str) -> None:
    data = message.encode()
    stream.write(b"FAIL" + struct.pack("<I", len(data)) + data)


def _stat_v1(stream: Stream, path: str) -> None:
    # Missing file: all zeros (the client reads mode 0 as "does not exist"). lstat, as adbd.
    try:
        st = os.lstat(stream.conn.server.host_path(path))
        fields = (st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime))
    except OSError:
        fields = (0, 0, 0)
    stream.write(b"STAT" + struct.pack("<3I", *fields))


def _stat_v2_record(host: Path, follow: bool) -> bytes:
    """error, dev, ino, mode, nlink, uid, gid, size, atime, mtime, ctime (72 bytes with id)."""
    try:
        st = os.stat(host) if follow else os.lstat(host)
        return struct.pack("<IQQIIIIQqqq", 0, st.st_dev, st.st_ino, st.st_mode, st.st_nlink,
                           st.st_uid, st.st_gid, st.st_size, int(st.st_atime),
                           int(st.st_mtime), int(st.st_ctime))
    except OSError as e:
        return struct.pack("<I", e.errno or 2) + bytes(struct.calcsize("<QQIIIIQqqq"))


def _stat_v2(stream: Stream, path: str, follow: bool) -> None:
    host = stream.conn.server.host_path(path)
    stream.write((b"STA2" if follow else b"LST2") + _stat_v2_record(host, follow))


def _list(stream: Stream, path: str, v2: bool) -> None:
    host = stream.conn.server.host_path(path)
    try:
        names = sorted(os.listdir(host))
    except OSError:
        names = []
    out = bytearray()
    for name in names:
        raw = name.encode("utf-8", "surrogateescape")
        if v2:
            out += b"DNT2" + _stat_v2_record(host / name, follow=False) + struct.pack("<I", len(raw)) + raw
        else:
            try:
                st = os.lstat(host / name)
            except OSError:
                continue
            out += b"DENT" + struct.pack("<4I", st.st_mode, st.st_size & 0xFFFFFFFF,
                                         int(st.st_mtime), len(raw)) + raw
    # DONE has the size of the entry records with everything zero.
    out += b"DONE" + bytes(struct.calcsize("<IQQIIIIQqqqI") if v2 else 16)
    stream.write(bytes(out))


def _send(stream: Stream, spec: str) -> None:
    """SEND "PATH,MODE" then DATA... DONE(mtime): write the file (parents made, mode and mtime
    kept), answer OKAY or FAIL. On an error the data is still read up to DONE, so the stream
    stays in step."""
    path, comma, mode_text = spec.rpartition(",")
    path, mode = (path, int(mode_text)) if comma else (spec, stat.S_IFREG | 0o644)
    host = stream.conn.server.host_path(path)
    error = None
    handle = None
    try:
        if stat.S_ISLNK(mode):
            raise OSError("symbolic links are not supported by the stand-in")
        if path.endswith("/"):      # open("dir/", O_CREAT) on the device fails so
            raise IsADirectoryError(21, "Is a directory")
        host.parent.mkdir(parents=True, exist_ok=True)
        handle = open(host, "wb")
    except OSError as e:
        error = f"couldn't create file: {e.strerror or e}"
    while True:
        rid, value = struct.unpack("<4sI", stream.read_exact(8))
        if rid == b"DATA":
            data = stream.read_exact(value)
            if handle is not None:
                handle.write(data)
        elif rid == b"DONE":
            break
        else:
            error = error or f"invalid data message {rid!r}"
            break
    if handle is not None:
        handle.close()
        if error is None:
            os.chmod(host, stat.S_IMODE(mode))
            os.utime(host, (value, value))
    if error:
        _sync_fail(stream, error)
    else:
        stream.write(b"OKAY" + bytes(4))


def _recv(stream: Stream, path: str) -> None:
    host = stream.conn.server.host_path(path)
    try:
        with open(host, "rb") as f:
            out = bytearray()
            for chunk in iter(lambda: f.read(SYNC_DATA_MAX), b""):
                out += b"DATA" + struct.pack("<I", len(chunk)) + chunk
                if len(out) >= 4 * SYNC_DATA_MAX:
                    stream.write(bytes(out))
                    out.clear()
    except OSError as e:
        _sync_fail(stream, e.strerror or str(e))
        return
    stream.write(bytes(out) + b"DONE" + bytes(4))


SYNC_HANDLERS = {
    b"STAT": _stat_v1,
    b"STA2": lambda s, p: _stat_v2(s, p, follow=True),
    b"LST2": lambda s, p: _stat_v2(s, p, follow=False),
    b"LIST": lambda s, p: _list(s, p, v2=False),
    b"LIS2": lambda s, p: _list(s, p, v2=True),
    b"SEND": _send,
    b"RECV": _recv,
}

# exec:CMD (`adb exec-out`) is shell protocol v1 without a terminal, which run_shell does.
SERVICES = {"shell": run_shell, "exec": run_shell, "sync": run_sync}


# ------------------------------------------------------------------------------------------
# Connection and server.
# ------------------------------------------------------------------------------------------

class Connection:
    """One TCP connection from the adb server: reads messages, answers the handshake,
    opens streams and routes their messages."""

    def __init__(self, server: AdbDevice, sock: socket.socket):
        self.server, self.sock = server, sock
        self.send_lock = threading.Lock()
        self.streams: dict[int, Stream] = {}
        self.next_id = 1
        self.version = A_VERSION
        self.max_payload = MAX_PAYLOAD
        self.online = False
        self.passed = 0               # stream bytes, for Faults.drop_after_bytes
        self.dead = False
        self.processes: set[subprocess.Popen] = set()

    # --- sending
    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        self.server.touch()
        try:
            with self.send_lock:    # a slow link: one message after the other, each late
                if self.server.faults.delay:
                    time.sleep(self.server.faults.delay)
                self.sock.sendall(pack_message(command, arg0, arg1, data))
        except OSError:
            self.drop()

    def send_data(self, stream: Stream, chunk: bytes) -> None:
        self.count(len(chunk))
        if self.dead:
            raise StreamClosed()
        self.send(A_WRTE, stream.local_id, stream.remote_id, chunk)

    def count(self, n: int) -> None:
        self.passed += n
        limit = self.server.faults.drop_after_bytes
        if limit is not None and self.passed >= limit:
            self.server.log(f"fault:drop after {self.passed} bytes")
            self.drop()

    def forget(self, stream: Stream) -> None:
        self.streams.pop(stream.local_id, None)

    def drop(self) -> None:
        """Close the TCP connection at once and end everything that runs for it."""
        if self.dead:
            return
        self.dead = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for stream in list(self.streams.values()):
            stream.host_closed()
        for proc in list(self.processes):
            _kill(proc)

    # --- receiving
    def recv_exact(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            if self.dead or self.server.stopping.is_set():
                raise ConnectionError("stopped")
            ready, _, _ = select.select([self.sock], [], [], 0.5)
            if not ready:
                continue
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed by the host")
            data += chunk
        return bytes(data)

    def serve(self) -> None:
        try:
            while True:
                command, arg0, arg1, length, check, magic = HEADER.unpack(self.recv_exact(24))
                if magic != command ^ 0xFFFFFFFF:
                    raise ConnectionError(f"bad magic on {command:#x}")
                data = self.recv_exact(length) if length else b""
                if self.version < A_VERSION_SKIP_CHECKSUM and sum(data) & 0xFFFFFFFF != check:
                    raise ConnectionError("bad checksum")
                self.server.touch()
                self.dispatch(command, arg0, arg1, data)
        except (ConnectionError, OSError):
            pass
        finally:
            self.drop()

    def dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        server, faults = self.server, self.server.faults
        if command == A_CNXN:
            server.log(f"host:{data.rstrip(bytes(1)).decode(errors='replace')}")
            self.version = min(arg0, A_VERSION)
            self.max_payload = min(arg1, MAX_PAYLOAD)
            if faults.offline:
                return
            if faults.unauthorized:
                self.send(A_AUTH, AUTH_TOKEN, 0, os.urandom(20))
                return
            self.online = True
            self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, server.banner())
        elif command == A_AUTH:
            server.log(f"auth:{arg0}")
            if faults.unauthorized and arg0 == AUTH_SIGNATURE:
                self.send(A_AUTH, AUTH_TOKEN, 0, os.urandom(20))   # refuse this key
            # AUTH_RSAPUBLICKEY: the user never answers the dialog.
        elif not self.online:
            return
        elif command == A_OPEN:
            self.open(arg0, data.rstrip(bytes(1)).decode("utf-8", "surrogateescape"))
        elif command == A_WRTE:
            stream = self.streams.get(arg1)
            self.count(len(data))
            if stream is None or self.dead:
                return
            stream.feed(data)
            self.send(A_OKAY, stream.local_id, stream.remote_id)
        elif command == A_OKAY:
            if (stream := self.streams.get(arg1)) is not None:
                stream.acked()
        elif command == A_CLSE:
            if (stream := self.streams.pop(arg1, None)) is not None:
                stream.host_closed()

    def open(self, remote_id: int, service: str) -> None:
        server = self.server
        server.log(f"open:{service}")
        if server.faults.drop_on is not None and server.faults.drop_on in service:
            server.log(f"fault:drop on {service}")
            self.drop()
            return
        run = SERVICES.get(re.split(r"[,:]", service, maxsplit=1)[0])
        if run is None:
            self.send(A_CLSE, 0, remote_id)
            return
        stream = Stream(self, self.next_id, remote_id)
        self.next_id += 1
        self.streams[stream.local_id] = stream
        self.send(A_OKAY, stream.local_id, remote_id)
        threading.Thread(target=self._run_service, args=(run, stream, service),
                         daemon=True).start()

    def _run_service(self, run, stream: Stream, service: str) -> None:
        # Any failure closes the stream, so that the client is told instead of left waiting.
        try:
            run(stream, service)
        except StreamClosed:
            stream.close()
        except Exception as e:   # a bug or a malformed request: logged for the test to see
            self.server.log(f"error:{service}: {e!r}")
            stream.close()


class AdbDevice:
    """The stand-in device: a loopback TCP server in a thread.

    scratch: a folder it owns; the device's filesystem is `scratch/root`, its private state
        (property table, taskset log) `scratch/state`.
    profile, faults: see DeviceProfile and Faults.
    idle_limit: stop after this many seconds with no message and no open stream.
    io_timeout: the longest wait for the host within a stream or a send.
    command_timeout: a shell command is killed after this many seconds.
    shell_env: extra environment for the device's shells, e.g. SBEXPORT_QEMU="qemu-aarch64
        -cpu cortex-a76" for android_demo's run-bundle.sh where binfmt_misc has no qemu.
    """

    def __init__(self, scratch: Path, profile: DeviceProfile = ARM64_PHONE,
                 faults: Faults = Faults(), idle_limit: float = 60.0, io_timeout: float = 20.0,
                 command_timeout: float = 300.0, shell_env: dict[str, str] | None = None):
        unknown = set(profile.features) - set(IMPLEMENTED_FEATURES)
        if unknown:
            raise ValueError(f"profile announces unimplemented features: {sorted(unknown)}")
        self.scratch = Path(scratch)
        self.root = self.scratch / "root"
        self.state = self.scratch / "state"
        self.profile, self.faults = profile, faults
        self.idle_limit, self.io_timeout, self.command_timeout = idle_limit, io_timeout, command_timeout
        self.shell_env = dict(shell_env or {})
        make_device_tree(self.root, self.state, profile)
        self.events: list[str] = []   # what the host asked for, in order (see `log`)
        self.stopping = threading.Event()
        self.connections: list[Connection] = []
        self.last_activity = time.monotonic()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.listener.settimeout(0.5)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def serial(self) -> str:
        """The serial the adb client gives this device after `adb connect`."""
        return f"127.0.0.1:{self.port}"

    def banner(self) -> bytes:
        p = self.profile
        return (f"device::ro.product.name={p.product};ro.product.model={p.model};"
                f"ro.product.device={p.device};features={','.join(p.features)}").encode()

    def host_path(self, device_path: str) -> Path:
        """Where a device path lives on the host (always under root: '..' cannot leave it)."""
        parts = [part for part in device_path.split("/") if part not in ("", ".")]
        resolved: list[str] = []
        for part in parts:
            if part == "..":
                if resolved:
                    resolved.pop()
            else:
                resolved.append(part)
        return self.root.joinpath(*resolved)

    def taskset_log(self) -> list[str]:
        """One line per `taskset MASK CMD...` run on the device: "MASK CMD..." (the device
        paths in CMD rewritten to their place under root)."""
        log = self.state / "taskset.log"
        return log.read_text().splitlines() if log.exists() else []

    def set_faults(self, faults: Faults, drop_connections: bool = False) -> None:
        """Change the faults from now on; `drop_connections` closes the current connections
        (the adb server then reconnects and meets the new faults, e.g. offline)."""
        self.faults = faults
        if drop_connections:
            for conn in list(self.connections):
                conn.drop()

    def log(self, event: str) -> None:
        self.events.append(event)

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def start(self) -> AdbDevice:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for conn in list(self.connections):
            conn.drop()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(5)
        self.listener.close()

    def __enter__(self) -> AdbDevice:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _idle(self) -> bool:
        busy = any(conn.streams for conn in self.connections if not conn.dead)
        return not busy and time.monotonic() - self.last_activity > self.idle_limit

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            if self._idle():
                self.log("idle: stopped")
                break
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            self.touch()
            sock.settimeout(self.io_timeout)    # bounds sendall; reads poll with select
            conn = Connection(self, sock)
            self.connections = [c for c in self.connections if not c.dead] + [conn]
            threading.Thread(target=conn.serve, daemon=True).start()
        self.stopping.set()
        for conn in list(self.connections):
            conn.drop()


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in as a process: prints its port, serves until idle."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scratch", type=Path)
    parser.add_argument("--profile", choices=sorted(PROFILES), default=ARM64_PHONE.name)
    parser.add_argument("--no-shell-v2", action="store_true", help="announce shell protocol v1 only")
    parser.add_argument("--unauthorized", action="store_true")
    parser.add_argument("--offline", action="store_true")
    parser.add_argument("--drop-after-bytes", type=int)
    parser.add_argument("--drop-on")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--idle-limit", type=float, default=60.0)
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    if args.no_shell_v2:
        profile = dataclasses.replace(profile, features=tuple(f for f in profile.features
                                                              if f != "shell_v2"))
    faults = Faults(unauthorized=args.unauthorized, offline=args.offline,
                    drop_after_bytes=args.drop_after_bytes, drop_on=args.drop_on, delay=args.delay)
    device = AdbDevice(args.scratch, profile, faults, idle_limit=args.idle_limit).start()
    print(device.port, flush=True)
    try:
        while device.thread.is_alive():
            device.thread.join(0.5)
    except KeyboardInterrupt:
        pass
    device.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
