// Value merging (the `:merge` option): what an evicted token contributed is
// folded into a kept one instead of being lost, as CaM merges values.
//
// For each evicted token e, in index order, the receiver r is the token allowed
// to receive (receives[r] == 1) whose key is most similar to e's by cosine;
// then
//   v_r <- (m_r v_r + m_e v_e) / (m_r + m_e),   m_r <- m_r + m_e
// with masses m the tokens' accumulated attention (below 1e-6 they weigh 1e-6).
// Keys are not merged, so a receiver keeps its own attention pattern. Receivers
// are kept tokens whose value the cache can rewrite; an evicted token with no
// receiver is dropped.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace slimkv::kv {

// keys, values: [n][head_dim]; mass, keep, receives: [n]. Updates the values
// and masses of the receivers in place and returns those that received
// something, ascending.
std::vector<int> MergeEvicted(int head_dim, std::span<const float> keys, std::span<float> values,
                              std::span<float> mass, std::span<const uint8_t> keep,
                              std::span<const uint8_t> receives);

}  // namespace slimkv::kv
