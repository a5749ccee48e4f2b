// anllm_demo - anchor-based inference end to end on a small Llama-style AnLLM.
//
// Runs one text three ways, all through ansan:
//   (a) full causal attention over a cache that keeps every token (today's baseline);
//   (b) the whole text at once under the AnLLM mask (forward_masked);
//   (c) AnLLM inference: prefill the prompt, reduce the cache, generate token by token and
//       reduce after every anchor (SPEC section 3, the paper's Algorithm 1);
// and prints the anchors, the cache at each reduction next to the full cache, the decode
// speed of (a) and (c), and the largest logit difference between (b) and (c), which the
// exactness invariant says is rounding. Weights are seeded random unless --load is given,
// so the generated text is noise; the cache and exactness figures hold for any weights.
//
// --device picks the attention backend (anllm/model.hpp): cpu, or gpu (attention and the KV
// cache on the GPU, matmuls, norms and RoPE still on the CPU; needs a CUDA build and a
// device); auto, the default, is gpu exactly when both are there. (a), (b) and (c) all run on
// the chosen backend, and the output says which ran.
//
//   anllm_demo [--mode ac|ep] [--tokens N] [--layers L] [--dim D] [--seed S]
//              [--temperature T] [--threads N] [--device auto|cpu|gpu]
//              [--save|--load weights.safetensors] [FILE|-]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "anllm/config.hpp"
#include "anllm/generate.hpp"
#include "anllm/model.hpp"
#include "anllm/tokenizer.hpp"
#include "anllm/weights.hpp"
#if ANLLM_DEMO_WITH_CUDA
#include "anllm/gpu_path.hpp"
#endif

namespace {

const char* const kBuiltinText =
    "The lighthouse keeper counted the ships every night. Most of them passed without a signal. "
    "Some blinked twice, and he wrote their names in a thick grey book. When the fog came in, "
    "he lit the second lamp and waited. Nobody had told him to do this; his father had done it, "
    "and so had his father's mother. The book was older than the tower!\n"
    "In the spring a letter arrived from the harbour office. It said the lamps would be "
    "replaced by a machine that needed no keeper. He read it twice. Then he folded it into the "
    "book, between a schooner called Patience and a trawler with no name at all. Would the "
    "machine count the ships? Would it know which ones blinked twice? He decided it would not, "
    "and that somebody ought to.\n"
    "So he kept counting. The machine arrived in June and worked perfectly. It never slept, "
    "never missed a fog, and never wrote anything down. In the evenings he sat beside it with "
    "the grey book open on his knees. The ships went by as they always had. He noted each one, "
    "the hour, the weather, the colour of the sea. Years later the harbour office asked for "
    "the records of the old light, and there was only one place to find them.\n"
    "A memory does not need to hold every word. It needs the right marks in the right places: "
    "a name, an hour, the end of a sentence. That is the whole idea of an anchor. Everything a "
    "sentence said is folded into its last token, and the rest of the sentence can be let go. "
    "The keeper would have understood this at once. His book held the ships, not the nights.\n";

struct Options {
  anllm::AnchorMode mode = anllm::AnchorMode::ac;
  std::int32_t tokens = 200;
  std::uint64_t seed = 1;
  float temperature = 1.f;
  int threads = 0;
  std::string device = "auto";
  anllm::ModelConfig config;
  std::string save, load, text_path;
};

[[noreturn]] void usage(const std::string& problem) {
  std::cerr << "anllm_demo: " << problem << "\n"
            << "usage: anllm_demo [--mode ac|ep] [--tokens N] [--layers L] [--dim D] [--seed S]\n"
            << "                  [--temperature T] [--threads N] [--device auto|cpu|gpu]\n"
            << "                  [--save FILE | --load FILE] [TEXT_FILE | -]\n";
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(arg + " needs a value");
      return argv[++i];
    };
    const auto number = [&](long lo) {
      const std::string v = value();
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || n < lo) usage(arg + " must be an integer >= " + std::to_string(lo));
      return n;
    };
    if (arg == "--mode") {
      const std::string m = value();
      if (m != "ac" && m != "ep") usage("--mode must be ac or ep");
      o.mode = m == "ac" ? anllm::AnchorMode::ac : anllm::AnchorMode::ep;
    } else if (arg == "--tokens")
      o.tokens = std::int32_t(number(0));
    else if (arg == "--layers")
      o.config.layers = std::int32_t(number(1));
    else if (arg == "--dim") {
      // Heads of 32 dims, half as many KV heads (GQA), a SwiGLU 3x as wide as the model.
      const auto dim = std::int32_t(number(32));
      o.config.dim = dim;
      o.config.heads = std::max(1, dim / 32);
      o.config.kv_heads = o.config.heads % 2 == 0 ? o.config.heads / 2 : o.config.heads;
      o.config.ffn_dim = 3 * dim;
    } else if (arg == "--seed")
      o.seed = std::uint64_t(number(0));
    else if (arg == "--temperature")
      o.temperature = std::stof(value());
    else if (arg == "--threads")
      o.threads = int(number(0));
    else if (arg == "--device") {
      o.device = value();
      if (o.device != "auto" && o.device != "cpu" && o.device != "gpu")
        usage("--device must be auto, cpu or gpu");
    } else if (arg == "--save")
      o.save = value();
    else if (arg == "--load")
      o.load = value();
    else if (arg == "-h" || arg == "--help")
      usage("runs a text three ways through ansan");
    else if (arg.size() > 1 && arg[0] == '-' && arg != "-")
      usage("unknown option " + arg);
    else
      o.text_path = arg;
  }
  return o;
}

std::string read_text(const std::string& path) {
  if (path.empty()) return kBuiltinText;
  std::ostringstream text;
  if (path == "-") {
    text << std::cin.rdbuf();
  } else {
    std::ifstream file(path);
    if (!file) usage("cannot read " + path);
    text << file.rdbuf();
  }
  return text.str();
}

std::string kib(std::int64_t bytes) {
  char s[32];
  std::snprintf(s, sizeof s, "%.1f KiB", double(bytes) / 1024.0);
  return s;
}

// Text of ids[first, last) on one line: anchors as the tokenizer's mark, newlines as "\n",
// other control and non-ASCII bytes as \xNN (random weights generate arbitrary bytes).
std::string excerpt(const std::vector<std::int32_t>& ids, std::size_t first, std::size_t last,
                    std::size_t max_tokens = 60) {
  const auto show = [&](std::size_t i) -> std::string {
    char escaped[8];
    std::snprintf(escaped, sizeof escaped, "\\x%02x", unsigned(ids[i]));
    if (ids[i] == '\n') return "\\n";
    if (ids[i] < 256 && (ids[i] < 32 || ids[i] > 126)) return escaped;
    return anllm::Tokenizer::decode({ids[i]});
  };
  std::string s;
  for (std::size_t i = first; i < last; ++i) {
    if (last - first > max_tokens && i == first + max_tokens / 2) {
      s += " .. ";
      i = last - max_tokens / 2;
    }
    s += show(i);
  }
  return s;
}

// "anchors 53 92 .. 1497, then the open segment 1523..1530": a cache's positions.
std::string kept_positions(const anllm::CacheSnapshot& s) {
  const auto& p = s.positions;
  const auto open = std::size_t(std::lower_bound(p.begin(), p.end(), s.open_seg_start) - p.begin());
  std::string text = "anchors";
  for (std::size_t i = 0; i < open; ++i) {
    if (open > 8 && i == 4) text += " ..", i = open - 3;
    text += " " + std::to_string(p[i]);
  }
  if (open == 0) text += " (none)";
  text += open < p.size() ? ", then the open segment " + std::to_string(p[open]) + ".." +
                                std::to_string(p.back())
                          : ", no open segment";
  return text;
}

// Progress on stderr: on a terminal one line rewritten in place (at most 10 times a second, so
// printing costs the timed loop nothing), otherwise a line per quarter of the run.
std::function<void(const anllm::Progress&)> progress_printer(const char* label) {
  const bool tty = isatty(fileno(stderr));
  auto last_print = std::chrono::steady_clock::now();
  return [label, tty, last_print](const anllm::Progress& p) mutable {
    const bool last = p.done == p.total;
    const auto now = std::chrono::steady_clock::now();
    if (tty && !last && now - last_print < std::chrono::milliseconds(100)) return;
    if (!tty && !last && (p.total < 4 || p.done % (p.total / 4) != 0)) return;
    last_print = now;
    std::fflush(stdout);  // keep stdout's report and stderr's progress in order
    std::fprintf(stderr, "%s  %s: %d/%d tokens, %.0f tokens/s, cache %lld entries (%s)%s",
                 tty ? "\r" : "", label, p.done, p.total, p.tokens_per_s,
                 static_cast<long long>(p.entries), kib(p.bytes).c_str(),
                 tty ? (last ? "\n" : "   ") : "\n");
  };
}

// Why --device auto fell back to the CPU.
#if ANLLM_DEMO_WITH_CUDA
const char* const kNoGpuReason = ", no CUDA device";
#else
const char* const kNoGpuReason = ", built without CUDA";
#endif

// Whether this binary was built with CUDA and a CUDA device is present.
bool gpu_present() {
#if ANLLM_DEMO_WITH_CUDA
  return anllm::gpu_available();
#else
  return false;
#endif
}

// The chosen backend's runs: run_text and forward_masked on the CPU or the GPU.
struct Backend {
  bool gpu = false;
  int threads = 0;
  anllm::RunResult run(const anllm::Weights& w, const anllm::Tokenizer& tok,
                       const std::vector<std::int32_t>& prompt,
                       const anllm::RunOptions& opt) const {
#if ANLLM_DEMO_WITH_CUDA
    if (gpu) return anllm::run_text_gpu(w, tok, prompt, opt);
#endif
    return anllm::run_text(w, tok, prompt, opt);
  }
  anllm::Matrix masked(const anllm::Weights& w, const std::vector<std::int32_t>& ids,
                       const ansan::AnchorLayout& layout) const {
#if ANLLM_DEMO_WITH_CUDA
    if (gpu) return anllm::forward_masked_gpu(w, ids, layout, ansan::MaskPolicy::anllm());
#endif
    return anllm::forward_masked(w, ids, layout, ansan::MaskPolicy::anllm(), threads);
  }
};

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  const bool gpu = opt.device == "gpu" || (opt.device == "auto" && gpu_present());
  if (opt.device == "gpu" && !gpu_present()) {
#if ANLLM_DEMO_WITH_CUDA
    std::cerr << "anllm_demo: --device gpu, but no CUDA device is available\n";
#else
    std::cerr << "anllm_demo: --device gpu, but this build has no CUDA (configure with "
                 "ANSAN_CUDA=ON)\n";
#endif
    return 2;
  }
  const Backend backend{gpu, opt.threads};
  try {
    opt.config.validate();
    anllm::Weights weights = opt.load.empty() ? anllm::init_weights(opt.config, opt.seed)
                                              : anllm::load_weights(opt.config, opt.load);
    if (!opt.save.empty()) anllm::save_weights(weights, opt.save);
    const anllm::ModelConfig& c = weights.config;
    std::printf("model: %d layers, dim %d, %d query / %d KV heads of %d, SwiGLU %d, vocab %d, %s\n",
                c.layers, c.dim, c.heads, c.kv_heads, c.head_dim, c.ffn_dim, c.vocab,
                opt.load.empty()
                    ? ("seeded random weights (seed " + std::to_string(opt.seed) + ")").c_str()
                    : ("weights from " + opt.load).c_str());
    if (!opt.save.empty()) std::printf("weights saved to %s\n", opt.save.c_str());
    if (gpu)
      std::printf(
          "device: gpu (--device %s): attention and the KV cache on the GPU "
          "(ansan::cuda attention_plan / attention_run, SIMT kernel for fp32; "
          "ansan::cuda::KVCache); "
          "matmuls, norms and RoPE on the CPU\n",
          opt.device.c_str());
    else
      std::printf("device: cpu (--device %s%s): attention ansan::cpu::attention_forward, %s\n",
                  opt.device.c_str(), opt.device == "cpu" ? "" : kNoGpuReason,
                  opt.threads == 0 ? "all hardware threads for prefill, one per decode step"
                                   : "--threads for prefill, one per decode step");

    // The text, its tokens and its anchors.
    const anllm::Tokenizer tok{opt.mode};
    const std::string text = read_text(opt.text_path);
    const std::vector<std::int32_t> prompt = tok.encode(text);
    const std::vector<std::int32_t> cu{0, std::int32_t(prompt.size())};
    const ansan::AnchorLayout prompt_layout =
        ansan::build_layout(prompt, cu, tok.selector(), c.vocab);
    const std::size_t anchors = prompt_layout.anchor_pos.size();
    std::printf("\ntext: %zu bytes -> %zu tokens in mode %s (%s), %zu anchors, %zu segments\n",
                text.size(), prompt.size(), anllm::mode_name(opt.mode),
                opt.mode == anllm::AnchorMode::ac ? "<AC> inserted after each sentence end"
                                                  : "the . ! ? and newline bytes are anchors",
                anchors,
                anchors + std::size_t(anchors == 0 || prompt_layout.anchor_pos.back() + 1 < cu[1]));
    // Segment ends: each anchor, then the open segment's last token if there is one.
    std::vector<std::size_t> ends;
    for (const std::int32_t a : prompt_layout.anchor_pos) ends.push_back(std::size_t(a) + 1);
    if (ends.empty() || ends.back() < prompt.size()) ends.push_back(prompt.size());
    for (std::size_t sgm = 0, first = 0; sgm < ends.size() && sgm < 6; first = ends[sgm++])
      std::printf("  segment %zu  tokens %4zu..%-4zu  \"%s\"%s\n", sgm, first, ends[sgm] - 1,
                  excerpt(prompt, first, ends[sgm]).c_str(), sgm >= anchors ? "  (open)" : "");
    if (ends.size() > 6) std::printf("  ... %zu more segments\n", ends.size() - 6);

    // (c) anchor-based inference: prefill, reduce, generate, reduce after every anchor.
    anllm::RunOptions anchor_run;
    anchor_run.new_tokens = opt.tokens;
    anchor_run.temperature = opt.temperature;
    anchor_run.seed = opt.seed;
    anchor_run.attention_threads = opt.threads;
    anchor_run.printable_only = true;
    anchor_run.on_step = progress_printer("(c) anchor cache");
    std::printf("\n(c) anchor-based inference: prefill %zu tokens, reduce, generate %d tokens\n",
                prompt.size(), opt.tokens);
    const anllm::RunResult anchored = backend.run(weights, tok, prompt, anchor_run);
    std::printf(
        "  entries and bytes: K/V rows of all %d layers; full cache: what a cache that never\n"
        "  reduces would hold; position: tokens fed so far\n",
        c.layers);
    std::printf("  %-14s %8s %14s %9s %12s %12s %7s\n", "reduction", "position", "dropped/layer",
                "entries", "bytes", "full cache", "saved");
    const auto row = [](const char* what, const anllm::CacheSnapshot& s, bool show_kept = true) {
      std::printf(
          "  %-14s %8d %14lld %9lld %12s %12s %6.1f%%\n", what, s.position,
          static_cast<long long>(s.dropped), static_cast<long long>(s.entries),
          kib(s.bytes).c_str(), kib(s.full_bytes).c_str(),
          100.0 * (1.0 - double(s.bytes) / double(std::max<std::int64_t>(s.full_bytes, 1))));
      if (show_kept) std::printf("  %14s every layer keeps %s\n", "", kept_positions(s).c_str());
    };
    const std::size_t reductions = anchored.reductions.size();
    for (std::size_t i = 0; i < reductions; ++i) {
      if (reductions > 12 && i == 6) std::printf("  ... %zu more reductions\n", reductions - 11);
      if (reductions > 12 && i >= 6 && i + 5 < reductions) continue;
      row(i == 0 ? "after prefill" : ("anchor " + std::to_string(i)).c_str(),
          anchored.reductions[i]);
    }
    row("end", anchored.final_cache);
    std::printf("  generated: \"%s\"\n",
                excerpt(anchored.ids, prompt.size(), anchored.ids.size(), 400).c_str());

    // (a) the baseline: causal attention, cache never reduced, fed the same continuation.
    const std::vector<std::int32_t> continuation(
        anchored.ids.begin() + std::ptrdiff_t(prompt.size()), anchored.ids.end());
    anllm::RunOptions full_run;
    full_run.policy = ansan::MaskPolicy::causal();
    full_run.reduce_at_anchors = false;
    full_run.forced = &continuation;
    full_run.keep_logits = false;
    full_run.attention_threads = opt.threads;
    full_run.on_step = progress_printer("(a) full cache");
    std::printf("\n(a) full causal cache: prefill the same prompt, decode the same %zu tokens\n",
                continuation.size());
    const anllm::RunResult full = backend.run(weights, tok, prompt, full_run);
    row("end", full.final_cache, false);

    // (b) the whole text at once under the AnLLM mask, compared with (c)'s logits.
    const std::vector<std::int32_t> cu_all{0, std::int32_t(anchored.ids.size())};
    const ansan::AnchorLayout layout =
        ansan::build_layout(anchored.ids, cu_all, tok.selector(), c.vocab);
    std::printf("\n(b) whole text at once under the AnLLM mask: %zu tokens\n", anchored.ids.size());
    const anllm::Matrix masked = backend.masked(weights, anchored.ids, layout);
    const float max_diff = (masked - anchored.logits).cwiseAbs().maxCoeff();
    const float max_logit = masked.cwiseAbs().maxCoeff();
    const double relative = double(max_diff) / std::max(double(max_logit), 1e-30);

    std::printf("\nsummary\n");
    std::printf(
        "  KV cache at the end: (c) %lld entries, %s; full cache %lld entries, %s: %.1f%% "
        "smaller\n",
        static_cast<long long>(anchored.final_cache.entries),
        kib(anchored.final_cache.bytes).c_str(), static_cast<long long>(full.final_cache.entries),
        kib(full.final_cache.bytes).c_str(),
        100.0 * (1.0 - double(anchored.final_cache.bytes) / double(full.final_cache.bytes)));
    if (anchored.continuation > 0)
      std::printf(
          "  decode, %zu-token prompt + %d tokens: (a) full cache %.0f tokens/s, (c) anchor "
          "cache %.0f tokens/s (%.2fx)\n",
          prompt.size(), anchored.continuation, full.decode_tokens_per_s(),
          anchored.decode_tokens_per_s(),
          anchored.decode_tokens_per_s() / full.decode_tokens_per_s());
    std::printf("  prefill: (a) %.3f s, (c) %.3f s\n", full.prefill_seconds,
                anchored.prefill_seconds);
    std::printf(
        "  exactness: max |logits(b) - logits(c)| = %.3g over %lld x %d logits "
        "(max |logit| %.3g, relative %.2g): %s\n",
        double(max_diff), static_cast<long long>(masked.rows()), c.vocab, double(max_logit),
        relative, relative < 1e-5 ? "rounding level" : "MISMATCH");
    return relative < 1e-5 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "anllm_demo: " << e.what() << "\n";
    return 1;
  }
}
