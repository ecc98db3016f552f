#!/usr/bin/env bash
# The whole test suite (README's `npm test`): set-up, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# wgpu warns when XDG_RUNTIME_DIR is unset (harmless); give it a private one.
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  export XDG_RUNTIME_DIR="$PWD/target/xdg"; mkdir -p "$XDG_RUNTIME_DIR"; chmod 700 "$XDG_RUNTIME_DIR"
fi
# The npm package builds alongside the native and server tests: they leave
# about a third of two cores idle (GPU waits on lavapipe), and the wasm build
# (its own target dir) is mostly one long single-threaded link.
mkdir -p target
echo "== npm package: building in the background (wasm32, wasm-bindgen, wasm-opt; log: target/wasm-build.log)"
bash scripts/build-wasm.sh > target/wasm-build.log 2>&1 &
WASM_BUILD=$!
trap 'kill "$WASM_BUILD" 2>/dev/null || true' EXIT
echo "== native: kernels, models, bad input (cargo test, wgpu on Vulkan)"
cargo test --locked
echo "== server: tramontane serve with the official openai Python client"
target/pyenv/bin/python -m unittest discover -s tests/serve -v
echo "== npm package: waiting for its build"
if ! wait "$WASM_BUILD"; then
  cat target/wasm-build.log
  echo "the npm package's build failed (above)" >&2
  exit 1
fi
tail -n 2 target/wasm-build.log
echo "== browser: the npm package in headless Chromium (WebGPU)"
# Chromium's WebGPU on SwiftShader has no shader-f16, so the f16 KV cache check
# is expected to print SKIPPED here; allow that skip for the browser step only
# (the native tests above, on lavapipe, have shader-f16 and skip nothing).
TRAMONTANE_ALLOW_SKIP=1 node --test --test-reporter=spec --test-concurrency=1 tests/browser/
