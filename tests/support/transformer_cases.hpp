// tests/support/transformer_cases.hpp - random texts, models and trials for the reference
// transformer's tests (host and GPU backends), and what its cache must hold (SPEC section 3).
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "../../examples/anllm_demo/anllm/config.hpp"
#include "../../examples/anllm_demo/anllm/model.hpp"
#include "../../examples/anllm_demo/anllm/tokenizer.hpp"
#include "ansan/layout.hpp"

namespace ansan::test {

using anllm::Matrix;

// Random prose: words of random letters, sentences ended by . ! ? or runs of them, commas,
// decimal points ("3.5", not a sentence end), spaces and newlines, sometimes no end at all.
inline std::string random_text(std::mt19937& rng, int words) {
  std::uniform_int_distribution<int> letter('a', 'z'), word_len(1, 6), pick(0, 99);
  const char* enders[] = {".", "!", "?", "?!", "...", ".\n", "\n", "\n\n"};
  std::string text;
  for (int w = 0; w < words; ++w) {
    for (int c = word_len(rng); c > 0; --c) text.push_back(char(letter(rng)));
    const int p = pick(rng);
    if (p < 15)
      text += enders[pick(rng) % 8];
    else if (p < 18)
      text += ",";
    else if (p < 20)
      text += ".5";
    if (w + 1 < words && (text.empty() || text.back() != '\n')) text.push_back(' ');
  }
  return text;
}

// Small GQA shapes; head_dim drawn from `head_dims` (three entries, one draw).
inline anllm::ModelConfig random_config(std::mt19937& rng, const int (&head_dims)[3]) {
  const int group[] = {1, 2, 4};
  std::uniform_int_distribution<int> pick(0, 2), layers(1, 3);
  anllm::ModelConfig c;
  c.layers = layers(rng);
  c.kv_heads = 1 + pick(rng) % 2;
  c.heads = c.kv_heads * group[pick(rng)];
  c.head_dim = head_dims[pick(rng)];
  c.dim = 16 * (1 + pick(rng));
  c.ffn_dim = 2 * c.dim + 8;
  c.tied_head = pick(rng) == 0;
  return c;
}

// A random model: its configuration, then its weights from the next seed of `rng` (two
// statements, so that every compiler draws them in this order).
inline anllm::Weights random_weights(std::mt19937& rng, const int (&head_dims)[3]) {
  const anllm::ModelConfig c = random_config(rng, head_dims);
  return anllm::init_weights(c, rng());
}

// One trial of the random exactness tests: a random model, a tokenizer (EP on odd trials, AC
// on even), a random text of 1..max_words words, and a prompt of 1..all of its tokens (the rest
// is teacher-forced). Drawn in this order, one statement each.
struct RandomCase {
  anllm::Weights weights;
  anllm::Tokenizer tok;
  std::vector<std::int32_t> ids;
  std::size_t prompt_len;
};
inline RandomCase random_case(std::mt19937& rng, int trial, int max_words,
                              const int (&head_dims)[3]) {
  RandomCase c{random_weights(rng, head_dims),
               anllm::Tokenizer{trial % 2 ? anllm::AnchorMode::ep : anllm::AnchorMode::ac},
               {},
               0};
  const int words = 1 + int(rng() % unsigned(max_words));
  c.ids = c.tok.encode(random_text(rng, words));
  c.prompt_len = 1 + rng() % c.ids.size();
  return c;
}

// max |a - b| / max |a|: the relative error of b against a.
inline double relative_error(const Matrix& a, const Matrix& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  REQUIRE(a.allFinite());
  REQUIRE(b.allFinite());  // a position the run failed to write is still NaN
  return double((a - b).cwiseAbs().maxCoeff()) / std::max(double(a.cwiseAbs().maxCoeff()), 1e-30);
}

// The keys the cache must hold after reducing at `next_pos` (SPEC section 3), from the text's
// layout: every anchor before the open segment, then every position of the open segment.
inline std::vector<std::int32_t> expected_cache(const ansan::AnchorLayout& layout, std::int32_t next_pos) {
  const std::int32_t open = next_pos == 0 ? 0
                                          : (layout.is_anchor[std::size_t(next_pos - 1)]
                                                 ? next_pos
                                                 : layout.seg_start[std::size_t(next_pos - 1)]);
  std::vector<std::int32_t> keep;
  for (const std::int32_t a : layout.anchor_pos)
    if (a < open) keep.push_back(a);
  for (std::int32_t p = open; p < next_pos; ++p) keep.push_back(p);
  return keep;
}

}  // namespace ansan::test
