"""How busy the machine is: the benchmarks share 2 cores with whatever else runs, so each
measurement records how much CPU *other* processes used meanwhile, and can wait for a quiet moment.
Linux only (/proc/stat); elsewhere the figures are None and nothing waits.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

CPUS = os.cpu_count() or 1
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (user, nice, system, irq, steal)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class OthersLoad:
    """Share of the machine's CPU used by other processes between start() and stop()."""

    def start(self) -> OthersLoad:
        self.wall, self.busy, self.own = time.monotonic(), busy_cpu_seconds(), own_cpu_seconds()
        return self

    def stop(self) -> float | None:
        busy = busy_cpu_seconds()
        if busy is None or self.busy is None:
            return None
        wall = time.monotonic() - self.wall
        others = (busy - self.busy) - (own_cpu_seconds() - self.own)
        return round(max(0.0, others) / (wall * CPUS), 3) if wall > 0 else None


def wait_for_quiet(max_busy: float = 0.15, timeout: float = 300.0, sample: float = 3.0) -> float:
    """Wait (at most `timeout` s) until other processes use under `max_busy` of the CPUs.

    Returns the last busy share seen (the caller goes on regardless after the timeout).
    """
    deadline = time.monotonic() + timeout
    while True:
        probe = OthersLoad().start()
        time.sleep(sample)
        share = probe.stop()
        if share is None or share < max_busy or time.monotonic() > deadline:
            return share if share is not None else 0.0
        time.sleep(5)
