// anllm/generate.hpp - run a prompt and a continuation through the cache: Algorithm 1 of the
// AnLLM paper (prefill, REDUCTION, then token by token with a REDUCTION after every anchor).
//
//   prompt ──feed──> cache ──reduce──> [ pick token ──feed──> (anchor? reduce) ] x new tokens
//
// The continuation is either generated (greedy or seeded sampling) or teacher-forced from a
// given list of ids, so its logits can be compared with the whole text run at once
// (model.hpp forward_masked: SPEC section 3's exactness invariant). The same loop with
// MaskPolicy::causal() and no reduction is the full-cache baseline.
//
// In AC mode a trained AnLLM emits <AC> itself after a sentence end; an untrained model
// rarely does, so by default the generator feeds <AC> after every generated . ! ? or newline,
// as the data pipeline would have placed it (tokenizer.hpp).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "model.hpp"
#include "tokenizer.hpp"

namespace anllm {

// The cache after a reduction (or at the end), summed over layers.
struct CacheSnapshot {
  std::int32_t position = 0;            // tokens fed so far
  std::int64_t dropped = 0;             // rows this reduction dropped from each layer
  std::int64_t entries = 0;             // rows held, all layers
  std::int64_t bytes = 0;               // K+V bytes held, all layers
  std::int64_t full_bytes = 0;          // what caches that never reduce would hold
  std::int32_t open_seg_start = 0;      // first position of the open segment
  std::vector<std::int32_t> positions;  // the positions layer 0 holds (every layer holds the same)
};

struct Progress {
  std::int32_t done = 0, total = 0;  // continuation tokens fed / to feed
  double tokens_per_s = 0;
  std::int64_t entries = 0, bytes = 0;
};

struct RunOptions {
  ansan::MaskPolicy policy = ansan::MaskPolicy::anllm();
  bool reduce_at_anchors = true;  // false: the cache keeps everything (the baseline)
  std::int32_t new_tokens = 64;   // tokens to generate (when not teacher-forcing)
  const std::vector<std::int32_t>* forced = nullptr;  // teacher forcing: feed these ids
  float temperature = 1.f;                            // 0: greedy
  std::uint64_t seed = 1;
  bool insert_ac = true;        // AC mode: feed <AC> after a generated sentence end
  bool keep_logits = true;      // return every position's logits
  bool printable_only = false;  // sample only printable ASCII and newlines (readable noise)
  int attention_threads = 0;    // the CPU backend's num_threads (4-argument run_text)
  std::function<void(const Progress&)> on_step;  // called after every continuation token
};

struct RunResult {
  std::vector<std::int32_t> ids;        // (prompt + continuation)
  std::vector<std::uint8_t> is_anchor;  // (prompt + continuation)
  Matrix logits;                        // (prompt + continuation, vocab) if keep_logits
  std::vector<CacheSnapshot> reductions;
  CacheSnapshot final_cache;
  double prefill_seconds = 0, decode_seconds = 0;
  std::int32_t continuation = 0;  // tokens fed after the prompt
  double decode_tokens_per_s() const { return continuation / std::max(decode_seconds, 1e-12); }
};

// Greedy (temperature 0) or sampled next token from one row of logits: (vocab). Only bytes
// (printable ASCII and newlines if printable_only), and <AC> in AC mode, can be picked. Uses
// its own uniform variates so a seed names one continuation whatever the standard library.
inline std::int32_t pick_token(const Eigen::Ref<const Eigen::RowVectorXf>& logits,
                               const Tokenizer& tok, float temperature, bool printable_only,
                               std::mt19937_64& rng) {
  const std::int32_t last = tok.mode == AnchorMode::ac ? Tokenizer::ac_id : 255;
  const auto allowed = [&](std::int32_t id) {
    if (id == Tokenizer::ac_id) return tok.mode == AnchorMode::ac;
    return id < 256 && (!printable_only || id == '\n' || (id >= 32 && id < 127));
  };
  std::int32_t best = '\n';
  for (std::int32_t id = 0; id <= last; ++id)
    if (allowed(id) && logits(id) > logits(best)) best = id;
  if (temperature <= 0.f) return best;
  std::vector<double> weight(std::size_t(last) + 1, 0.0);
  double total = 0;
  for (std::int32_t id = 0; id <= last; ++id)
    if (allowed(id))
      total += weight[std::size_t(id)] = std::exp(double(logits(id) - logits(best)) / temperature);
  double u = double(rng() >> 11) * 0x1.0p-53 * total;
  for (std::int32_t id = 0; id <= last; ++id)
    if ((u -= weight[std::size_t(id)]) < 0) return id;
  return best;
}

// Algorithm 1 on `prompt` through `backend` (model.hpp's attention seam): prefill, reduce (if
// opt.reduce_at_anchors), then opt.new_tokens generated or opt.forced teacher-forced tokens one
// at a time, reducing after each anchor.
template <class Backend>
RunResult run_text(const Weights& w, const Tokenizer& tok, const std::vector<std::int32_t>& prompt,
                   const RunOptions& opt, Backend backend) {
  using clock = std::chrono::steady_clock;
  const auto seconds_since = [](clock::time_point t0) {
    return std::chrono::duration<double>(clock::now() - t0).count();
  };
  const std::int32_t total =
      opt.forced ? std::int32_t(opt.forced->size()) : std::max<std::int32_t>(opt.new_tokens, 0);
  RunResult result;
  result.ids = prompt;
  for (const std::int32_t id : prompt) result.is_anchor.push_back(tok.is_anchor(id));
  if (opt.keep_logits)  // poisoned: a position the loop fails to write stays NaN
    result.logits.setConstant(Eigen::Index(prompt.size()) + total, w.config.vocab,
                              std::numeric_limits<float>::quiet_NaN());

  BasicIncrementalDecoder<Backend> decoder(w, opt.policy, std::move(backend));
  const auto snapshot = [&](std::int64_t dropped) {
    const auto& cache = decoder.cache();
    return CacheSnapshot{decoder.next_pos(),         dropped,
                         decoder.entries(),          decoder.bytes(),
                         decoder.full_cache_bytes(), cache.open_seg_start(0),
                         cache.positions(0)};
  };

  // Prefill the prompt in one chunk, then the first REDUCTION.
  auto t0 = clock::now();
  Matrix logits = decoder.feed(result.ids, result.is_anchor);  // (prompt, vocab)
  result.prefill_seconds = seconds_since(t0);
  if (opt.keep_logits) result.logits.topRows(logits.rows()) = logits;
  if (opt.reduce_at_anchors) result.reductions.push_back(snapshot(decoder.reduce()));

  std::mt19937_64 rng(opt.seed);
  t0 = clock::now();
  for (std::int32_t step = 0; step < total; ++step) {
    std::int32_t next;
    const std::int32_t previous = result.ids.empty() ? -1 : result.ids.back();
    if (opt.forced)
      next = (*opt.forced)[std::size_t(step)];
    else if (tok.mode == AnchorMode::ac && opt.insert_ac &&
             (Tokenizer::is_sentence_punctuation(previous) || previous == '\n'))
      next = Tokenizer::ac_id;
    else if (logits.rows() == 0)
      next = Tokenizer::bos_id;  // empty prompt: start a text
    else
      next =
          pick_token(logits.row(logits.rows() - 1), tok, opt.temperature, opt.printable_only, rng);

    const std::uint8_t anchor = tok.is_anchor(next);
    result.ids.push_back(next);
    result.is_anchor.push_back(anchor);
    logits = decoder.feed({next}, {anchor});  // (1, vocab)
    if (opt.keep_logits) result.logits.row(Eigen::Index(result.ids.size()) - 1) = logits.row(0);
    if (anchor && opt.reduce_at_anchors) result.reductions.push_back(snapshot(decoder.reduce()));
    ++result.continuation;
    if (opt.on_step)
      opt.on_step({step + 1, total, (step + 1) / std::max(seconds_since(t0), 1e-12),
                   decoder.entries(), decoder.bytes()});
  }
  result.decode_seconds = seconds_since(t0);
  result.final_cache = snapshot(0);
  return result;
}

// run_text on the CPU backend with opt.attention_threads threads.
inline RunResult run_text(const Weights& w, const Tokenizer& tok,
                          const std::vector<std::int32_t>& prompt, const RunOptions& opt) {
  return run_text(w, tok, prompt, opt, CpuAttention{opt.attention_threads});
}

}  // namespace anllm
