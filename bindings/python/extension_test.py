"""The Blender >= 4.2 route, as a user takes it: installs the built extension zip with
Blender's own *Install from Disk* operator (``bpy.ops.extensions.package_install_files``),
enables it, points its preferences at a loopback server and runs its operator, then disables
and uninstalls it. Runs in a Python with the ``bpy`` module (Blender 5.0 as a Python module),
in the isolated user folder given by ``BLENDER_USER_RESOURCES``:

    BLENDER_USER_RESOURCES=target/bpy-user target/bpy-venv/bin/python \\
        bindings/python/extension_test.py --zip target/backend_pool_dashboard-0.1.0.zip

Checks: the module comes from the wheel Blender installed for the extension (it is not
importable before); requests go through the add-on's worker threads with the bearer key from
its preferences; the dashboard rows count them; disabling shuts the pool down (no
``backend-pool`` thread left); uninstalling removes the extension. Exits non-zero on any
failure. Blender's timers never run in the ``bpy`` module, so the test drains the add-on's
result queue itself, as its timer would.
"""

from __future__ import annotations

import argparse
import http.server
import importlib
import json
import os
import sys
import threading
import time

import bpy

PKG_ID = "backend_pool_dashboard"
REPO = "user_default"
MODULE = f"bl_ext.{REPO}.{PKG_ID}"
KEY = "sk-extension-test-4c1d"
THREADS, PER_THREAD = 4, 25


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: dict[str, int] = {"authorized": 0, "refused": 0}
    lock = threading.Lock()

    def do_GET(self):  # noqa: N802 - http.server's name
        ok = self.headers.get("Authorization") == f"Bearer {KEY}"
        with self.lock:
            self.seen["authorized" if ok else "refused"] += 1
        body = json.dumps({"ok": ok}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what)


def pool_threads() -> list[str]:
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name.startswith("backend-pool"):
            names.append(name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--zip", required=True)
    args = parser.parse_args()
    zip_path = os.path.abspath(args.zip)

    user = os.environ.get("BLENDER_USER_RESOURCES", "")
    check(user and bpy.utils.user_resource("EXTENSIONS").startswith(user),
          f"isolated user folder: {bpy.utils.user_resource('EXTENSIONS')}")
    try:
        import backend_pool  # noqa: F401
    except ImportError:
        pass
    else:
        raise AssertionError("backend_pool importable before the install: the test would prove nothing")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    result = bpy.ops.extensions.package_install_files(
        filepath=zip_path, repo=REPO, enable_on_install=True
    )
    check(result == {"FINISHED"}, f"package_install_files: {result}")
    prefs = bpy.context.preferences
    check(MODULE in prefs.addons, f"{MODULE} enabled")
    import backend_pool

    site = os.path.join(bpy.utils.user_resource("EXTENSIONS"), ".local")
    check(os.path.abspath(backend_pool.__file__).startswith(site),
          f"backend_pool from the extension's wheel: {backend_pool.__file__}")
    runtime = importlib.import_module(f"{MODULE}.runtime")

    addon_prefs = prefs.addons[MODULE].preferences
    for name in ("comfyui", "wan2gp", "rvc"):
        setattr(addon_prefs, f"{name}_url", "")
    addon_prefs.litellm_key = KEY
    addon_prefs.litellm_url = url  # each change applies the new settings to the pool (apply)
    check(backend_pool.get().services == ["litellm"], f"services: {backend_pool.get().services}")

    result = bpy.ops.backend_pool.run_requests(
        service="litellm", method="GET", path="/health/liveliness",
        threads=THREADS, requests=PER_THREAD,
    )
    check(result == {"FINISHED"}, f"run_requests: {result}")
    job = max(runtime.jobs.values(), key=lambda j: j.id)
    end = time.monotonic() + 30
    while job.running and time.monotonic() < end:
        runtime.drain()  # what the add-on's bpy.app.timers callback does in a window
        time.sleep(0.01)
    check(not job.running, f"job finished: {job.done}/{job.total}")
    check(job.errors == 0 and job.statuses == {200: THREADS * PER_THREAD},
          f"every request answered 200 with the key: {job.statuses}, {job.errors} errors {job.last_error}")
    check(Handler.seen["authorized"] >= THREADS * PER_THREAD and Handler.seen["refused"] == 0,
          f"server saw the bearer key: {Handler.seen}")
    rows = runtime.dashboard_rows()
    check([r["service"] for r in rows] == ["litellm"] and rows[0]["requests"] >= THREADS * PER_THREAD
          and rows[0]["errors"] == 0, f"dashboard: {rows}")

    result = bpy.ops.preferences.addon_disable(module=MODULE)
    check(result == {"FINISHED"} and MODULE not in prefs.addons, f"addon_disable: {result}")
    check(backend_pool.get() is None, "the process-wide manager is shut down")
    end = time.monotonic() + 2
    while pool_threads() and time.monotonic() < end:
        time.sleep(0.01)
    check(not pool_threads(), f"no backend-pool thread left: {pool_threads()}")

    result = bpy.ops.extensions.package_uninstall(repo_index=_repo_index(), pkg_id=PKG_ID)
    check(result == {"FINISHED"}, f"package_uninstall: {result}")
    check(not os.path.exists(os.path.join(bpy.utils.user_resource("EXTENSIONS"), REPO, PKG_ID)),
          "extension folder removed")
    server.shutdown()
    print("extension test passed")


def _repo_index() -> int:
    for i, repo in enumerate(bpy.context.preferences.extensions.repos):
        if repo.module == REPO:
            return i
    raise AssertionError(f"no repository {REPO}")


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)
