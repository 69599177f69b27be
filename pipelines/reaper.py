"""The Ray processes a job starts end with it, even when the job is killed with SIGKILL.

``ray.init`` on a new local instance starts the GCS, the raylet and a few helpers as children
that die with the driver; but the raylet's own children, the dashboard and runtime-env agents,
outlive a killed driver by a minute or more (they wait for the dead GCS). ``reap_on_exit``
starts a small watchdog process (``pipelines/watchdog.py``) that keeps the list of the Ray
processes and their descendants up to date and kills those still running once the driver has
exited, however it ended (the driver's end of a pipe to the watchdog closes; ``reap_now`` closes
it after ``ray.shutdown()``). Linux only: elsewhere the watchdog finds no processes to track.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipelines.watchdog import children

_PIPES: list[int] = []  # write ends, open for as long as this process lives


def child_pids() -> set[int]:
    """Pids of this process's children now."""
    return children(os.getpid())


def reap_on_exit(exclude: set[int]) -> None:
    """Start a watchdog that kills this process's children other than ``exclude`` (the pids of
    ``child_pids()`` before ``ray.init``), and their descendants, once this process exits."""
    roots = [str(pid) for pid in child_pids() - exclude]
    if not roots:
        return
    read_end, write_end = os.pipe()  # not inherited by later children: only we hold the write end
    subprocess.Popen([sys.executable, str(Path(__file__).with_name("watchdog.py")), *roots], stdin=read_end,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    os.close(read_end)
    _PIPES.append(write_end)


def reap_now() -> None:
    """After ``ray.shutdown()``: the watchdogs kill what is left of the Ray processes now, and exit."""
    while _PIPES:
        os.close(_PIPES.pop())
