#!/usr/bin/env bash
# README's `npm start`: set up, build, and chat with the embedded default model.
# (The browser demo page replaces this terminal chat when it lands: issue 5.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "building the native CLI (cargo build --release; a few minutes the first time)" >&2
cargo build --release --locked -p tramontane-cli
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  export XDG_RUNTIME_DIR="$PWD/target/xdg"; mkdir -p "$XDG_RUNTIME_DIR"; chmod 700 "$XDG_RUNTIME_DIR"
fi
exec ./target/release/tramontane chat --model models/SmolLM2-135M-Instruct.Q4_1.gguf "$@"
