#!/usr/bin/env bash
# Every check and figure a real GPU gives, in one run, from prebuilt release binaries:
#   BIN/gemma-wgpu, BIN/kernels (tests/kernels), BIN/model (tests/model), BIN/bench-kernels
#   (benches/kernels.rs), as `scripts/gpu-check.sh --stage BIN` copies them after
#   `cargo test --release --no-run` and `cargo bench --no-run`.
# Run: scripts/gpu-check.sh [BIN [OUT]]: logs go to OUT (default ./gpu-check-out), a table last.
# The tests look for their fixtures under the path they were built in: when the tree lies
# elsewhere, that path is linked to it first.
set -uo pipefail

if [ "${1:-}" = "--stage" ]; then
    bin="${2:-.gpu}"
    mkdir -p "$bin"
    # Executable paths by target, as cargo reports them.
    executables() {
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["kind"][0], m["target"]["name"], m["executable"])'
    }
    cargo build --release --quiet
    cargo test --release --no-run --message-format=json 2>/dev/null | executables >"$bin/.tests"
    cargo bench --no-run --message-format=json 2>/dev/null | executables >"$bin/.benches"
    cp target/release/gemma-wgpu "$bin/gemma-wgpu"
    cp "$(awk '$1 == "test" && $2 == "kernels" {print $3}' "$bin/.tests")" "$bin/kernels"
    cp "$(awk '$1 == "test" && $2 == "model" {print $3}' "$bin/.tests")" "$bin/model"
    cp "$(awk '$1 == "bench" && $2 == "kernels" {print $3}' "$bin/.benches")" "$bin/bench-kernels"
    rm -f "$bin/.tests" "$bin/.benches"
    strip "$bin"/* 2>/dev/null || true
    pwd >"$bin/built-in"
    du -sh "$bin"
    exit 0
fi

bin="${1:-.gpu}"
out="${2:-./gpu-check-out}"
mkdir -p "$out"
built_in="$(cat "$bin/built-in" 2>/dev/null || true)"
if [ -n "$built_in" ] && [ ! -e "$built_in" ]; then
    mkdir -p "$(dirname "$built_in")" && ln -s "$(pwd)" "$built_in"
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
table=()
row() { table+=("$1"); }
step() { # name, timeout, command...: runs it, logs to OUT/name.log, records pass/fail and time
    local name="$1" limit="$2"
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    row "| $name | $([ $rc = 0 ] && echo ok || echo "FAILED ($rc)") | $((SECONDS - t0)) s |"
    return $rc
}

"$bin/gemma-wgpu" devices | tee "$out/devices.log"
step kernel-tests 100 env GEMMA_WGPU_TEST_BACKENDS=vulkan,vulkan-fallback "$bin/kernels" --test-threads 4
step model-tests 90 "$bin/model" --skip real --test-threads 4
step kernel-bench 80 env GEMMA_WGPU_BACKEND=vulkan "$bin/bench-kernels" --bench
for m in gemma2-2b gemma2-9b gemma2-27b; do
    for d in q4_0 q8_0; do
        step "bench-$m-$d" 50 "$bin/gemma-wgpu" --backend vulkan bench --synthetic "$m" --dtype "$d" \
            -p "${PP:-512}" -n "${TG:-128}" -r 2 --profile
    done
done
# The default step on GPUs (512 tokens) against llama-bench's -ub 64 equivalent.
step bench-gemma2-2b-q4_0-chunk64 30 "$bin/gemma-wgpu" --backend vulkan bench --synthetic gemma2-2b \
    --dtype q4_0 -p "${PP:-512}" -n 0 -r 2 --chunk 64
# The quantized products with f32 activations, beside the default int8 ones above.
step kernel-bench-f32-activations 40 env GEMMA_WGPU_BACKEND=vulkan GEMMA_WGPU_ACTIVATIONS=f32 \
    GEMMA_WGPU_BENCH_FILTER=mat "$bin/bench-kernels" --bench
for d in q4_0 q8_0; do
    step "bench-gemma2-2b-$d-f32-activations" 30 "$bin/gemma-wgpu" --backend vulkan --activations f32 \
        bench --synthetic gemma2-2b --dtype "$d" -p "${PP:-512}" -n "${TG:-128}" -r 2
done
step kernel-tests-gl 40 env GEMMA_WGPU_TEST_BACKENDS=gl "$bin/kernels" --test-threads 4

echo
echo "## kernel tests"; grep -E "^test result|FAILED|panicked" "$out/kernel-tests.log" | head -20
echo "## kernel tests on GL"; grep -E "^test result|FAILED|panicked" "$out/kernel-tests-gl.log" | head -5
grep -A8 -m1 "panicked" "$out/kernel-tests-gl.log" | cut -c1-400
echo "## model tests"; grep -E "^test result|FAILED|panicked" "$out/model-tests.log" | head -20
echo "## kernel bench"; grep -E "^adapter|^activations|^copy|^timer|^\| (matvec|matmul|attention|copy)" "$out/kernel-bench.log"
echo "## kernel bench, f32 activations"; grep -E "^activations|^\| mat(vec|mul)" "$out/kernel-bench-f32-activations.log"
echo "## whole model (synthetic weights)"
for f in "$out"/bench-*.log; do
    grep -E "^\| .*(pp|tg)[0-9]+ \|" "$f"
    grep -E "^(prefill|decode) profile|^dispatches per step" "$f"
    grep -E "^\| (matvec|matmul|attention|top_k|rms_norm)[^|]* \| [0-9]+ \|" "$f" | head -10
done
echo "## steps"
printf '%s\n' "${table[@]}"
