#!/usr/bin/env bash
# tests/emulator/mutate_barriers.sh - can the emulated tests see a missing barrier?
#
# Deletes each barrier of the attention kernels in turn - every __syncthreads(), every call of a
# query tile's barrier (sync();), every mbarrier_wait( of the warp-specialized kernel - rebuilds
# test_attention_emulated (CPU only, in build-mutate/) and runs it: every deletion must make it
# fail. Restores each file afterwards (also when interrupted). Prints one line per barrier;
# exit 1 if one went unnoticed. About a minute per barrier on 2 cores. A barrier whose comment
# line above ends "(mutation-exempt)" says there why the emulator cannot see it missing.
# `mutate_barriers.sh FILE...` mutates only those files.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
build=build-mutate
cmake -S . -B "$build" -DANSAN_CUDA=OFF -DANSAN_BUILD_BENCHMARKS=OFF -DANSAN_BUILD_EXAMPLES=OFF >/dev/null || exit 2
missed=0
files=("$@")
((${#files[@]})) ||
  files=(include/ansan/cuda/detail/attention_{plan,simt,mma_sm80,mma_sm90,ws_sm90,query_tile,decode,decode_mma}.cuh)
for file in "${files[@]}"; do
  cp "$file" "$build/original.cuh"
  trap 'cp "$build/original.cuh" "$file"' EXIT INT TERM
  for line in $(grep -n -E "__syncthreads\(\);|^ +sync\(\);|mbarrier_wait\(" "$file" | cut -d: -f1); do
    if sed -n "$((line - 1))p" "$file" | grep -q "(mutation-exempt)"; then
      printf '%s:%s  exempt (its comment says why)\n' "$file" "$line"
      continue
    fi
    sed -i -E "${line}s/__syncthreads\(\);|^( +)sync\(\);//; ${line}s/mbarrier_wait\(/if (false) mbarrier_wait(/" "$file"
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
