#!/usr/bin/env bash
# Prints the path of llama.cpp's sources as vendored in the PyPI
# llama-cpp-python 0.3.36 sdist, fetched once into target/gpu-bench/ (pip
# shows its progress on stderr). pip reads an sdist's metadata with its build
# backend, so the fetch uses a venv that has it (and CMake, which the builds
# of scripts/gpu-bench.sh use where the machine has none).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=target/gpu-bench
src=$OUT/llama_cpp_python-0.3.36
if [ ! -d "$src/vendor/llama.cpp" ]; then
  printf '\033[1mllama-cpp-src:\033[0m %s\n' "fetching the llama-cpp-python 0.3.36 sdist (llama.cpp's sources, 76 MB)" >&2
  mkdir -p "$OUT"
  [ -x "$OUT/venv/bin/pip" ] || { python3 -m venv "$OUT/venv" && "$OUT/venv/bin/pip" install -q scikit-build-core cmake >&2; }
  "$OUT/venv/bin/pip" download --no-deps --no-binary llama-cpp-python --no-build-isolation \
    --progress-bar on -d "$OUT" llama-cpp-python==0.3.36 >&2
  tar xzf "$OUT/llama_cpp_python-0.3.36.tar.gz" -C "$OUT"
fi
echo "$PWD/$src/vendor/llama.cpp"
