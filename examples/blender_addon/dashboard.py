"""The dashboard: 3D View > Sidebar > Backends.

One line per service (its state icon, its name, a state word); hovering the line shows the
last error, clicking it opens a details box with the pool figures and the last error in
full. Below, each job: a progress bar and a Cancel button while it runs, how it ended after
(a render sent to ComfyUI: its upload's bytes, the running node's steps, its download's
bytes).
Everything is sized to fit the sidebar's default width (220 px at 1x before Blender 4.x,
wider after): texts that could run long (errors) are wrapped to the measured width.

Works from Blender 3.4: ``layout.progress`` (Blender >= 4.0) is feature-detected, with a
text bar before.
"""

from __future__ import annotations

import blf
import bpy

from . import runtime

TOGGLE = "backend_pool.toggle_details"
CANCEL = "backend_pool.cancel_job"
QUEUE_PROMPT = "backend_pool.queue_prompt"
SEND_RENDER = "backend_pool.send_render"
RUN_REQUESTS = "backend_pool.run_requests"

# state -> (icon, word). "unused": nothing has touched the service yet (no probe, no call).
STATES = {
    "healthy": ("CHECKMARK", "healthy"),
    "degraded": ("ERROR", "degraded"),
    "unhealthy": ("CANCEL", "unhealthy"),
    "unused": ("RADIOBUT_OFF", "not used"),
}
JOB_ICONS = {
    "running": "SORTTIME",
    "cancelling": "SORTTIME",
    "done": "CHECKMARK",
    "cancelled": "X",
    "interrupted": "X",
    "failed": "ERROR",
}
BAR_CELLS = 10  # the text progress bar before Blender 4.0
MAX_ERROR_LINES = 4


# --- measuring text: the same font and size Blender draws labels with ------------------------


def _scale() -> float:
    return bpy.context.preferences.system.ui_scale


def unit() -> int:
    """``U.widget_unit``: one UI unit in pixels (20 at 1x)."""
    system = bpy.context.preferences.system
    return round(18 * system.ui_scale) + 2 * round(system.pixel_size)


def text_width(text: str) -> float:
    style = bpy.context.preferences.ui_styles[0]
    blf.size(0, style.widget.points * _scale())
    return blf.dimensions(0, text)[0]


def content_width(region_width: int) -> float:
    """The width a panel's layout gets in a sidebar ``region_width`` px wide: minus the
    category tabs (1 unit), the panel's margins (0.4 unit each side) and the layout's
    inset (8 px each side at 1x)."""
    u = unit()
    return region_width - u - 2 * round(0.4 * u) - 2 * round(8 * _scale())


def label_need(text: str, icon: bool = False) -> float:
    """What a label needs not to be clipped (Blender's ``ui_text_pad_none``: text + 0.25
    unit, + 1.5 unit with an icon)."""
    u = unit()
    return text_width(text) + u * (0.25 + (1.5 if icon else 0.0))


def wrap(text: str, width: float, max_lines: int = MAX_ERROR_LINES) -> list[str]:
    """``text`` as labels no wider than ``width`` px (words kept whole unless one is wider
    than a line); past ``max_lines`` the last line ends with an ellipsis."""
    pad = label_need("")
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if text_width(candidate) + pad <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while len(word) > 1 and text_width(word) + pad > width:  # wider than a line (a URL): cut
            cut = len(word) - 1
            while cut > 1 and text_width(word[:cut]) + pad > width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while len(last) > 1 and text_width(last + "…") + pad > width:
            last = last[:-1]
        lines[-1] = last + "…"
    return lines


# --- formatting ---------------------------------------------------------------------------


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "–"
    if ms < 10:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.1f} s"


def fmt_rate(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.0f} %"


def fmt_bytes(done: int, total: int = 0) -> str:
    """``done`` of ``total`` bytes (0: unknown) in the unit of the larger, one decimal below
    10 units: "0.4/3.1 kB", "12/512 MB" (the text bar of Blender 3.x has room for little)."""
    larger = max(done, total)
    for unit, size in (("B", 1), ("kB", 1e3), ("MB", 1e6), ("GB", 1e9)):
        if larger / size < 999.5:  # at most 3 digits
            break
    digits = 1 if size > 1 and larger / size < 10 else 0
    text = f"{done / size:.{digits}f}"
    if total:
        text += f"/{total / size:.{digits}f}"
    return f"{text} {unit}"


# A render's phases as its title line says them (short: the sidebar is narrow).
PHASE_WORDS = {"uploading": "upload", "downloading": "download"}


def bar_text(job) -> str:
    if job.kind == "render" and job.phase in PHASE_WORDS:
        return fmt_bytes(job.done, job.total) if job.done or job.total else "starting"
    if job.kind in ("comfyui", "render") and not job.total:
        return "starting" if not job.node else job.node
    return f"{job.done}/{job.total}"


def running_text(job) -> str:
    """What a running job's title line says at its right: the node ComfyUI runs; for a
    render, "upload" or "download" while it sends the render or fetches the result."""
    if job.kind == "render" and job.phase in PHASE_WORDS:
        return PHASE_WORDS[job.phase]
    return job.node


def text_bar(fraction: float, text: str) -> str:
    filled = round(fraction * BAR_CELLS)
    return "█" * filled + "░" * (BAR_CELLS - filled) + " " + text


# --- UI state: which details boxes are open -------------------------------------------------


class BackendPoolServiceView(bpy.types.PropertyGroup):
    """The panel's state for one service (``name``: the service). On the window manager: not
    saved in .blend files."""

    show_details: bpy.props.BoolProperty(name="Show details", default=False)


def _view(context, service: str):
    views = getattr(context.window_manager, "backend_pool_services", None)
    return views.get(service) if views is not None else None


def _tooltip(service: str) -> str:
    row = next((r for r in runtime.dashboard_rows() if r["service"] == service), None)
    if row is None:
        return service
    word = STATES.get(row["state"], ("", row["state"]))[1]
    text = f"{service}: {word}"
    if row["consecutive_failures"]:
        text += f", {row['consecutive_failures']} failures in a row"
    if row["last_error"]:
        text += f".\nLast error: {row['last_error']}"
    return text + ".\nClick for the pool figures"


class BACKENDPOOL_OT_toggle_details(bpy.types.Operator):
    """Show or hide the service's pool figures and last error"""

    bl_idname = TOGGLE
    bl_label = "Service Details"
    bl_options = {"INTERNAL"}

    service: bpy.props.StringProperty(name="Service")

    @classmethod
    def description(cls, context, properties):
        return _tooltip(properties.service)

    def execute(self, context):
        views = context.window_manager.backend_pool_services
        view = views.get(self.service)
        if view is None:
            view = views.add()
            view.name = self.service
        view.show_details = not view.show_details
        if context.area is not None:
            context.area.tag_redraw()
        return {"FINISHED"}


# --- the panel ------------------------------------------------------------------------------


class BACKENDPOOL_PT_dashboard(bpy.types.Panel):
    bl_label = "Backend Pool"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Backends"

    def draw(self, context):
        layout = self.layout
        width = content_width(context.region.width if context.region else 220)
        rows = runtime.dashboard_rows()
        if not rows:
            layout.label(text="Not running", icon="ERROR")
        col = layout.column(align=True)
        for r in rows:
            draw_service(context, col, r, width)
        jobs = runtime.visible_jobs()
        if jobs:
            layout.separator()
            col = layout.column(align=True)
            for i, job in enumerate(jobs):
                if i:
                    col.separator()
                draw_job(col, job, width)
        layout.separator()
        col = layout.column(align=True)
        if any(r["service"] == "comfyui" for r in rows):
            col.operator(QUEUE_PROMPT)
            col.operator(SEND_RENDER)
        col.operator(RUN_REQUESTS)


def split_line(layout, text: str, icon: str, right: str, width: float, icon_width: float = 0.0):
    """A row with ``text`` (and ``icon``) on the left and ``right`` at the right edge, when
    both fit in ``width`` px; else ``right`` is left out (the caller says it elsewhere)."""
    row = layout.row(align=True)
    left = row.row(align=True)
    left.alignment = "LEFT"
    room = width - icon_width - label_need(text, icon != "NONE")
    return row, left, (right if right and label_need(right) <= room else "")


def draw_service(context, layout, r, width):
    """One line (disclosure, state icon, name, state word); the details box when open."""
    name = r["service"]
    icon, word = STATES.get(r["state"], ("QUESTION", r["state"]))
    view = _view(context, name)
    open_ = bool(view and view.show_details)
    row, left, word = split_line(layout, name, icon, word, width, icon_width=unit())
    left.operator(TOGGLE, text="", icon="TRIA_DOWN" if open_ else "TRIA_RIGHT", emboss=False).service = name
    left.operator(TOGGLE, text=name, icon=icon, emboss=False).service = name
    if word:  # else the icon and the tooltip say it
        right = row.row(align=True)
        right.alignment = "RIGHT"
        right.label(text=word)
    if not open_:
        return
    box = layout.box()
    col = box.column(align=True)
    inner = width - 2 * round(6 * _scale())  # the box's padding and border
    pairs = [
        ("in use / idle", f"{r['in_use']} / {r['idle']}"),
        ("reuse", fmt_rate(r["reuse_rate"])),
        ("p99 acquire", fmt_ms(r["p99_acquire_ms"])),
        ("errors", str(r["errors"])),
    ]
    if r["cancelled"]:
        pairs.append(("cancelled", str(r["cancelled"])))
    for key, value in pairs:
        split = col.split(factor=0.55, align=True)
        split.label(text=key)
        split.label(text=value)
    if r["last_error"]:
        col.label(text="last error:")
        for line in wrap(r["last_error"], inner):
            col.label(text=line)


def draw_job(layout, job, width):
    """A title line (how it ended, once it has); while running, a progress bar and Cancel;
    after, what went wrong, if anything."""
    title = f"{job.service} #{job.id}"
    icon = JOB_ICONS.get(job.state, "QUESTION")
    # Running: the node ComfyUI runs (a render's phase), when it fits. Ended: how.
    right = running_text(job) if job.running else job.state
    row, left, shown = split_line(layout, title, icon, right, width)
    left.label(text=title, icon=icon)
    if shown:
        sub = row.row(align=True)
        sub.alignment = "RIGHT"
        sub.label(text=shown)
    if job.running:
        row = layout.row(align=True)
        text = "cancelling" if job.state == "cancelling" else bar_text(job)
        if hasattr(row, "progress"):  # Blender >= 4.0
            row.progress(factor=job.fraction, type="BAR", text=text)
        else:
            row.label(text=text_bar(job.fraction, text))
        row.operator(CANCEL, text="", icon="X").job_id = job.id
        return
    detail = job.note or (job.last_error if job.state != "done" else "")
    if job.kind == "requests" and job.errors:
        detail = f"{job.errors} of {job.done} failed: {job.last_error}"
    if not shown:
        detail = f"{job.state}: {detail}" if detail else job.state
    for line in wrap(detail, width) if detail else ():
        layout.label(text=line)
