// KVSharer's search for which layers share a cache (Yang et al. 2024;
// model/kv_share.h says what sharing is). On calibration text:
//   1. run every sample through the model with its full cache and average each
//   layer's keys
//      and values over the samples ([KV heads, tokens, head dim], keys after
//      RoPE);
//   2. rank the pairs of layers (i > j) by the Euclidean distance of their
//   averages (per
//      head and token, along head_dim, mean of keys' and values'), most
//      DISsimilar first — the paper's finding is that sharing dissimilar layers
//      hurts least;
//   3. in that order, let the later layer i use the earlier layer j's cache
//   (resolved to j's
//      owner) unless i already shares or the two differ in window or RoPE; keep
//      the change when the outputs on the calibration samples stay similar to
//      the full model's (mean cosine similarity of the logits above
//      `threshold`), until `layers` layers share.
// The paper compares the last hidden states; the logits are the model's output
// here.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "model/kv_share.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace slimkv::engine {

struct KvSharerOptions {
  int layers = 0;          // layers to give up their cache
  double threshold = 0.5;  // output similarity a change must keep (the paper's notebook: 0.5)
  int samples = 8;         // calibration samples
  int sample_tokens = 64;  // tokens per sample (the paper's max_length)
};

struct KvSharerResult {
  model::KvShare share;
  std::vector<double> accepted_similarity;  // per shared layer, in the order accepted
  int candidates_tried = 0;
};

// Searches on `calibration` tokens (cut into samples); the model is left with
// no sharing. InvalidArgument when the text is too short or no pair qualifies.
Result<KvSharerResult> SearchKvShare(model::Model &m, ThreadPool &pool,
                                     const std::vector<int32_t> &calibration, const KvSharerOptions &o);

// A --kv-share spec: "kvsharer:N[:THRESHOLD]" searches on `calibration_text`
// for N layers (N below 1: that share of the layers), "L=S,..." is a map.
// InvalidArgument naming what is wrong.
Result<model::KvShare> ResolveKvShare(const std::string &spec, model::Model &m, ThreadPool &pool,
                                      const tokenizer::Tokenizer &tok, const std::string &calibration_text);

}  // namespace slimkv::engine
