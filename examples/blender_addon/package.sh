#!/usr/bin/env bash
# Builds the Blender >= 4.2 extension zip(s) from this folder and the wheel(s), without
# changing the source tree: a copy of the add-on goes to
# target/blender-extension/backend_pool_dashboard/ with the wheel(s) in its wheels/, and
# Blender's `extension build` (which validates first) runs on that copy.
#
#   bash bindings/python/build_wheels.sh   # every platform: wheels and zips in target/dist/
#
# Two ways to call it:
# - WHEEL_DIR=/dir: every wheel blender_manifest.toml lists, from /dir; one zip per platform
#   (`--split-platforms`), backend_pool_dashboard-<version>-<platform>.zip, each holding its
#   platform's wheel only. What build_wheels.sh does.
# - WHEEL=/path/to/wheel, or neither (the newest target/wheels/backend_pool-*-abi3-*.whl, what
#   `maturin build --release -m bindings/python/Cargo.toml` makes): that one wheel, with the
#   manifest's `wheels` and `platforms` set to it (its platform tag follows the machine that
#   built it); one zip, backend_pool_dashboard-<version>.zip.
# OUT=/dir: where the zips go (default: target/).
#
# Blender: `blender` on PATH (4.2 or newer), or BPY_PYTHON=/path/to/python, a Python with the
# `bpy` module (see bindings/python/blender_extension.py).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${OUT:-$root/target}
stage=$root/target/blender-extension/backend_pool_dashboard
manifest=$here/blender_manifest.toml

# The wheels the manifest lists, in its order.
listed=$(sed -n 's#^ *"\./wheels/\(backend_pool-[^"]*\.whl\)",\{0,1\}$#\1#p' "$manifest")
if [ -n "${WHEEL_DIR:-}" ]; then
    [ -n "$listed" ] || { echo "blender_manifest.toml lists no wheels" >&2; exit 1; }
    wheels=()
    for name in $listed; do
        [ -f "$WHEEL_DIR/$name" ] || {
            echo "$WHEEL_DIR/$name missing: blender_manifest.toml lists it (build_wheels.sh builds it)" >&2
            exit 1
        }
        wheels+=("$WHEEL_DIR/$name")
    done
    split=(--split-platforms)
else
    wheel=${WHEEL:-$(ls -t "$root"/target/wheels/backend_pool-*-abi3-*.whl 2>/dev/null | head -1 || true)}
    if [ -z "$wheel" ] || [ ! -f "$wheel" ]; then
        echo "no wheel: run 'maturin build --release -m bindings/python/Cargo.toml' first (or set WHEEL or WHEEL_DIR)" >&2
        exit 1
    fi
    wheels=("$wheel")
    split=()
fi

# The staged copy: the add-on's files, without wheels, unpacked wheels or caches.
rm -rf "$stage"
mkdir -p "$stage/wheels"
(cd "$here" && find . -type f \
    ! -path './wheels/*' ! -path './_vendor/*' ! -path '*/__pycache__/*' \
    ! -name package.sh ! -name .gitignore -print0 |
    xargs -0 -I{} cp --parents {} "$stage/")
cp "${wheels[@]}" "$stage/wheels/"
if [ ${#split[@]} -eq 0 ]; then
    # One wheel: the manifest's `wheels` list becomes that wheel, `platforms` its platform.
    name=$(basename "$wheel")
    case "${name%.whl}" in
        *-manylinux*_x86_64 | *-linux_x86_64) platform=linux-x64 ;;
        *-win_amd64) platform=windows-x64 ;;
        *-macosx_*_arm64) platform=macos-arm64 ;;
        *-macosx_*_x86_64) platform=macos-x64 ;;
        *) echo "$name: no Blender platform for its tag" >&2; exit 1 ;;
    esac
    sed -i -e "s#^platforms = .*#platforms = [\"$platform\"]#" \
        -e '/^wheels = \[/,/^\]/{/^wheels = \[/!{/^\]/!d}}' \
        -e "s#^wheels = \[#wheels = [\n  \"./wheels/$name\",#" "$stage/blender_manifest.toml"
    grep -q "\"./wheels/$name\"" "$stage/blender_manifest.toml" || {
        echo "blender_manifest.toml: no wheels entry to point at $name" >&2
        exit 1
    }
fi
echo "staged: $stage (wheels: $(cd "$stage/wheels" && echo *))"

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
mkdir -p "$out"
extension build --source-dir "$stage" --output-dir "$out" "${split[@]}"
