"""Backend Pool Dashboard: an example add-on for the ``backend_pool`` module.

* ``register()`` starts the process-wide pool manager from the preferences (service URLs);
  ``unregister()`` cancels every call in flight, then shuts the manager down: disabling the
  add-on never waits for a backend.
* Jobs run on worker threads: ``backend_pool.queue_prompt`` queues a ComfyUI prompt and follows
  its progress on a pooled WebSocket, ``backend_pool.run_requests`` sends requests. Results
  come back to the main thread through a ``queue.Queue`` drained by a ``bpy.app.timers``
  callback. ``backend_pool.cancel_job`` (the Cancel button) ends a job at once, and for
  ComfyUI also stops the prompt on the server (``comfyui.stop_prompt``).
* ``backend_pool.send_render`` saves the current render to a temporary PNG (main thread),
  then a worker uploads it to ComfyUI, runs an image-to-image prompt on it and downloads the
  result with a progress bar (uploading, running, downloading; Cancel in each); the timer
  loads the result into ``bpy.data.images``.
* A preference edit changes the running manager (``manager.apply``): services that did not
  change keep their connections and calls in flight. The preferences have a "Test
  connection" button per service (``manager.probe`` on a helper thread, at most 2 s).
* A ComfyUI job (a prompt, a render) runs in one ``manager.session("comfyui")``: with
  several ComfyUI machines, its upload, prompt, events and download stay on one.
* The panel (3D View > Sidebar > Backends, ``dashboard.py``) shows one line per service with
  its state, the pool figures on demand, and each job with a progress bar and Cancel.

Blender >= 4.2 installs it as an extension (``blender_manifest.toml`` lists the wheel); older
Blender as a legacy add-on folder (``bl_info`` below).
"""

from __future__ import annotations

import json
import os
import uuid

bl_info = {
    "name": "Backend Pool Dashboard",
    "author": "backend-pool developers",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "View3D > Sidebar > Backends",
    "description": "Pooled connections to local AI backends, with a health dashboard",
    "category": "System",
}

import bpy  # noqa: E402

from . import runtime  # noqa: E402  (first: it puts backend_pool on the path)
from . import comfyui, dashboard  # noqa: E402

ADDON_ID = __package__ or __name__
TIMER_INTERVAL = 0.1  # seconds between queue drains
REFRESH_TICKS = 5  # a redraw at least this often (in ticks) when the services' states change
DEFAULT_URLS = {
    "comfyui": "http://127.0.0.1:8188",
    "litellm": "http://127.0.0.1:4000",
    "wan2gp": "http://127.0.0.1:7860",
    "rvc": "http://127.0.0.1:5050",
}
SERVICES = tuple(DEFAULT_URLS)
URL_HELP = (
    "The service's base URL; several machines (e.g. two ComfyUI GPU machines): their URLs "
    "separated by commas. A job stays on one machine; empty: not used"
)


def _prefs(context=None):
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon else None


def _config_from_prefs(prefs):
    if prefs is None:  # not stored yet: the defaults
        return runtime.build_config(DEFAULT_URLS)
    if prefs.config_file.strip():
        return bpy.path.abspath(prefs.config_file.strip())
    urls = {name: getattr(prefs, f"{name}_url") for name in SERVICES}
    return runtime.build_config(urls, prefs.litellm_key)


def _reconfigure(self, context):
    """Preference update: changes the running manager to the new settings without a restart
    (``manager.apply``): the services whose settings did not change keep their connections
    and their calls in flight; a changed one's calls get ``shutdown_timeout`` to finish."""
    runtime.reconfigure(_config_from_prefs(self), self.shutdown_timeout)


class BackendPoolPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    comfyui_url: bpy.props.StringProperty(
        name="ComfyUI", description=URL_HELP, default=DEFAULT_URLS["comfyui"], update=_reconfigure
    )
    litellm_url: bpy.props.StringProperty(
        name="LiteLLM", description=URL_HELP, default=DEFAULT_URLS["litellm"], update=_reconfigure
    )
    wan2gp_url: bpy.props.StringProperty(
        name="Wan2GP", description=URL_HELP, default=DEFAULT_URLS["wan2gp"], update=_reconfigure
    )
    rvc_url: bpy.props.StringProperty(
        name="RVC", description=URL_HELP, default=DEFAULT_URLS["rvc"], update=_reconfigure
    )
    litellm_key: bpy.props.StringProperty(name="LiteLLM key", subtype="PASSWORD", update=_reconfigure)
    config_file: bpy.props.StringProperty(
        name="Config file",
        description="A backend-pool TOML/JSON file; replaces the URLs above when set",
        subtype="FILE_PATH",
        update=_reconfigure,
    )
    shutdown_timeout: bpy.props.FloatProperty(
        name="Shutdown deadline (s)", default=1.0, min=0.05, max=30.0
    )

    def draw(self, context):
        col = self.layout.column()
        col.label(text="Service URLs (empty: not used; several machines: comma-separated)")
        for name in SERVICES:
            col.prop(self, f"{name}_url")
        col.prop(self, "litellm_key")
        col.prop(self, "config_file")
        col.prop(self, "shutdown_timeout")
        manager = runtime.bp.get()
        if manager is None:
            return
        box = self.layout.box()
        box.label(text="Test connection")
        for name in manager.services:
            row = box.row()
            row.operator(TEST_CONNECTION, text=name).service = name
            row.label(text=_probe_text(runtime.probes.get(name)))


TEST_CONNECTION = "backend_pool.test_connection"


def _probe_text(report) -> str:
    """One line for a "Test connection" result."""
    if report is None:
        return ""
    if report.get("running"):
        return "testing..."
    if report.get("reachable"):
        return f"reachable ({report.get('check', '')}, {report.get('elapsed_ms', 0)} ms)"
    return f"unreachable: {report.get('error') or 'no answer'}"


class BACKENDPOOL_OT_test_connection(bpy.types.Operator):
    """Check now that the service answers (on a helper thread, at most 2 s)"""

    bl_idname = TEST_CONNECTION
    bl_label = "Test Connection"

    service: bpy.props.StringProperty(name="Service")

    def execute(self, context):
        runtime.test_connection(self.service, timeout_s=2.0)
        _redraw_preferences()
        return {"FINISHED"}


class BACKENDPOOL_OT_run_requests(bpy.types.Operator):
    """Send requests to a backend from worker threads"""

    bl_idname = dashboard.RUN_REQUESTS
    bl_label = "Send Test Requests"

    service: bpy.props.StringProperty(name="Service", default="litellm")
    method: bpy.props.StringProperty(name="Method", default="GET")
    path: bpy.props.StringProperty(name="Path", default="/health/liveliness")
    threads: bpy.props.IntProperty(name="Threads", default=8, min=1, max=64)
    requests: bpy.props.IntProperty(name="Requests per thread", default=100, min=1)

    def execute(self, context):
        try:
            job = runtime.start_job(self.service, self.method, self.path, self.threads, self.requests)
        except Exception as e:  # noqa: BLE001 - shown to the user
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"job {job.id}: {job.total} requests to {self.service}")
        return {"FINISHED"}


class BACKENDPOOL_OT_queue_prompt(bpy.types.Operator):
    """Queue a prompt on ComfyUI and follow its progress (Cancel stops it on the server too)"""

    bl_idname = dashboard.QUEUE_PROMPT
    bl_label = "Queue ComfyUI Prompt"

    text: bpy.props.StringProperty(name="Prompt", default="a small red cube, studio light")
    steps: bpy.props.IntProperty(name="Steps", default=20, min=1, max=10_000)
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0)
    checkpoint: bpy.props.StringProperty(name="Checkpoint", default="v1-5-pruned-emaonly.safetensors")
    workflow: bpy.props.StringProperty(
        name="Workflow",
        description="A workflow saved with ComfyUI's Save (API); empty: text to image with the fields above",
        subtype="FILE_PATH",
    )

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self)

    def execute(self, context):
        try:
            if self.workflow.strip():
                with open(bpy.path.abspath(self.workflow.strip()), encoding="utf-8") as f:
                    graph = json.load(f)
            else:
                graph = comfyui.txt2img_graph(self.text, self.steps, self.seed, self.checkpoint)
            job = runtime.start_comfyui_job(graph)
        except Exception as e:  # noqa: BLE001 - shown to the user
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"job {job.id}: prompt {job.prompt_id} queued on comfyui")
        return {"FINISHED"}


def _render_png(scene, path: str) -> None:
    """Saves the Render Result to ``path`` as a PNG with the scene's color management
    (``save_render`` writes in the scene's output format: PNG is set for the call, then the
    settings are put back). Raises ``RuntimeError`` when there is no render."""
    image = bpy.data.images.get("Render Result")
    if image is None:
        raise RuntimeError("no render yet: render an image first (Render > Render Image, F12)")
    settings = scene.render.image_settings
    # media_type: Blender 5.0+, where it gates which file formats can be set.
    names = [n for n in ("media_type", "file_format", "color_mode", "color_depth", "compression")
             if hasattr(settings, n)]
    saved = {n: getattr(settings, n) for n in names}
    try:
        if "media_type" in saved:
            settings.media_type = "IMAGE"
        settings.file_format = "PNG"
        settings.compression = 15  # fast: a render is sent once
        image.save_render(path, scene=scene)
    except RuntimeError as e:
        if "does not have any image data" in str(e):
            raise RuntimeError("no render yet: render an image first (Render > Render Image, F12)") from None
        raise
    finally:
        for n in names:  # in order: each format allows its own modes and depths
            try:
                setattr(settings, n, saved[n])
            except (TypeError, ValueError, AttributeError):
                pass


def _output_dir(prop: str) -> str:
    """The folder downloaded results go to: ``prop``, or ``//comfyui/`` next to the saved
    .blend file, or Blender's temporary folder for an unsaved one."""
    folder = prop.strip() or "//comfyui/"
    if folder.startswith("//") and not bpy.data.filepath:
        return os.path.join(bpy.app.tempdir, "comfyui")
    return os.path.normpath(bpy.path.abspath(folder))


class BACKENDPOOL_OT_send_render(bpy.types.Operator):
    """Upload the current render to ComfyUI, run an image-to-image prompt on it and load the
    result as an image (progress and Cancel on the panel)"""

    bl_idname = dashboard.SEND_RENDER
    bl_label = "Send Render to ComfyUI"

    text: bpy.props.StringProperty(name="Prompt", default="a watercolor painting")
    steps: bpy.props.IntProperty(name="Steps", default=20, min=1, max=10_000)
    denoise: bpy.props.FloatProperty(name="Denoise", default=0.6, min=0.0, max=1.0)
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0)
    checkpoint: bpy.props.StringProperty(name="Checkpoint", default="v1-5-pruned-emaonly.safetensors")
    workflow: bpy.props.StringProperty(
        name="Workflow",
        description="A workflow saved with ComfyUI's Save (API), whose first LoadImage node gets "
                    "the render; empty: image to image with the fields above",
        subtype="FILE_PATH",
    )
    output_dir: bpy.props.StringProperty(
        name="Output folder",
        description="Where the result is saved; empty: //comfyui/ beside the .blend file "
                    "(Blender's temporary folder while it is unsaved)",
        subtype="DIR_PATH",
    )

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self)

    def draw(self, context):
        col = self.layout.column()
        for name in ("text", "steps", "denoise", "seed", "checkpoint", "workflow", "output_dir"):
            col.prop(self, name)

    def execute(self, context):
        render = None
        try:
            if self.workflow.strip():
                with open(bpy.path.abspath(self.workflow.strip()), encoding="utf-8") as f:
                    graph = json.load(f)
            else:
                graph = comfyui.img2img_graph(self.text, self.steps, self.denoise, self.seed, self.checkpoint)
            comfyui.load_image_node(graph)
            # The render, saved here (bpy, main thread); everything after runs on a worker.
            render = os.path.join(bpy.app.tempdir, f"render-{uuid.uuid4().hex[:8]}.png")
            _render_png(context.scene, render)
            job = runtime.start_render_job(render, graph, _output_dir(self.output_dir))
        except Exception as e:  # noqa: BLE001 - shown to the user
            if render and os.path.exists(render):
                os.remove(render)
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"job {job.id}: sending the render to comfyui")
        _redraw_sidebars()
        return {"FINISHED"}


def _load_output(path: str) -> str:
    """``runtime.load_output``: the downloaded result as a new image (main thread)."""
    image = bpy.data.images.load(path, check_existing=False)
    return image.name


class BACKENDPOOL_OT_cancel_job(bpy.types.Operator):
    """Cancel the job at once; a ComfyUI prompt is also stopped on the server"""

    bl_idname = dashboard.CANCEL
    bl_label = "Cancel Job"
    bl_options = {"INTERNAL"}

    job_id: bpy.props.IntProperty(name="Job")

    def execute(self, context):
        if not runtime.cancel_job(self.job_id):
            return {"CANCELLED"}
        _redraw_sidebars()
        return {"FINISHED"}


def _redraw_sidebars():
    """Tags the 3D View sidebars for redraw (a viewport redraw costs far more than a panel)."""
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                for region in area.regions:
                    if region.type == "UI":
                        region.tag_redraw()


def _redraw_preferences():
    """Tags the Preferences editors for redraw (a "Test connection" result)."""
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()


_ticks = 0
_last_states: list = []
_last_probes: dict = {}


def _tick():
    """Main-thread timer: applies worker results, redraws the dashboard when they changed or
    when a service changed state."""
    global _ticks, _last_states
    changed = runtime.drain() > 0
    _ticks += 1
    if _ticks % REFRESH_TICKS == 0:
        states = [(r["service"], r["state"], r["in_use"], r["last_error"]) for r in runtime.dashboard_rows()]
        changed = changed or states != _last_states
        _last_states = states
    if changed:
        _redraw_sidebars()
    if runtime.probes != _last_probes:
        _last_probes.clear()
        _last_probes.update(runtime.probes)
        _redraw_preferences()
    return TIMER_INTERVAL


CLASSES = (
    BackendPoolPreferences,
    dashboard.BackendPoolServiceView,
    dashboard.BACKENDPOOL_OT_toggle_details,
    BACKENDPOOL_OT_run_requests,
    BACKENDPOOL_OT_queue_prompt,
    BACKENDPOOL_OT_send_render,
    BACKENDPOOL_OT_cancel_job,
    BACKENDPOOL_OT_test_connection,
    dashboard.BACKENDPOOL_PT_dashboard,
)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.WindowManager.backend_pool_services = bpy.props.CollectionProperty(
        type=dashboard.BackendPoolServiceView
    )
    runtime._stop.clear()
    runtime.load_output = _load_output
    runtime.start(_config_from_prefs(_prefs()))
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=TIMER_INTERVAL, persistent=True)


def unregister():
    """Never waits for a backend: every job's token is cancelled before the shutdown."""
    prefs = _prefs()
    deadline = prefs.shutdown_timeout if prefs else 1.0
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    runtime.stop(deadline)
    del bpy.types.WindowManager.backend_pool_services
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
