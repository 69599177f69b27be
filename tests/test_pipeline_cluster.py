"""The demo job attached to an existing two-node Ray cluster started here with ``ray start``.

The nodes run in their own process groups and temp dir; the test stops exactly those groups
(never ``ray stop``, which would stop other people's clusters on this machine).
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray.util

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RAY = [sys.executable, "-m", "ray.scripts.scripts"]
# Token authentication would need a token shared by every process of the test; it is local.
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _node_flags() -> list[str]:
    """One CPU, blocking in the foreground, every port of its own."""
    ports = ["node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "metrics-export-port", "runtime-env-agent-port"]
    return ["--num-cpus=1", "--block", "--disable-usage-stats", *(f"--{name}={_free_port()}" for name in ports)]


def _stop(process: subprocess.Popen) -> None:
    """Stop the process group of one ``ray start``: SIGTERM, then SIGKILL whatever is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=3)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 15
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def two_node_cluster():
    """Address of a head node and a second node on this machine, one CPU each."""
    temp_dir = tempfile.mkdtemp(prefix="sxr", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    address = f"{ray.util.get_node_ip_address()}:{_free_port()}"
    started = []
    try:
        head = [*RAY, "start", "--head", f"--port={address.rsplit(':', 1)[1]}", "--include-dashboard=false",
                f"--temp-dir={temp_dir}", f"--ray-client-server-port={_free_port()}", *_node_flags()]
        started.append(subprocess.Popen(head, env=ENV, start_new_session=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        host, port = address.rsplit(":", 1)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError:
                assert started[0].poll() is None, "the head node did not start"
                assert time.monotonic() < deadline, "the head node did not open its port"
                time.sleep(0.2)
        worker = [*RAY, "start", f"--address={address}", *_node_flags()]
        started.append(subprocess.Popen(worker, env=ENV, start_new_session=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield address
    finally:
        for process in reversed(started):
            _stop(process)
        for process in started:
            assert not _group_alive(process.pid), "a ray process of the test survived"
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_demo_attached_to_a_two_node_cluster_scores_on_both_nodes(tmp_path, two_node_cluster):
    output = tmp_path / "out"
    # two actors of one CPU each: they can only fit one per node
    command = [sys.executable, "-m", "pipelines.cli", "run", str(ROOT / "configs" / "demo.yaml"),
               "--address", two_node_cluster, "--output", str(output), "--set", "progress=false",
               "--set", "ray.num_actors=2", "--set", "ray.num_cpus_per_actor=1"]
    result = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "20 ok, 0 error" in result.stderr

    summary = json.loads((output / "summary.json").read_text())
    assert len(summary["nodes"]) == 2 and all(queries > 0 for queries in summary["nodes"].values())
    assert {scorer["node_id"] for scorer in summary["scorers"]} == set(summary["nodes"])
    assert sum(summary["nodes"].values()) == summary["queries_sent"]
