#include "engine/kv_sharer.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "base/log.h"
#include "kv/kv_cache.h"

namespace slimkv::engine {
namespace {

// Logits of every token of each sample, and (with `kv_sum`) each layer's keys
// and values summed into [layer][head][token][dim] (a full-cache run: cache
// layer == model layer).
Status RunSamples(model::Model &m, ThreadPool &pool, const std::vector<std::vector<int32_t>> &samples,
                  std::vector<std::vector<float>> *logits, std::vector<std::vector<float>> *k_sum,
                  std::vector<std::vector<float>> *v_sum) {
  const kv::KvSpec spec = m.KvSpec();
  ASSIGN_OR_RETURN(kv::KvConfig fp32, kv::ParsePreset("fp32"));
  const int n = static_cast<int>(samples[0].size()), hd = spec.head_dim;
  ASSIGN_OR_RETURN(auto cache, kv::KvCache::Create(spec, fp32, kv::KvCache::BudgetFor(spec, fp32, n, 1, n)));
  logits->assign(samples.size(), {});
  const size_t per_layer = static_cast<size_t>(spec.n_kv_heads) * n * hd;
  if (k_sum) {
    k_sum->assign(spec.n_layers, std::vector<float>(per_layer, 0.0f));
    v_sum->assign(spec.n_layers, std::vector<float>(per_layer, 0.0f));
  }
  std::vector<float> k(static_cast<size_t>(n) * hd), v(k.size());
  for (size_t s = 0; s < samples.size(); ++s) {
    const kv::SeqId seq = cache->AddSequence();
    // The last tokens' logits: the output the search compares (all of them
    // would be n x vocab floats per sample: 0.5 GB for Gemma-3's 262K
    // vocabulary).
    const model::BatchEntry e{seq, samples[s], std::max(0, n - 8)};
    // The pass's KV slots are reserved first (Model::Forward's contract).
    const std::vector<kv::StepChunk> chunks = model::StepChunks({&e, 1});
    Status st = cache->BeginStep(chunks);
    if (st.ok()) {
      st = m.Forward(pool, *cache, {&e, 1}, &(*logits)[s]);
      if (!st.ok()) cache->CancelStep(chunks);
    }
    for (int l = 0; st.ok() && k_sum && l < spec.n_layers; ++l) {
      for (int h = 0; st.ok() && h < spec.n_kv_heads; ++h) {
        st = cache->ReadTokens(seq, l, h, 0, n, k.data(), v.data());
        float *ks = (*k_sum)[l].data() + static_cast<size_t>(h) * n * hd;
        float *vs = (*v_sum)[l].data() + static_cast<size_t>(h) * n * hd;
        for (size_t i = 0; i < k.size(); ++i) ks[i] += k[i], vs[i] += v[i];
      }
    }
    cache->RemoveSequence(seq);
    RETURN_IF_ERROR(st);
  }
  return Status::Ok();
}

// Mean over rows of [rows, dim] of |a_row - b_row|_2.
double MeanRowDistance(const std::vector<float> &a, const std::vector<float> &b, int dim) {
  const size_t rows = a.size() / dim;
  double sum = 0;
  for (size_t r = 0; r < rows; ++r) {
    double d2 = 0;
    for (int i = 0; i < dim; ++i) {
      const double d = a[r * dim + i] - b[r * dim + i];
      d2 += d * d;
    }
    sum += std::sqrt(d2);
  }
  return sum / static_cast<double>(rows);
}

double Cosine(const std::vector<float> &a, const std::vector<float> &b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i)
    ab += double(a[i]) * b[i], aa += double(a[i]) * a[i], bb += double(b[i]) * b[i];
  return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 0;
}

}  // namespace

Result<KvSharerResult> SearchKvShare(model::Model &m, ThreadPool &pool,
                                     const std::vector<int32_t> &calibration, const KvSharerOptions &o) {
  const model::ModelConfig &c = m.config();
  if (o.layers < 1 || o.layers >= c.n_layers) {
    return InvalidArgument("KVSharer: {} shared layers for a model of {} (1 .. {})", o.layers, c.n_layers,
                           c.n_layers - 1);
  }
  if (o.samples < 1 || o.sample_tokens < 2) return InvalidArgument("KVSharer: no calibration samples");
  if (!(o.threshold >= -1 && o.threshold < 1)) {
    return InvalidArgument("KVSharer: the threshold {} is not a cosine similarity in [-1, 1)", o.threshold);
  }
  if (static_cast<int64_t>(calibration.size()) < static_cast<int64_t>(o.samples) * o.sample_tokens) {
    return InvalidArgument("KVSharer: {} calibration tokens, {} samples of {} need more", calibration.size(),
                           o.samples, o.sample_tokens);
  }
  RETURN_IF_ERROR(m.SetKvShare({}));
  std::vector<std::vector<int32_t>> samples;
  // Samples spread over the text.
  const size_t stride = calibration.size() / o.samples;
  for (int s = 0; s < o.samples; ++s) {
    samples.emplace_back(calibration.begin() + s * stride,
                         calibration.begin() + s * stride + o.sample_tokens);
  }
  std::vector<std::vector<float>> ref_logits, k_sum, v_sum, logits;
  RETURN_IF_ERROR(RunSamples(m, pool, samples, &ref_logits, &k_sum, &v_sum));
  // Pairs by distance of the layers' mean K and V (sums differ from means by a
  // common factor).
  struct Pair {
    int later, earlier;
    double distance;
  };
  std::vector<Pair> pairs;
  for (int i = 0; i < c.n_layers; ++i) {
    for (int j = 0; j < i; ++j) {
      const double dk = MeanRowDistance(k_sum[i], k_sum[j], c.head_dim) / o.samples;
      const double dv = MeanRowDistance(v_sum[i], v_sum[j], c.head_dim) / o.samples;
      pairs.push_back({i, j, (dk + dv) / 2});
    }
  }
  std::stable_sort(pairs.begin(), pairs.end(),
                   [](const Pair &a, const Pair &b) { return a.distance > b.distance; });
  KvSharerResult r;
  r.share.source.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) r.share.source[l] = l;
  Progress progress("KVSharer search", o.layers, "layers");
  for (const Pair &p : pairs) {
    if (r.share.shared() >= o.layers) break;
    if (!r.share.Owns(p.later) || !model::KvShareCompatible(c, p.later, p.earlier)) continue;
    model::KvShare trial = r.share;
    const int owner = trial.source[p.earlier];
    // The later layer and every layer that used its cache now use the earlier
    // one's owner.
    for (int l = 0; l < c.n_layers; ++l)
      if (trial.source[l] == p.later) trial.source[l] = owner;
    if (owner > p.later || !model::CheckKvShare(trial, c).ok()) continue;
    RETURN_IF_ERROR(m.SetKvShare(trial));
    ++r.candidates_tried;
    RETURN_IF_ERROR(RunSamples(m, pool, samples, &logits, nullptr, nullptr));
    double sim = 0;
    for (size_t s = 0; s < samples.size(); ++s) sim += Cosine(ref_logits[s], logits[s]) / samples.size();
    if (sim > o.threshold) {
      r.share = trial;
      r.accepted_similarity.push_back(sim);
      progress.Update(r.share.shared(),
                      fmt::format("layer {} uses {}'s cache, similarity {:.4f}", p.later, owner, sim));
    }
  }
  progress.Finish();
  RETURN_IF_ERROR(m.SetKvShare({}));
  if (r.share.shared() < o.layers) {
    return InvalidArgument(
        "KVSharer: only {} of {} layers can share with "
        "output similarity above {}",
        r.share.shared(), o.layers, o.threshold);
  }
  return r;
}

Result<model::KvShare> ResolveKvShare(const std::string &spec, model::Model &m, ThreadPool &pool,
                                      const tokenizer::Tokenizer &tok, const std::string &calibration_text) {
  if (!spec.starts_with("kvsharer:")) return model::ParseKvShareMap(spec, m.config());
  KvSharerOptions o;
  std::string_view rest = std::string_view(spec).substr(9);
  const size_t colon = rest.find(':');
  // LAYERS: a count, or a share of the model's layers (0.25: a quarter,
  // rounded).
  const std::string n(rest.substr(0, colon));
  char *end = nullptr;
  const double count = std::strtod(n.c_str(), &end);
  if (n.empty() || *end != '\0' || !(count > 0 && count < 1e6)) {
    return InvalidArgument(
        "--kv-share '{}': expected kvsharer:LAYERS[:THRESHOLD] (LAYERS a count "
        "or a share "
        "below 1) or LAYER=SOURCE,...",
        spec);
  }
  o.layers = count < 1 ? static_cast<int>(std::lround(count * m.config().n_layers)) : static_cast<int>(count);
  if (colon != std::string_view::npos) {
    const std::string t(rest.substr(colon + 1));
    char *e = nullptr;
    o.threshold = std::strtod(t.c_str(), &e);
    if (t.empty() || *e != '\0') return InvalidArgument("--kv-share '{}': the threshold is a number", spec);
  }
  if (calibration_text.empty()) return InvalidArgument("--kv-share {}: no calibration text", spec);
  // The first 64 KiB of the text (cut at a space) are more than the samples
  // need.
  size_t cut = std::min<size_t>(calibration_text.size(), 65536);
  while (cut < calibration_text.size() && calibration_text[cut] != ' ') ++cut;
  const std::vector<int32_t> ids = tok.Encode(calibration_text.substr(0, cut), false, false);
  ASSIGN_OR_RETURN(KvSharerResult r, SearchKvShare(m, pool, ids, o));
  spdlog::info("KVSharer: {} ({} candidates tried)", model::KvShareMapString(r.share), r.candidates_tried);
  return r.share;
}

}  // namespace slimkv::engine
