// What the eviction policies know about the tokens of one stream (layer x KV
// head), slot by slot. The cache keeps these plain arrays beside the stream's
// block table and moves them with the tokens when it evicts; the policy's hooks
// (eviction_policy.h) read and update them. None of it is a byte of the cache.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace slimkv::kv {

struct TokenStats {
  std::vector<int32_t> pos;      // [slot] RoPE position the key was stored with; -1 for a hole
  std::vector<float> mass;       // [slot] accumulated attention mass (summed over query rows)
  std::vector<float> last_mass;  // [slot] attention mass of the latest step's newest token
  std::vector<float> score;      // [slot] what the policy scored at append (knorm: -|k|, expected: |v|)
  std::vector<float> q_mean,
      q_sq;             // [group][head_dim] moments of the recent queries of each query head
                        // of the stream's group
  int64_t q_count = 0;  // query tokens seen by those moments

  // Slots [old size, slots) appear as holes with zero statistics.
  void Grow(int slots) {
    if (static_cast<int>(pos.size()) >= slots) return;
    pos.resize(slots, -1);
    mass.resize(slots, 0.0f);
    last_mass.resize(slots, 0.0f);
    score.resize(slots, 0.0f);
  }
  // Slots [first, first + n) leave; later slots move down by n.
  void Erase(int first, int n) {
    auto cut = [&](auto& a) {
      if (first < static_cast<int>(a.size()))
        a.erase(a.begin() + first, a.begin() + std::min<size_t>(a.size(), first + n));
    };
    cut(pos);
    cut(mass);
    cut(last_mass);
    cut(score);
  }
  // Slot `dst` takes slot `src`'s statistics (compaction moving a token down).
  void Move(int src, int dst) {
    pos[dst] = pos[src];
    mass[dst] = mass[src];
    last_mass[dst] = last_mass[src];
    score[dst] = score[src];
  }
  void Truncate(int slots) {
    pos.resize(slots);
    mass.resize(slots);
    last_mass.resize(slots);
    score.resize(slots);
  }
};

}  // namespace slimkv::kv
