// anllm/tokenizer.hpp - byte-level tokenizer with AnLLM's two anchor modes.
//
// Ids 0..255 are the bytes of the UTF-8 text; 256 is <bos>, 257 <AC>, 258 <pad>. It is not a
// BPE tokenizer: one byte is one token, which keeps the demo self-contained.
//
// Anchor modes (SPEC section 1):
//   AC  the data pipeline inserts <AC> after every sentence end, and the <AC> tokens are the
//       anchors. A sentence end is one of . ! ? followed by a space or the end of the text,
//       or a newline:
//         "Hi. Yes?!\nOk"  ->  H i . <AC> ␠ Y e s ? ! <AC> \n <AC> O k
//   EP  nothing is inserted; the punctuation bytes . ! ? and the newline are the anchors
//       (every occurrence, as a token-id selector sees them).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ansan/layout.hpp"

namespace anllm {

enum class AnchorMode : std::uint8_t { ac, ep };

inline const char* mode_name(AnchorMode m) { return m == AnchorMode::ac ? "ac" : "ep"; }

struct Tokenizer {
  static constexpr std::int32_t bos_id = 256;
  static constexpr std::int32_t ac_id = 257;
  static constexpr std::int32_t pad_id = 258;
  static constexpr std::int32_t vocab = 259;

  AnchorMode mode = AnchorMode::ac;

  static bool is_sentence_punctuation(std::int32_t id) {
    return id == '.' || id == '!' || id == '?';
  }

  // The anchor ids a token-id selector looks for in this mode.
  std::vector<std::int32_t> anchor_ids() const {
    if (mode == AnchorMode::ac) return {ac_id};
    return {'.', '!', '?', '\n'};
  }
  ansan::AnchorSelector selector() const {
    return mode == AnchorMode::ac ? ansan::AnchorSelector::appended(ac_id)
                                  : ansan::AnchorSelector::endpoint(anchor_ids());
  }
  bool is_anchor(std::int32_t id) const {
    if (mode == AnchorMode::ac) return id == ac_id;
    return is_sentence_punctuation(id) || id == '\n';
  }

  // Text to ids: optional <bos>, the bytes, and in AC mode an <AC> after each sentence end.
  std::vector<std::int32_t> encode(std::string_view text, bool add_bos = true) const {
    std::vector<std::int32_t> ids;
    ids.reserve(text.size() + text.size() / 8 + 1);
    if (add_bos) ids.push_back(bos_id);
    for (std::size_t i = 0; i < text.size(); ++i) {
      const std::int32_t byte = static_cast<unsigned char>(text[i]);
      ids.push_back(byte);
      const bool at_end = i + 1 == text.size();
      const bool sentence_end =
          (is_sentence_punctuation(byte) && (at_end || text[i + 1] == ' ')) || byte == '\n';
      if (mode == AnchorMode::ac && sentence_end) ids.push_back(ac_id);
    }
    return ids;
  }

  // Ids to text. Special tokens are shown as `ac_mark`, "<bos>" and "<pad>", or dropped when
  // show_special is false (then decode(encode(text)) == text).
  static std::string decode(const std::vector<std::int32_t>& ids, bool show_special = true,
                            std::string_view ac_mark = "\u2693") {
    std::string text;
    for (const std::int32_t id : ids) {
      if (id >= 0 && id < 256)
        text.push_back(static_cast<char>(id));
      else if (!show_special)
        continue;
      else if (id == ac_id)
        text += ac_mark;
      else if (id == bos_id)
        text += "<bos>";
      else if (id == pad_id)
        text += "<pad>";
      else
        text += "<" + std::to_string(id) + ">";
    }
    return text;
  }
};

}  // namespace anllm
