#!/usr/bin/env bash
# tests/gpu/check.sh - the one-call GPU check, run ON THE GPU MACHINE from the repository root
# with $OUT set, after tests/gpu/prepare.sh staged the binaries in .gpu-carry/ (see
# docs/gpu_check.md). At most ~8 minutes; every step has a time limit inside that budget.
#
#   1. nvidia-smi, and whether every staged binary loads here (ldd); tensor_sm90_ws's barriers
#      alone (test_mbarrier_cuda, 20 s) and its small case (30 s): a hang stops the check there
#   2. every GPU test binary (.gpu-carry/bin/test_*), full doctest output; the attention
#      test's soak case draws random problems for 30 s
#   3. the reference transformer demo, anllm_demo --device gpu: PASS only if its exactness line
#      says "rounding level"
#   4. the GPU benchmarks, short (--benchmark_min_time), JSON kept
#   5. tests/gpu/torch_compare.py: FlexAttention with our BlockMask and SDPA dense causal,
#      same inputs, same warm device
#   6. compute-sanitizer memcheck and racecheck on each "sanitizer: ..." case (the attention
#      kernels, and the in-place compaction)
# and prints a summary table last. Files under $OUT: summary.txt, logs.tar.gz.
# A step is PASS only if it ran and passed; no device, no tool or no torch is SKIP or
# MISSING, never PASS. Exit status: 0 all passed, 1 something failed, 2 nothing failed but
# something did not run.
set -uo pipefail
root=$(pwd)
carry=$root/.gpu-carry
OUT=${OUT:-/tmp/ansan-gpu-check}
logs=$OUT/logs
mkdir -p "$logs"
summary=$OUT/summary.txt
budget_s=${CHECK_BUDGET_S:-450}  # leave headroom under the 8-minute limit for tar and transfer
start=$(date +%s)
# Our binaries find libbenchmark/libcudart in .gpu-carry/lib; python (torch) keeps its own.
with_libs=(env "LD_LIBRARY_PATH=$carry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")

rows=()
fails=0
not_run=0
record() {  # step status seconds note
  rows+=("$(printf '%-44s %-8s %7s  %s' "$1" "$2" "$3" "$4")")
  case $2 in
    PASS) ;;
    FAIL | TIMEOUT) fails=$((fails + 1)) ;;
    *) not_run=$((not_run + 1)) ;;
  esac
}
left() { echo $((budget_s - ($(date +%s) - start))); }
# run_step NAME LIMIT LOG CMD...: runs CMD under `timeout`, output to LOG; sets $rc and $took.
run_step() {
  local name=$1 limit=$2 log=$3
  shift 3
  local remaining
  remaining=$(left)
  if ((remaining < 10)); then
    rc=-1
    took=0
    echo "not run: the ${budget_s}s budget is spent" >"$log"
    return
  fi
  ((limit > remaining)) && limit=$remaining
  local t0
  t0=$(date +%s.%N)
  echo "\$ $*" >"$log"
  timeout --kill-after=5 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  echo "[check.sh] $name: exit $rc after ${took}s (limit ${limit}s)" >>"$log"
}
doctest_note() {  # the doctest summary line of a log
  grep -a '\[doctest\] test cases:' "$1" | tail -n 1 | sed 's/\[doctest\] //; s/  */ /g'
}

# Figures, then the table last; the exit status.
finish() {
  {
    echo
    for bench in "$logs"/bench_*.log; do
      [[ -e $bench ]] || continue
      echo "== $(basename "$bench" .log) (Google Benchmark console output)"
      grep -a -E '^(prefill|decode|copy|[A-Za-z_]+/)' "$bench" | head -n 60
    done
    if [[ -e $logs/torch_compare.log ]]; then
      echo "== torch_compare"
      grep -a -E '^(shape|n=|check|torch)' "$logs/torch_compare.log" | head -n 40
    fi
    echo
    printf '%-44s %-8s %7s  %s\n' step status seconds note
    printf '%s\n' "${rows[@]}"
    if ((fails > 0)); then
      echo "RESULT: FAILED ($fails failing steps, $not_run not run)"
    elif ((not_run > 0)); then
      echo "RESULT: NOT VERIFIED ($not_run steps did not run: skipped or missing; nothing failed)"
    else
      echo "RESULT: ALL PASSED"
    fi
    echo "elapsed: $(($(date +%s) - start))s"
  } >>"$summary"
  tar -C "$OUT" -czf "$OUT/logs.tar.gz" logs && rm -rf "$logs"
  cat "$summary"
  if ((fails > 0)); then exit 1; elif ((not_run > 0)); then exit 2; fi
  exit 0
}

echo "ansan GPU check: $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$summary"
if [[ ! -d $carry/bin ]]; then
  echo "check.sh: $carry/bin is missing: run tests/gpu/prepare.sh first and carry .gpu-carry" | tee -a "$summary"
  exit 1
fi
cat "$carry/BUILD" >>"$summary" 2>/dev/null

# 1. the device
device=yes
if command -v nvidia-smi >/dev/null; then
  run_step nvidia-smi 30 "$logs/nvidia-smi.log" nvidia-smi
  if ((rc == 0)); then
    gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)
    record nvidia-smi PASS "$took" "$gpu"
  else
    device=no
    record nvidia-smi SKIP "$took" "nvidia-smi failed (exit $rc): no usable GPU"
  fi
else
  device=no
  record nvidia-smi SKIP 0 "nvidia-smi not found: no GPU on this machine"
fi

# Every staged binary must load on this machine's image (missing library, too old a glibc):
# otherwise every step below fails for one reason, named here.
for binary in "$carry"/bin/*; do
  missing=$("${with_libs[@]}" ldd "$binary" 2>&1 | grep -a -E 'not found|version .* not found' | sort -u | tr -s ' \t' ' ')
  [[ -n $missing ]] && record "loads: $(basename "$binary")" FAIL 0 "$missing"
done

# tensor_sm90_ws had not run on a GPU when this was written, and a barrier phase that never
# completes would hang it: its barriers alone (test_mbarrier_cuda), then its small case, go
# first, under short limits, so that a hang costs seconds and stops the check, instead of taking
# every step after it to their time limits; the first says whether the primitives or the kernel
# around them hang.
# preflight NAME LIMIT LOG HANG CMD...: a PASS or FAIL row; on a timeout, HANG and the end.
preflight() {
  local name=$1 limit=$2 log=$3 hang=$4
  shift 4
  if [[ $device == no ]]; then
    record "$name" SKIP 0 "no GPU"
    return
  fi
  run_step "$name" "$limit" "$log" "$@"
  case $rc in
    0) record "$name" PASS "$took" "$(doctest_note "$log")" ;;
    124 | 137)
      record "$name" TIMEOUT "$took" "$hang: the check stops here (logs/$(basename "$log"))"
      finish
      ;;
    *) record "$name" FAIL "$took" "exit $rc; $(doctest_note "$log") (logs/$(basename "$log"))" ;;
  esac
}
ring_test=$carry/bin/test_mbarrier_cuda
attention_test=$carry/bin/test_attention_cuda
[[ -x $ring_test ]] && preflight "preflight: mbarrier ring" 20 "$logs/preflight-ring.log" \
  "the barrier primitives hang" "${with_libs[@]}" "$ring_test"
[[ -x $attention_test ]] && preflight "preflight: tensor_sm90_ws" 30 "$logs/preflight-ws.log" \
  "tensor_sm90_ws hangs" "${with_libs[@]}" "$attention_test" "--test-case=sanitizer: tensor_sm90_ws"

# 2. every GPU test binary
for test in "$carry"/bin/test_*; do
  name=$(basename "$test")
  # ANSAN_SOAK_SECONDS: the attention test's soak case draws random problems for 30 s.
  run_step "$name" 180 "$logs/$name.log" "${with_libs[@]}" ANSAN_SOAK_SECONDS=30 "$test" --duration=true
  note=$(doctest_note "$logs/$name.log")
  [[ $device == no && $rc == 0 ]] && rc=77  # nothing ran on a GPU: never a PASS
  case $rc in
    0) record "$name" PASS "$took" "$note" ;;
    77) record "$name" SKIP "$took" "binary reports no CUDA device" ;;
    124 | 137) record "$name" TIMEOUT "$took" "killed at the time limit; $note" ;;
    -1) record "$name" NOT-RUN 0 "time budget spent" ;;
    *) record "$name" FAIL "$took" "exit $rc; $note (logs/$name.log)" ;;
  esac
done

# 3. the reference transformer demo: attention and KV caches on the GPU, exactness of (b) vs (c)
name="anllm_demo --device gpu"
demo=$carry/bin/anllm_demo
if [[ ! -x $demo ]]; then
  record "$name" MISSING 0 "anllm_demo was not staged"
else
  run_step "$name" 60 "$logs/anllm_demo.log" "${with_libs[@]}" "$demo" --device gpu --tokens 64
  exactness=$(grep -a 'exactness:' "$logs/anllm_demo.log" | tail -n 1 | sed 's/^ *exactness: //')
  if [[ $device == no ]]; then
    record "$name" SKIP "$took" "no GPU ($(grep -a -m 1 'anllm_demo:' "$logs/anllm_demo.log" | cut -c1-60))"
  else
    case $rc in
      0) if [[ $exactness == *"rounding level"* ]] && grep -a -q '^device: gpu' "$logs/anllm_demo.log"; then
        record "$name" PASS "$took" "$exactness"; else
        record "$name" FAIL "$took" "exit 0 but no gpu rounding-level exactness line (logs/anllm_demo.log)"; fi ;;
      124 | 137) record "$name" TIMEOUT "$took" "killed at the time limit" ;;
      -1) record "$name" NOT-RUN 0 "time budget spent" ;;
      *) record "$name" FAIL "$took" "exit $rc; ${exactness:-no exactness line} (logs/anllm_demo.log)" ;;
    esac
  fi
fi

# 4. GPU benchmarks (short)
for bench in "$carry"/bin/bench_*; do
  name=$(basename "$bench")
  run_step "$name" 150 "$logs/$name.log" "${with_libs[@]}" "$bench" --benchmark_min_time=0.05 \
    --benchmark_out="$logs/$name.json" --benchmark_out_format=json
  skipped=$(grep -a -c 'no CUDA device' "$logs/$name.log")
  [[ $device == no ]] && skipped=$((skipped + 1))  # nothing ran on a GPU: never a PASS
  case $rc in
    0) if ((skipped > 0)); then record "$name" SKIP "$took" "cases skipped: no CUDA device"; else
      record "$name" PASS "$took" "figures in logs/$name.log"; fi ;;
    124 | 137) record "$name" TIMEOUT "$took" "killed at the time limit" ;;
    -1) record "$name" NOT-RUN 0 "time budget spent" ;;
    *) record "$name" FAIL "$took" "exit $rc (logs/$name.log)" ;;
  esac
done

# 5. PyTorch: FlexAttention with our BlockMask, SDPA dense causal
name=torch_compare
if ! timeout 120 python3 -c 'import torch' >/dev/null 2>&1; then
  record "$name" MISSING 0 "python3 cannot import torch"
elif [[ $device == no ]]; then
  record "$name" SKIP 0 "no GPU"
else
  # The script starts no new shape after --budget-s; keep a shape's worth (compile, dump,
  # timings: up to a minute at n = 65536) under the step's limit, so it ends by itself.
  torch_limit=$(left)
  ((torch_limit > 200)) && torch_limit=200
  run_step "$name" 200 "$logs/torch_compare.log" python3 "$root/tests/gpu/torch_compare.py" \
    --bench "$carry/bin/bench_attention_cuda" --work "${TMPDIR:-/tmp}/ansan-torch" \
    --budget-s $((torch_limit > 80 ? torch_limit - 60 : 20))
  case $rc in
    0) record "$name" PASS "$took" "matches FlexAttention; timings below" ;;
    3) record "$name" MISSING "$took" "torch, FlexAttention or its CUDA device unavailable (logs/torch_compare.log)" ;;
    124 | 137) record "$name" TIMEOUT "$took" "killed at the time limit" ;;
    -1) record "$name" NOT-RUN 0 "time budget spent" ;;
    *) record "$name" FAIL "$took" "exit $rc (logs/torch_compare.log)" ;;
  esac
fi

# 6. compute-sanitizer on the small deterministic case of each attention kernel and of the
#    in-place compaction; last, because racecheck is slow and the figures above must not wait
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
sanitizer_refused=no  # compute-sanitizer refuses some sandboxed GPUs (gVisor): not a kernel failure
for tool in memcheck racecheck; do
  for kernel in simt tensor tensor_sm90 tensor_sm90_ws decode compaction; do
    name="sanitizer $tool: $kernel"
    test_binary=$attention_test
    test_case="sanitizer: $kernel"
    if [[ $kernel == compaction ]]; then
      test_binary=$carry/bin/test_compaction_cuda
      test_case="sanitizer: compaction in place"
    fi
    if [[ $device == no ]]; then
      record "$name" SKIP 0 "no GPU"
      continue
    elif [[ $sanitizer_refused == yes ]]; then
      record "$name" MISSING 0 "compute-sanitizer does not support this device"
      continue
    elif [[ -z $sanitizer ]]; then
      record "$name" MISSING 0 "compute-sanitizer not found"
      continue
    elif [[ ! -x $test_binary ]]; then
      record "$name" MISSING 0 "$(basename "$test_binary") was not staged"
      continue
    fi
    log="$logs/sanitizer-$tool-$kernel.log"
    run_step "$name" 75 "$log" "${with_libs[@]}" "$sanitizer" --tool "$tool" --error-exitcode 99 --print-limit 50 \
      "$test_binary" "--test-case=$test_case"
    hazards=$(grep -a -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tail -n 1)
    if ((rc != 0)) && grep -a -q -i 'device not supported' "$log"; then
      sanitizer_refused=yes
      record "$name" MISSING "$took" "compute-sanitizer does not support this device (logs/$(basename "$log"))"
      continue
    fi
    case $rc in
      0) record "$name" PASS "$took" "${hazards:-clean}; $(doctest_note "$log")" ;;
      124 | 137) record "$name" TIMEOUT "$took" "killed at the time limit" ;;
      -1) record "$name" NOT-RUN 0 "time budget spent" ;;
      *) record "$name" FAIL "$took" "exit $rc; ${hazards}; $(doctest_note "$log")" ;;
    esac
  done
done

finish
