#!/usr/bin/env bash
# `npm run build`: the npm package in pkg/ (ES module + .wasm + TypeScript types).
#   1. the wasm crate for wasm32-unknown-unknown: a rustup toolchain that has the
#      target if there is one, else Debian's rustc-web rebuilding std (-Zbuild-std);
#   2. wasm-bindgen (the CLI version equal to the crate's, installed under target/);
#   3. wasm-opt -Os where binaryen is installed;
#   4. the hand-written JS API (crates/tramontane-web/js) and package.json.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1mbuild:\033[0m %s\n' "$*" >&2; }

TARGET=wasm32-unknown-unknown
export CARGO_TARGET_DIR="$PWD/target/wasm"
if rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  log "cargo build ($TARGET, rustup toolchain)"
  cargo build --locked --profile wasm-release --target "$TARGET" -p tramontane-web
elif [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src/rust ]; then
  log "cargo build ($TARGET, Debian rustc-web with -Zbuild-std; the first build takes minutes)"
  # rustc links wasm with `rust-lld -flavor wasm`; Debian ships lld without that
  # name, so give it one under target/ (any lld binary is multi-flavor).
  if ! command -v rust-lld >/dev/null; then
    lld=$(ls /usr/lib/llvm-*/bin/lld 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$lld" ] || lld=$(command -v lld || true)
    if [ -z "$lld" ]; then log "no lld found: install lld (scripts/setup.sh does)"; exit 1; fi
    mkdir -p target/tools/lld && ln -sf "$lld" target/tools/lld/rust-lld
    export PATH="$PWD/target/tools/lld:$PATH"
  fi
  RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc /usr/bin/cargo build --locked --profile wasm-release --target "$TARGET" \
    -Zbuild-std=std,panic_abort -p tramontane-web
else
  log "no wasm32 toolchain: run scripts/setup.sh (it installs Debian's rustc-web) or 'rustup target add $TARGET'"
  exit 1
fi
WASM="$CARGO_TARGET_DIR/$TARGET/wasm-release/tramontane_web.wasm"

BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/"/,"",$3); print $3; exit}' Cargo.lock)
BINDGEN="$PWD/target/tools/bin/wasm-bindgen"
if ! [ -x "$BINDGEN" ] || [ "$("$BINDGEN" --version | awk '{print $2}')" != "$BINDGEN_VERSION" ]; then
  # --debug: unoptimized, it compiles in 80 s on 2 cores (the optimized build
  # took most of the ~4.5 minutes between CI's wasm compile and wasm-opt) and
  # still processes our module in ~3 s.
  log "installing wasm-bindgen-cli $BINDGEN_VERSION into target/tools (about a minute and a half)"
  cargo install --quiet --debug --root target/tools wasm-bindgen-cli --version "$BINDGEN_VERSION"
fi

rm -rf pkg && mkdir -p pkg/wasm
"$BINDGEN" --target web --remove-name-section --remove-producers-section --out-dir pkg/wasm --out-name tramontane_web "$WASM"
# wasm-opt must understand reference types as wasm-bindgen emits them (binaryen
# 116+; Debian 12's is 108 and breaks the module): the npm package's, else a
# recent system one, else none.
OPT=""
for c in node_modules/.bin/wasm-opt "$(command -v wasm-opt || true)"; do
  if [ -n "$c" ] && [ -x "$c" ] && [ "$("$c" --version | grep -o '[0-9]\+' | head -n 1)" -ge 116 ]; then OPT=$c; break; fi
done
if [ -n "$OPT" ]; then
  log "wasm-opt -Os ($("$OPT" --version))"
  "$OPT" -Os --enable-reference-types --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-multivalue pkg/wasm/tramontane_web_bg.wasm -o pkg/wasm/tramontane_web_bg.wasm.opt
  mv pkg/wasm/tramontane_web_bg.wasm.opt pkg/wasm/tramontane_web_bg.wasm
else
  log "no binaryen 116+ wasm-opt found: the .wasm is not size-optimized"
fi
cp crates/tramontane-web/js/*.js crates/tramontane-web/js/*.d.ts crates/tramontane-web/README.md pkg/
VERSION=$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)
cat > pkg/package.json <<JSON
{
  "name": "tramontane",
  "version": "$VERSION",
  "description": "Mistral-family language models (Llama, Mistral, Mixtral MoE, Qwen2, SmolLM) in the browser on WebGPU",
  "type": "module",
  "main": "./index.js",
  "module": "./index.js",
  "types": "./index.d.ts",
  "exports": {
    ".": { "types": "./index.d.ts", "import": "./index.js" },
    "./worker.js": "./worker.js",
    "./wasm/*": "./wasm/*",
    "./package.json": "./package.json"
  },
  "files": ["*.js", "index.d.ts", "wasm/", "README.md"],
  "sideEffects": false,
  "license": "MIT OR Apache-2.0",
  "keywords": ["llm", "webgpu", "wasm", "mistral", "mixtral", "llama", "gguf", "safetensors"]
}
JSON
SIZE=$(stat -c %s pkg/wasm/tramontane_web_bg.wasm)
log "pkg/ ready: tramontane_web_bg.wasm is $SIZE bytes ($(( SIZE / 1024 )) KiB)"
