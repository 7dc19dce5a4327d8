// Continuous batching over one Engine: many requests share each forward pass.
//
// The one generation loop: `serve`, `run` (Engine::Generate), `needle` and `ppl` all go through it. It drives
// a StepModel (step_model.h) over a KvCache; Create(Engine*) takes the engine's, tests put a fake model
// behind the interface.
//
// Threads. Any thread may Submit, Cancel and read Stats. One thread, the engine thread, calls Step (directly,
// or through Start's loop) and is the only one that touches the model and the cache while the scheduler
// lives.
//
// A step:
//   1. Cancelled requests leave: a running one's sequence is removed, so its blocks are free
//      before anything else happens this step.
//   2. Batch: every running sequence contributes its next tokens — one decode
//   token, or the
//      next chunk of its prompt — decode tokens first, then prompt chunks
//      oldest first, within `max_batch_tokens`.
//   3. Admission: waiting requests (oldest first, preempted ones ahead of new
//   ones) join
//      while the step has tokens to spare, fewer than `max_running` run, and
//      the KV budget has room for the new sequence (SequenceKvBytes of its
//      tokens plus one block, in bytes of the chosen format) beside what
//      running sequences hold or their prompts still need. Blocks only the
//      prefix cache holds count as free (the pool evicts them on demand).
//      Decode growth is not reserved: when it runs the pool dry, preemption
//      makes room (docs/DECISIONS.md, Serving). A new sequence starts from the
//      longest cached prefix of its prompt (prefix sharing, under the request's
//      cache salt) and computes only the rest.
//   4. Reservation: the step's KV slots are reserved (KvCache::BeginStep,
//   vLLM's
//      allocate_slots) before the forward pass. If the pool cannot hold the
//      step, room is made, least valuable work first: prompt chunks of the
//      newest sequences are deferred to a later step; then the newest running
//      sequence is preempted (its computed blocks are published to the prefix
//      cache, its references dropped; it waits at the head of the queue and,
//      readmitted, re-attaches those blocks — from RAM, or from a lower tier
//      when RAM evicted them and a fetch is measured faster than prefill
//      (kv/swap_cost.h) — and recomputes the rest of its prompt and generated
//      tokens, its sampler state kept, so its output is the same); a lone
//      sequence's chunk is halved. Only a request that cannot fit even alone
//      fails. Then one forward pass runs the batch.
//   5. A sequence whose prompt is complete is compressed (KvCache::Compress:
//   the eviction
//      policy cuts it to its budget; SnapKV decides here, from the prompt's
//      last tokens). With a policy, every token after the prompt (generated,
//      recomputed after preemption, or teacher-forced) takes the decode path,
//      one per step, so recomputation replays the same evictions.
//   6. Each sequence that finished its tokens samples the next one with its own
//   sampler
//      (or takes its next forced token), streams the text (held back while it
//      could still be the start of a stop string) and stops on an
//      end-of-generation token, a stop string, max_tokens or the context size —
//      none for a policy that re-indexes (window, sinks): a conversation runs
//      past the context in constant memory.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

#include "base/log.h"
#include "engine/engine.h"
#include "engine/json_constraint.h"
#include "engine/request.h"
#include "engine/scheduler_stats.h"

namespace slimkv::engine {

struct SchedulerOptions {
  int max_running = 64;           // sequences in the running set at most
  int max_waiting = 256;          // requests queued at most; Submit is ResourceExhausted beyond
  int max_batch_tokens = 512;     // tokens per forward pass (decode tokens + prompt chunks)
  bool prefix_sharing = true;     // start sequences from cached prefix blocks
  // A request whose prefix blocks are being read ahead from a lower tier (disk, Redis) is admitted in
  // the same step if the read ends within this many seconds (a miss or a few records from the page
  // cache), else it waits outside the steps until it ends (kv/tiers/tier_stack.h, Prefetch).
  double read_ahead_wait_s = 0.002;
  std::function<double()> clock;  // seconds; NowSeconds when empty (tests inject their own)
};

// Bytes the KV cache allocates for one sequence of `tokens` committed tokens: the footprint rule
// (kv/footprint.h, SequenceFootprint). The scheduler's unit of admission; it equals what BeginStep/EndStep
// allocate (bench/loadgen_capacity.cc checks it against a filled pool). With an eviction policy, admission
// uses what the policy bounds (PolicyPeakSequenceBytes).
size_t SequenceKvBytes(const kv::KvCache& kv, int64_t tokens);

// What a scheduler drives: the model, the cache, the threads, the tokenizer (nullptr: tokens only, no text
// and no end-of-generation tokens) and the context size.
struct SchedulerParts {
  StepModel* model = nullptr;
  kv::KvCache* kv = nullptr;
  ThreadPool* pool = nullptr;
  const tokenizer::Tokenizer* tokenizer = nullptr;
  int n_ctx = 4096;
};

class Scheduler {
 public:
  // `engine` must outlive the scheduler. InvalidArgument for options out of range.
  static Result<std::unique_ptr<Scheduler>> Create(Engine* engine, const SchedulerOptions& options);
  // The same over parts that must outlive the scheduler.
  static Result<std::unique_ptr<Scheduler>> Create(const SchedulerParts& parts,
                                                   const SchedulerOptions& options);
  ~Scheduler();  // stops the loop thread; requests still in flight are cancelled
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Any thread. Queues a request. InvalidArgument for a bad request (empty prompt, token out
  // of the vocabulary, sampling out of range, max_tokens < 1); OutOfRange for a prompt that
  // does not fit the context, naming both lengths, or a prompt + max_tokens (up to the
  // context) that the whole KV pool cannot hold, naming the tokens and bytes; ResourceExhausted
  // when max_waiting requests already wait; Cancelled after StopAccepting.
  Result<RequestId> Submit(RequestParams params);
  // The most tokens (prompt + generated) one sequence can hold: the context, or fewer when
  // the KV pool alone cannot hold a sequence of the whole context (without an eviction
  // policy, which bounds what a sequence holds); kUnboundedTokens with a policy that re-indexes
  // (window, sinks), which lets a sequence run past the context.
  int64_t MaxSequenceTokens() const { return max_sequence_tokens_; }
  static constexpr int64_t kUnboundedTokens = int64_t{1} << 40;
  // Any thread. The request ends with FinishReason::kCancelled; a running one's blocks are
  // freed at the next step boundary. Unknown or finished ids are ignored.
  void Cancel(RequestId id);
  // Any thread. The snapshot of the last step.
  SchedulerStats Stats() const;
  // Any thread. Later Submits fail (the server is draining).
  void StopAccepting();
  // Any thread: no request is waiting or running.
  bool Idle() const;

  // Engine thread. Runs one step; false if there was nothing to do.
  bool Step();

  // Starts the engine thread: Step() whenever there is work, sleeping otherwise.
  void Start();
  // Waits until every request has finished (after StopAccepting, the queue only shrinks).
  void WaitIdle();
  // Stops the engine thread (after the current step), cancelling what is left.
  void Stop();

 private:
  struct Seq;
  struct Chunk {
    Seq* seq;
    int n_tokens;
  };
  Scheduler(const SchedulerParts& parts, const SchedulerOptions& options);
  double Now() const { return options_.clock ? options_.clock() : NowSeconds(); }

  void TakeCancellations();
  void Admit(int* tokens_left, std::vector<Chunk>* batch);
  std::vector<Chunk> PlanBatch(int* tokens_left);
  int ChunkOf(Seq* seq, int tokens_left) const;  // tokens of its next chunk
  Status RunBatch(std::vector<Chunk>* batch);    // with preemption; batch may shrink
  void Preempt(Seq* seq);
  void OnToken(Seq* seq, TokenId token, double now);
  void EmitText(Seq* seq, std::string text, bool final);
  void Finish(Seq* seq, FinishReason reason, Status error = Status::Ok());
  void RemoveFinished();
  void StartSequence(Seq* seq);
  // What StartSequence offers the prefix cache: the tokens and the most it attaches; false when
  // it attaches nothing.
  bool AttachArgs(const Seq& seq, std::span<const TokenId>* tokens, int* most) const;
  // Starts reading ahead, from the lower tiers, the prefix blocks of waiting requests that RAM
  // lacks (once per admission attempt); under mu_.
  void StartPrefetches();
  // Whether `seq` still waits for its read-ahead (Admit passes it by).
  bool WaitsForPrefetch(Seq* seq);
  void EndPrefetch(Seq* seq);
  // Whether a sequence's next chunk needs logits for every token (prompt
  // log-probabilities).
  static bool WantsPromptLogits(const Seq& seq);
  // The one rule for which rows of logits a batch entry of n tokens gets: its tokens [FirstLogitRow, n).
  // All of them while its prompt's log-probabilities are wanted; a forced request's from its prompt's last
  // token on; otherwise the last token's only.
  static int FirstLogitRow(const Seq& seq, int n);
  bool Streaming() const;  // the policy re-indexes: no context limit
  // Tokens of a cached prefix a streaming-policy sequence attaches at most: its smallest layer budget, in
  // whole blocks.
  int StreamingAttachLimit() const;
  void PublishPrefix(Seq* seq);
  size_t SequenceBudget(int64_t tokens) const;
  size_t CommittedBytes() const;
  void UpdateStats(double now);
  void Loop();

  StepModel* model_;
  kv::KvCache* kv_;
  ThreadPool* pool_;
  const tokenizer::Tokenizer* tok_;
  // The vocabulary's bytes for json_object requests: built by the first one.
  std::once_flag json_vocab_once_;
  std::unique_ptr<ConstraintVocab> json_vocab_;
  SchedulerOptions options_;
  int n_ctx_;
  int64_t max_sequence_tokens_ = 0;

  // Shared with other threads, under mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;                // the loop waits here for work
  std::condition_variable idle_cv_;           // WaitIdle waits here
  std::deque<std::unique_ptr<Seq>> waiting_;  // ordered by id (preempted ones are older)
  std::unordered_set<RequestId> cancels_;
  RequestId next_id_ = 1;
  int n_running_shared_ = 0;  // running_.size() as other threads see it
  bool accepting_ = true;
  bool stop_ = false;

  // Engine thread only.
  bool waiting_on_prefetch_ = false;  // the last Admit passed a request by for its read-ahead
  std::vector<std::unique_ptr<Seq>> running_;  // ordered by id
  std::vector<float> logits_;

  mutable std::mutex stats_mu_;
  SchedulerStats stats_;
  std::deque<std::pair<double, std::pair<uint64_t, uint64_t>>> rate_window_;  // (time, (generated, computed))
  double slow_stats_time_ = -1e30;  // when the prefix and swap counters were last copied

  std::thread thread_;
};

}  // namespace slimkv::engine
