#!/usr/bin/env bash
# tests/gpu/profile.sh - Nsight Compute on the attention kernels at the benchmark's goal shapes,
# run ON THE GPU MACHINE after tests/gpu/prepare.sh (same carry as check.sh):
#
#   run(command="bash tests/gpu/profile.sh", carry=[".gpu-carry"], timeout_s=300)
#
# Profiles one launch each of the Hopper prefills, tensor_sm90 and its warp-specialized form
# tensor_sm90_ws, at n = 16384, L = 20, and of what automatic runs on dense causal n = 4096
# (bf16, 32/8 heads, D = 128). (The mma.sync prefill and both decode kernels were profiled in
# runs 1-11, docs/gpu_check.md; their lines are kept below, commented, to bring back.)
# Writes the full `--set full` details of each to $OUT/ncu-<case>.txt (clocks left as found:
# --clock-control none), the SASS of the attention kernels to $OUT/sass.txt.gz, and prints the
# lines that say what bounds each kernel: throughput against the peaks, occupancy, and where
# the warps stall.
set -uo pipefail
root=$(pwd)
carry=$root/.gpu-carry
OUT=${OUT:-/tmp/ansan-gpu-profile}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$carry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
bench=$carry/bin/bench_attention_cuda
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)
[[ -n $ncu ]] || { echo "profile.sh: ncu not found"; exit 3; }

profile() {  # case kernel-regex benchmark-filter
  local name=$1 kernel=$2 filter=$3
  timeout 150 "$ncu" --clock-control none --set full --kernel-name "regex:$kernel" --launch-skip 2 --launch-count 1 \
    --page details --print-details all \
    "$bench" --benchmark_filter="$filter" --benchmark_min_time=0.01 >"$OUT/ncu-$name.txt" 2>&1
  echo "== $name (exit $?): $kernel, $filter"
  grep -a -E 'Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|DRAM Throughput|Achieved Occupancy|Theoretical Occupancy|Block Limit|Registers Per|Executed Ipc A|Issue Slots Busy|Warp Cycles Per Issued|No Eligible|One or More Eligible|Bank Conflicts|Stall|stall|Tensor|Pipe|L1/TEX Hit|L2 Hit' \
    "$OUT/ncu-$name.txt" | grep -a -v 'Theoretical Tensor Operations' | sed 's/  */ /g' | cut -c1-200 | head -60
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
profile prefill_sm90_ws_n16384_L20 attention_tensor_sm90_ws_kernel 'BM_prefill_sm90_ws/n:16384/L:20/'
profile prefill_sm90_n16384_L20 attention_tensor_sm90_kernel 'BM_prefill_sm90/n:16384/L:20/'
profile causal_n4096 'attention_tensor(_sm90)?_kernel' 'BM_prefill_causal/n:4096/'
# profile prefill_n16384_L20 attention_tensor_kernel 'BM_prefill/n:16384/L:20/'
# profile decode_B64_8192 attention_decode_kernel 'BM_decode/B:64/cache:8192/D:128/'
# profile decode_tensor_B64_8192 attention_decode_mma_kernel 'BM_decode_tensor/B:64/cache:8192/D:128/'
cuobjdump=$(command -v cuobjdump || ls /usr/local/cuda/bin/cuobjdump 2>/dev/null || true)
if [[ -n $cuobjdump ]]; then
  "$cuobjdump" -sass "$bench" | awk '/Function : .*attention_(tensor|tensor_sm90|tensor_sm90_ws|decode|decode_mma)_kernel/ {keep = 1} /Function : / && !/attention_(tensor|tensor_sm90|tensor_sm90_ws|decode|decode_mma)_kernel/ {keep = 0} keep' |
    gzip >"$OUT/sass.txt.gz"
  echo "sass: $(zcat "$OUT/sass.txt.gz" | wc -l) lines of attention kernel SASS in sass.txt.gz"
fi
