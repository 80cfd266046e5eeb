"""What a device is, read over adb in one shell call: Android properties, each core's maximum
frequency (to pin the bench to the big cores), the thermal state, and whether it is emulated.

    describe(client, serial) -> DeviceInfo      # DeviceError unless the ABI is arm64-v8a

Emulated: the Android emulator sets ro.kernel.qemu=1 (ro.boot.qemu=1 on newer images) and
ro.hardware goldfish or ranchu; the project's device stand-in (tests/adb_device.py, which runs
the arm64 runner under qemu-user) sets ro.kernel.qemu=1 too. Timings from such a device measure
the emulator, so every report made on it says so (DeviceInfo.emulated).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from ..errors import DeviceError
from .adb import AdbClient

REQUIRED_ABI = "arm64-v8a"
EMULATOR_PROPS = {"ro.kernel.qemu": {"1"}, "ro.boot.qemu": {"1"}, "ro.hardware": {"goldfish", "ranchu"}}

# One shell call; each section starts with its @name line. Paths are Android's (sysfs cpufreq,
# thermal zones); a file that cannot be read gives an empty field, not an error.
PROBE_SCRIPT = r"""echo @props; getprop
echo @cpus; for c in /sys/devices/system/cpu/cpu[0-9]*; do
  echo "${c##*/} $(cat $c/cpufreq/cpuinfo_max_freq 2>/dev/null)"; done
echo @thermal; dumpsys thermalservice 2>/dev/null | grep 'Thermal Status'
echo @zones; for z in /sys/class/thermal/thermal_zone*; do
  echo "$(cat $z/temp 2>/dev/null) $(cat $z/type 2>/dev/null)"; done
echo @features; grep -m1 '^Features' /proc/cpuinfo
echo @taskset; command -v taskset
echo @end"""

# Android's thermal status levels (android.os.PowerManager THERMAL_STATUS_*).
THERMAL_STATUS = ("none", "light", "moderate", "severe", "critical", "emergency", "shutdown")


@dataclass(frozen=True)
class DeviceInfo:
    """One device as the bench describes it. core_max_khz[i] is cpu i's cpuinfo_max_freq (None:
    not readable); big_cores are the cores the bench pins to (empty: not pinned); thermal_status
    is Android's level 0-6 (None: no thermal service); cpu_temp_c the hottest CPU zone;
    cpu_features the first core's /proc/cpuinfo Features (asimd, asimddp, i8mm, ...)."""
    serial: str
    model: str
    manufacturer: str
    soc: str
    abi: str
    android: str
    sdk: str
    cores: int
    core_max_khz: tuple[int | None, ...]
    big_cores: tuple[int, ...]
    has_taskset: bool
    cpu_features: tuple[str, ...]
    thermal_status: int | None
    cpu_temp_c: float | None
    emulated: bool
    emulation_marker: str | None

    @property
    def taskset_mask(self) -> str | None:
        """The big cores as taskset's hex mask ("f0" for cpus 4-7), None when not pinning."""
        if not self.big_cores or not self.has_taskset:
            return None
        return f"{sum(1 << c for c in self.big_cores):x}"

    @property
    def label(self) -> str:
        """"Google Pixel 7 (gs201, serial 2A1B...)" for tables and plot titles; an emulated
        device's starts with "EMULATED, not a measurement:"."""
        text = self.model if self.manufacturer.lower() in self.model.lower() else f"{self.manufacturer} {self.model}"
        text = f"{text.strip()} ({self.soc or 'SoC unknown'}, serial {self.serial})"
        return f"EMULATED, not a measurement: {text}" if self.emulated else text

    def to_dict(self) -> dict:
        return {**asdict(self), "core_max_khz": list(self.core_max_khz), "big_cores": list(self.big_cores),
                "cpu_features": list(self.cpu_features),
                "taskset_mask": self.taskset_mask,
                "thermal_status_name": None if self.thermal_status is None else THERMAL_STATUS[self.thermal_status]}


def describe(client: AdbClient, serial: str) -> DeviceInfo:
    """Read the device. Raises DeviceError when it is not arm64-v8a (the runner's ABI) or the
    probe cannot run."""
    done = client.shell(serial, PROBE_SCRIPT, "reading the device's properties and cores")
    sections = split_sections(done.stdout)
    props = parse_getprop(sections.get("props", []))
    abi = props.get("ro.product.cpu.abi", "")
    model = props.get("ro.product.model", "unknown model")
    if abi != REQUIRED_ABI:
        raise DeviceError(f"device {serial} ({model}) is {abi or 'of unknown ABI'}, not {REQUIRED_ABI}: the native "
                          f"runner is built for 64-bit ARM; use an arm64 phone")
    khz = parse_core_khz(sections.get("cpus", []))
    marker = emulation_marker(props)
    return DeviceInfo(
        serial=serial, model=model, manufacturer=props.get("ro.product.manufacturer", ""),
        soc=props.get("ro.soc.model") or props.get("ro.board.platform") or props.get("ro.hardware", ""),
        abi=abi, android=props.get("ro.build.version.release", ""), sdk=props.get("ro.build.version.sdk", ""),
        cores=len(khz), core_max_khz=khz, big_cores=big_cores(khz),
        has_taskset=any(line.strip() for line in sections.get("taskset", [])),
        cpu_features=tuple(" ".join(sections.get("features", [])).partition(":")[2].split()),
        thermal_status=parse_thermal_status(sections.get("thermal", [])),
        cpu_temp_c=parse_cpu_temp(sections.get("zones", [])),
        emulated=marker is not None, emulation_marker=marker)


def read_thermal_status(client: AdbClient, serial: str) -> int | None:
    """The device's thermal status now (0 none .. 6 shutdown), None where it has no thermal service."""
    done = client.shell(serial, "dumpsys thermalservice 2>/dev/null | grep 'Thermal Status'", "reading thermal status")
    return parse_thermal_status(done.stdout.splitlines())


def split_sections(text: str) -> dict[str, list[str]]:
    """PROBE_SCRIPT's output -> {section name: its lines}."""
    sections, current = {}, None
    for line in text.splitlines():
        if line.startswith("@") and re.fullmatch(r"@\w+", line.strip()):
            current = sections.setdefault(line.strip()[1:], [])
        elif current is not None:
            current.append(line)
    return sections


def parse_getprop(lines: list[str]) -> dict[str, str]:
    """`getprop` lines "[name]: [value]" -> {name: value} (multi-line values keep their first line)."""
    props = {}
    for line in lines:
        match = re.match(r"\[([^\]]+)\]: \[(.*?)\]?$", line)
        if match:
            props[match.group(1)] = match.group(2)
    return props


def parse_core_khz(lines: list[str]) -> tuple[int | None, ...]:
    """"cpuN KHZ" lines (KHZ empty when unreadable) -> max kHz per core, in core order."""
    cores = {}
    for line in lines:
        match = re.match(r"cpu(\d+)\s*(\d*)", line.strip())
        if match:
            cores[int(match.group(1))] = int(match.group(2)) if match.group(2) else None
    return tuple(cores[i] for i in sorted(cores))


def big_cores(khz: tuple[int | None, ...]) -> tuple[int, ...]:
    """The cores outside the slowest cluster (all of them when every core has the same maximum),
    e.g. 4 x 1.8 + 3 x 2.5 + 1 x 3.0 GHz -> (4, 5, 6, 7). Empty when a frequency is unknown:
    better not pinned than pinned to a guess."""
    if not khz or any(f is None for f in khz):
        return ()
    slowest = min(khz)
    big = tuple(i for i, f in enumerate(khz) if f > slowest)
    return big or tuple(range(len(khz)))


def parse_thermal_status(lines: list[str]) -> int | None:
    """"Thermal Status: N" -> N (0-6), None when absent."""
    for line in lines:
        match = re.search(r"Thermal Status:\s*(\d+)", line)
        if match and int(match.group(1)) < len(THERMAL_STATUS):
            return int(match.group(1))
    return None


def parse_cpu_temp(lines: list[str]) -> float | None:
    """"MILLIDEGREES TYPE" lines of the thermal zones -> the hottest CPU zone in °C (zones whose
    type names a cpu; None when none is readable). Some kernels report whole degrees."""
    temps = []
    for line in lines:
        value, _, kind = line.strip().partition(" ")
        if re.fullmatch(r"-?\d+", value) and "cpu" in kind.lower():
            temps.append(int(value) / 1000 if abs(int(value)) > 200 else float(int(value)))
    return max(temps) if temps else None


def emulation_marker(props: dict[str, str]) -> str | None:
    """"ro.kernel.qemu=1" (the first emulator property the device has), None for real hardware."""
    for name, values in EMULATOR_PROPS.items():
        if props.get(name) in values:
            return f"{name}={props[name]}"
    return None
