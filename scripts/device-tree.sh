#!/usr/bin/env bash
# The GPU machines lent to this project's sessions take a working tree of at
# most 64 MiB (tracked files, untracked files git does not ignore, carried
# paths); the test fixtures and fuzz corpora are ~93 MiB of it and
# scripts/gpu-bench.sh needs none of them.
#   scripts/device-tree.sh slim     untracks them (the files stay on disk) and
#                                   ignores them locally (.git/info/exclude)
#   scripts/device-tree.sh restore  tracks them again
# Commit nothing between the two: the index says they are deleted.
set -euo pipefail
cd "$(dirname "$0")/.."
PATHS=(tests/fixtures crates/tramontane/fuzz/corpus)
EXCLUDE=.git/info/exclude
case "${1:-}" in
  slim)
    git rm -r -q --cached "${PATHS[@]}"
    for p in "${PATHS[@]}"; do grep -qxF "/$p/" "$EXCLUDE" 2>/dev/null || echo "/$p/" >> "$EXCLUDE"; done
    echo "slim: $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1) bytes tracked; run scripts/device-tree.sh restore afterwards" >&2 ;;
  restore)
    for p in "${PATHS[@]}"; do sed -i "\\#^/$p/\$#d" "$EXCLUDE"; done
    git reset -q -- "${PATHS[@]}"
    git status --short -- "${PATHS[@]}" | head -n 3 >&2 ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
