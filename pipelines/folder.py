"""The output folder's own bookkeeping: one writer at a time (``.lock``) and the config its results
come from (``job.json``: the result-relevant config and its hash; a changed config is refused)."""

from __future__ import annotations

import fcntl
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.config import JobConfig, changed_keys
from pipelines.metadata import library_versions
from pipelines.parts import TEMP_PREFIX

JOB_FILE = "job.json"
LOCK_FILE = ".lock"


class JobMismatchError(ValueError):
    """The output folder holds results of a config that would give different results."""


@contextmanager
def locked(output: Path) -> Iterator[None]:
    """Hold ``output``'s lock (created with the folder if needed); RuntimeError when another
    process holds it."""
    output.mkdir(parents=True, exist_ok=True)
    with open(output / LOCK_FILE, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another spex-ray run is writing to {output}") from None
        yield


def check_job_file(config: JobConfig, output: Path) -> None:
    """Refuse to run when ``job.json`` records a config that would give different results."""
    job_file = output / JOB_FILE
    if not job_file.exists():
        return
    stored = json.loads(job_file.read_text())
    if stored.get("config_hash") != config.result_hash():
        changed = changed_keys(stored.get("config", {}), config.result_config()) or ["(unknown)"]
        raise JobMismatchError(
            f"{output} holds results of a different config (changed: {', '.join(changed)}); "
            "results would be mixed. Use another --output, or delete the folder to start over."
        )


def record_job_file(config: JobConfig, output: Path) -> None:
    """Write ``job.json`` (the result-relevant config and its hash) unless it is there."""
    job_file = output / JOB_FILE
    if job_file.exists():
        return
    record = {"config_hash": config.result_hash(), "config": config.result_config(), "versions": library_versions()}
    temporary = output / f"{TEMP_PREFIX}{uuid.uuid4().hex}.json"
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True))
    temporary.replace(job_file)
