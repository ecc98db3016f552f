#!/usr/bin/env bash
# Packs what scripts/gpu-bench.sh needs on a machine with a GPU that reaches no
# network, into one folder (default target/gpu-carry, under 64 MiB) to copy
# there beside the repository:
#   tramontane          the release CLI, built and stripped here (x86-64 Linux)
#   llama.cpp.tar.xz    llama.cpp's sources from the PyPI llama-cpp-python 0.3.36
#                       sdist, without its models, docs and examples
#   wheels/             the gguf package (pure Python; the shape models need it
#                       with numpy, which such machines have)
#   debs/               the Vulkan loader (libvulkan1), for wgpu where the
#                       machine has the NVIDIA driver's ICD but no loader
# There:  bash scripts/gpu-bench.sh --offline target/gpu-carry [--peak-gbps GB/s]
#
#   scripts/gpu-bench-pack.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-target/gpu-carry}
log() { printf '\033[1mgpu-bench-pack:\033[0m %s\n' "$*" >&2; }
mkdir -p "$DIR/wheels" "$DIR/debs"

log "building the tramontane CLI (release; cargo shows progress)"
cargo build --release --locked -p tramontane-cli
strip -o "$DIR/tramontane" target/release/tramontane

src=$(bash scripts/peers/llama-cpp-src.sh)
log "packing llama.cpp's sources (xz)"
tar cJf "$DIR/llama.cpp.tar.xz" -C "$src" \
  --exclude=./models --exclude=./docs --exclude=./examples --exclude=./media --exclude=./gguf-py \
  --exclude=./tools/server/public --exclude=./tools/server/webui --exclude=./tests --exclude=./.github .

log "fetching the gguf wheel"
python3 -m pip download --no-deps --only-binary=:all: --progress-bar on -d "$DIR/wheels" gguf==0.19.0 >&2

log "fetching the Vulkan loader (Debian's libvulkan1)"
(cd "$DIR/debs" && apt-get download libvulkan1 >&2)

du -sh "$DIR" >&2
total=$(du -sb "$DIR" | cut -f1)
[ "$total" -lt $((64 << 20)) ] || log "warning: $DIR is $total bytes, over the 64 MiB a device call carries"
echo "$DIR"
