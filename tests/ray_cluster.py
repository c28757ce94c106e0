"""A real two-node Ray cluster on this machine for the Ray suites, started once per session:
the head node on 127.0.0.2 and a worker node on 127.0.0.3, each with its own temp dir, CPUs,
memory and object store (sized to fit beside the rest of the suite). The worker node declares
an emulated GPU type as a Ray resource. Stopped only by the process groups it started (never
`ray stop`, which ends every Ray process on the machine)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAD_IP = "127.0.0.2"
WORKER_IP = "127.0.0.3"
GPU_TYPE = "A100-80GB"  # what the worker node offers (emulated: a Ray resource only)
# GCS health checks of nodes: a node silent for period x threshold (+ timeout) is dead.
HEALTH_PERIOD_MS = 1000
HEALTH_TIMEOUT_MS = 1000
HEALTH_THRESHOLD = 3
NODE_DEATH_S = (HEALTH_PERIOD_MS * HEALTH_THRESHOLD + HEALTH_TIMEOUT_MS) / 1000


class RayCluster:
    def __init__(self, port: int) -> None:
        # Unix socket paths under the temp dirs must stay short.
        self.root = Path(tempfile.mkdtemp(prefix="inferd-ray-", dir="/tmp"))
        self.port = port
        self.address = f"{HEAD_IP}:{port}"
        self.head: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None

    def _ray(self, *args: str, temp: str) -> subprocess.Popen:
        env = {
            **os.environ,
            "RAY_health_check_period_ms": str(HEALTH_PERIOD_MS),
            "RAY_health_check_timeout_ms": str(HEALTH_TIMEOUT_MS),
            "RAY_health_check_failure_threshold": str(HEALTH_THRESHOLD),
            "RAY_health_check_initial_delay_ms": "1000",
        }
        return subprocess.Popen(
            [
                str(Path(sys.executable).parent / "ray"),
                "start",
                "--block",
                f"--temp-dir={self.root / temp}",
                "--num-cpus=2",
                "--memory=3000000000",
                "--object-store-memory=200000000",
                "--disable-usage-stats",
                *args,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: killed as one
        )

    def start(self) -> RayCluster:
        self.head = self._ray(
            "--head",
            f"--node-ip-address={HEAD_IP}",
            f"--port={self.port}",
            "--include-dashboard=false",
            temp="h",
        )
        self.connect()
        self.start_worker()
        return self

    def connect(self) -> None:
        """This process as a driver (the suites read Serve's state through it)."""
        import ray

        deadline = time.monotonic() + 90
        while True:
            try:
                ray.init(
                    address=self.address,
                    namespace="inferd",
                    logging_level="ERROR",
                    log_to_driver=False,
                )
                return
            except Exception:
                assert self.head is not None and self.head.poll() is None, "ray head died"
                assert time.monotonic() < deadline, "ray head did not start"
                time.sleep(1)

    def start_worker(self, timeout: float = 90) -> None:
        self.worker = self._ray(
            f"--address={self.address}",
            f"--node-ip-address={WORKER_IP}",
            f'--resources={{"{GPU_TYPE}": 2}}',
            temp="w",
        )
        deadline = time.monotonic() + timeout
        while self.worker_node_id() is None:
            assert self.worker.poll() is None, "ray worker node died"
            assert time.monotonic() < deadline, "ray worker node did not join"
            time.sleep(0.5)

    def alive_nodes(self) -> dict[str, str]:
        """Node IP → node id of the nodes alive now."""
        import ray

        return {n["NodeManagerAddress"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}

    def head_node_id(self) -> str:
        return self.alive_nodes()[HEAD_IP]

    def worker_node_id(self) -> str | None:
        return self.alive_nodes().get(WORKER_IP)

    def kill_worker(self) -> None:
        """SIGKILL every process of the worker node (raylet, its workers, the replicas)."""
        assert self.worker is not None
        _kill_tree(self.worker, signal.SIGKILL)
        self.worker = None

    def stop(self) -> None:
        import ray

        ray.shutdown()
        for proc in (self.worker, self.head):
            if proc is not None:
                _kill_tree(proc, signal.SIGTERM)
        shutil.rmtree(self.root, ignore_errors=True)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (Ray's workers each start a session of their own, so the
    process group of `ray start` does not hold them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree(proc: subprocess.Popen, sig: int) -> None:
    """`sig` to `ray start` and everything it started; SIGKILL to what outlives a SIGTERM."""
    tree = [proc.pid, *_descendants(proc.pid)]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    deadline = time.monotonic() + 5
    for pid in tree:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
