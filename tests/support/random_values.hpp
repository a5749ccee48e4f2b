// tests/support/random_values.hpp - random tensor contents for the attention and cache tests
// (plain C++: compiles under g++ and nvcc).
#pragma once

#include <initializer_list>
#include <random>
#include <vector>

namespace ansan::test {

// Overwrites every element of each buffer, in the order given, with a standard normal draw.
inline void fill_standard_normal(std::mt19937& rng,
                                 std::initializer_list<std::vector<float>*> buffers) {
  std::normal_distribution<float> gauss(0.f, 1.f);
  for (std::vector<float>* buffer : buffers)
    for (float& x : *buffer) x = gauss(rng);
}

}  // namespace ansan::test
