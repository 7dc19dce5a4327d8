// Recall's arithmetic (`:recall`, kv/policy.h): the digest of a block's keys and
// the bound it gives on a query's scores, from which the cache predicts the
// blocks the next step attends most (kv_recall.cc).
//
// A digest is the per-channel minimum and maximum of the block's keys as
// attention sees them (after RoPE, unrotated): lohi[0, hd) the minima,
// lohi[hd, 2 hd) the maxima (Quest). For any key k of the block and a query q,
// q.k <= sum_c max(q_c lo_c, q_c hi_c), so a block whose bound is low cannot
// hold a key the query favours; the bound is tight for a block of one token.
#pragma once

#include <span>
#include <vector>

namespace slimkv::kv {

// keys[n][head_dim] -> lohi[2 * head_dim]; n > 0.
void KeyDigest(const float* keys, int n, int head_dim, float* lohi);
// The largest bound over the `group` queries q[group][head_dim].
float DigestBound(const float* q, int group, int head_dim, const float* lohi);
// The same in double precision, one channel at a time (the tests' reference).
float DigestBoundReference(const float* q, int group, int head_dim, const float* lohi);

// Which held blocks leave for the host blocks a step wants. `bound` holds the
// step's bounds of the held blocks [0, nh) and then of the wanted host blocks,
// best first [nh, nh + n_wanted); `value` the policy's value of each held block
// (value.size() == nh). The i-th wanted block (i < fetch) comes back in place of
// the held block the policy values least among those whose bound is below its
// own: one query's bound says what the next step may read, the policy's evidence
// what the sequence goes on needing, and a block the query bounds higher than the
// wanted one never leaves for it. Returns held indices, in the wanted blocks'
// order; shorter than min(fetch, n_wanted) when no held block qualifies.
std::vector<int> ChooseVictims(std::span<const float> bound, std::span<const float> value, int fetch,
                               int n_wanted);

}  // namespace slimkv::kv
