"""The watchdog process of ``pipelines.reaper``, and the /proc reading it shares with it (Linux).

Run as ``python watchdog.py PID...``: tracks the processes PID and all their descendants (the
list refreshed every second) until its stdin reaches end of file, then kills those still
running. A pid is killed only while it names the process that was tracked (same start time).
Imports nothing from the project, so that it starts in a few milliseconds.
"""

from __future__ import annotations

import os
import select
import signal
import sys


def processes() -> dict[int, tuple[int, str]]:
    """Every process now: pid -> (parent pid, start time); {} where there is no /proc."""
    found = {}
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
            except OSError:
                continue
            found[int(name)] = (int(fields[1]), fields[19])  # ppid, starttime (fields 4 and 22 of stat)
    return found


def children(pid: int) -> set[int]:
    """Pids of ``pid``'s children now."""
    return {child for child, (parent, _) in processes().items() if parent == pid}


def watch(roots: list[int]) -> None:
    """Track ``roots`` and their descendants until stdin closes; then kill them."""
    tracked: dict[int, str] = {}
    while True:
        now = processes()
        tracked.update({pid: now[pid][1] for pid in roots if pid in now and pid not in tracked})
        grown = True
        while grown:
            grown = False
            for pid, (parent, start) in now.items():
                if parent in tracked and pid not in tracked and now.get(parent, (0, ""))[1] == tracked[parent]:
                    tracked[pid] = start
                    grown = True
        roots = []
        if select.select([sys.stdin], [], [], 1.0)[0] and not os.read(sys.stdin.fileno(), 1):
            break
    now = processes()
    for pid, start in tracked.items():
        if now.get(pid, (0, ""))[1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    watch([int(pid) for pid in sys.argv[1:]])
