# shellcheck shell=bash
# Sourced by .ci/windows_wine.sh and bindings/python/wine_test.sh: a Wine prefix that runs
# what Rust builds for x86_64-pc-windows-gnu.
#
#   wine_prefix DIR     # makes DIR anew; exports WINEPREFIX and friends; starts one
#                       # wineserver for the caller's run and stops it when the caller exits
#
# Needs wine64 (Debian 12: 8.0, at $WINE) and x86_64-w64-mingw32-gcc; the caller installs them.
WINE=/usr/lib/wine/wine64
WINESERVER=/usr/lib/wine/wineserver

wine_prefix() {
    export WINEPREFIX=$1 WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
    rm -rf "$WINEPREFIX"
    "$WINE" wineboot --init >/dev/null 2>&1 || true
    "$WINESERVER" -w
    # One server for the whole run: by default it exits 3 s after its last client, and a
    # program starting in that moment loses it ("wine client error: recvmsg"). Its services
    # (winedevice.exe) start now, with no output: started by a test binary, they would hold
    # cargo's output open after the run. Stopped on exit, whatever the outcome.
    trap '"$WINESERVER" -k 2>/dev/null || true' EXIT
    "$WINESERVER" -p </dev/null >/dev/null 2>&1
    "$WINE" wineboot </dev/null >/dev/null 2>&1 || true
    # Rust's standard library (1.78 and later) draws random numbers with ProcessPrng from
    # bcryptprimitives.dll, which every Windows 10 has and Wine 8.0 lacks (every binary fails
    # to start, every extension module to load: "bcryptprimitives.dll not found"). A stand-in
    # DLL with that one function, over RtlGenRandom, goes into the prefix's system32: test
    # support, never shipped.
    local shim
    shim=$(dirname "$WINEPREFIX")/wine-shim
    mkdir -p "$shim"
    cat >"$shim/bcryptprimitives.c" <<'EOF'
#include <windows.h>
#include <ntsecapi.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG n = len > 0x10000 ? 0x10000 : (ULONG)len;
        if (!RtlGenRandom(data, n)) return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
EOF
    x86_64-w64-mingw32-gcc -O2 -shared -s -o "$shim/bcryptprimitives.dll" "$shim/bcryptprimitives.c" -ladvapi32
    cp "$shim/bcryptprimitives.dll" "$WINEPREFIX/drive_c/windows/system32/"
}
