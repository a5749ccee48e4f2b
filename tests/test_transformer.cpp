// tests/test_transformer.cpp - the reference transformer (examples/anllm_demo/anllm/).
//
// The headline property is SPEC section 3's exactness invariant end to end: for random
// models and texts in both anchor modes, the logits of AnLLM inference (prefill, reduce,
// token by token with a reduction after every anchor) equal those of the whole text run at
// once under the AnLLM mask, and after every reduction each layer's cache holds exactly the
// earlier anchors plus the open segment. Around it: the layers against float64 references,
// the tokenizer's AC insertion, and the safetensors reader on good and malformed files.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "../examples/anllm_demo/anllm/config.hpp"
#include "../examples/anllm_demo/anllm/generate.hpp"
#include "../examples/anllm_demo/anllm/model.hpp"
#include "../examples/anllm_demo/anllm/safetensors.hpp"
#include "../examples/anllm_demo/anllm/tokenizer.hpp"
#include "../examples/anllm_demo/anllm/weights.hpp"
#include "support/random_layouts.hpp"
#include "support/transformer_cases.hpp"

namespace {

using anllm::AnchorMode;
using anllm::Matrix;
using anllm::Tokenizer;
using ansan::test::expected_cache;
using ansan::test::random_text;
using ansan::test::relative_error;

constexpr int kHeadDims[3] = {8, 16, 16};  // of the random models
anllm::ModelConfig random_config(std::mt19937& rng) {
  return ansan::test::random_config(rng, kHeadDims);
}
anllm::Weights random_weights(std::mt19937& rng) {
  return ansan::test::random_weights(rng, kHeadDims);
}

ansan::AnchorLayout layout_of(const std::vector<std::int32_t>& ids, const Tokenizer& tok,
                              std::int32_t vocab) {
  const std::vector<std::int32_t> cu{0, std::int32_t(ids.size())};
  return ansan::build_layout(ids, cu, tok.selector(), vocab);
}

// A scratch file name of this process (several builds may run the tests at once).
std::string temp_path(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/ansan_test_transformer_" + std::to_string(getpid()) +
         "_" + name;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), std::streamsize(bytes.size()));
}
std::string read_bytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}
// A safetensors file with the given JSON header and data bytes.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int b = 0; b < 8; ++b)
    out[std::size_t(b)] = char((std::uint64_t(header.size()) >> (8 * b)) & 0xff);
  return out + header + data;
}

// Runs `body` and checks it throws an exception whose message contains every one of `parts`.
template <class Body>
void check_error_names(const Body& body, const std::vector<std::string>& parts) {
  std::string message;
  try {
    body();
  } catch (const std::exception& e) {
    message = e.what();
  }
  INFO("message: ", message);
  REQUIRE(!message.empty());
  for (const auto& part : parts) CHECK(message.find(part) != std::string::npos);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Tokenizer

TEST_CASE("tokenizer: decode(encode(text)) gives the text back, in both modes, for any bytes") {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> byte(0, 255), len(0, 200);
  for (int trial = 0; trial < 200; ++trial) {
    std::string text;
    for (int i = len(rng); i > 0; --i)
      text.push_back(char(trial % 2 ? byte(rng) : " .!?\na"[byte(rng) % 6]));
    for (const AnchorMode mode : {AnchorMode::ac, AnchorMode::ep}) {
      const Tokenizer tok{mode};
      const auto ids = tok.encode(text);
      REQUIRE(!ids.empty());
      CHECK(ids.front() == Tokenizer::bos_id);
      CHECK(Tokenizer::decode(ids, false) == text);
      CHECK(tok.encode(text, false).size() + 1 == ids.size());
      std::size_t bytes = 0, acs = 0;
      for (const auto id : ids) bytes += id < 256, acs += id == Tokenizer::ac_id;
      CHECK(bytes == text.size());
      if (mode == AnchorMode::ep) CHECK(acs == 0);
    }
  }
}

TEST_CASE(
    "tokenizer: AC mode inserts <AC> after . ! ? followed by a space or the end, and after "
    "newlines") {
  const Tokenizer tok{AnchorMode::ac};
  const auto marked = [&](const std::string& text) {
    return Tokenizer::decode(tok.encode(text, false), true, "|");
  };
  CHECK(marked("") == "");
  CHECK(marked("no sentence end here") == "no sentence end here");
  CHECK(marked("Ends in a period.") == "Ends in a period.|");
  CHECK(marked(".") == ".|");
  CHECK(marked("One. Two! Three? Four") == "One.| Two!| Three?| Four");
  CHECK(marked("Wait... what?! Yes.") == "Wait...| what?!| Yes.|");  // consecutive punctuation
  CHECK(marked("pi is 3.14, e.g. not") == "pi is 3.14, e.g.| not");  // only before a space
  CHECK(marked("a\nb\n\nc") == "a\n|b\n|\n|c");                      // every newline
  CHECK(marked("End.\nNext") == "End.\n|Next");                      // "." then newline: once
  CHECK(marked("Hi.  Two spaces") == "Hi.|  Two spaces");
  CHECK(Tokenizer::decode(tok.encode("A. B"), true) == "<bos>A.\u2693 B");
}

TEST_CASE(
    "tokenizer: the layout's anchors are the <AC> tokens (AC) or the punctuation bytes (EP)") {
  std::mt19937 rng(12);
  for (int trial = 0; trial < 50; ++trial) {
    const std::string text = random_text(rng, 1 + trial);
    for (const AnchorMode mode : {AnchorMode::ac, AnchorMode::ep}) {
      const Tokenizer tok{mode};
      const auto ids = tok.encode(text);
      const auto layout = layout_of(ids, tok, Tokenizer::vocab);
      for (std::size_t i = 0; i < ids.size(); ++i) {
        const bool expected = mode == AnchorMode::ac ? ids[i] == Tokenizer::ac_id
                                                     : (ids[i] == '.' || ids[i] == '!' ||
                                                        ids[i] == '?' || ids[i] == '\n');
        CHECK(bool(layout.is_anchor[i]) == expected);
        CHECK(tok.is_anchor(ids[i]) == expected);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Layers against float64 references

TEST_CASE("layers: rmsnorm, rope and swiglu match float64 references") {
  std::mt19937 rng(21);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (int trial = 0; trial < 20; ++trial) {
    anllm::ModelConfig c;
    c.dim = 8 * (1 + trial % 4);
    c.ffn_dim = 3 * c.dim;
    c.heads = 1 + trial % 3;
    c.kv_heads = c.heads;
    c.head_dim = 2 * (1 + trial % 5);
    const anllm::Weights w = anllm::init_weights(c, std::uint64_t(trial));
    const int tokens = 1 + trial;
    Matrix x(tokens, c.dim);
    for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
    const anllm::LayerWeights& L = w.layers[0];

    Matrix out;
    anllm::rmsnorm_forward(out, x, L.attn_norm, c.norm_eps);
    anllm::Matrix mlp;
    anllm::swiglu_forward(mlp, x, L);
    for (int t = 0; t < tokens; ++t) {
      double ms = 0;
      for (int d = 0; d < c.dim; ++d) ms += double(x(t, d)) * x(t, d);
      const double inv = 1.0 / std::sqrt(ms / c.dim + c.norm_eps);
      for (int d = 0; d < c.dim; ++d)
        CHECK(out(t, d) == doctest::Approx(double(x(t, d)) * inv * L.attn_norm(d)).epsilon(1e-5));
      for (int o = 0; o < c.dim; ++o) {
        double sum = 0;
        for (int f = 0; f < c.ffn_dim; ++f) {
          double gate = 0, up = 0;
          for (int d = 0; d < c.dim; ++d)
            gate += double(L.w_gate(f, d)) * x(t, d), up += double(L.w_up(f, d)) * x(t, d);
          sum += gate / (1 + std::exp(-gate)) * up * L.w_down(o, f);
        }
        CHECK(mlp(t, o) == doctest::Approx(sum).epsilon(1e-4).scale(1.0));
      }
    }

    // RoPE: rotate each (d, d + half) pair by pos * theta^(-2d/head_dim).
    Matrix q(tokens, c.heads * c.head_dim);
    for (Eigen::Index i = 0; i < q.size(); ++i) q.data()[i] = normal(rng);
    std::vector<std::int32_t> pos(static_cast<std::size_t>(tokens));
    for (auto& p : pos) p = std::uniform_int_distribution<int>(0, 20000)(rng);
    Matrix rotated = q;
    anllm::rope_forward(rotated, pos, c.heads, c.head_dim, c.rope_theta);
    const int half = c.head_dim / 2;
    for (int t = 0; t < tokens; ++t)
      for (int h = 0; h < c.heads; ++h)
        for (int d = 0; d < half; ++d) {
          const double angle =
              pos[std::size_t(t)] * std::pow(double(c.rope_theta), -2.0 * d / c.head_dim);
          const double x1 = q(t, h * c.head_dim + d), x2 = q(t, h * c.head_dim + d + half);
          CHECK(rotated(t, h * c.head_dim + d) ==
                doctest::Approx(x1 * std::cos(angle) - x2 * std::sin(angle))
                    .epsilon(1e-5)
                    .scale(1.0));
          CHECK(rotated(t, h * c.head_dim + d + half) ==
                doctest::Approx(x2 * std::cos(angle) + x1 * std::sin(angle))
                    .epsilon(1e-5)
                    .scale(1.0));
        }
  }
}

TEST_CASE("weights: the seed names the model; configs out of range are rejected by name") {
  anllm::ModelConfig c;
  c.layers = 1;
  auto a = anllm::init_weights(c, 5), b = anllm::init_weights(c, 5), d = anllm::init_weights(c, 6);
  CHECK(a.embedding == b.embedding);
  CHECK(a.layers[0].wq == b.layers[0].wq);
  CHECK(a.embedding != d.embedding);
  CHECK(a.lm_head.rows() == c.vocab);

  anllm::ModelConfig bad = c;
  bad.kv_heads = 3;
  check_error_names([&] { bad.validate(); }, {"kv_heads", "3"});
  bad = c;
  bad.head_dim = 7;
  check_error_names([&] { bad.validate(); }, {"head_dim", "7"});
  bad = c;
  bad.vocab = 100;
  check_error_names([&] { anllm::init_weights(bad, 1); }, {"vocab", "100"});
}

// ---------------------------------------------------------------------------------------------
// The exactness invariant, end to end

// Runs `ids` as (b), the whole text under the AnLLM mask, and as (c), a prompt of prompt_len
// tokens then the rest token by token with a reduction after every anchor (both by hand and
// through run_text); checks that the logits agree and that after every reduction each layer
// holds exactly the earlier anchors plus the open segment. Returns the reductions checked.
static int check_anchor_inference(const anllm::Weights& w, const Tokenizer& tok,
                                  const std::vector<std::int32_t>& ids, std::size_t prompt_len) {
  const anllm::ModelConfig& c = w.config;
  const auto layout = layout_of(ids, tok, c.vocab);
  const std::vector<std::int32_t> prompt(ids.begin(), ids.begin() + std::ptrdiff_t(prompt_len));
  const std::vector<std::int32_t> rest(ids.begin() + std::ptrdiff_t(prompt_len), ids.end());
  const std::vector<std::uint8_t> flags(layout.is_anchor.begin(), layout.is_anchor.end());
  CAPTURE(c.layers);
  CAPTURE(c.heads);
  CAPTURE(c.kv_heads);
  CAPTURE(Tokenizer::decode(ids, true, "|"));
  CAPTURE(prompt_len);

  const Matrix whole = anllm::forward_masked(w, ids, layout, ansan::MaskPolicy::anllm(), 2);

  // (c) driven step by step here, so the cache can be inspected after every reduction.
  anllm::IncrementalDecoder decoder(w, ansan::MaskPolicy::anllm(), 2);
  Matrix incremental = Matrix::Constant(Eigen::Index(ids.size()), c.vocab, NAN);
  int reductions = 0;
  const auto check_cache = [&](std::int32_t next_pos) {
    const auto expected = expected_cache(layout, next_pos);
    CHECK(decoder.cache().layers() == c.layers);
    CHECK(decoder.cache().positions(0) == expected);
    CHECK(decoder.entries() == std::int64_t(expected.size()) * c.layers);
    CHECK(decoder.bytes() ==
          std::int64_t(expected.size()) * c.layers * 2 * c.kv_heads * c.head_dim * 4);
    CHECK(decoder.full_cache_bytes() ==
          std::int64_t(next_pos) * c.layers * 2 * c.kv_heads * c.head_dim * 4);
    ++reductions;
  };
  incremental.topRows(Eigen::Index(prompt_len)) = decoder.feed(
      prompt, std::vector<std::uint8_t>(flags.begin(), flags.begin() + std::ptrdiff_t(prompt_len)));
  decoder.reduce();
  check_cache(std::int32_t(prompt_len));
  for (std::size_t i = prompt_len; i < ids.size(); ++i) {
    incremental.row(Eigen::Index(i)) = decoder.feed({ids[i]}, {flags[i]}).row(0);
    if (flags[i]) {
      decoder.reduce();
      check_cache(std::int32_t(i + 1));
    }
  }
  CHECK(relative_error(whole, incremental) < 1e-5);

  // run_text, teacher-forced, gives the same logits and one snapshot per reduction.
  anllm::RunOptions opt;
  opt.forced = &rest;
  const anllm::RunResult run = anllm::run_text(w, tok, prompt, opt);
  CHECK(run.ids == ids);
  CHECK(relative_error(whole, run.logits) < 1e-5);
  std::size_t anchors_in_rest = 0;
  for (std::size_t i = prompt_len; i < ids.size(); ++i) anchors_in_rest += flags[i];
  REQUIRE(run.reductions.size() == 1 + anchors_in_rest);
  for (const anllm::CacheSnapshot& snap : run.reductions) {
    CHECK(snap.positions == expected_cache(layout, snap.position));
    CHECK(snap.entries == std::int64_t(snap.positions.size()) * c.layers);
  }
  CHECK(run.final_cache.positions == expected_cache(layout, std::int32_t(ids.size())));
  return reductions;
}

TEST_CASE("exactness: anchor-based inference equals the whole text under the AnLLM mask") {
  std::mt19937 rng(31);
  int reductions_checked = 0;
  for (int trial = 0; trial < 48; ++trial) {
    CAPTURE(trial);
    const ansan::test::RandomCase c = ansan::test::random_case(rng, trial, 80, kHeadDims);
    reductions_checked += check_anchor_inference(c.weights, c.tok, c.ids, c.prompt_len);
  }
  CHECK(reductions_checked > 100);
}

TEST_CASE("exactness: edge texts, at every prompt length") {
  // No anchor, an anchor at position 0 (EP, no <bos>), consecutive anchors, all anchors, one
  // token, ending on an anchor (no open segment), a trailing open segment.
  const std::vector<std::string> texts = {"abc",       ".",   "a",        "\n\n\n", "....",
                                          "?!?! a. b", "\nx", "a. b. c.", "Hi. Ho"};
  std::mt19937 rng(71);
  for (const std::string& text : texts)
    for (const AnchorMode mode : {AnchorMode::ac, AnchorMode::ep})
      for (const bool bos : {true, false}) {
        const Tokenizer tok{mode};
        const auto ids = tok.encode(text, bos);
        const anllm::Weights w = random_weights(rng);
        for (std::size_t prompt_len = 1; prompt_len <= ids.size(); ++prompt_len)
          check_anchor_inference(w, tok, ids, prompt_len);
      }
}

TEST_CASE("exactness: generated continuations, and the causal baseline equals causal masking") {
  std::mt19937 rng(41);
  for (int trial = 0; trial < 16; ++trial) {
    const anllm::ModelConfig c = random_config(rng);
    const anllm::Weights w = anllm::init_weights(c, rng());
    const Tokenizer tok{trial % 2 ? AnchorMode::ep : AnchorMode::ac};
    const auto prompt = tok.encode(random_text(rng, 5 + trial * 5));
    CAPTURE(trial);

    // (c) generating, sampled or greedy: (b) over the text it produced gives the same logits.
    anllm::RunOptions opt;
    opt.new_tokens = 40;
    opt.temperature = trial % 3 == 0 ? 0.f : 1.f;
    opt.seed = std::uint64_t(trial);
    const anllm::RunResult anchored = anllm::run_text(w, tok, prompt, opt);
    REQUIRE(anchored.ids.size() == prompt.size() + 40);
    const auto layout = layout_of(anchored.ids, tok, c.vocab);
    const Matrix whole = anllm::forward_masked(w, anchored.ids, layout, ansan::MaskPolicy::anllm());
    CHECK(relative_error(whole, anchored.logits) < 1e-5);
    for (std::size_t i = 0; i < anchored.ids.size(); ++i)
      CHECK(bool(anchored.is_anchor[i]) == bool(layout.is_anchor[i]));
    if (tok.mode == AnchorMode::ac)  // the generator feeds <AC> after a generated sentence end
      for (std::size_t i = prompt.size(); i + 1 < anchored.ids.size(); ++i)
        if (Tokenizer::is_sentence_punctuation(anchored.ids[i]) || anchored.ids[i] == '\n')
          CHECK(anchored.ids[i + 1] == Tokenizer::ac_id);

    // (a) the full cache: causal, never reduced, same continuation; equals causal masking and
    // keeps every row.
    const std::vector<std::int32_t> rest(anchored.ids.begin() + std::ptrdiff_t(prompt.size()),
                                         anchored.ids.end());
    anllm::RunOptions full_opt;
    full_opt.policy = ansan::MaskPolicy::causal();
    full_opt.reduce_at_anchors = false;
    full_opt.forced = &rest;
    const anllm::RunResult full = anllm::run_text(w, tok, prompt, full_opt);
    const Matrix causal =
        anllm::forward_masked(w, anchored.ids, layout, ansan::MaskPolicy::causal());
    CHECK(relative_error(causal, full.logits) < 1e-5);
    CHECK(full.reductions.empty());
    CHECK(full.final_cache.entries == std::int64_t(anchored.ids.size()) * c.layers);
    CHECK(full.final_cache.bytes == full.final_cache.full_bytes);
    CHECK(anchored.final_cache.full_bytes == full.final_cache.bytes);

    // The mask matters: once a segment has closed, AnLLM and causal logits differ.
    if (layout.anchor_pos.size() >= 1 &&
        layout.anchor_pos.front() + 2 < std::int32_t(anchored.ids.size()))
      CHECK(relative_error(causal, whole) > 1e-3);
  }
}

TEST_CASE("exactness: every policy of the family, reducing after every token") {
  // SPEC section 5: the cache rule holds for SepLLM, StreamingLLM, sliding windows, ... too.
  // Windows slide with every token, so this run reduces after each one.
  std::mt19937 rng(61);
  for (const ansan::MaskPolicy& policy : ansan::test::all_policies()) {
    for (int trial = 0; trial < 3; ++trial) {
      const anllm::ModelConfig c = random_config(rng);
      const anllm::Weights w = anllm::init_weights(c, rng());
      const Tokenizer tok{trial % 2 ? AnchorMode::ep : AnchorMode::ac};
      const auto ids = tok.encode(random_text(rng, 3 + int(rng() % 30)));
      const auto layout = layout_of(ids, tok, c.vocab);
      CAPTURE(ansan::policy_name(policy));
      CAPTURE(trial);
      const Matrix whole = anllm::forward_masked(w, ids, layout, policy);
      anllm::IncrementalDecoder decoder(w, policy);
      Matrix incremental = Matrix::Constant(Eigen::Index(ids.size()), c.vocab, NAN);
      for (std::size_t i = 0; i < ids.size(); ++i) {
        incremental.row(Eigen::Index(i)) = decoder.feed({ids[i]}, {layout.is_anchor[i]}).row(0);
        decoder.reduce();
        // Exactly the keys the next query could still see are kept.
        std::vector<std::int32_t> expected;
        for (std::int32_t j = 0; j <= std::int32_t(i); ++j)
          if (ansan::still_visible(policy, layout.key(0, j), std::int32_t(i) + 1,
                                   decoder.cache().open_seg_start(0)))
            expected.push_back(j);
        CHECK(decoder.cache().positions(0) == expected);
      }
      CHECK(relative_error(whole, incremental) < 1e-5);
    }
  }
}

TEST_CASE("model: bad arguments are rejected by name before anything runs") {
  anllm::ModelConfig c;
  c.layers = 1;
  const anllm::Weights w = anllm::init_weights(c, 1);
  const Tokenizer tok{AnchorMode::ac};
  const auto ids = tok.encode("A. B");
  const auto other = layout_of(tok.encode("A. B. C"), tok, c.vocab);
  check_error_names([&] { anllm::forward_masked(w, ids, other, ansan::MaskPolicy::anllm()); },
                    {"anllm::forward_masked", "layout", "1 sequence of 6 tokens"});
  anllm::IncrementalDecoder decoder(w, ansan::MaskPolicy::anllm());
  check_error_names([&] { decoder.feed(ids, {0, 1}); }, {"is_anchor.size()", "2"});
  check_error_names([&] { decoder.feed({65, 259}, {0, 0}); }, {"ids[1]", "259", "[0, 259)"});
  check_error_names([&] { decoder.feed({-1}, {0}); }, {"ids[0]", "-1"});
  const std::vector<std::int32_t> bad_ids{1, 300};
  check_error_names(
      [&] {
        anllm::forward_masked(w, bad_ids, layout_of({1, 2}, tok, c.vocab),
                              ansan::MaskPolicy::anllm());
      },
      {"forward_masked", "ids[1]", "300"});
  CHECK(decoder.entries() == 0);
  CHECK(decoder.next_pos() == 0);

  // An empty prompt is allowed: generation starts with <bos>.
  anllm::RunOptions opt;
  opt.new_tokens = 3;
  const anllm::RunResult run = anllm::run_text(w, tok, {}, opt);
  REQUIRE(run.ids.size() == 3);
  CHECK(run.ids[0] == Tokenizer::bos_id);
  CHECK(run.logits.allFinite());
}

// ---------------------------------------------------------------------------------------------
// safetensors

TEST_CASE("safetensors: weights round-trip in F32 exactly and in BF16/F16 to the nearest value") {
  std::mt19937 rng(51);
  for (int trial = 0; trial < 6; ++trial) {
    anllm::ModelConfig c = random_config(rng);
    anllm::Weights w = anllm::init_weights(c, rng());
    for (const anllm::FileDtype dtype :
         {anllm::FileDtype::f32, anllm::FileDtype::bf16, anllm::FileDtype::f16}) {
      const std::string path = temp_path("roundtrip.safetensors");
      anllm::save_weights(w, path, dtype);
      CHECK(read_bytes(path).size() % 2 == 0);
      anllm::Weights loaded = anllm::load_weights(c, path);
      const auto want = anllm::parameters(w), got = anllm::parameters(loaded);
      REQUIRE(want.size() == got.size());
      for (std::size_t p = 0; p < want.size(); ++p) {
        CAPTURE(want[p].name);
        REQUIRE(got[p].shape == want[p].shape);
        std::int64_t numel = 1;
        for (const auto e : want[p].shape) numel *= e;
        for (std::int64_t i = 0; i < numel; ++i) {
          const float x = want[p].data[i];
          const float expected = dtype == anllm::FileDtype::f32 ? x
                                 : dtype == anllm::FileDtype::bf16
                                     ? ansan::to_float(ansan::from_float<ansan::bf16>(x))
                                     : ansan::to_float(ansan::from_float<ansan::half>(x));
          if (got[p].data[i] != expected) {
            CHECK(got[p].data[i] == expected);
            break;
          }
        }
      }
      // The loaded model computes what the saved one does (exactly, for F32).
      if (dtype == anllm::FileDtype::f32) {
        const Tokenizer tok{AnchorMode::ac};
        const auto ids = tok.encode("Hi. Ho!");
        const auto layout = layout_of(ids, tok, c.vocab);
        CHECK(anllm::forward_masked(w, ids, layout, ansan::MaskPolicy::anllm()) ==
              anllm::forward_masked(loaded, ids, layout, ansan::MaskPolicy::anllm()));
      }
      std::remove(path.c_str());
    }
  }
}

TEST_CASE("safetensors: malformed or mismatched files are rejected naming the field or tensor") {
  anllm::ModelConfig c;
  c.layers = 1;
  c.dim = 16;
  c.heads = c.kv_heads = 1;
  c.head_dim = 8;
  c.ffn_dim = 16;
  anllm::Weights w = anllm::init_weights(c, 3);
  const std::string good = temp_path("good.safetensors"), bad = temp_path("bad.safetensors");
  anllm::save_weights(w, good);
  const std::string bytes = read_bytes(good);

  SUBCASE("missing file") {
    check_error_names([&] { anllm::read_safetensors(temp_path("does_not_exist")); },
                      {"does_not_exist", "unreadable"});
  }
  SUBCASE("shorter than the length prefix") {
    write_bytes(bad, bytes.substr(0, 5));
    check_error_names([&] { anllm::read_safetensors(bad); }, {"file size", "5"});
  }
  SUBCASE("truncated inside the header") {
    write_bytes(bad, bytes.substr(0, 40));
    check_error_names([&] { anllm::read_safetensors(bad); }, {"header length", "truncated"});
  }
  SUBCASE("truncated inside the data") {
    write_bytes(bad, bytes.substr(0, bytes.size() - 10));
    // The last tensor written is the one cut short.
    check_error_names([&] { anllm::read_safetensors(bad); },
                      {"lm_head.weight", "data_offsets", "truncated"});
  }
  SUBCASE("bad JSON") {
    std::string corrupt = bytes;
    corrupt[8] = '[';  // the header's opening brace
    write_bytes(bad, corrupt);
    check_error_names([&] { anllm::read_safetensors(bad); }, {"JSON header"});
    write_bytes(bad, safetensors_bytes("[1, 2]", ""));
    check_error_names([&] { anllm::read_safetensors(bad); }, {"JSON header", "array", "object"});
  }
  SUBCASE("unsupported dtype") {
    write_bytes(
        bad, safetensors_bytes(R"({"x": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}})",
                               std::string(8, '\0')));
    check_error_names([&] { anllm::read_safetensors(bad); },
                      {"tensor 'x' dtype", "I32", "F32, BF16 or F16"});
  }
  SUBCASE("byte count that does not match the shape") {
    write_bytes(
        bad, safetensors_bytes(R"({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})",
                               std::string(8, '\0')));
    check_error_names([&] { anllm::read_safetensors(bad); }, {"tensor 'x' byte count", "8", "12"});
  }
  SUBCASE("a shape too large for the file, or for 64 bits") {
    write_bytes(
        bad,
        safetensors_bytes(
            R"({"x": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})",
            ""));
    check_error_names([&] { anllm::read_safetensors(bad); }, {"tensor 'x' shape", "2^64"});
    write_bytes(
        bad,
        safetensors_bytes(
            R"({"x": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 0]}})",
            ""));
    check_error_names([&] { anllm::read_safetensors(bad); }, {"tensor 'x' byte count"});
  }
  SUBCASE("missing or malformed fields") {
    write_bytes(bad, safetensors_bytes(R"({"x": {"dtype": "F32", "data_offsets": [0, 4]}})",
                                       std::string(4, '\0')));
    check_error_names([&] { anllm::read_safetensors(bad); }, {"tensor 'x' shape", "missing"});
    write_bytes(
        bad, safetensors_bytes(R"({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})",
                               std::string(4, '\0')));
    check_error_names([&] { anllm::read_safetensors(bad); }, {"tensor 'x' shape", "non-negative"});
    write_bytes(
        bad, safetensors_bytes(R"({"x": {"dtype": "F32", "shape": [1]}})", std::string(4, '\0')));
    check_error_names([&] { anllm::read_safetensors(bad); },
                      {"tensor 'x' data_offsets", "missing"});
    write_bytes(bad, safetensors_bytes(R"({"x": {"shape": [1], "data_offsets": [0, 4]}})",
                                       std::string(4, '\0')));
    check_error_names([&] { anllm::read_safetensors(bad); }, {"tensor 'x' dtype", "missing"});
  }
  SUBCASE("wrong shape for the config") {
    anllm::ModelConfig wider = c;
    wider.ffn_dim = 24;
    check_error_names([&] { anllm::load_weights(wider, good); },
                      {"model.layers.0.mlp.gate_proj.weight", "[16, 16]", "[24, 16]"});
  }
  SUBCASE("missing tensor") {
    std::vector<anllm::TensorToWrite> tensors;
    for (const auto& p : anllm::parameters(w))
      if (p.name != "model.norm.weight") tensors.push_back({p.name, p.shape, p.data});
    anllm::write_safetensors(bad, tensors);
    check_error_names([&] { anllm::load_weights(c, bad); }, {"model.norm.weight", "missing"});
  }
  SUBCASE("the writer refuses duplicate names and null data") {
    const float x = 1.f;
    check_error_names(
        [&] {
          anllm::write_safetensors(bad, {{"a", {1}, &x}, {"a", {1}, &x}});
        },
        {"tensor name", "a", "unique"});
    check_error_names(
        [&] {
          anllm::write_safetensors(bad, {{"b", {2}, nullptr}});
        },
        {"tensor 'b' data", "null"});
  }
  SUBCASE("untied checkpoint loaded as tied ignores lm_head; tied loaded as untied misses it") {
    anllm::ModelConfig tied = c;
    tied.tied_head = true;
    CHECK_NOTHROW(anllm::load_weights(tied, good));
    anllm::Weights tw = anllm::init_weights(tied, 3);
    anllm::save_weights(tw, bad);
    check_error_names([&] { anllm::load_weights(c, bad); }, {"lm_head.weight", "missing"});
  }
  std::remove(good.c_str());
  std::remove(bad.c_str());
}
