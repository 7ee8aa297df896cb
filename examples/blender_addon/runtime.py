"""The add-on's runtime, kept apart from the UI: the process-wide pool manager, the jobs and
their worker threads, and the queue that brings the workers' results back to Blender's main
thread (``bpy`` is not thread-safe: only the ``bpy.app.timers`` callback touches it).

Every job owns a ``backend_pool.CancelToken`` passed to each of its calls. The Cancel button
and ``unregister()`` cancel tokens; a worker blocked in a call (waiting for a connection, for a
slow response, on a WebSocket read) then raises ``Cancelled`` within milliseconds, its
connection is closed, and the thread returns: nothing on the main thread ever waits for a
backend.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from .vendoring import import_backend_pool

ADDON_DIR = os.path.dirname(os.path.abspath(__file__))

bp = import_backend_pool(ADDON_DIR)

from . import comfyui  # noqa: E402 - needs backend_pool on the path first

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


def split_urls(field: str) -> list[str]:
    """A preference's URLs: one machine, or several separated by commas or spaces (two ComfyUI
    GPU machines: ``http://10.0.0.11:8188, http://10.0.0.12:8188``)."""
    return [u for u in field.replace(",", " ").split() if u]


def build_config(urls: dict[str, str], litellm_key: str = "") -> dict:
    """A manager configuration from the preferences: one service per non-empty field, with
    ``url`` for one machine and ``urls`` for several (each job's calls then stay on one
    machine through its session; stateless calls spread)."""
    services = []
    for name, field in urls.items():
        machines = split_urls(field)
        if not machines:
            continue
        service = {"name": name, "http": {"max_connections": 10, "min_connections": 0}}
        if len(machines) == 1:
            service["url"] = machines[0]
        else:
            service["urls"] = machines
        service.update(KNOWN.get(name, {}))
        if name == "litellm" and litellm_key:
            service["bearer_token"] = litellm_key
        services.append(service)
    return {"maintenance_interval_ms": 1000, "service": services}


# --- manager lifecycle ---------------------------------------------------------------------

last_shutdown: dict | None = None  # the last shutdown report, for the UI and tests


def start(config) -> None:
    """Starts the process-wide manager (``config``: dict, TOML text or a file path)."""
    _served.clear()
    probes.clear()
    bp.init(config)


def stop(deadline_s: float) -> dict | None:
    """Stops every job and shuts the manager down. Cancelling comes first: each worker blocked
    in a backend call returns at once with its connection closed, so the shutdown finds
    nothing in use and does not wait for ``deadline_s`` (its bound if a call cannot be
    cancelled, e.g. an HTTPS handshake in progress)."""
    global last_shutdown
    end = time.monotonic() + deadline_s
    _stop.set()
    for token in _tokens():
        token.cancel()
    report = bp.shutdown(max(0.0, end - time.monotonic()))
    for t in list(_workers):
        t.join(max(0.0, end - time.monotonic()))
    drain()
    for job in jobs.values():  # a worker that did not report back in time
        if job.running:
            _finish(job, "cancelled")
    _helper_tokens.clear()
    last_shutdown = report
    return report


last_apply: dict | None = None  # the last reconfiguration's report, or {"error": ...}


def reconfigure(config, deadline_s: float) -> dict | None:
    """A preference edit: changes the running manager to ``config`` (dict, TOML text or a
    file path, as ``start``) without a restart, by ``manager.apply``. Services whose settings
    did not change keep their pools, connections and calls in flight (a LiteLLM stream goes
    on); a changed or removed one takes no new work, its calls in flight get ``deadline_s`` to
    finish, then are interrupted (their jobs end "cancelled"), and it closes; a new one starts
    on first use. Returns the report; an invalid configuration changes nothing and is kept
    as ``{"error": ...}``. Starts the manager if none runs."""
    global last_apply
    manager = bp.get()
    if manager is None:
        _stop.clear()
        start(config)
        return None
    try:
        last_apply = manager.apply(config, timeout=deadline_s)
    except bp.ConfigError as e:
        last_apply = {"error": str(e)}
    return last_apply


# --- jobs: worker threads -> queue.Queue -> main thread --------------------------------------


@dataclass
class Job:
    """One job on the panel: ``kind`` "requests" (worker threads sending requests),
    "comfyui" (one prompt followed on a WebSocket) or "render" (the render uploaded, a prompt
    run on it, its result downloaded: ``phase`` says which). Read and written on the main
    thread only, workers report through the queue; but for ``prompt_sent`` and
    ``prompt_over``, thread-safe events its worker sets."""

    id: int
    service: str
    kind: str
    total: int  # requests: how many; comfyui: the running node's step count (0: none yet);
    #             render: the same while running, bytes to send / fetch (0: unknown) else
    token: object  # backend_pool.CancelToken, given to every call of the job
    done: int = 0  # requests answered; comfyui: steps done in the running node; render: bytes
    errors: int = 0
    last_error: str = ""
    state: str = "running"  # running, cancelling, then done / cancelled / interrupted / failed
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    statuses: dict = field(default_factory=dict)
    workers: int = 0  # its threads that have not reported their end yet
    workers_ended: float | None = None  # when the last one reported it (time.monotonic())
    prompt_id: str = ""  # comfyui: chosen here, sent with the prompt, so Cancel always has it
    node: str = ""  # comfyui: the node ComfyUI runs (its class_type when the graph names it)
    last_progress: tuple = (0, 0)  # comfyui: the last progress event (value, max), any node
    note: str = ""  # comfyui: what became of the prompt on the server after Cancel
    graph: dict = field(default_factory=dict, repr=False)
    phase: str = ""  # render: "uploading", "running", "downloading"
    output: str = ""  # render: the downloaded file
    image: str = ""  # render: the image it was loaded as (bpy.data.images)
    # Set by the worker: before it sends the prompt, once the prompt has ended on the server.
    prompt_sent: threading.Event = field(default_factory=threading.Event, repr=False)
    prompt_over: threading.Event = field(default_factory=threading.Event, repr=False)
    # comfyui, render: the backend_pool.Session every call of the job goes through (one
    # machine of the service); dropped when the job ends: its pin ends once the worker and a
    # Cancel's helper let go of it too.
    session: object = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.finished is None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


jobs: dict[int, Job] = {}  # touched on the main thread only
_results: queue.Queue = queue.Queue()  # (job id, event, value, time.monotonic())
_workers: list[threading.Thread] = []
_helper_tokens: list = []  # tokens of helper calls (a Cancel's POST /interrupt)
_stop = threading.Event()
_served: dict[str, int] = {}  # per service: calls of this add-on's jobs it answered
_next_id = 0
# "Test connection" (main thread only): per service, the last probe's report as a dict
# (``reachable``, ``error``, ``elapsed_ms``, ...), or {"running": True} while one runs.
probes: dict[str, dict] = {}
# The main thread's part of a render job: loads the downloaded file into Blender and returns
# the image's name (set by the add-on's register(); this module does not touch bpy).
load_output = None


def _tokens() -> list:
    return [j.token for j in jobs.values() if j.running] + list(_helper_tokens)


def _manager():
    manager = bp.get()
    if manager is None:
        raise RuntimeError("the backend pool is not running")
    return manager


def _new_job(service: str, kind: str, total: int, workers: int) -> Job:
    global _next_id
    _next_id += 1
    job = Job(_next_id, service, kind, total, bp.CancelToken(), workers=workers)
    jobs[job.id] = job
    return job


def _post(job_id: int, event: str, value) -> None:
    """A worker's report, for the main thread."""
    _results.put((job_id, event, value, time.monotonic()))


def _spawn(target, name: str) -> None:
    t = threading.Thread(target=target, name=name, daemon=True)
    _workers.append(t)
    t.start()


def start_job(service: str, method: str, path: str, threads: int, per_thread: int) -> Job:
    """Starts ``threads`` workers sending ``per_thread`` requests each. Called on the main
    thread; the workers only talk to the pool and the queue."""
    manager = _manager()
    job = _new_job(service, "requests", threads * per_thread, threads)
    token = job.token

    def work():
        try:
            for _ in range(per_thread):
                if _stop.is_set():
                    return
                try:
                    r = manager.request(service, method, path, cancel=token)
                    _post(job.id, "response", r.status)
                except (bp.Cancelled, bp.ShuttingDown):
                    return
                except bp.BackendPoolError as e:
                    _post(job.id, "error", str(e))
        finally:
            _post(job.id, "exit", None)

    for i in range(threads):
        _spawn(work, f"bp-dashboard-worker-{job.id}-{i}")
    return job


def start_comfyui_job(graph: dict, service: str = "comfyui") -> Job:
    """Queues ``graph`` (ComfyUI's API format) and follows it on a worker thread."""
    session = _manager().session(service)  # no I/O: picks the machine
    job = _new_job(service, "comfyui", 0, 1)
    job.prompt_id = str(uuid.uuid4())
    job.graph = graph
    job.session = session

    def report(event, value):
        _post(job.id, event, value)

    _spawn(lambda: comfyui.run_prompt(session, graph, job.prompt_id, job.token, report,
                                      job.prompt_sent, job.prompt_over),
           f"bp-dashboard-comfyui-{job.id}")
    return job


def start_render_job(render: str, graph: dict, out_dir: str, service: str = "comfyui") -> Job:
    """Uploads the PNG ``render`` (a temporary file: removed once sent, or when the job ends),
    runs ``graph`` on it and downloads the result into ``out_dir``, on a worker thread; the
    result is loaded on the main thread by ``load_output``."""
    manager = _manager()
    comfyui.load_image_node(graph)  # ValueError now, before anything is sent
    # One machine for the upload, the prompt, its events and the download.
    session = manager.session(service)
    job = _new_job(service, "render", 0, 1)
    job.prompt_id = str(uuid.uuid4())
    job.graph = graph
    job.phase = "uploading"
    job.session = session

    def report(event, value):
        _post(job.id, event, value)

    _spawn(lambda: comfyui.run_render(session, render, graph, job.prompt_id, out_dir,
                                      job.token, report, job.prompt_sent, job.prompt_over),
           f"bp-dashboard-render-{job.id}")
    return job


def test_connection(service: str, timeout_s: float = 2.0) -> bool:
    """The "Test connection" button (main thread): probes ``service`` now on a helper thread
    (``manager.probe``, at most ``timeout_s``); the report reaches ``probes`` through the
    queue. False if the manager is not running or a probe of it is already running."""
    manager = bp.get()
    if manager is None or probes.get(service, {}).get("running"):
        return False
    probes[service] = {"running": True}

    def probe():
        try:
            report = manager.probe(service, timeout=timeout_s)
        except bp.BackendPoolError as e:  # UnknownService, ShuttingDown
            report = {"reachable": False, "error": str(e), "elapsed_ms": None}
        _post(0, "probe", (service, report))

    _spawn(probe, f"bp-dashboard-probe-{service}")  # bounded by timeout_s: nothing to cancel
    return True


def cancel_job(job_id: int) -> bool:
    """The Cancel button (main thread): returns at once, whatever the backend does."""
    job = jobs.get(job_id)
    if job is None or not job.running or job.state == "cancelling":
        return False
    # Every call of the job raises Cancelled now, on its worker's thread; its connection is
    # closed. That only ends the *wait*: the backend knows nothing of it.
    job.token.cancel()
    job.state = "cancelling"
    manager = bp.get()
    # The prompt is stopped on the server only if it was sent and has not ended: the token is
    # cancelled above, so a worker that had not sent it yet never will (comfyui.queue_and_follow);
    # a render cancelled while uploading or downloading has no prompt running. (ComfyUI before
    # mid-2025 stops whatever runs on an interrupt: never send one for nothing.)
    session = job.session  # the machine the prompt went to
    if (job.prompt_id and job.prompt_sent.is_set() and not job.prompt_over.is_set()
            and manager is not None and session is not None):
        # The caller's part: ComfyUI keeps running the prompt until told. Two short requests,
        # sent from a helper thread (the UI never waits on a backend), cancelled in turn if
        # the add-on is disabled meanwhile: see comfyui.stop_prompt.
        token = bp.CancelToken()
        _helper_tokens.append(token)

        def interrupt():
            _post(job.id, "note", comfyui.stop_prompt(session, job.prompt_id, token))

        _spawn(interrupt, f"bp-dashboard-interrupt-{job.id}")
    return True


def _finish(job: Job, state: str | None = None, detail: str = "") -> None:
    if state is None:  # a requests job: all its workers have ended
        state = "cancelled" if job.token.cancelled and job.done < job.total else "done"
    job.state = state
    if detail:
        job.last_error = detail
    job.finished = time.monotonic()
    job.session = None


def drain(limit: int = 5000) -> int:
    """Applies queued results to the jobs (main thread). Returns how many were applied."""
    n = 0
    while n < limit:
        try:
            job_id, event, value, at = _results.get_nowait()
        except queue.Empty:
            break
        n += 1
        if event == "probe":
            service, report = value
            probes[service] = report
            continue
        job = jobs.get(job_id)
        if job is None:
            continue
        if event == "response":
            job.done += 1
            job.statuses[value] = job.statuses.get(value, 0) + 1
            _served[job.service] = _served.get(job.service, 0) + 1
        elif event == "error":
            job.done += 1
            job.errors += 1
            job.last_error = value
        elif event == "exit":
            job.workers -= 1
            if job.workers <= 0:
                job.workers_ended = at
                if job.running:
                    _finish(job)
        elif event == "queued":  # ComfyUI accepted the prompt
            _served[job.service] = _served.get(job.service, 0) + 1
        elif event == "progress":
            job.done, job.total = job.last_progress = value
        elif event == "node":
            spec = job.graph.get(value)
            job.node = spec.get("class_type", value) if isinstance(spec, dict) else value
            job.done = job.total = 0  # a node's progress starts over
        elif event == "phase":  # render: uploading, running, downloading
            job.phase = value
            job.node = ""
            job.done = job.total = 0
        elif event == "bytes":  # render: the upload's or the download's progress
            job.done, job.total = value
        elif event == "output":  # render: the downloaded file, whole
            job.output = value
            if load_output is not None and job.running:
                try:
                    job.image = load_output(value)
                    job.note = f"loaded as image '{job.image}'"
                except Exception as e:  # noqa: BLE001 - a file Blender cannot read: shown
                    _finish(job, "failed", f"could not load {os.path.basename(value)}: {e}")
        elif event == "end":
            job.workers -= 1
            job.workers_ended = at
            state, detail = value
            if job.running:
                _finish(job, state, detail)
        elif event == "note":
            job.note = value
    _workers[:] = [t for t in _workers if t.is_alive()]
    return n


def visible_jobs(finished: int = 1) -> list[Job]:
    """The jobs the panel lists: every running one, then the last ``finished`` ended ones,
    the newest first."""
    ordered = sorted(jobs.values(), key=lambda j: j.id, reverse=True)
    return [j for j in ordered if j.running] + [j for j in ordered if not j.running][:finished]


# --- the dashboard -------------------------------------------------------------------------

# What a user did, not a fault of the backend: not counted as errors on the panel.
NOT_ERRORS = ("cancelled", "shutting_down")


def dashboard_rows() -> list[dict]:
    """What the panel shows, one row per service.

    ``state``: the health state ("healthy", "degraded", "unhealthy"), or "unused" while
    nothing has touched the service (no probe, no request). ``reuse_rate`` and
    ``p99_acquire_ms`` are None until one of this add-on's calls was answered: health probes
    alone would show a meaningless "reuse 0 %".
    """
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
        errors = sum(n for p in pools for k, n in p["errors"].items() if k not in NOT_ERRORS)
        health = s["health"]
        state = health["state"]
        if (state == "healthy" and health["last_check_unix_ms"] is None
                and uses == 0 and errors == 0):
            state = "unused"
        served = _served.get(s["name"], 0)
        rows.append(
            {
                "service": s["name"],
                "state": state,
                "health": health["state"],
                "consecutive_failures": health["consecutive_failures"],
                "last_error": health["last_error"] or "",
                "in_use": sum(p["in_use"] for p in pools),
                "idle": sum(p["idle"] for p in pools),
                "requests": requests,
                "served": served,
                "reuse_rate": max(0.0, 1.0 - created / uses) if served and uses else None,
                "p99_acquire_ms": (max(p["acquire_time"]["p99_us"] for p in pools) / 1000
                                   if served and pools else None),
                "errors": errors,
                "cancelled": sum(p["errors"].get("cancelled", 0) for p in pools),
            }
        )
    return rows
