#!/usr/bin/env bash
# README's `npm start`: set up (toolchain, default model), build the npm package
# if the sources changed, and serve the demo chat on 127.0.0.1 until stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
WASM=pkg/wasm/tramontane_web_bg.wasm
if [ ! -f "$WASM" ] || [ -n "$(find crates shaders Cargo.lock package-lock.json -newer "$WASM" -type f 2>/dev/null | head -n 1)" ]; then
  echo "building the npm package (first time: several minutes)" >&2
  bash scripts/build-wasm.sh
fi
exec node scripts/serve-demo.mjs
