#!/usr/bin/env bash
# Copies the built wheel next to the add-on and, when Blender >= 4.2 is on PATH, builds the
# extension zip. Run `maturin build --release -m bindings/python/Cargo.toml` first.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
wheel=$(ls "$root"/target/wheels/backend_pool-*-cp311-abi3-*.whl | head -1)
mkdir -p "$here/wheels"
rm -f "$here"/wheels/*.whl
cp "$wheel" "$here/wheels/"
name=$(basename "$wheel")
sed -i "s#\"./wheels/backend_pool-[^\"]*\.whl\"#\"./wheels/$name\"#" "$here/blender_manifest.toml"
echo "wheel: wheels/$name"
# `blender --command` exists from 4.2 (older versions would take it for a file and open a window).
version=$(blender --version 2>/dev/null | sed -n 's/^Blender \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -1)
if [ -n "$version" ] && { read -r major minor <<<"$version"; [ "$major" -gt 4 ] || { [ "$major" -eq 4 ] && [ "$minor" -ge 2 ]; }; }; then
    blender --command extension build --source-dir "$here" --output-dir "$root/target"
else
    echo "Blender >= 4.2 not found: extension zip not built (the folder works as a legacy add-on)"
fi
