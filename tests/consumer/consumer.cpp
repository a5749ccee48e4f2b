// The packaging tests' host consumer: builds a layout through the installed (or added)
// headers and checks one value of the SPEC predicate. Exit status 0 means it worked.
#include <cstdio>
#include <string>
#include <vector>

#include "ansan/layout.hpp"
#include "ansan/policy.hpp"

int main() {
  const std::string text = "Hi. Yo";  // anchors: the '.' at 2
  const std::vector<std::int32_t> tokens(text.begin(), text.end());
  const std::vector<std::int32_t> cu_seqlens{0, std::int32_t(tokens.size())};
  const ansan::AnchorLayout layout =
      ansan::build_layout(tokens, cu_seqlens, ansan::AnchorSelector::endpoint({'.'}), 256);
  // SPEC section 2: 'Y' (4) sees the earlier anchor (2) but not 'H' (0) of the closed segment.
  const auto policy = ansan::MaskPolicy::anllm();
  const bool sees_anchor = ansan::visible(policy, layout.query(0, 4), layout.key(0, 2));
  const bool sees_closed = ansan::visible(policy, layout.query(0, 4), layout.key(0, 0));
  const bool ok = layout.anchor_pos == std::vector<std::int32_t>{2} && sees_anchor && !sees_closed;
  std::printf("ansan consumer: %s\n", ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
