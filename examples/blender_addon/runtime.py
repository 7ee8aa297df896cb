"""The add-on's runtime, kept apart from the UI: the process-wide pool manager, the worker
threads that send requests, and the queue that brings their results back to Blender's main
thread (``bpy`` is not thread-safe: only the ``bpy.app.timers`` callback touches it).
"""

from __future__ import annotations

import glob
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field

ADDON_DIR = os.path.dirname(os.path.abspath(__file__))


def _import_backend_pool():
    """``backend_pool`` from Blender's Python path (an extension's bundled wheel, or a wheel
    installed into ``scripts/modules``); as a legacy add-on folder with a wheel in
    ``wheels/``, unpack that wheel next to the add-on first."""
    try:
        import backend_pool

        return backend_pool
    except ImportError:
        wheels = sorted(glob.glob(os.path.join(ADDON_DIR, "wheels", "backend_pool-*.whl")))
        if not wheels:
            raise
        import zipfile

        vendor = os.path.join(ADDON_DIR, "_vendor")
        if not os.path.isdir(os.path.join(vendor, "backend_pool")):
            with zipfile.ZipFile(wheels[-1]) as z:
                z.extractall(vendor)
        if vendor not in sys.path:
            sys.path.insert(0, vendor)
        import backend_pool

        return backend_pool


bp = _import_backend_pool()

# Health probes per backend (the crate's README, "Presets"): cheap, unauthenticated, no side
# effects. Never LiteLLM's GET /health (it calls every model).
KNOWN = {
    "comfyui": {
        "health_path": "/prompt",
        "health_interval_ms": 30_000,
        "websocket": {"client_id_param": "clientId", "max_connections": 5, "min_connections": 0},
    },
    "litellm": {"health_path": "/health/liveliness", "health_interval_ms": 30_000},
    "wan2gp": {"health_path": "/", "health_interval_ms": 30_000},
    "rvc": {"health_path": "/models", "health_interval_ms": 30_000},
}


def build_config(urls: dict[str, str], litellm_key: str = "") -> dict:
    """A manager configuration from the preferences: one service per non-empty URL."""
    services = []
    for name, url in urls.items():
        url = url.strip()
        if not url:
            continue
        service = {"name": name, "url": url, "http": {"max_connections": 10, "min_connections": 0}}
        service.update(KNOWN.get(name, {}))
        if name == "litellm" and litellm_key:
            service["bearer_token"] = litellm_key
        services.append(service)
    return {"maintenance_interval_ms": 1000, "service": services}


# --- manager lifecycle ---------------------------------------------------------------------

last_shutdown: dict | None = None  # the last shutdown report, for the UI and tests


def start(config) -> None:
    """Starts the process-wide manager (``config``: dict, TOML text or a file path)."""
    bp.init(config)


def stop(deadline_s: float) -> dict | None:
    """Stops the workers and shuts the manager down, all within ``deadline_s`` seconds."""
    global last_shutdown
    end = time.monotonic() + deadline_s
    _stop.set()
    # Shutting down first wakes workers waiting for a connection (they get ShuttingDown).
    report = bp.shutdown(max(0.0, end - time.monotonic()))
    for t in list(_workers):
        t.join(max(0.0, end - time.monotonic()))
    _workers[:] = [t for t in _workers if t.is_alive()]
    last_shutdown = report
    return report


def restart(config, deadline_s: float) -> None:
    stop(deadline_s)
    _stop.clear()
    start(config)


# --- jobs: worker threads -> queue.Queue -> main thread --------------------------------------


@dataclass
class Job:
    id: int
    service: str
    total: int
    done: int = 0
    errors: int = 0
    last_error: str = ""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    statuses: dict = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.finished is None


jobs: dict[int, Job] = {}  # touched on the main thread only
_results: queue.Queue = queue.Queue()
_workers: list[threading.Thread] = []
_stop = threading.Event()
_next_id = 0


def start_job(service: str, method: str, path: str, threads: int, per_thread: int) -> Job:
    """Starts ``threads`` workers sending ``per_thread`` requests each. Called on the main
    thread; the workers only talk to the pool and the queue."""
    global _next_id
    _next_id += 1
    job = Job(_next_id, service, threads * per_thread)
    jobs[job.id] = job
    manager = bp.get()
    if manager is None:
        raise RuntimeError("the backend pool is not running")

    def work():
        for _ in range(per_thread):
            if _stop.is_set():
                return
            try:
                r = manager.request(service, method, path)
                _results.put((job.id, r.status, None))
            except bp.ShuttingDown:
                return
            except bp.BackendPoolError as e:
                _results.put((job.id, None, str(e)))

    for i in range(threads):
        t = threading.Thread(target=work, name=f"bp-dashboard-worker-{job.id}-{i}", daemon=True)
        _workers.append(t)
        t.start()
    return job


def drain(limit: int = 5000) -> int:
    """Applies queued results to the jobs (main thread). Returns how many were applied."""
    n = 0
    while n < limit:
        try:
            job_id, status, error = _results.get_nowait()
        except queue.Empty:
            break
        n += 1
        job = jobs.get(job_id)
        if job is None:
            continue
        job.done += 1
        if error is not None:
            job.errors += 1
            job.last_error = error
        else:
            job.statuses[status] = job.statuses.get(status, 0) + 1
        if job.done >= job.total and job.finished is None:
            job.finished = time.monotonic()
    _workers[:] = [t for t in _workers if t.is_alive()]
    return n


# --- the dashboard -------------------------------------------------------------------------


def dashboard_rows() -> list[dict]:
    """What the panel shows, one row per service: health, in use / idle, reuse rate, p99
    acquisition time, errors."""
    manager = bp.get()
    if manager is None:
        return []
    rows = []
    for s in manager.stats()["services"]:
        pools = [p for p in (s.get("http"), s.get("websocket")) if p]
        # A WebSocket pool sends no requests ("requests" is None): its uses are checkouts.
        requests = sum(p["requests"] or 0 for p in pools)
        uses = sum(p["acquisitions"] if p["requests"] is None else p["requests"] for p in pools)
        created = sum(p["connections_created"] for p in pools)
        rows.append(
            {
                "service": s["name"],
                "health": s["health"]["state"],
                "last_error": s["health"]["last_error"] or "",
                "in_use": sum(p["in_use"] for p in pools),
                "idle": sum(p["idle"] for p in pools),
                "requests": requests,
                "reuse_rate": max(0.0, 1.0 - created / uses) if uses else 0.0,
                "p99_acquire_ms": max((p["acquire_time"]["p99_us"] for p in pools), default=0.0) / 1000,
                "errors": sum(sum(p["errors"].values()) for p in pools),
            }
        )
    return rows
