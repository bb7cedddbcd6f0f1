"""Readings from ``/proc``: process groups, children, CPU time, context switches, memory."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(path: str) -> list[str] | None:
    """The fields of a ``stat`` file after the command name (state first), or ``None``."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _cpu(fields: list[str] | None) -> float | None:
    return None if fields is None else (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process (all its threads), or ``None`` if it is gone."""
    return _cpu(_stat_fields(f"/proc/{pid}/stat"))


def main_thread_cpu(pid: int) -> float:
    """CPU seconds of the main thread alone (corral's supervisor loop runs on it)."""
    return _cpu(_stat_fields(f"/proc/{pid}/task/{pid}/stat")) or 0.0


def parent(pid: int) -> int:
    fields = _stat_fields(f"/proc/{pid}/stat")
    return 0 if fields is None else int(fields[1])


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    return fields is not None and fields[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(f"/proc/{entry.name}/stat")
            if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return sorted(members)


def group_cpu(pgid: int) -> dict[int, float]:
    """CPU seconds so far of every live process in a process group."""
    out = {}
    for pid in group_members(pgid):
        seconds = cpu_seconds(pid)
        if seconds is not None:
            out[pid] = seconds
    return out


def children_of(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def voluntary_switches(pid: int) -> int:
    """Voluntary context switches of every thread of ``pid``: how often it went to sleep."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        total += kib_or_count(task / "status", ("voluntary_ctxt_switches",))[
            "voluntary_ctxt_switches"
        ]
    return total


def kib_or_count(path: Path, names: tuple[str, ...]) -> dict[str, int]:
    """The first number of each named ``key: value`` line of a ``/proc`` file (0 if absent)."""
    found = dict.fromkeys(names, 0)
    try:
        text = path.read_text()
    except OSError:
        return found
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in found:
            found[key] = int(rest.split()[0])
    return found


def memory_bytes(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, USS) of one process, in bytes."""
    rss = kib_or_count(Path(f"/proc/{pid}/status"), ("VmRSS",))["VmRSS"]
    names = ("Pss", "Private_Clean", "Private_Dirty")
    rollup = kib_or_count(Path(f"/proc/{pid}/smaps_rollup"), names)
    uss = rollup["Private_Clean"] + rollup["Private_Dirty"]
    return rss * 1024, rollup["Pss"] * 1024, uss * 1024
