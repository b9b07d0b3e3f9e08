#!/usr/bin/env bash
# Rounds of llama.cpp's llama-bench and `gemma-wgpu bench` on the same file and machine, one
# right after the other, each round's ratios (ours / llama.cpp's tokens per second, per test)
# from `bench --compare`, then a table of every round and the median ratio per test.
# Single timings on a shared machine move a lot between minutes; compare within a round.
#
# Usage: scripts/side-by-side.sh MODEL.gguf [ROUNDS] (default 3). Environment:
#   LLAMA_BENCH  llama-bench to run (default: the one on PATH)
#   LLAMA_ARGS   its arguments beside the tests (default: -t 2 -dev none, its CPU backend)
#   TESTS        the tests, in both tools' syntax (default: -p 64,512 -n 32 -r 3)
#   GEMMA_WGPU   our binary (default: target/release/gemma-wgpu)
#   GEMMA_ARGS   our global options (default: --backend vulkan)
#   OUT          where the logs go (default: a new temporary directory)
set -euo pipefail

model="${1:?usage: scripts/side-by-side.sh MODEL.gguf [ROUNDS]}"
rounds="${2:-3}"
llama="${LLAMA_BENCH:-llama-bench}"
read -r -a llama_args <<<"${LLAMA_ARGS:--t 2 -dev none}"
read -r -a tests <<<"${TESTS:--p 64,512 -n 32 -r 3}"
ours="${GEMMA_WGPU:-target/release/gemma-wgpu}"
read -r -a ours_args <<<"${GEMMA_ARGS:---backend vulkan}"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
[ -f "$model" ] || { echo "side-by-side: no file $model" >&2; exit 1; }
command -v "$llama" >/dev/null || { echo "side-by-side: no $llama (set LLAMA_BENCH)" >&2; exit 1; }
[ -x "$ours" ] || { echo "side-by-side: no $ours (cargo build --release, or set GEMMA_WGPU)" >&2; exit 1; }

for r in $(seq 1 "$rounds"); do
    "$llama" -m "$model" "${llama_args[@]}" "${tests[@]}" -o jsonl >"$out/llama-$r.jsonl" 2>"$out/llama-$r.log"
    "$ours" "${ours_args[@]}" bench -m "$model" "${tests[@]}" --compare "llama.cpp=$out/llama-$r.jsonl" \
        >"$out/ours-$r.log" 2>&1
    # `bench: pp512: 135.37 t/s is 0.277 × llama.cpp (488.15 t/s)`
    grep -E '^bench: [a-z]+[0-9]+: .* is [0-9.]+ ×' "$out/ours-$r.log" | sed "s/^bench:/round $r:/" \
        | tee -a "$out/ratios.txt"
done

echo
echo "| test | ratio per round | median | ours t/s | llama.cpp t/s |"
echo "|---|---|---|---|---|"
awk '{
    test = $3; sub(":", "", test)
    for (i = 1; i <= NF; i++) if ($i == "is") ratio = $(i + 1)
    n[test]++; r[test, n[test]] = ratio; o[test] = o[test] " " $4
    l = $(NF - 1); sub(/^\(/, "", l); llama[test] = llama[test] " " l
    if (!(test in seen)) { seen[test] = 1; order[++k] = test }
}
END {
    for (t = 1; t <= k; t++) {
        test = order[t]; m = n[test]
        for (i = 1; i <= m; i++) v[i] = r[test, i] + 0
        for (i = 2; i <= m; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { x = v[j]; v[j] = v[j - 1]; v[j - 1] = x }
        median = (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
        list = ""
        for (i = 1; i <= m; i++) list = list (i > 1 ? ", " : "") r[test, i]
        printf "| %s | %s | %.3f |%s |%s |\n", test, list, median, o[test], llama[test]
    }
}' "$out/ratios.txt"
echo "logs: $out"
