#!/usr/bin/env bash
# tests/emulator/mutate_barriers.sh - can the emulated tests see a missing barrier?
#
# Deletes each __syncthreads() of the attention kernels in turn, rebuilds test_attention_emulated
# (CPU only, in build-mutate/) and runs it: every deletion must make it fail. Restores each file
# afterwards (also when interrupted). Prints one line per barrier; exit 1 if one went unnoticed.
# About 30 s per barrier on 2 cores.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
build=build-mutate
cmake -S . -B "$build" -DANSAN_CUDA=OFF -DANSAN_BUILD_BENCHMARKS=OFF -DANSAN_BUILD_EXAMPLES=OFF >/dev/null || exit 2
missed=0
for file in include/ansan/cuda/detail/attention_{plan,simt,mma_sm80,mma_sm90,query_tile,decode,decode_mma}.cuh; do
  cp "$file" "$build/original.cuh"
  trap 'cp "$build/original.cuh" "$file"' EXIT INT TERM
  for line in $(grep -n "__syncthreads();" "$file" | cut -d: -f1); do
    sed -i "${line}s/__syncthreads();//" "$file"
    if ! cmake --build "$build" --target test_attention_emulated -j"$(nproc)" >"$build/mutate-build.log" 2>&1; then
      verdict="build failed (see $build/mutate-build.log)"
      missed=1
    elif timeout 900 "$build/tests/test_attention_emulated" >"$build/mutate-run.log" 2>&1; then
      verdict="NOT CAUGHT"
      missed=1
    else
      verdict="caught ($(grep -o 'test cases:.*' "$build/mutate-run.log" || echo 'the test crashed'))"
    fi
    printf '%s:%s  %s\n' "$file" "$line" "$verdict"
    cp "$build/original.cuh" "$file"
  done
  trap - EXIT INT TERM
done
exit "$missed"
