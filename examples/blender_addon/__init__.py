"""Backend Pool Dashboard: an example add-on for the ``backend_pool`` module.

* ``register()`` starts the process-wide pool manager from the preferences (service URLs);
  ``unregister()`` stops the workers and shuts it down within a deadline.
* The operator ``backend_pool.run_requests`` sends requests from worker threads; results come
  back to the main thread through a ``queue.Queue`` drained by a ``bpy.app.timers`` callback.
* The panel (3D View > Sidebar > Backends) shows per-service health, in use / idle, reuse rate,
  p99 acquisition time and errors.

Blender >= 4.2 installs it as an extension (``blender_manifest.toml`` lists the wheel); older
Blender as a legacy add-on folder (``bl_info`` below).
"""

from __future__ import annotations

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

from . import runtime  # noqa: E402

ADDON_ID = __package__ or __name__
TIMER_INTERVAL = 0.1  # seconds between queue drains
DEFAULT_URLS = {
    "comfyui": "http://127.0.0.1:8188",
    "litellm": "http://127.0.0.1:4000",
    "wan2gp": "http://127.0.0.1:7860",
    "rvc": "http://127.0.0.1:5050",
}
SERVICES = tuple(DEFAULT_URLS)


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


def _restart(self, context):
    """Preference update: restart the manager with the new URLs."""
    runtime.restart(_config_from_prefs(self), self.shutdown_timeout)


class BackendPoolPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    comfyui_url: bpy.props.StringProperty(name="ComfyUI", default=DEFAULT_URLS["comfyui"], update=_restart)
    litellm_url: bpy.props.StringProperty(name="LiteLLM", default=DEFAULT_URLS["litellm"], update=_restart)
    wan2gp_url: bpy.props.StringProperty(name="Wan2GP", default=DEFAULT_URLS["wan2gp"], update=_restart)
    rvc_url: bpy.props.StringProperty(name="RVC", default=DEFAULT_URLS["rvc"], update=_restart)
    litellm_key: bpy.props.StringProperty(name="LiteLLM key", subtype="PASSWORD", update=_restart)
    config_file: bpy.props.StringProperty(
        name="Config file",
        description="A backend-pool TOML/JSON file; replaces the URLs above when set",
        subtype="FILE_PATH",
        update=_restart,
    )
    shutdown_timeout: bpy.props.FloatProperty(
        name="Shutdown deadline (s)", default=1.0, min=0.05, max=30.0
    )

    def draw(self, context):
        col = self.layout.column()
        col.label(text="Service URLs (empty: not used)")
        for name in SERVICES:
            col.prop(self, f"{name}_url")
        col.prop(self, "litellm_key")
        col.prop(self, "config_file")
        col.prop(self, "shutdown_timeout")


class BACKENDPOOL_OT_run_requests(bpy.types.Operator):
    """Send requests to a backend from worker threads"""

    bl_idname = "backend_pool.run_requests"
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


class BACKENDPOOL_PT_dashboard(bpy.types.Panel):
    bl_label = "Backend Pool"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Backends"

    def draw(self, context):
        layout = self.layout
        rows = runtime.dashboard_rows()
        if not rows:
            layout.label(text="Not running", icon="ERROR")
        icons = {"healthy": "CHECKMARK", "degraded": "ERROR", "unhealthy": "CANCEL"}
        for r in rows:
            box = layout.box()
            box.label(text=f"{r['service']}: {r['health']}", icon=icons.get(r["health"], "QUESTION"))
            col = box.column(align=True)
            col.label(text=f"in use {r['in_use']} / idle {r['idle']}")
            col.label(text=f"reuse {r['reuse_rate'] * 100:.0f} %   p99 acquire {r['p99_acquire_ms']:.2f} ms")
            col.label(text=f"errors {r['errors']}")
            if r["last_error"]:
                col.label(text=r["last_error"][:60])
        for job in list(runtime.jobs.values())[-3:]:
            state = "running" if job.running else "done"
            layout.label(text=f"job {job.id} {job.service}: {job.done}/{job.total} {state}, {job.errors} errors")
        layout.operator(BACKENDPOOL_OT_run_requests.bl_idname)


def _tick():
    """Main-thread timer: apply worker results, redraw the dashboard (the sidebar only: a
    viewport redraw costs far more than the panel)."""
    if runtime.drain():
        for window in getattr(bpy.context.window_manager, "windows", []):
            for area in window.screen.areas:
                if area.type == "VIEW_3D":
                    for region in area.regions:
                        if region.type == "UI":
                            region.tag_redraw()
    return TIMER_INTERVAL


CLASSES = (BackendPoolPreferences, BACKENDPOOL_OT_run_requests, BACKENDPOOL_PT_dashboard)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    runtime._stop.clear()
    runtime.start(_config_from_prefs(_prefs()))
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=TIMER_INTERVAL, persistent=True)


def unregister():
    prefs = _prefs()
    deadline = prefs.shutdown_timeout if prefs else 1.0
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    runtime.stop(deadline)
    runtime.drain()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
