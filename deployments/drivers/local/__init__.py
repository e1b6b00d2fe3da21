"""The local cluster driver: each instance of a service is a process on 127.0.0.1.

`vllm serve` when vLLM is installed and a GPU is present, else the engine simulator (`python -m simulator`), which
loads for ``LOCAL_ENGINE_STARTUP_S`` seconds as vLLM loads weights: its ``/health`` answers 503 and it refuses
requests until then. A replica is ready (routed to, billed) only once ``/health`` answers 200, as a Kubernetes
readiness probe gates a pod.
State lives in the Replica rows (pid, port), written the moment a process is spawned, so a restarted worker re-adopts
live processes instead of starting duplicates; a pid is only trusted when /proc shows the same replica's command line
(pids are reused).

The processes die with the platform (``stop_machine_processes`` on a clean stop, or with the machine), and nothing
watches them while it is down. A row's ``observed_at`` is when its process was last seen running (every reconcile
pass, and the moment a clean stop ends it), so a process found dead reports that moment as ``lost_since`` and its
billing ends there, not when the next start finds it gone.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from core.i18n import Text
from deployments.texts import TIMELINE

LOCAL_GPU_PRODUCT = "Local-Simulated-GPU"
DEFAULT_LOCAL_GPUS = 8
DEFAULT_LOCAL_GPU_MEMORY_GB = 80
HEALTH_TIMEOUT_S = 1.0
STOP_GRACE_S = 5.0
DRAIN_SETTLE_S = 2.0
# vLLM options that mean the same to the engine simulator: a service's runtime args pass them on to it, so a catalog
# model's concurrency limit (``--max-num-seqs``) holds on the local driver too. Other vLLM options are not simulated.
SIMULATED_VLLM_OPTIONS = ("--max-num-seqs", "--block-size", "--seed")


@dataclass
class LocalReplica:
    name: str
    base_url: str
    ready: bool
    pid: int
    port: int


@dataclass
class LocalObservation:
    phase: str  # Creating | Starting | Running | Scaling | Stopped
    ready: int
    replicas: list[LocalReplica] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)  # replicas found dead and started again
    reason: str = ""
    message: str | Text = ""
    lost_since: datetime | None = None  # when the earliest of the restarted replicas was last seen running
    draining: int = 0  # instances a scale-down is removing that still finish their requests


def synthetic_nodes(
    *, gpus: int = DEFAULT_LOCAL_GPUS, memory_gb: int = DEFAULT_LOCAL_GPU_MEMORY_GB, product: str = LOCAL_GPU_PRODUCT
) -> list[dict]:
    """The GPU inventory a local cluster advertises (one node)."""
    return [
        {
            "name": "localhost",
            "ready": True,
            "schedulable": True,
            "gpu_product": product,
            "gpu_capacity": gpus,
            "gpu_allocated": 0,
            "gpu_memory_mb": memory_gb * 1024,
        }
    ]


def inventory(nodes: list[dict], allocated: int) -> dict:
    """Cluster.inventory for a local cluster whose services hold ``allocated`` GPUs."""
    result: dict[str, dict] = {}
    for node in nodes:
        if not node.get("ready", True):
            continue
        count = int(node.get("gpu_capacity") or 0)
        entry = result.setdefault(
            node["gpu_product"],
            {
                "total": 0,
                "allocatable": 0,
                "allocated": 0,
                "free": 0,
                "memory_mb": node.get("gpu_memory_mb"),
                "nodes": 0,
                "max_per_node": 0,
                "max_free_per_node": 0,
            },
        )
        entry["total"] += count
        entry["allocatable"] += count
        entry["nodes"] += 1
        entry["max_per_node"] = max(entry["max_per_node"], count)
    for entry in result.values():
        held = min(allocated, entry["allocatable"])
        allocated -= held
        entry["allocated"] = held
        entry["free"] = entry["allocatable"] - held
        entry["max_free_per_node"] = min(entry["max_per_node"], entry["free"])
    return result


def _gpu_present() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists()


def engine_command(
    *,
    served_model_name: str,
    model_source: str,
    max_model_len: int,
    port: int,
    replica: str,
    runtime_args: list[str] | None = None,
) -> list[str]:
    """The command line of one local instance."""
    vllm = shutil.which("vllm")
    if vllm and importlib.util.find_spec("vllm") is not None and _gpu_present():
        return [
            vllm,
            "serve",
            model_source,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--served-model-name",
            served_model_name,
            "--max-model-len",
            str(max_model_len),
            *(runtime_args or []),
        ]
    return [
        sys.executable,
        "-m",
        "simulator",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-model-name",
        served_model_name,
        "--max-model-len",
        str(max_model_len),
        "--replica-id",
        replica,
        "--load-seconds",
        str(settings.LOCAL_ENGINE_STARTUP_S),
        *simulated_options(runtime_args or []),
    ]


def simulated_options(runtime_args: list[str]) -> list[str]:
    """The part of a vLLM command line's ``runtime_args`` the simulator understands (``SIMULATED_VLLM_OPTIONS``)."""
    kept: list[str] = []
    args = [str(a) for a in runtime_args]
    for i, arg in enumerate(args):
        name, has_value, _value = arg.partition("=")
        if name not in SIMULATED_VLLM_OPTIONS:
            continue
        if has_value:
            kept.append(arg)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            kept += [arg, args[i + 1]]
    return kept


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_dir() -> Path:
    path = Path(getattr(settings, "EMBEDDED_DIR", tempfile.gettempdir())) / "replicas"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        path = Path(tempfile.gettempdir())
    return path


def spawn(command: list[str], *, log_name: str) -> int:
    """Start a detached process (its own session, so a worker restart does not take it down); returns its pid."""
    log = open(_log_dir() / f"{log_name}.log", "ab")  # noqa: SIM115 - the child owns the descriptor
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(settings.BASE_DIR),
            env={**os.environ},
        )
    finally:
        log.close()
    return process.pid


def process_alive(pid: int | None, *, port: int | None) -> bool:
    """True when ``pid`` runs and is the instance listening on ``port`` (not a reused pid, not a zombie)."""
    if not pid:
        return False
    try:
        reaped, _status = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass  # started by another (possibly dead) worker: /proc decides
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    if state in ("Z", "X"):
        return False
    return port is not None and str(port).encode() in cmdline and b"--port" in cmdline


def healthy(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HEALTH_TIMEOUT_S)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def stop(pid: int | None, *, port: int | None, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; a process that is not the instance is left alone."""
    if pid is None or not process_alive(pid, port=port):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not process_alive(pid, port=port):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(40):
        if not process_alive(pid, port=port):
            return
        time.sleep(0.05)


def in_flight(port: int) -> int | None:
    """Requests the instance on ``port`` is running or has queued (its ``/metrics``), None if it does not say."""
    from deployments.replica_metrics import parse

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HEALTH_TIMEOUT_S)
    try:
        connection.request("GET", "/metrics")
        answer = connection.getresponse()
        if answer.status != 200:
            return None
        reading = parse(answer.read().decode("utf-8", "replace"))
        return int(reading.running + reading.waiting)
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def drained(row, now: datetime) -> bool:
    """Whether a draining instance may be stopped: its requests are done, or the grace period is over.

    It drains for ``DRAIN_SETTLE_S`` at least, so that every gateway worker has dropped it from its cached
    replicas (they refresh on the serving epoch within a second) before "nothing in flight" is believed.
    """
    waited = (now - row.draining_since).total_seconds()
    if waited >= settings.SERVICE_DRAIN_GRACE_S or not process_alive(row.pid, port=row.port):
        return True
    return waited >= DRAIN_SETTLE_S and in_flight(row.port) == 0


def converge(service, desired: int) -> LocalObservation:
    """Make ``desired`` processes of ``service`` run; restart dead ones; stop extras. Replica rows are kept current.

    A running service's extras drain first (``Replica.draining_since``: no new requests, stopped once idle); a
    stopped or deleted service's are stopped at once.
    """
    from deployments.models import Replica

    known = {r.name: r for r in Replica.objects.filter(service=service)}
    wanted = [f"{service.k8s_name}-{i}" for i in range(desired)]
    live: list[LocalReplica] = []
    restarted: list[str] = []
    last_seen: list[datetime] = []
    spawned = 0
    draining = 0
    now = timezone.now()
    for name, row in known.items():
        if name in wanted:
            if row.draining_since is not None:  # wanted again (scaled back up while it drained): serves again
                row.draining_since = None
                row.save(update_fields=["draining_since"])
            continue
        if service.desired_running and row.pid and row.port and process_alive(row.pid, port=row.port):
            if row.draining_since is None:
                row.draining_since = now
                row.save(update_fields=["draining_since"])  # the gateway drops it (serving epoch)
            if not drained(row, now):
                draining += 1  # observed (not ready), so that its row and its drain are kept
                live.append(LocalReplica(name, row.base_url, False, row.pid, row.port))
                continue
        stop(row.pid, port=row.port)
        row.delete()
    for name in wanted:
        existing = known.get(name)
        if existing is not None and existing.pid and existing.port and process_alive(existing.pid, port=existing.port):
            live.append(LocalReplica(name, existing.base_url, healthy(existing.port), existing.pid, existing.port))
            continue
        if existing is not None and existing.pid:
            restarted.append(name)
            last_seen.append(existing.observed_at)
        port = _free_port()
        command = engine_command(
            served_model_name=service.model_id,
            model_source=service.catalog_model.source_repo,
            max_model_len=service.max_model_len,
            port=port,
            replica=name,
            runtime_args=list(service.runtime_args),
        )
        pid = spawn(command, log_name=name)
        base_url = f"http://127.0.0.1:{port}"
        # Recorded at once: if this worker dies now, the next one re-adopts the process instead of starting another.
        Replica.objects.update_or_create(
            service=service, name=name, defaults={"base_url": base_url, "ready": False, "pid": pid, "port": port}
        )
        live.append(LocalReplica(name, base_url, False, pid, port))
        spawned += 1
    ready = sum(1 for r in live if r.ready)
    if draining:
        phase = "Scaling"
    elif desired == 0:
        phase = "Stopped"
    elif ready >= desired:
        phase = "Running"
    elif ready > 0:
        phase = "Scaling"
    elif spawned == len(wanted):
        phase = "Creating"
    else:
        phase = "Starting"
    observation = LocalObservation(
        phase=phase,
        ready=ready,
        replicas=live,
        restarted=restarted,
        lost_since=min(last_seen, default=None),
        draining=draining,
    )
    if restarted:
        observation.reason = "ProcessRestarted"
        observation.message = TIMELINE("process_restarted", names=", ".join(restarted), n=len(restarted))
    return observation


def stop_all(service) -> bool:
    """Stop every process of ``service``; True once none is left."""
    from deployments.models import Replica

    for row in Replica.objects.filter(service=service):
        stop(row.pid, port=row.port)
        row.delete()
    return True


def stop_machine_processes() -> int:
    """Stop every local engine process this machine runs (when the platform itself shuts down).

    Replica rows stay: the next reconcile finds the processes gone and starts them again. Each row's ``observed_at``
    becomes the moment its process was stopped, so billing counts it until then and not while the platform is down.
    """
    from deployments.models import ClusterDriver, Replica

    rows = Replica.objects.filter(service__cluster__driver=ClusterDriver.LOCAL, pid__isnull=False)
    stopped = 0
    for row in rows:
        if process_alive(row.pid, port=row.port):
            Replica.objects.filter(pk=row.pk).update(observed_at=timezone.now())
            stop(row.pid, port=row.port, grace=3)
            stopped += 1
    return stopped
