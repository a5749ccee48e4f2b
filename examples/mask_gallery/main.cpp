// mask_gallery - what each mask policy lets a token see, for a short sample text.
//
//   mask_gallery [OUT_DIR] [--export DIR] [--block N]
//
// Prints every policy's mask as text art (rows are queries, columns keys, both labelled with
// the sample's characters) and writes one SVG per policy into OUT_DIR (default docs/images):
// blue cells are the local part of a row (its own segment or window), orange cells the
// retained part (earlier anchors, sinks), the two halves of ansan::visible. Byte tokens; EP
// anchors on '.'.
//
// --export DIR also writes, per policy, the FlexAttention BlockMask arrays (packed and padded
// batch mappings, block size N, default 128), FlashInfer's packed mask and the dense boolean
// mask of a larger ragged batch as .npy files, for the PyTorch cross-check in docs/masks.md.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <unistd.h>

#include "ansan/dense_mask.hpp"
#include "ansan/detail/npy.hpp"
#include "ansan/flashinfer_mask.hpp"
#include "ansan/flex_block_mask.hpp"
#include "ansan/layout.hpp"
#include "ansan/mask_density.hpp"
#include "ansan/policy.hpp"

namespace {

const std::string kSample = "Cats nap. Dogs run. Birds sing.";

struct Shown {
  ansan::MaskPolicy policy;
  const char* title;    // SPEC section 5's row, in words
  const char* summary;  // who sees what
};

std::vector<Shown> gallery() {
  using ansan::MaskPolicy;
  return {
      {MaskPolicy::anllm(), "AnLLM (default)",
       "a token sees its own sentence so far, plus every earlier anchor '.' (anchors themselves: own sentence only)"},
      {MaskPolicy::anllm_legacy(), "AnLLM, older variant",
       "like AnLLM, but anchors also see the earlier anchors"},
      {MaskPolicy::sepllm(1, 4), "SepLLM (sinks 1, window 4)",
       "the last 4 tokens, every earlier separator '.', and the first token"},
      {MaskPolicy::streaming_llm(1, 4), "StreamingLLM (sinks 1, window 4)",
       "the last 4 tokens and the first token"},
      {MaskPolicy::causal(), "Causal", "every earlier token: the dense baseline"},
      {MaskPolicy::sliding_window(4), "Sliding window (4)", "the last 4 tokens"},
  };
}

ansan::AnchorLayout layout_of(const std::vector<std::string>& texts) {
  std::vector<std::int32_t> tokens, cu{0};
  for (const std::string& text : texts) {
    for (unsigned char c : text) tokens.push_back(c);
    cu.push_back(std::int32_t(tokens.size()));
  }
  return ansan::build_layout(tokens, cu, ansan::AnchorSelector::endpoint({'.'}), 256);
}

enum class Cell { future, masked, local, retained };

Cell cell(const ansan::MaskPolicy& p, const ansan::AnchorLayout& L, std::int32_t i, std::int32_t j) {
  const ansan::QueryInfo q = L.query(0, i);
  const ansan::KeyInfo k = L.key(0, j);
  if (ansan::visible_local(p, q, k)) return Cell::local;
  if (ansan::visible_retained(p, q, k)) return Cell::retained;
  return j > i ? Cell::future : Cell::masked;
}

std::string visible_char(char c) { return c == ' ' ? "_" : std::string(1, c); }

void print_art(const Shown& s, const ansan::AnchorLayout& L, const ansan::MaskDensity& d, bool color) {
  const char* blue = color ? "\033[34m" : "";
  const char* orange = color ? "\033[33;1m" : "";
  const char* grey = color ? "\033[90m" : "";
  const char* reset = color ? "\033[0m" : "";
  const auto n = std::int32_t(kSample.size());
  std::printf("\n%s%s%s: %s\n", orange, s.title, reset, s.summary);
  std::printf("visible pairs %lld of %lld causal; o = local part, @ = retained part, . = masked, * = anchor\n",
              static_cast<long long>(d.total_visible), static_cast<long long>(d.total_causal));
  std::printf("     ");
  for (std::int32_t j = 0; j < n; ++j) std::printf("%s ", visible_char(kSample[j]).c_str());
  std::printf("\n     ");
  for (std::int32_t j = 0; j < n; ++j) std::printf("%s ", L.is_anchor[j] ? "*" : " ");
  std::printf("\n");
  for (std::int32_t i = 0; i < n; ++i) {
    std::printf(" %s %s ", visible_char(kSample[i]).c_str(), L.is_anchor[i] ? "*" : " ");
    for (std::int32_t j = 0; j <= i; ++j) {
      switch (cell(s.policy, L, i, j)) {
        case Cell::local: std::printf("%so%s ", blue, reset); break;
        case Cell::retained: std::printf("%s@%s ", orange, reset); break;
        default: std::printf("%s.%s ", grey, reset); break;
      }
    }
    std::printf("\n");
  }
}

std::string xml_escape(char c) {
  switch (c) {
    case '<': return "&lt;";
    case '>': return "&gt;";
    case '&': return "&amp;";
    case ' ': return "\xe2\x90\xa3";  // U+2423, the open-box space symbol
    default: return std::string(1, c);
  }
}

void write_svg(const std::string& path, const Shown& s, const ansan::AnchorLayout& L,
               const ansan::MaskDensity& d) {
  const auto n = std::int32_t(kSample.size());
  const int cell_px = 16, left = 46, top = 92, grid = n * cell_px;
  const int legend_x = left + grid + 28, width = legend_x + 250, height = top + grid + 24;
  const char* local_fill = "#2f6db5";
  const char* retained_fill = "#f08a24";
  const char* masked_fill = "#e4e4e4";
  const char* anchor_band = "#fde3c8";
  std::ofstream svg(path);
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << width << " " << height << "\" font-family=\"DejaVu Sans, Arial, sans-serif\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"12\" y=\"24\" font-size=\"17\" font-weight=\"bold\">" << s.title << " mask</text>\n"
      << "<text x=\"12\" y=\"44\" font-size=\"12\" fill=\"#333\">" << s.summary << "</text>\n"
      << "<text x=\"12\" y=\"62\" font-size=\"12\" fill=\"#333\">rows: queries, columns: keys. Visible pairs "
      << d.total_visible << " of " << d.total_causal << " causal (" << int(100.0 * d.pair_fraction() + 0.5)
      << "%)</text>\n";
  // Anchor rows and columns: a light band behind their labels.
  for (std::int32_t a = 0; a < n; ++a) {
    if (!L.is_anchor[a]) continue;
    svg << "<rect x=\"" << left + a * cell_px << "\" y=\"" << top - 18 << "\" width=\"" << cell_px
        << "\" height=\"" << grid + 18 << "\" fill=\"" << anchor_band << "\"/>\n"
        << "<rect x=\"" << left - 22 << "\" y=\"" << top + a * cell_px << "\" width=\"" << grid + 22
        << "\" height=\"" << cell_px << "\" fill=\"" << anchor_band << "\"/>\n";
  }
  svg << "<g font-family=\"DejaVu Sans Mono, monospace\" font-size=\"12\" text-anchor=\"middle\">\n";
  for (std::int32_t j = 0; j < n; ++j) {
    const bool anchor = L.is_anchor[j] != 0;
    svg << "<text x=\"" << left + j * cell_px + cell_px / 2 << "\" y=\"" << top - 5 << "\""
        << (anchor ? " font-weight=\"bold\" fill=\"#b85c00\"" : "") << ">" << xml_escape(kSample[j]) << "</text>\n"
        << "<text x=\"" << left - 12 << "\" y=\"" << top + j * cell_px + 12 << "\""
        << (anchor ? " font-weight=\"bold\" fill=\"#b85c00\"" : "") << ">" << xml_escape(kSample[j]) << "</text>\n";
  }
  svg << "</g>\n";
  for (std::int32_t i = 0; i < n; ++i)
    for (std::int32_t j = 0; j <= i; ++j) {
      const Cell c = cell(s.policy, L, i, j);
      const char* fill = c == Cell::local ? local_fill : c == Cell::retained ? retained_fill : masked_fill;
      svg << "<rect x=\"" << left + j * cell_px + 1 << "\" y=\"" << top + i * cell_px + 1 << "\" width=\""
          << cell_px - 2 << "\" height=\"" << cell_px - 2 << "\" rx=\"2\" fill=\"" << fill << "\"/>\n";
    }
  const struct {
    const char* fill;
    const char* text;
  } legend[] = {{local_fill, "local: own segment / window"},
                {retained_fill, "retained: earlier anchors / sinks"},
                {masked_fill, "masked (an earlier key not seen)"},
                {anchor_band, "anchor token ('.'): ends a segment"}};
  for (int e = 0; e < 4; ++e) {
    const int y = top + e * 26;
    svg << "<rect x=\"" << legend_x << "\" y=\"" << y << "\" width=\"16\" height=\"16\" rx=\"2\" fill=\""
        << legend[e].fill << "\" stroke=\"#999\" stroke-width=\"0.5\"/>\n"
        << "<text x=\"" << legend_x + 24 << "\" y=\"" << y + 12 << "\" font-size=\"12\">" << legend[e].text
        << "</text>\n";
  }
  svg << "<text x=\"" << legend_x << "\" y=\"" << top + 4 * 26 + 18 << "\" font-size=\"11\" fill=\"#555\">"
      << "policy " << ansan::policy_name(s.policy) << ", byte tokens</text>\n"
      << "</svg>\n";
  if (!svg) throw std::runtime_error("cannot write " + path);
}

// A larger ragged batch (lengths 310, 3, 0 and 517) for the PyTorch cross-check.
void export_arrays(const std::string& directory, std::int32_t block_size) {
  std::string long_text;
  while (long_text.size() < 517) long_text += kSample + " ";
  const ansan::AnchorLayout L =
      layout_of({long_text.substr(0, 310), "Hi.", "", long_text.substr(0, 517)});
  namespace fs = std::filesystem;
  for (const Shown& s : gallery()) {
    const fs::path dir = fs::path(directory) / ansan::policy_name(s.policy);
    ansan::save_flex_block_mask(ansan::flex_block_mask(L, s.policy, block_size, ansan::FlexBatching::packed),
                                L, (dir / "flex_packed").string());
    ansan::save_flex_block_mask(ansan::flex_block_mask(L, s.policy, block_size, ansan::FlexBatching::padded),
                                L, (dir / "flex_padded").string());
    ansan::save_flashinfer_mask(ansan::flashinfer_packed_mask(L, s.policy), (dir / "flashinfer").string());
    const std::vector<std::uint8_t> dense = ansan::dense_mask_packed(L, s.policy);
    ansan::detail::write_npy_flags((dir / "dense.npy").string(), dense.data(),
                                   {L.total_tokens(), L.total_tokens()});
    ansan::detail::write_npy((dir / "cu_seqlens.npy").string(), L.cu_seqlens.data(),
                             {std::int64_t(L.cu_seqlens.size())});
    std::printf("exported %s\n", dir.string().c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_dir = "docs/images", export_dir;
  std::int32_t block_size = 128;
  for (int a = 1; a < argc; ++a) {
    const std::string arg = argv[a];
    if (arg == "--export" && a + 1 < argc) export_dir = argv[++a];
    else if (arg == "--block" && a + 1 < argc) block_size = std::atoi(argv[++a]);
    else if (arg == "-h" || arg == "--help" || arg.rfind("--", 0) == 0) {
      std::printf("usage: %s [OUT_DIR] [--export DIR] [--block N]\n", argv[0]);
      return arg == "-h" || arg == "--help" ? 0 : 2;
    } else out_dir = arg;
  }
  try {
    const ansan::AnchorLayout L = layout_of({kSample});
    std::filesystem::create_directories(out_dir);
    std::printf("Text: \"%s\" (%zu byte tokens, anchors on '.')\n", kSample.c_str(), kSample.size());
    const bool color = isatty(fileno(stdout)) != 0;
    for (const Shown& s : gallery()) {
      const ansan::MaskDensity d = ansan::mask_density(L, s.policy);
      print_art(s, L, d, color);
      const std::string path = out_dir + "/mask_" + ansan::policy_name(s.policy) + ".svg";
      write_svg(path, s, L, d);
      std::printf("wrote %s\n", path.c_str());
    }
    if (!export_dir.empty()) export_arrays(export_dir, block_size);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mask_gallery: %s\n", e.what());
    return 1;
  }
  return 0;
}
