"""Facts about the machine for latency reports: a number without its device is not a result."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

NOT_AVAILABLE = "n/a"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (x86: 'avx2', 'avx512f', ...); empty where
    the file is missing or lists none (ARM lists 'Features' instead, also read)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.lower().startswith(("flags", "features")) and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def jetson_power_mode() -> str:
    """`nvpmodel -q` (Jetson only: clocks and power caps change latency several-fold)."""
    exe = shutil.which("nvpmodel")
    if exe is None:
        return NOT_AVAILABLE
    try:
        out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return NOT_AVAILABLE
    text = " ".join(line.strip() for line in out.stdout.splitlines() if line.strip())
    return text or NOT_AVAILABLE
