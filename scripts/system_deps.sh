#!/usr/bin/env bash
# The Debian packages the browser, sandbox and TUI checks use (chromium, bubblewrap, tmux)
# and the C compiler the engine's CPU kernels are built with (gcc, libc6-dev: optional for
# users, the engine falls back to torch without them; CI tests the kernels), installed when missing, if this runs as root on a machine with apt-get; otherwise it only
# says what is missing. Shared by .ci/run and scripts/quickstart.sh.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
[ -e /usr/include/stdint.h ] || need+=(libc6-dev)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "system_deps: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
    echo "system_deps: missing ${need[*]} (install them with your package manager, e.g. sudo apt-get install ${need[*]})" >&2
fi
