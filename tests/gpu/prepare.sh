#!/usr/bin/env bash
# tests/gpu/prepare.sh - run HERE (no GPU needed): builds everything the one-call GPU check
# needs for sm_90a (sm_90 plus the Hopper-only wgmma) and stages it in .gpu-carry/ (git-ignored,
# < 64 MiB), which the device tool carries to the GPU machine. That machine has nvcc, CMake,
# PyTorch and compute-sanitizer but no Eigen, doctest or Google Benchmark, so the binaries are
# built here.
#
#   bash tests/gpu/prepare.sh            # then, on the device: bash tests/gpu/check.sh
#
# Stages: .gpu-carry/bin/   every GPU test binary (tests/test_*.cu), GPU benchmark (bench_*.cu)
#                           and the reference transformer demo (anllm_demo, with its GPU path)
#         .gpu-carry/lib/   the shared libraries they need that a bare CUDA machine may lack,
#                           and the C++ runtime they were linked against
#         .gpu-carry/BUILD  what was built, from which commit, when
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$root/build-gpu
carry=$root/.gpu-carry
jobs=${JOBS:-2}
nvcc=${NVCC:-/usr/local/cuda/bin/nvcc}

launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DANSAN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DCMAKE_CUDA_COMPILER="$nvcc" -DANSAN_BUILD_EXAMPLES=ON "${launcher[@]}" >"$build.configure.log" 2>&1 ||
  { cat "$build.configure.log"; exit 1; }

targets=()
for source in "$root"/tests/test_*.cu "$root"/benchmarks/bench_*.cu; do
  [[ -e $source ]] && targets+=("$(basename "${source%.cu}")")
done
targets+=(anllm_demo)
echo "prepare: building ${#targets[@]} targets for sm_90a: ${targets[*]}"
cmake --build "$build" --target "${targets[@]}" -j "$jobs"

rm -rf "$carry"
mkdir -p "$carry/bin" "$carry/lib"
for target in "${targets[@]}"; do
  binary=$(find "$build" -type f -name "$target" -perm -u+x | head -n 1)
  [[ -n $binary ]] || { echo "prepare: $target was not built" >&2; exit 1; }
  cp "$binary" "$carry/bin/"
done
# Shared libraries that a bare CUDA machine may lack, and this image's C++ runtime: the GPU
# machine runs another image; only glibc is left to its copy (2.36 here; newer ones keep the
# old symbol versions).
for binary in "$carry"/bin/*; do
  ldd "$binary" | awk '/=> \// {print $3}' | grep -E 'libbenchmark|libcudart|libstdc\+\+|libgcc_s' || true
done | sort -u | while read -r lib; do
  cp -L "$lib" "$carry/lib/"
  # keep the SONAME the binaries ask for
  soname=$(objdump -p "$lib" 2>/dev/null | awk '/SONAME/ {print $2}')
  if [[ -n $soname && $soname != "$(basename "$lib")" ]]; then cp -L "$lib" "$carry/lib/$soname"; fi
done
strip --strip-unneeded "$carry"/bin/* 2>/dev/null || true
{
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  echo "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "nvcc: $("$nvcc" --version | tail -n 1)"
  echo "arch: sm_90a"
  echo "binaries: $(cd "$carry/bin" && ls | tr '\n' ' ')"
} >"$carry/BUILD"
size=$(du -sm "$carry" | cut -f1)
cat "$carry/BUILD"
echo "prepare: .gpu-carry is ${size} MiB"
if ((size >= 64)); then
  echo "prepare: .gpu-carry exceeds the 64 MiB the device tool carries" >&2
  exit 1
fi
