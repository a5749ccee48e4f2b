// ansan/cuda/detail/attention_ws_sm90.cuh - the Hopper prefill, warp-specialized (the structure
// of FlashAttention-3): one warpgroup loads, two compute, and they meet only at shared-memory
// barriers (mbarrier_sm90.cuh), never at a block barrier. It must equal the other kernels; the
// tests compare all of them with the float64 reference.
//
// Why: tensor_sm90 (attention_mma_sm90.cuh) runs each block's walk as one serial chain - wait
// for K, block barrier, S, softmax, wait for V, block barrier, P V - and on an H100 its warps
// stall on that chain, not on the tensor cores or on memory (docs/benchmarks.md). Here
//   - a producer warpgroup runs ahead through a ring of kStages (K, V) tile pairs, so a tile is
//     in shared memory before a consumer asks for it;
//   - the two consumer warpgroups hold two query heads of one KV head (the same query rows, so
//     the same walk and the same tiles): a tile is loaded once for both, and neither waits for
//     the other;
//   - the block is persistent (one an SM, taking work items gridDim.x apart), and the producer
//     loads the next item's Q and bounds its rows while the consumers finish the current one, so
//     a short walk (about 9 tiles at L = 20) no longer waits for its start.
//   - a consumer issues S of a tile with P V of the one before, so its softmax runs while the
//     tensor cores work, and chains items alike (the last P V of one with the first S of the
//     next, its O stored once that retires);
//   - the two consumers take turns at issuing (named barriers), so the tensor cores run one's
//     products while the other's softmax runs, rather than both at once, then neither;
//   - P V multiplies a tile's keys only up to its last held one, in 16s: a walk's last tile is
//     partly empty (P V does 5% less at L = 20, n = 16384).
// A consumer's work per tile is tensor_sm90's: S = Q K^T and O += P V on wgmma, mask and online
// softmax in registers, warp w of the warpgroup owning query rows 16w .. 16w + 15.
//
// Barriers (arrivals each phase expects):
//   item_full[slot]   128, producer threads   the slot's row keys and bounds are written
//   item_empty[slot]  256, consumer threads   the consumers are done with the slot
//   k_full[s], v_full[s]  128, producer cp.async  K / V of stage s have landed
//   empty[s]          256, consumer threads   both consumers are done with stage s
//   named 2 + c       256, consumers         consumer c's turn to issue: it waits, the other
//                                            arrives (bar.arrive) once done issuing
// Q needs no barrier of its own: a cp.async arrival waits for every earlier copy of its
// thread, so the item's first k_full phase also means its Q tiles have landed.
// Items alternate between two slots; tiles go through the stages in walk order, item after
// item, on both sides alike, so each side counts its (stage, parity) as it goes.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "ansan/cuda/detail/attention_mma_sm90.cuh"
#include "ansan/cuda/detail/attention_params.cuh"
#include "ansan/cuda/detail/attention_query_tile.cuh"
#include "ansan/cuda/detail/kernel_launch.cuh"
#include "ansan/cuda/detail/mbarrier_sm90.cuh"
#include "ansan/cuda/detail/mma_layout.hpp"
#include "ansan/cuda/detail/mma_sm80.cuh"
#include "ansan/cuda/detail/mma_sm90.cuh"
#include "ansan/cuda/detail/wgmma_layout.hpp"
#include "ansan/cuda_check.hpp"

namespace ansan::cuda::detail {

template <class T, int Dim>
struct WarpSpecializedTraits {
  using Consumer = WarpgroupTraits<T, Dim>;  // a consumer warpgroup: tensor_sm90's block
  static constexpr int kRows = Consumer::kRows, kKeys = Consumer::kKeys;
  static constexpr int kConsumers = 2;  // warpgroups, one query head each
  static constexpr int kWarpgroup = 128;
  static constexpr int kThreads = kWarpgroup * (1 + kConsumers);
  static constexpr int kSlots = 2;   // work items in flight: the consumers' and the next
  static constexpr int kStages = 4;  // (K, V) tile pairs in flight
  static constexpr int kKeyGroup = 16;             // keys per k-step of P V
  static constexpr unsigned kProducerBarrier = 1;  // named barrier of the producer's threads
  static constexpr unsigned kTurnBarrier = 2;      // consumer c's turn at the tensor cores: 2 + c
  // Registers a thread once the roles part. The launch gives each thread 168 (65536 / 384,
  // rounded down to 8; tests/kernel_resources.cu checks ptxas used exactly that), and the
  // consumers take what the producer gives back: 72 is the least it needs without spilling
  // since its loads look up packed walk indices (ptxas 13.0: 8 bytes spilled at 64 / 216 and
  // 64 / 208, 28 at 56 / 224; none at 72 / 216, 72 / 208, 80 / 208).
  static constexpr int kProducerRegisters = 72, kConsumerRegisters = 216;
  static_assert(kWarpgroup * (kProducerRegisters + kConsumers * kConsumerRegisters) <=
                    kThreads * 168,
                "within the block's register pool (inc would wait forever)");

  struct Barriers {
    std::uint64_t item_full[kSlots], item_empty[kSlots];
    std::uint64_t k_full[kStages], v_full[kStages], empty[kStages];
  };
  static constexpr std::size_t q_elements() { return std::size_t(kRows) * Dim; }
  static constexpr std::size_t tile_elements() { return std::size_t(kKeys) * Dim; }
  // The barriers, the slack that starts the tiles on a 1024-byte boundary, Q [slot][consumer],
  // K [stage], V [stage]. Under 200 KiB at head_dim 128: one block an SM, as registers allow.
  static constexpr std::size_t smem_bytes() {
    return sizeof(Barriers) + kSwizzleAtom +
           sizeof(T) * (kSlots * kConsumers * q_elements() + 2 * kStages * tile_elements());
  }
};

// Where the block's shared state lies; every role computes the same from the kernel's base.
template <class T, int Dim>
struct WarpSpecializedShared {
  using Tr = WarpSpecializedTraits<T, Dim>;
  typename Tr::Barriers* bar;
  T* tiles;  // 1024-byte aligned: Q tiles, then K, then V
  RowKeys (*row_keys)[Tr::kRows];
  TileBounds (*warp_bounds)[Tr::Consumer::kWarps][2];
  TileBounds (*bounds)[2];

  ANSAN_DEVICE T* q(int slot, int consumer) const {
    return tiles + (slot * Tr::kConsumers + consumer) * Tr::q_elements();
  }
  ANSAN_DEVICE T* k(int stage) const {
    return tiles + Tr::kSlots * Tr::kConsumers * Tr::q_elements() + stage * Tr::tile_elements();
  }
  ANSAN_DEVICE T* v(int stage) const { return k(Tr::kStages) + stage * Tr::tile_elements(); }
};

// A side's place in the ring of stages: the stage, and the parity of its current use.
template <int Stages>
struct RingPosition {
  int stage = 0;
  unsigned parity = 0;
  ANSAN_DEVICE void advance() {
    if (++stage == Stages) stage = 0, parity ^= 1;
  }
};

template <unsigned Id, unsigned Threads>
struct NamedBarrier {
  ANSAN_DEVICE void operator()() const { named_barrier_sync(Id, Threads); }
};

// O += P V over the first `groups` 16-key groups of a key tile, those up to its last held key
// (so the walk's last tile costs what it holds in P V, not 64 keys), as one commit group.
// One unconditional batch a branch, fence and commit in it: ptxas then leaves the pipeline as
// written. S = Q K^T stays 64 keys wide: its narrower forms write fewer accumulators, and
// ptxas then copies them at the branches' join before the wait, serialising the MMAs. (In
// tensor_sm90 the four branches cost spills; it keeps the full P V.)
template <class T, int Dim>
ANSAN_DEVICE void wgmma_pv(float (&acc_o)[WarpgroupTraits<T, Dim>::kDimTiles][4],
                           const std::uint32_t (&p_frag)[WarpgroupTraits<T, Dim>::kPSteps][4],
                           int groups, std::uint64_t v_desc) {
  static_assert(WarpgroupTraits<T, Dim>::kPSteps == 4, "four groups a tile");
  const auto multiply = [&](auto steps) {
    wgmma_fence();
    for (int kk = 0; kk < decltype(steps)::value; ++kk)
      wgmma_m64nNk16_rs<T, Dim>(acc_o, p_frag[kk],
                                advance_descriptor(v_desc, mn_major_step_bytes(kk)), true);
    wgmma_commit();
  };
  switch (groups) {
    case 1:
      multiply(std::integral_constant<int, 1>{});
      break;
    case 2:
      multiply(std::integral_constant<int, 2>{});
      break;
    case 3:
      multiply(std::integral_constant<int, 3>{});
      break;
    default:
      multiply(std::integral_constant<int, 4>{});
      break;
  }
}

// The producer warpgroup (threads 0-127): per item, the Q tiles of both heads and the row
// bounds, then every (K, V) tile of the walk, each stage as soon as both consumers left it.
template <class T, int Dim>
ANSAN_DEVICE void produce(const AttentionParams<T>& p, const WarpSpecializedShared<T, Dim>& s,
                          unsigned items) {
  using Tr = WarpSpecializedTraits<T, Dim>;
  using Loader = KeyTileLoader<T, ColumnBlockSwizzle, Tr::kKeys, Dim, Tr::kWarpgroup>;
  const int tid = int(threadIdx.x);
  RingPosition<Tr::kStages> ring;
  unsigned n = 0;  // items taken so far
  for (unsigned item = blockIdx.x; item < items; item += gridDim.x, ++n) {
    const int slot = int(n % Tr::kSlots);
    const unsigned use = (n / Tr::kSlots) & 1u;
    const QueryTile q = locate_query_tile(p, item, Tr::kRows, Tr::kConsumers);
    mbarrier_wait(&s.bar->item_empty[slot], use ^ 1u);
    for (int c = 0; c < Tr::kConsumers; ++c) {
      QueryTile head = q;
      head.h += c;
      load_query_rows<ColumnBlockSwizzle, Tr::kRows, Dim, Tr::kWarpgroup>(p, head, s.q(slot, c));
    }
    bound_query_tile(p, q, s.row_keys[slot], s.warp_bounds[slot], s.bounds[slot],
                     NamedBarrier<Tr::kProducerBarrier, Tr::kWarpgroup>{});
    mbarrier_arrive(&s.bar->item_full[slot]);

    const TileWalk walk{s.bounds[slot][0], s.bounds[slot][1], Tr::kKeys};
    const Loader loader(p, q, walk, tid);
    for (std::int32_t j = 0; j < walk.count(); ++j, ring.advance()) {
      std::int32_t rows[Loader::kLoads];
      loader.own_key_rows(j, rows);  // before the wait: the lookups' latency hides behind it
      mbarrier_wait(&s.bar->empty[ring.stage], ring.parity ^ 1u);
      loader.load(s.k(ring.stage), 0, rows);
      cp_async_mbarrier_arrive(&s.bar->k_full[ring.stage]);
      loader.load(s.v(ring.stage), 1, rows);
      cp_async_mbarrier_arrive(&s.bar->v_full[ring.stage]);
    }
  }
  cp_async_wait_all();  // no copy outlives the thread that issued it
}

// Consumer warpgroup `c` (threads 128 (c + 1) ..): query head q.h + c of every item, tile by
// tile as the producer delivers them. Consecutive tiles overlap (FlashAttention-3's pipelining
// within a warpgroup): S_j = Q K_j^T and O += P_{j-1} V_{j-1} are issued together, and the
// softmax of S_j runs while the tensor cores multiply P_{j-1} V_{j-1}; O takes S_j's rescaling,
// and P_j replaces P_{j-1}, only once that product has retired. Items chain the same way: an
// item's last P V is issued with the next item's first S, and its O stored once that retires,
// so only the block's first S and last P V run alone, not every item's (at L = 20 an item's
// walk is about 9 tiles).
template <class T, int Dim>
ANSAN_DEVICE void consume(const AttentionParams<T>& p, int c,
                          const WarpSpecializedShared<T, Dim>& s, unsigned items) {
  using Tr = WarpSpecializedTraits<T, Dim>;
  using Wg = typename Tr::Consumer;
  constexpr int kKeys = Tr::kKeys;
  const int tid = int(threadIdx.x) - Tr::kWarpgroup * (c + 1), warp = tid / 32, lane = tid % 32;
  const int my_col = mma_c_element(lane, 0).col;
  const float scale_log2 = p.softmax_scale * 1.4426950408889634f;
  // Carried from tile to tile, and from an item to the next:
  RingPosition<Tr::kStages> ring;  // the stage of the tile whose S comes next
  float acc_o[Wg::kDimTiles][4] = {};  // O: (16 rows, Dim) per warp, C layout
  float row_max[2] = {kMinusInf, kMinusInf}, row_sum[2] = {0.f, 0.f};  // base-2 domain
  std::uint32_t p_frag[Wg::kPSteps][4];  // P of the previous tile: keys 16 kk .. 16 kk + 15
  RingPosition<Tr::kStages> previous;    // the previous tile's stage
  int previous_groups = 0;               // and its 16-key groups holding keys
  bool pv_pending = false;               // P of the previous tile still waits for its P V

  // The two consumers take turns at issuing their products (FlashAttention-3's ping-pong):
  // while one's S and P V hold the tensor cores, the other runs its softmax. Each waits for
  // its turn, issues, and passes the turn on; consumer 1 passes first, so consumer 0 starts.
  // Both walk the same tiles, so they issue equally often and the turns stay paired; consumer 0
  // takes one more at the end. (The ids depend on c, so ptxas reports all 16 barriers used;
  // one block an SM fits regardless.)
  const auto take_turn = [&] { named_barrier_sync(Tr::kTurnBarrier + c, 2 * Tr::kWarpgroup); };
  const auto pass_turn = [&] {
    named_barrier_arrive(Tr::kTurnBarrier + (1 - c), 2 * Tr::kWarpgroup);
  };
  if (c == 1) pass_turn();

  // O += P V of the previous tile, as one commit group, in this consumer's turn.
  const auto issue_pv = [&] {
    mbarrier_wait(&s.bar->v_full[previous.stage], previous.parity);
    fence_proxy_async();  // the producer's copies, as the tensor cores' reads see them
    const std::uint64_t v_desc = mn_major_descriptor(shared_address(s.v(previous.stage)), kKeys);
    take_turn();
    wgmma_pv<T, Dim>(acc_o, p_frag, previous_groups, v_desc);
    pass_turn();
  };
  // The previous P V retired: its stage is free.
  const auto retire_pv = [&] {
    fence_registers(acc_o);
    fence_registers(p_frag);
    mbarrier_arrive(&s.bar->empty[previous.stage]);  // K and V of the previous tile are read
  };
  // An item's O and log-sum-exp go out, and O starts again for the next. (Where its rows lie
  // is looked up again here rather than held through the walk: registers are short.)
  const auto finish_item = [&](unsigned item, const float (&max)[2], const float (&sum)[2]) {
    QueryTile q = locate_query_tile(p, item, Tr::kRows, Tr::kConsumers);
    q.h += c;
    store_query_rows(p, q, 16 * warp, acc_o, max, sum);
    for (int dt = 0; dt < Wg::kDimTiles; ++dt)
      for (int i = 0; i < 4; ++i) acc_o[dt][i] = 0.f;
  };
  // The softmax statistics start again for the next item; the finished item keeps its own.
  const auto restart_rows = [&](float (&max)[2], float (&sum)[2]) {
    for (int r = 0; r < 2; ++r) {
      max[r] = row_max[r], sum[r] = row_sum[r];
      row_max[r] = kMinusInf, row_sum[r] = 0.f;
    }
  };

  unsigned n = 0, item = blockIdx.x;  // (the item before `item` is item - gridDim.x)
  for (; item < items; item += gridDim.x, ++n) {
    const int slot = int(n % Tr::kSlots);
    const unsigned use = (n / Tr::kSlots) & 1u;
    mbarrier_wait(&s.bar->item_full[slot], use);
    RowKeys my_rows[2];  // this thread's two rows of every accumulator fragment
    for (int r = 0; r < 2; ++r) my_rows[r] = s.row_keys[slot][16 * warp + lane / 4 + 8 * r];
    const TileWalk walk{s.bounds[slot][0], s.bounds[slot][1], kKeys};
    const std::int32_t tiles = walk.count();
    const std::uint64_t q_desc = k_major_descriptor(shared_address(s.q(slot, c)));
    float rescale[2];  // O's factor for the latest tile's row maxima
    using Scores = float[Wg::kKeyTiles][4];  // S, then P: (16 rows, kKeys) per warp, C layout

    // S = Q K^T of the tile in stage `ring`, and with it O += P V of the previous tile if
    // `with_pv`: a commit group each, S's first, both in one turn (the waits before it). Each
    // tile's S is a fresh, zeroed array: the first k-step ignores its accumulator inputs, but
    // the asm reads them, and where they were whatever values a path left, nvcc 13.0 copied
    // them between the k-steps and ptxas serialised the wgmmas (C7514; kernel_resources).
    const auto issue = [&](Scores& sc, bool with_pv) {
      mbarrier_wait(&s.bar->k_full[ring.stage], ring.parity);
      if (with_pv) mbarrier_wait(&s.bar->v_full[previous.stage], previous.parity);
      fence_proxy_async();  // the producer's copies, as the tensor cores' reads see them
      const std::uint64_t k_desc = k_major_descriptor(shared_address(s.k(ring.stage)));
      const std::uint64_t v_desc = mn_major_descriptor(shared_address(s.v(previous.stage)), kKeys);
      take_turn();
      wgmma_fence();  // after the waits: orders the latest writes of the registers it uses
      for (int ks = 0; ks < Wg::kKSteps; ++ks)
        wgmma_m64n64k16_ss<T>(sc, advance_descriptor(q_desc, k_major_step_bytes(ks, Tr::kRows)),
                              advance_descriptor(k_desc, k_major_step_bytes(ks, kKeys)), ks > 0);
      wgmma_commit();
      if (with_pv) wgmma_pv<T, Dim>(acc_o, p_frag, previous_groups, v_desc);
      pass_turn();
    };
    // Mask and softmax of S (tile j, retired): P in sc, O's factor in rescale. A warp none of
    // whose rows sees the tile gets P = 0 (it still takes part in the warpgroup's P V).
    const auto softmax = [&](Scores& sc, std::int32_t j) {
      fence_registers(sc);
      const TileMask mask = walk.classify(s.warp_bounds[slot][warp][0],
                                          s.warp_bounds[slot][warp][1], j);  // warp-uniform
      rescale[0] = rescale[1] = 1.f;
      if (mask == TileMask::none) {
        for (int nt = 0; nt < Wg::kKeyTiles; ++nt)
          for (int i = 0; i < 4; ++i) sc[nt][i] = 0.f;
      } else {
        float tile_max[2];
        mask_scores(sc, mask, walk, j, my_rows, my_col, tile_max);
        online_softmax_scores(sc, tile_max, scale_log2, row_max, row_sum, rescale);
      }
    };
    // O follows tile j's maxima, and its P becomes the one the next P V multiplies.
    const auto next_p = [&](const Scores& sc, std::int32_t j) {
      rescale_accumulator(acc_o, rescale);
      for (int kk = 0; kk < Wg::kPSteps; ++kk) p_fragment<T>(sc, kk, p_frag[kk]);
      previous = ring;
      previous_groups = walk.groups_held(j, Tr::kKeyGroup);
      ring.advance();
    };

    if (tiles > 0 && pv_pending) {  // the previous item's last P V, under this item's softmax
      Scores sc = {};
      issue(sc, true);  // (the first k_full wait also covers Q)
      wgmma_wait<1>();
      float done_max[2], done_sum[2];
      restart_rows(done_max, done_sum);
      softmax(sc, 0);
      wgmma_wait<0>();
      retire_pv();
      finish_item(item - gridDim.x, done_max, done_sum);
      next_p(sc, 0);
    } else if (tiles > 0) {
      Scores sc = {};
      issue(sc, false);
      wgmma_wait<0>();
      softmax(sc, 0);
      next_p(sc, 0);
    }
    for (std::int32_t j = 1; j < tiles; ++j) {
      Scores sc = {};
      issue(sc, true);
      wgmma_wait<1>();  // S retired; the previous P V may still run, under the softmax
      softmax(sc, j);
      wgmma_wait<0>();
      retire_pv();
      next_p(sc, j);
    }
    mbarrier_arrive(&s.bar->item_empty[slot]);  // Q, row keys and bounds are read
    if (tiles == 0) {  // nothing to multiply: O = 0, and the item before it, if any, ends first
      if (pv_pending) {
        issue_pv();
        wgmma_wait<0>();
        retire_pv();
        float done_max[2], done_sum[2];
        restart_rows(done_max, done_sum);
        finish_item(item - gridDim.x, done_max, done_sum);
      }
      finish_item(item, row_max, row_sum);
    }
    pv_pending = tiles > 0;
  }
  if (pv_pending) {  // the block's last P V
    issue_pv();
    wgmma_wait<0>();
    retire_pv();
    finish_item(item - gridDim.x, row_max, row_sum);
  }
  if (c == 0) take_turn();  // consumer 1's last pass: no arrival outlives the block
}

template <class T, int Dim>
__global__ void __launch_bounds__(WarpSpecializedTraits<T, Dim>::kThreads, 1)
    attention_tensor_sm90_ws_kernel(const __grid_constant__ AttentionParams<T> p) {
#if ANSAN_SM90A_PASS
  using Tr = WarpSpecializedTraits<T, Dim>;
  __shared__ RowKeys sRowKeys[Tr::kSlots][Tr::kRows];
  __shared__ TileBounds sWarpBounds[Tr::kSlots][Tr::Consumer::kWarps][2];
  __shared__ TileBounds sBounds[Tr::kSlots][2];
  unsigned char* const smem = dynamic_shared_memory<unsigned char>();
  unsigned char* const after_barriers = smem + sizeof(typename Tr::Barriers);
  const WarpSpecializedShared<T, Dim> s{
      reinterpret_cast<typename Tr::Barriers*>(smem),
      reinterpret_cast<T*>(after_barriers +
                           (kSwizzleAtom - shared_address(after_barriers) % kSwizzleAtom) %
                               kSwizzleAtom),
      sRowKeys, sWarpBounds, sBounds};

  if (threadIdx.x == 0) {
    for (int i = 0; i < Tr::kSlots; ++i) {
      mbarrier_init(&s.bar->item_full[i], Tr::kWarpgroup);
      mbarrier_init(&s.bar->item_empty[i], Tr::kConsumers * Tr::kWarpgroup);
    }
    for (int i = 0; i < Tr::kStages; ++i) {
      mbarrier_init(&s.bar->k_full[i], Tr::kWarpgroup);
      mbarrier_init(&s.bar->v_full[i], Tr::kWarpgroup);
      mbarrier_init(&s.bar->empty[i], Tr::kConsumers * Tr::kWarpgroup);
    }
  }
  // The only block barrier: the roles part here. The emulator runs thread 0's init before any
  // warp passes its first collective, so cannot see this one missing (mutation-exempt).
  __syncthreads();

  const unsigned items = unsigned(p.tile_prefix[p.batch]) * unsigned(p.heads_q / Tr::kConsumers);
  const int role = int(threadIdx.x) / Tr::kWarpgroup;  // warpgroup: 0 producer, 1.. consumers
  if (role == 0) {
    setmaxnreg_dec<Tr::kProducerRegisters>();
    produce(p, s, items);
  } else {
    setmaxnreg_inc<Tr::kConsumerRegisters>();
    consume(p, role - 1, s, items);
  }
#endif  // ANSAN_SM90A_PASS
}

// One block an SM (registers and shared memory allow no more), each taking work items
// gridDim.x apart.
template <class T, int Dim>
cudaError_t launch_attention_tensor_sm90_ws(const AttentionParams<T>& p, cudaStream_t stream) {
  using Tr = WarpSpecializedTraits<T, Dim>;
  int device = 0, multiprocessors = 0;
  ANSAN_CUDA_RETURN(cudaGetDevice(&device));
  ANSAN_CUDA_RETURN(
      cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device));
  // At most this many items (the exact count, from the plan, is on the device).
  const unsigned items =
      unsigned(tiles_of(p.total_q, Tr::kRows) + p.batch) * unsigned(p.heads_q / Tr::kConsumers);
  const dim3 grid(items < unsigned(multiprocessors) ? items : unsigned(multiprocessors));
  return launch_kernel(attention_tensor_sm90_ws_kernel<T, Dim>,
                       {grid, Tr::kThreads, Tr::smem_bytes()}, stream, p);
}

template <class T>
cudaError_t launch_attention_tensor_sm90_ws(const AttentionParams<T>& p, cudaStream_t stream) {
  if (p.heads_kv == 0 || (p.heads_q / p.heads_kv) % 2 != 0) return cudaErrorInvalidValue;
  return for_hopper_head_dim<T>(p.head_dim, [&](auto dim) {
    return launch_attention_tensor_sm90_ws<T, decltype(dim)::value>(p, stream);
  });
}

}  // namespace ansan::cuda::detail

