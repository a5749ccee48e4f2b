#!/usr/bin/env bash
# tests/gpu/ab.sh - a kernel change against the code it replaces, in one device call, on the
# same card: the candidate is the working tree (staged by prepare.sh), the baseline a commit.
#
#   here:   bash tests/gpu/prepare.sh                 # the candidate, into .gpu-carry/bin
#           bash tests/gpu/ab.sh stage <commit>       # the baseline, into .gpu-carry/base
#   there:  run(command="bash tests/gpu/ab.sh run 'BM_prefill_sm90|BM_prefill_causal' 3",
#               carry=[".gpu-carry"], timeout_s=300)
#
# stage: builds the baseline's bench_attention_cuda and test_attention_cuda from a git worktree
#        of <commit> (build-ab/, sm_90a, same flags as prepare.sh) and copies them to
#        .gpu-carry/base/ (after prepare.sh, which empties .gpu-carry); the candidate's libraries
#        in .gpu-carry/lib serve both.
# run:   the baseline's attention test (a 5 s soak), then each benchmark binary `rounds` times
#        (default 3), baseline and candidate alternated, with the given --benchmark_filter; prints
#        per case the median time of each and candidate / baseline, and writes $OUT/ab.txt and
#        every round's JSON. Alternating on one warm card is what makes a few percent readable:
#        fresh machines of the same kind differ by about that much.
# Exit status: 0 done, 1 a step failed, 2 nothing ran on a GPU (no device: the binaries skip).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
carry=$root/.gpu-carry

stage() {
  local commit=$1 tree=$root/build-ab/tree build=$root/build-ab/build
  local nvcc=${NVCC:-/usr/local/cuda/bin/nvcc} jobs=${JOBS:-2}
  [[ -d $carry/bin ]] || { echo "ab.sh: run tests/gpu/prepare.sh first" >&2; return 1; }
  git -C "$root" worktree remove --force "$tree" 2>/dev/null || rm -rf "$tree"
  git -C "$root" worktree add --detach "$tree" "$commit" >/dev/null || return 1
  local launcher=()
  command -v ccache >/dev/null &&
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  cmake -S "$tree" -B "$build" -DCMAKE_BUILD_TYPE=Release -DANSAN_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_CUDA_COMPILER="$nvcc" "${launcher[@]}" >/dev/null ||
    return 1
  cmake --build "$build" --target bench_attention_cuda test_attention_cuda -j "$jobs" || return 1
  rm -rf "$carry/base" && mkdir -p "$carry/base"
  cp "$build/benchmarks/bench_attention_cuda" "$build/tests/test_attention_cuda" "$carry/base/"
  strip --strip-unneeded "$carry"/base/* 2>/dev/null || true
  echo "baseline: $(git -C "$tree" rev-parse --short HEAD)" >"$carry/base/BUILD"
  git -C "$root" worktree remove --force "$tree"
  echo "ab.sh: baseline $commit staged in .gpu-carry/base ($(du -sh "$carry" | cut -f1) carried)"
}

run() {
  local filter=$1 rounds=${2:-3}
  OUT=${OUT:-/tmp/ansan-gpu-ab}
  mkdir -p "$OUT/ab"
  export LD_LIBRARY_PATH=$carry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  local base=$carry/base/bench_attention_cuda cand=$carry/bin/bench_attention_cuda status=0
  for binary in "$base" "$cand" "$carry/base/test_attention_cuda"; do
    [[ -x $binary ]] || { echo "ab.sh: $binary missing (prepare.sh, then ab.sh stage)"; return 1; }
  done
  {
    echo "candidate: $(grep -a '^commit' "$carry/BUILD" 2>/dev/null)"
    cat "$carry/base/BUILD"
  } | tee "$OUT/ab.txt"
  ANSAN_SOAK_SECONDS=5 timeout 120 "$carry/base/test_attention_cuda" >"$OUT/ab/base_test.log" 2>&1
  local rc=$? verdict
  case $rc in
    0) verdict=PASS ;;
    77) verdict="SKIP (no CUDA device)"; status=2 ;;
    *) verdict="FAIL, exit $rc (ab/base_test.log)"; status=1 ;;
  esac
  echo "baseline test_attention_cuda: $verdict" | tee -a "$OUT/ab.txt"
  for ((r = 1; r <= rounds; ++r)); do
    for side in base cand; do
      local binary=$base
      [[ $side == cand ]] && binary=$cand
      timeout 120 "$binary" --benchmark_filter="$filter" \
        --benchmark_out="$OUT/ab/$side-$r.json" --benchmark_out_format=json >/dev/null 2>&1 ||
        { echo "ab.sh: $side round $r failed"; status=1; }
    done
  done
  python3 - "$OUT/ab" "$rounds" <<'PY' | tee -a "$OUT/ab.txt"
import json, statistics, sys, pathlib
d, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
times = {}  # case -> side -> [ms]
for side in ("base", "cand"):
    for r in range(1, rounds + 1):
        f = d / f"{side}-{r}.json"
        if not f.exists():
            continue
        for b in json.loads(f.read_text()).get("benchmarks", []):
            if b.get("error_occurred") or "ms" not in b:
                continue
            times.setdefault(b["name"], {}).setdefault(side, []).append(b["ms"])
if not times:
    print("no timings (no CUDA device, or the filter matched nothing)")
    sys.exit(0)
print(f"{'case':<58} {'base ms':>9} {'cand ms':>9} {'cand/base':>9}  rounds")
for name, sides in times.items():
    b, c = sides.get("base", []), sides.get("cand", [])
    mb = statistics.median(b) if b else float("nan")
    mc = statistics.median(c) if c else float("nan")
    print(f"{name:<58} {mb:9.4f} {mc:9.4f} {mc / mb:9.3f}  {len(b)}/{len(c)}")
PY
  if ! grep -q '"ms"' "$OUT"/ab/*.json 2>/dev/null && ((status == 0)); then status=2; fi
  return $status
}

case ${1:-} in
  stage) [[ $# -eq 2 ]] || { echo "usage: ab.sh stage <commit>" >&2; exit 1; }; stage "$2" ;;
  run) [[ $# -ge 2 ]] || { echo "usage: ab.sh run <benchmark filter> [rounds]" >&2; exit 1; }
    run "$2" "${3:-3}" ;;
  *) echo "usage: ab.sh stage <commit> | ab.sh run <benchmark filter> [rounds]" >&2; exit 1 ;;
esac
