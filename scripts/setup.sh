#!/usr/bin/env bash
# Installs what building and testing tramontane needs on a fresh Debian machine.
# Idempotent: a second run only checks. Sections are added as the project grows
# (wasm toolchain, browser, default model).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; exit 1; fi
}

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# Native tests run the WGSL kernels through wgpu's Vulkan backend; without a GPU
# that is Mesa's lavapipe (a Vulkan driver on the CPU).
apt_install mesa-vulkan-drivers

if ! command -v cargo >/dev/null; then
  log "cargo not found: install Rust (https://rustup.rs) and run again"
  exit 1
fi
