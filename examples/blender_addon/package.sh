#!/usr/bin/env bash
# Builds the Blender >= 4.2 extension zip, target/backend_pool_dashboard-<version>.zip, from
# this folder and the wheel, without changing the source tree: a copy of the add-on goes to
# target/blender-extension/backend_pool_dashboard/ with the wheel in its wheels/ and the
# manifest's `wheels` entry set to the wheel's real file name (its platform tag depends on the
# machine that built it); Blender's `extension build` (which validates first) runs on that copy.
#
#   maturin build --release -m bindings/python/Cargo.toml   # first: target/wheels/*.whl
#   bash examples/blender_addon/package.sh
#
# Blender: `blender` on PATH (4.2 or newer), or BPY_PYTHON=/path/to/python, a Python with the
# `bpy` module (see bindings/python/blender_extension.py). WHEEL=/path/to/wheel picks the wheel
# (default: the newest target/wheels/backend_pool-*-cp311-abi3-*.whl).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/target
stage=$out/blender-extension/backend_pool_dashboard

wheel=${WHEEL:-$(ls -t "$root"/target/wheels/backend_pool-*-cp311-abi3-*.whl 2>/dev/null | head -1 || true)}
if [ -z "$wheel" ] || [ ! -f "$wheel" ]; then
    echo "no wheel: run 'maturin build --release -m bindings/python/Cargo.toml' first (or set WHEEL)" >&2
    exit 1
fi
name=$(basename "$wheel")

# The staged copy: the add-on's files, without wheels, unpacked wheels or caches.
rm -rf "$stage"
mkdir -p "$stage/wheels"
(cd "$here" && find . -type f \
    ! -path './wheels/*' ! -path './_vendor/*' ! -path '*/__pycache__/*' \
    ! -name package.sh ! -name .gitignore -print0 |
    xargs -0 -I{} cp --parents {} "$stage/")
cp "$wheel" "$stage/wheels/"
sed -i "s#\"./wheels/backend_pool-[^\"]*\.whl\"#\"./wheels/$name\"#" "$stage/blender_manifest.toml"
grep -q "\"./wheels/$name\"" "$stage/blender_manifest.toml" || {
    echo "blender_manifest.toml: no wheels entry to point at $name" >&2
    exit 1
}
echo "staged: $stage (wheel: wheels/$name)"

if [ -n "${BPY_PYTHON:-}" ]; then
    extension() { "$BPY_PYTHON" "$root/bindings/python/blender_extension.py" "$@"; }
else
    # `blender --command` exists from 4.2 (older versions take it for a file and open a window).
    version=$(blender --version 2>/dev/null | sed -n 's/^Blender \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -1 || true)
    read -r major minor <<<"${version:-0 0}"
    if [ "$major" -lt 4 ] || { [ "$major" -eq 4 ] && [ "$minor" -lt 2 ]; }; then
        echo "Blender >= 4.2 not found (blender on PATH, or BPY_PYTHON): no zip built" >&2
        exit 1
    fi
    extension() { blender --command extension "$@"; }
fi
extension build --source-dir "$stage" --output-dir "$out"
