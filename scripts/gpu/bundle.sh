#!/usr/bin/env bash
# Assemble, on a machine with network, what the GPU host check brings to a host without one:
#   wheels/axolotl   the wheels Axolotl 0.19 needs beyond the host's torch stack (wheels-axolotl.txt),
#                    slimmed by slim_wheels.py to fit a 64 MiB transfer
#   wheels/hatrain   hatrain's own dependencies the host lacks (wheels-hatrain.txt)
#   sshd.tar.xz      this machine's OpenSSH server (Debian 12) and the libraries it links, but glibc's
#   tokenizers/      a tokenizer per seed config (make_gemma.py), learned from its data
#   data/            the two home-llm datasets, xz-compressed
# Usage: scripts/gpu/bundle.sh OUT_DIR SAMPLE.jsonl SAMPLE-FUNCTIONGEMMA.jsonl
#   The JSONL files are home-llm's generator output (docs/gpu.md says how they were made).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
GEMMA3_DATA=$2
FUNCTIONGEMMA_DATA=$3
PY=${AXOLOTL_PYTHON:-$HOME/.cache/hatrain/axolotl-venv/bin/python}   # has tokenizers, transformers
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

download() {  # DEST LIST
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_26_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$1" \
    $(grep -v '^axolotl_contribs' "$2" | sed 's/_/-/g')
}
mkdir -p "$TMP/axolotl" "$OUT/wheels/hatrain"
download "$TMP/axolotl" "$HERE/wheels-axolotl.txt"
# The two axolotl-contribs packages come only as source: build their (pure Python) wheels.
python3 -m pip download -q --no-deps --no-binary=:all: -d "$TMP/sdist" \
  $(grep '^axolotl_contribs' "$HERE/wheels-axolotl.txt" | sed 's/_/-/g')
python3 -m pip wheel -q --no-deps -w "$TMP/axolotl" "$TMP"/sdist/*
python3 "$HERE/slim_wheels.py" "$TMP/axolotl" "$OUT/wheels/axolotl"
download "$OUT/wheels/hatrain" "$HERE/wheels-hatrain.txt"

mkdir -p "$TMP/sshd/lib"
cp /usr/sbin/sshd "$TMP/sshd/sshd"
ldd /usr/sbin/sshd | awk '/=> \// {print $3}' \
  | grep -v -E '/(libc|libm|libdl|libpthread|libresolv|librt|ld-linux[^/]*)\.so' \
  | xargs -I{} cp -L {} "$TMP/sshd/lib/"
tar -C "$TMP" -cf - sshd | xz -T0 -9 > "$OUT/sshd.tar.xz"

mkdir -p "$OUT/data"
xz -T0 -9 -c "$GEMMA3_DATA" > "$OUT/data/home-llm-sample.jsonl.xz"
xz -T0 -9 -c "$FUNCTIONGEMMA_DATA" > "$OUT/data/home-llm-sample-functiongemma.jsonl.xz"
"$PY" "$HERE/make_gemma.py" tokenizer "$REPO/configs/home-llm/gemma3-270m.yml" "$GEMMA3_DATA" \
  "$OUT/tokenizers/gemma3"
"$PY" "$HERE/make_gemma.py" tokenizer "$REPO/configs/home-llm/functiongemma-270m.yml" \
  "$FUNCTIONGEMMA_DATA" "$OUT/tokenizers/functiongemma"
du -sh "$OUT"/*
