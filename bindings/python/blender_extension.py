"""``blender --command extension ARGS`` without a Blender binary: runs the same code (the
``bl_pkg`` core add-on's command-line handler, with Blender's own list of valid tags) from a
Python that has the ``bpy`` module (Blender as a Python module: ``pip install 'bpy==5.0.*'``
in a Python 3.11 venv).

    target/bpy-venv/bin/python bindings/python/blender_extension.py validate SOURCE_DIR_OR_ZIP
    target/bpy-venv/bin/python bindings/python/blender_extension.py build \\
        --source-dir SOURCE_DIR --output-dir OUT_DIR

Exits with the command's status (non-zero when validation or the build fails).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    import bpy

    core = os.path.join(bpy.utils.system_resource("SCRIPTS"), "addons_core")
    if not os.path.isdir(os.path.join(core, "bl_pkg")):
        sys.stderr.write(f"bl_pkg not found under {core}\n")
        return 2
    sys.path.insert(0, core)
    from bl_pkg import bl_extension_cli

    return bl_extension_cli.cli_extension_handler(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
