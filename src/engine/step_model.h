// The model as the scheduler sees it: one forward pass over a batch of sequences whose KV slots the scheduler
// has reserved (KvCache::BeginStep) before calling it. Engine wraps model::Model in one; scheduler tests put
// a small fake model behind it.
#pragma once

#include <span>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kv/kv_cache.h"
#include "model/model.h"

namespace slimkv::engine {

class StepModel {
 public:
  virtual ~StepModel() = default;
  virtual int vocab_size() const = 0;
  // Runs the batch (model::Model::Forward's contract): logits [rows, vocab_size()] for each entry's tokens
  // from its first_logit() on. The batch's KV slots are reserved; the pass appends to and attends over the
  // cache, and ends the step.
  virtual Status Forward(ThreadPool &pool, kv::KvCache &kv, std::span<const model::BatchEntry> batch,
                         std::vector<float> *logits) = 0;
};

}  // namespace slimkv::engine
