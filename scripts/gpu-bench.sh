#!/usr/bin/env bash
# tramontane against llama.cpp on a machine with a GPU, side by side in one run:
# prefill / decode tokens per second and GPU memory on SmolLM2-135M-Instruct
# (Q4_1) and Qwen2.5-Coder-0.5B-Instruct (a ~0.5 GB GGUF), plus the decode rate
# as weight bandwidth (weight bytes x tokens/s), the figure a decode step is
# bound by on a GPU.
#
#   scripts/gpu-bench.sh [--prompt-tokens 512] [--gen-tokens 128] [--repetitions 3]
#                        [--models smollm2,qwen2.5-coder-0.5b] [--backends auto|cuda,vulkan,cpu]
#                        [--peak-gbps GB/s] [--json FILE]
#
# It builds the release CLI (cargo) and llama.cpp's `llama-bench` from the
# llama.cpp tree vendored in the PyPI llama-cpp-python 0.3.36 sdist, once per
# backend, into target/gpu-bench/ (kept: a second run only measures):
#   cuda    where nvcc is found (CMAKE_CUDA_ARCHITECTURES=native),
#   vulkan  where glslc and the Vulkan headers are installed (Debian: glslc
#           libvulkan-dev spirv-headers; headers older than 1.3.261 lack
#           VK_EXT_layer_settings, so its validation-layer setup is dropped),
#   cpu     only when asked (--backends cpu): a reference on GPU-less machines.
# `auto` (the default) is every GPU backend that can be built here. Models come
# from PyPI through scripts/fetch-model.sh. With 16 cores it takes a few minutes
# (the CUDA build is the longest part); LLAMA_CPP_DIR=path uses a llama.cpp
# tree of your own instead of the sdist's. --peak-gbps is the GPU's memory
# bandwidth (e.g. 4800 for an H200, 1008 for an RTX 4090): with it the table
# shows decode as a share of that roofline. The table goes to stdout, progress
# to stderr; --json also writes every figure to FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/gpu-bench
JOBS=${JOBS:-$(nproc)}

log() { printf '\033[1mgpu-bench:\033[0m %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

P=512 G=128 R=3 MODELS=smollm2,qwen2.5-coder-0.5b BACKENDS=auto PEAK= JSON_OUT=
while [ $# -gt 0 ]; do
  case "$1" in
    --prompt-tokens) P=$2; shift 2 ;;
    --gen-tokens) G=$2; shift 2 ;;
    --repetitions) R=$2; shift 2 ;;
    --models) MODELS=$2; shift 2 ;;
    --backends) BACKENDS=$2; shift 2 ;;
    --peak-gbps) PEAK=$2; shift 2 ;;
    --json) JSON_OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (--help lists them)" ;;
  esac
done
mkdir -p "$OUT"

have_nvcc() { command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; }
have_vulkan_sdk() { command -v glslc >/dev/null && [ -f /usr/include/vulkan/vulkan_core.h ]; }
if [ "$BACKENDS" = auto ]; then
  BACKENDS=
  have_nvcc && BACKENDS=cuda
  have_vulkan_sdk && BACKENDS=${BACKENDS:+$BACKENDS,}vulkan
  [ -n "$BACKENDS" ] || log "no GPU backend of llama.cpp can be built here (no nvcc, no glslc + Vulkan headers): measuring tramontane alone"
fi

# 1. Models.
models=()
for m in ${MODELS//,/ }; do
  models+=("$(bash scripts/fetch-model.sh "$m")")
done

# 2. tramontane.
log "building the tramontane CLI (release)"
cargo build --release --locked -p tramontane-cli >&2

# 3. llama.cpp's llama-bench, one build per backend.
llama_src() {
  if [ -n "${LLAMA_CPP_DIR:-}" ]; then echo "$LLAMA_CPP_DIR"; return; fi
  local src=$OUT/llama_cpp_python-0.3.36
  if [ ! -d "$src/vendor/llama.cpp" ]; then
    log "fetching the llama-cpp-python 0.3.36 sdist (llama.cpp's sources, 76 MB)"
    [ -x "$OUT/venv/bin/pip" ] || { python3 -m venv "$OUT/venv" && "$OUT/venv/bin/pip" install -q scikit-build-core cmake >&2; }
    "$OUT/venv/bin/pip" download --no-deps --no-binary llama-cpp-python --no-build-isolation \
      --progress-bar on -d "$OUT" llama-cpp-python==0.3.36 >&2
    tar xzf "$OUT/llama_cpp_python-0.3.36.tar.gz" -C "$OUT"
  fi
  echo "$src/vendor/llama.cpp"
}
cmake_bin() { command -v cmake || echo "$OUT/venv/bin/cmake"; }

build_llama() {  # backend -> path of llama-bench
  local backend=$1 src build flags=()
  src=$(llama_src)
  build=$src/build-tramontane-$backend
  case "$backend" in
    cuda) PATH=$PATH:/usr/local/cuda/bin; flags=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=native) ;;
    vulkan)
      flags=(-DGGML_VULKAN=ON)
      if ! grep -q VK_EXT_layer_settings /usr/include/vulkan/vulkan_core.h; then
        python3 - "$src/ggml/src/ggml-vulkan/ggml-vulkan.cpp" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
a = '    VkBool32 enable_best_practice = layer_settings;'
b = '    vk::InstanceCreateInfo instance_create_info(vk::InstanceCreateFlags{}, &app_info, layers, extensions, &layer_setting_info);'
if a in s and b in s:
    i, j = s.index(a), s.index(b) + len(b)
    s = s[:i] + '    vk::InstanceCreateInfo instance_create_info(vk::InstanceCreateFlags{}, &app_info, layers, extensions);' + s[j:]
    open(p, 'w').write(s)
PY
      fi ;;
    cpu) flags=(-DGGML_NATIVE=ON) ;;
    *) die "unknown backend $backend (cuda, vulkan, cpu)" ;;
  esac
  if [ ! -x "$build/bin/llama-bench" ]; then
    log "building llama.cpp's llama-bench with the $backend backend ($JOBS jobs; cmake shows progress)"
    "$(cmake_bin)" -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_SERVER=OFF "${flags[@]}" >&2
    "$(cmake_bin)" --build "$build" --target llama-bench -j "$JOBS" >&2
  fi
  echo "$build/bin/llama-bench"
}

# Peak GPU memory (MiB, above what was in use before) while a command runs,
# where nvidia-smi can tell; written to $OUT/peak-mib.
with_peak_memory() {
  rm -f "$OUT/peak-mib"
  if ! command -v nvidia-smi >/dev/null; then "$@"; return; fi
  local base; base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0)
  ( peak=$base; while :; do
      u=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0) || break
      [ "$u" -gt "$peak" ] && peak=$u && echo $((peak - base)) > "$OUT/peak-mib"
      sleep 0.1
    done ) & local sampler=$!
  local rc=0; "$@" || rc=$?
  kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
  return $rc
}
peak_mib() { cat "$OUT/peak-mib" 2>/dev/null || echo null; }

results=$OUT/results.jsonl
: > "$results"
for backend in ${BACKENDS//,/ }; do
  declare "bench_$backend=$(build_llama "$backend")"
done
for model in "${models[@]}"; do
  log "tramontane on $model (prompt $P, generate $G, $R repetitions)"
  with_peak_memory target/release/tramontane bench --model "$model" --prompt-tokens "$P" --gen-tokens "$G" \
    --repetitions "$R" --json > "$OUT/tramontane.json"
  python3 - "$OUT/tramontane.json" "$(peak_mib)" >> "$results" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
a = j["adapter"]
print(json.dumps({"model": j["model"], "engine": "tramontane", "device": f'{a["name"]} ({a["backend"]})',
                  "prefill": j["prefill_tokens_per_s"], "decode": j["decode_tokens_per_s"],
                  "weight_bytes": j["weight_bytes"], "gpu_bytes": j["gpu_bytes"],
                  "smi_peak_mib": None if sys.argv[2] == "null" else int(sys.argv[2])}))
PY
  for backend in ${BACKENDS//,/ }; do
    bin_var="bench_$backend"
    log "llama.cpp ($backend) on $model"
    # The CPU backend runs unrepacked: its repacked (AMX) layouts fault where a
    # sandbox does not grant the process tile state.
    extra=(-ngl 99); [ "$backend" = cpu ] && extra=(-ngl 0 --repack 0)
    with_peak_memory "${!bin_var}" -m "$model" -p "$P" -n "$G" -r "$R" "${extra[@]}" -o json > "$OUT/llama.json"
    python3 - "$OUT/llama.json" "$model" "$backend" "$(peak_mib)" >> "$results" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))
pre = next(r for r in runs if r["n_prompt"] > 0 and r["n_gen"] == 0)
dec = next(r for r in runs if r["n_gen"] > 0 and r["n_prompt"] == 0)
print(json.dumps({"model": sys.argv[2], "engine": f"llama.cpp {sys.argv[3]}",
                  "device": pre.get("gpu_info") or pre.get("cpu_info") or "",
                  "prefill": pre["avg_ts"], "decode": dec["avg_ts"],
                  "weight_bytes": pre.get("model_size"), "gpu_bytes": None,
                  "smi_peak_mib": None if sys.argv[4] == "null" else int(sys.argv[4])}))
PY
  done
done

python3 - "$results" "$P" "$G" "$R" "$PEAK" "$JSON_OUT" <<'PY'
import json, os, sys
path, p, g, r, peak, json_out = sys.argv[1:7]
rows = [json.loads(l) for l in open(path) if l.strip()]
peak = float(peak) if peak else None
print(f"prompt {p} tokens, {g} generated, {r} repetitions (llama-bench: mean; tramontane: median)\n")
head = "| model | engine | device | prefill tok/s | decode tok/s | decode GB/s of weights |"
head += " % of peak |" if peak else ""
head += " GPU memory MB (own / nvidia-smi peak) |"
print(head)
print("|" + " --- |" * (head.count("|") - 1))
for x in rows:
    gbs = (x["weight_bytes"] or 0) * x["decode"] / 1e9
    x["decode_weight_gbps"] = gbs
    own = f'{x["gpu_bytes"] / 1e6:.0f}' if x["gpu_bytes"] else "-"
    smi = f'{x["smi_peak_mib"] * 1.048576:.0f}' if x["smi_peak_mib"] is not None else "-"
    line = f'| {os.path.basename(x["model"])} | {x["engine"]} | {x["device"]} | {x["prefill"]:.1f} | {x["decode"]:.1f} | {gbs:.1f} |'
    if peak:
        x["roofline_share"] = gbs / peak
        line += f" {100 * gbs / peak:.0f}% |"
    print(line + f" {own} / {smi} |")
if json_out:
    json.dump(rows, open(json_out, "w"), indent=1)
PY
