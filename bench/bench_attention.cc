// Attention-only decode microbenchmark: one layer's worth of heads over one sequence of N
// cached tokens, for every KV preset, timed through the model's interface (KvCache::Attend
// of one decode token, 2 threads).
//
// Shapes: SmolLM2-135M (3 KV heads, 9 query heads, head dim 64) and Gemma-3-270M (1 KV
// head, 4 query heads, head dim 256). Each cache is filled through BeginStep/Append/EndStep
// in chunks, as prefill does, so quantized presets hold sealed blocks plus their fp16
// residual window. Decode streams the whole KV cache from memory once per layer; to measure
// that and not the L3 cache (32 MiB here, larger than one layer at 4K-16K tokens), each
// cache holds as many identical layers as make --cold-mib of KV, and a timed step attends
// over every layer in turn (--hot: one layer, cache-resident, to see the compute bound).
//
// Before timing, one step's output of layer 0 is checked against a float64 reference over
// the values the cache holds (re-encoded with the reference codecs exactly as the cache
// encodes them), so a fast but wrong kernel cannot be reported. Presets are timed in
// interleaved rounds so that load from other processes hits them alike; the table reports
// medians and ratios within one run.
//
//   build/bin/bench_attention [--tokens 4096,16384,65536] [--presets fp16,int4,...]
//       [--shapes smollm2,gemma3] [--reps 31] [--threads 2] [--cold-mib 128] [--hot] [--json]
//       [--svg PREFIX]   (PREFIX_smollm2.svg, ...: time per step against context, per preset,
//                         with the time fp16's and int4's bytes take at the measured bandwidth)
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/check.h"
#include "base/log.h"
#include "base/thread_pool.h"
#include "eval/bandwidth.h"
#include "eval/svg.h"
#include "kv/codec.h"
#include "kv/format.h"
#include "kv/kv_cache.h"
#include "kv/rotation.h"

namespace {

using namespace slimkv;
using namespace slimkv::kv;

struct Shape {
  std::string name;
  int n_kv_heads, n_q_heads, head_dim;
};

struct Options {
  std::vector<int> tokens = {4096, 16384, 65536};
  std::vector<std::string> presets = {"fp16", "fp32", "bf16", "fp8", "int8", "int4",
                                      "kivi4", "kivi2", "q8_0", "q4_0", "q8_0r", "q4_0r"};
  std::vector<std::string> shapes = {"smollm2", "gemma3"};
  int reps = 31;
  int threads = 2;
  int cold_mib = 128;
  int chunk = 512;  // tokens per prefill step while filling
  bool hot = false;
  bool json = false;
  std::string svg;  // chart file prefix; empty: no chart
};

// The seed KvCache gives its Hadamard rotations (kv_cache.cc): the reference rotates keys
// and values as the cache does. Should the two ever differ, the check fails loudly.
constexpr uint64_t kCacheRotationSeed = 0x5EED5EED5EEDull;

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = std::min(s.find(',', start), s.size());
    if (comma > start) out.push_back(s.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

// ------------------------------------------------------------------ data
// K/V values are a pure function of (layer, token, element), so the reference can
// regenerate what was appended. Roughly normal (sum of 4 uniforms), keys with outlier
// channels as real keys have (a shared offset per channel: it moves every score of a query
// equally, but it stretches the per-channel key scales).
uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
float Gauss(uint64_t key) {
  const uint64_t h = Mix(key);
  const float s = static_cast<float>((h & 0xFFFF) + ((h >> 16) & 0xFFFF) + ((h >> 32) & 0xFFFF) + (h >> 48));
  return (s / 65536.0f - 2.0f) * 1.7320508f;  // Irwin-Hall(4): mean 2, variance 1/3
}
// Token `token` of `layer`: k, v [n_kv_heads * head_dim].
void TokenKV(const Shape& sh, int layer, int token, float* k, float* v) {
  const int width = sh.n_kv_heads * sh.head_dim;
  const uint64_t base = (static_cast<uint64_t>(layer) << 40) ^ (static_cast<uint64_t>(token) << 12);
  for (int i = 0; i < width; ++i) {
    const int d = i % sh.head_dim;
    k[i] = Gauss(base * 2 + static_cast<uint64_t>(i) * 0x10001) + (d % 13 == 5 ? 4.0f : 0.0f);
    v[i] = Gauss(base * 2 + 1 + static_cast<uint64_t>(i) * 0x10001);
  }
}

// ------------------------------------------------------------------ one cache
struct Run {
  std::string preset;
  KvConfig config;
  std::unique_ptr<KvCache> cache;
  SeqId seq = 0;
  int layers = 0;
  int tokens = 0;              // committed tokens; the decode token is one more
  double bytes_per_token = 0;  // K+V of one layer in the final format, metadata included
  double bytes_per_step = 0;   // bytes one layer's attention reads: sealed + staged blocks
  double err = 0;              // max |out - ref| / max |ref|
  std::vector<double> seconds; // per layer, one entry per round
  double median = 0;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Fills the cache with `tokens` tokens in every layer (prefill in chunks), then appends the
// decode token, left uncommitted: Attend sees tokens + 1 keys.
void Fill(Run& r, const Shape& sh, int chunk) {
  const int width = sh.n_kv_heads * sh.head_dim;
  std::vector<float> k(static_cast<size_t>(chunk) * width), v(k.size());
  for (int t0 = 0; t0 <= r.tokens;) {
    const bool decode = t0 == r.tokens;
    const int n = decode ? 1 : std::min(chunk, r.tokens - t0);
    const StepChunk c[] = {{r.seq, n, 0}};
    const Status st = r.cache->BeginStep(c);
    CHECK(st.ok(), "{}", st.message());
    for (int l = 0; l < r.layers; ++l) {
      for (int i = 0; i < n; ++i) TokenKV(sh, l, t0 + i, &k[i * width], &v[i * width]);
      r.cache->Append(l, c, k.data(), width, v.data(), width);
    }
    if (decode) break;
    r.cache->EndStep(c);
    t0 += n;
  }
}

// Layer 0's attention output for `q` computed in float64 over the values the cache holds:
// tokens rotated and re-encoded with the reference codecs exactly as the cache encodes them
// (staging format, then the final format for sealed blocks).
std::vector<float> Reference(const Run& r, const Shape& sh, const float* q, float scale) {
  const KvConfig& cfg = r.config;
  const int hd = sh.head_dim, H = sh.n_kv_heads, G = sh.n_q_heads / H, bt = cfg.block_tokens;
  const int n = r.tokens + 1;
  const bool staging = cfg.needs_staging();
  const int sealed_blocks = staging ? std::max(0, r.tokens - cfg.residual) / bt : 0;
  const KvFormat sk = staging ? cfg.StagingK() : cfg.k, sv = staging ? cfg.StagingV() : cfg.v;
  std::vector<float> kall(static_cast<size_t>(n) * H * hd), vall(kall.size());
  for (int t = 0; t < n; ++t) TokenKV(sh, 0, t, &kall[static_cast<size_t>(t) * H * hd], &vall[static_cast<size_t>(t) * H * hd]);
  std::vector<float> out(static_cast<size_t>(sh.n_q_heads) * hd);
  std::vector<uint8_t> kpart(KLayout(cfg.k, bt, hd).total() + KLayout(sk, bt, hd).total());
  std::vector<uint8_t> vpart(VLayout(cfg.v, bt, hd).total() + VLayout(sv, bt, hd).total());
  std::vector<float> kb(static_cast<size_t>(bt) * hd), vb(kb.size());
  std::vector<double> kd(static_cast<size_t>(n) * hd), vd(kd.size());
  std::vector<float> kr(hd), vr(hd), qr(hd);
  for (int h = 0; h < H; ++h) {
    const Rotation k_rot = cfg.k.rotate ? Rotation(hd, kCacheRotationSeed, 0, h) : Rotation();
    const Rotation v_rot = cfg.v.rotate ? Rotation(hd, kCacheRotationSeed ^ 0xABCDull, 0, h) : Rotation();
    // Stored values of this head, block by block.
    for (int b = 0; b * bt < n; ++b) {
      const int nt = std::min(bt, n - b * bt);
      for (int i = 0; i < nt; ++i) {
        const float* ks = &kall[(static_cast<size_t>(b * bt + i) * H + h) * hd];
        const float* vs = &vall[(static_cast<size_t>(b * bt + i) * H + h) * hd];
        std::copy(ks, ks + hd, kr.begin());
        std::copy(vs, vs + hd, vr.begin());
        if (cfg.k.rotate) k_rot.Apply(kr.data());
        if (cfg.v.rotate) v_rot.Apply(vr.data());
        ks = kr.data();
        vs = vr.data();
        std::fill(kpart.begin(), kpart.end(), 0);
        std::fill(vpart.begin(), vpart.end(), 0);
        EncodeKToken(sk, bt, hd, i, ks, kpart.data());
        EncodeVToken(sv, bt, hd, i, vs, vpart.data());
        DecodeK(sk, bt, hd, i, kpart.data(), &kb[i * hd]);
        DecodeV(sv, bt, hd, i, vpart.data(), &vb[i * hd]);
      }
      if (b < sealed_blocks) {
        std::vector<float> k2(kb), v2(vb);
        EncodeKPart(cfg.k, bt, hd, k2.data(), bt, kpart.data());
        EncodeVPart(cfg.v, bt, hd, v2.data(), bt, vpart.data());
        for (int i = 0; i < bt; ++i) {
          DecodeK(cfg.k, bt, hd, i, kpart.data(), &kb[i * hd]);
          DecodeV(cfg.v, bt, hd, i, vpart.data(), &vb[i * hd]);
        }
      }
      for (int i = 0; i < nt * hd; ++i) {
        kd[static_cast<size_t>(b) * bt * hd + i] = kb[i];
        vd[static_cast<size_t>(b) * bt * hd + i] = vb[i];
      }
    }
    for (int g = 0; g < G; ++g) {
      std::copy(q + (h * G + g) * hd, q + (h * G + g + 1) * hd, qr.begin());
      if (cfg.k.rotate) k_rot.Apply(qr.data());  // q . k is kept: (R q) . (R k)
      std::vector<double> s(n);
      double m = -INFINITY;
      for (int t = 0; t < n; ++t) {
        double dot = 0;
        for (int d = 0; d < hd; ++d) dot += static_cast<double>(qr[d]) * kd[static_cast<size_t>(t) * hd + d];
        s[t] = dot * scale;
        m = std::max(m, s[t]);
      }
      double l = 0;
      std::vector<double> acc(hd, 0.0);
      for (int t = 0; t < n; ++t) {
        const double p = std::exp(s[t] - m);
        l += p;
        for (int d = 0; d < hd; ++d) acc[d] += p * vd[static_cast<size_t>(t) * hd + d];
      }
      float* o = &out[(h * G + g) * hd];
      for (int d = 0; d < hd; ++d) o[d] = static_cast<float>(acc[d] / l);
      if (cfg.v.rotate) v_rot.Inverse(o);  // values were attended to rotated
    }
  }
  return out;
}

// Tolerance of the check, relative to the output's range: float sums in another order, scales
// folded into queries and weights, and on AVX3_DL 16-bit integer queries and weights (the
// kernel test allows 1e-3; a wrong block, scale or mask is off by far more).
constexpr double kTolerance = 2e-3;

struct Row {
  std::string shape, preset;
  int tokens;
  double bytes_per_token, bytes_per_step, us, vs_fp16, gbps, pct_bw, bw_gbps, err;
  bool ok;
};

void PrintMarkdown(const std::vector<Row>& rows, const Options& o, const std::string& shape) {
  std::printf("\n%s — µs per decode step per layer (median), speed-up vs fp16, effective GB/s, %% of bandwidth\n\n",
              shape.c_str());
  std::printf("| preset | B/token |");
  for (int n : o.tokens) std::printf(" %dK µs | ×fp16 | GB/s | %%BW |", n / 1024);
  std::printf(" check |\n|---|---:|");
  for (size_t i = 0; i < o.tokens.size(); ++i) std::printf("---:|---:|---:|---:|");
  std::printf("---|\n");
  for (const std::string& p : o.presets) {
    bool first = true;
    double worst = 0;
    bool ok = true;
    for (int n : o.tokens) {
      for (const Row& r : rows) {
        if (r.shape != shape || r.preset != p || r.tokens != n) continue;
        if (first) std::printf("| %s | %.0f |", p.c_str(), r.bytes_per_token);
        first = false;
        std::printf(" %.1f | %.2f | %.1f | %.0f%% |", r.us, r.vs_fp16, r.gbps, r.pct_bw);
        worst = std::max(worst, r.err);
        ok = ok && r.ok;
      }
    }
    if (!first) std::printf(" %s %.1e |\n", ok ? "ok" : "FAIL", worst);
  }
  // The bound of this shape's rounds: the probe's median pass per context length (hot runs
  // read from the caches and have no probe).
  if (o.hot) return;
  std::printf("| read probe | |");
  for (int n : o.tokens) {
    double bw = 0;
    for (const Row& r : rows)
      if (r.shape == shape && r.tokens == n) bw = r.bw_gbps;
    std::printf(" | | %.1f | 100%% |", bw);
  }
  std::printf(" |\n");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "error: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--tokens") {
      o.tokens.clear();
      for (const auto& s : SplitList(next())) o.tokens.push_back(std::atoi(s.c_str()));
    } else if (a == "--presets") {
      o.presets = SplitList(next());
    } else if (a == "--shapes") {
      o.shapes = SplitList(next());
    } else if (a == "--reps") {
      o.reps = std::max(1, std::atoi(next().c_str()));
    } else if (a == "--threads") {
      o.threads = std::max(1, std::atoi(next().c_str()));
    } else if (a == "--cold-mib") {
      o.cold_mib = std::max(1, std::atoi(next().c_str()));
    } else if (a == "--hot") {
      o.hot = true;
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--svg") {
      o.svg = next();
    } else {
      std::fprintf(stderr,
                   "usage: bench_attention [--tokens N,...] [--presets P,...] [--shapes smollm2,gemma3] "
                   "[--reps R] [--threads T] [--cold-mib MiB] [--hot] [--json] [--svg PREFIX]\n");
      return 2;
    }
  }
  const std::vector<Shape> all_shapes = {{"smollm2", 3, 9, 64}, {"gemma3", 1, 4, 256}};
  ThreadPool pool(o.threads);
  // The bound is measured in the same interleaved rounds as the kernels: one pass over a
  // 1 GiB buffer (4x the Xeon host's 260 MiB L3) after every round of presets. It also
  // evicts the presets' layers from the L3, so every step streams its KV from memory.
  std::optional<eval::ReadBandwidthProbe> probe;
  if (!o.hot) probe.emplace(pool, size_t{1} << 30);
  std::vector<double> all_bw;  // every pass of the run, GB/s
  double load[3] = {0, 0, 0};
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3) load[0] = -1;
    std::fclose(f);
  }
  std::fprintf(stderr, "load average %.2f\n", load[0]);

  std::vector<Row> rows;
  bool all_ok = true;
  for (const std::string& shape_name : o.shapes) {
    const Shape* shp = nullptr;
    for (const Shape& s : all_shapes)
      if (s.name == shape_name) shp = &s;
    if (!shp) {
      std::fprintf(stderr, "error: unknown shape '%s' (smollm2, gemma3)\n", shape_name.c_str());
      return 2;
    }
    const Shape& sh = *shp;
    for (int n_tok : o.tokens) {
      std::vector<Run> runs;
      for (const std::string& p : o.presets) {
        // PRESET[@BLOCK]: the preset with another block size (its residual rounded up to it).
        const size_t at = p.find('@');
        auto cfg = ParsePreset(p.substr(0, at));
        if (!cfg.ok()) {
          std::fprintf(stderr, "error: %s\n", cfg.status().message().c_str());
          return 2;
        }
        if (at != std::string::npos) {
          const int bt = std::atoi(p.c_str() + at + 1);
          if (bt < 16 || bt % 16 != 0 || bt > kv::kMaxAttnBlockTokens) {
            std::fprintf(stderr, "error: block size in '%s' must be a multiple of 16 up to %d\n", p.c_str(),
                         kv::kMaxAttnBlockTokens);
            return 2;
          }
          cfg->block_tokens = bt;
          cfg->residual = (cfg->residual + bt - 1) / bt * bt;
        }
        Run r;
        r.preset = p;
        r.config = *cfg;
        r.tokens = n_tok;
        // Layers: enough that one step streams --cold-mib of KV from memory.
        KvSpec one{.n_layers = 1, .n_kv_heads = sh.n_kv_heads, .n_q_heads = sh.n_q_heads, .head_dim = sh.head_dim,
                   .max_context = n_tok + 1};
        const double layer_bytes = static_cast<double>(KvCache::BudgetFor(one, r.config, n_tok + 1, 1, o.chunk));
        r.layers = o.hot ? 1 : std::max(1, static_cast<int>(std::ceil(o.cold_mib * 1048576.0 / layer_bytes)));
        KvSpec spec = one;
        spec.n_layers = r.layers;
        auto cache = KvCache::Create(spec, r.config, KvCache::BudgetFor(spec, r.config, n_tok + 1, 1, o.chunk));
        CHECK(cache.ok(), "{}", cache.status().message());
        r.cache = std::move(*cache);
        r.seq = r.cache->AddSequence();
        const double t0 = NowSeconds();
        Fill(r, sh, o.chunk);
        const KvUsage u = r.cache->LayerUsage(r.seq, 0);
        r.bytes_per_step = static_cast<double>(u.bytes_held());
        r.bytes_per_token = static_cast<double>(r.cache->DataBytesPerToken() + r.cache->MetaBytesPerToken()) / r.layers;
        std::fprintf(stderr, "%s %d tokens %s: %d layers, %.2f MB per layer, filled in %.1f s\n", sh.name.c_str(),
                     n_tok, p.c_str(), r.layers, r.bytes_per_step / 1e6, NowSeconds() - t0);
        runs.push_back(std::move(r));
      }
      // One decode token's queries and outputs: [n_q_heads * head_dim].
      const int qw = sh.n_q_heads * sh.head_dim;
      std::vector<float> q(qw), out(qw);
      for (int i = 0; i < qw; ++i) q[i] = 3.0f * Gauss(0xABCDEF00ull + i);  // scores ~ N(0, 9): a peaked softmax
      const float scale = 1.0f / std::sqrt(static_cast<float>(sh.head_dim));
      // Correctness first: a fast wrong kernel must not be reported.
      for (Run& r : runs) {
        const StepChunk c[] = {{r.seq, 1, 0}};
        r.cache->Attend(pool, 0, c, q.data(), qw, out.data(), qw, scale);
        const std::vector<float> ref = Reference(r, sh, q.data(), scale);
        double emax = 0, rmax = 1e-30;
        for (int i = 0; i < qw; ++i) {
          emax = std::max(emax, static_cast<double>(std::abs(out[i] - ref[i])));
          rmax = std::max(rmax, static_cast<double>(std::abs(ref[i])));
          if (!std::isfinite(out[i])) emax = INFINITY;
        }
        r.err = emax / rmax;
        if (!(r.err <= kTolerance)) {
          std::fprintf(stderr, "FAIL %s %d tokens %s: error %.3g of the output range > %.3g\n", sh.name.c_str(), n_tok,
                       r.preset.c_str(), r.err, kTolerance);
          all_ok = false;
        }
      }
      // Warm-up, then interleaved rounds: every round times one step of every preset, then
      // one pass of the bandwidth probe.
      std::vector<double> bw_passes;
      for (int round = -1; round < o.reps; ++round) {
        for (Run& r : runs) {
          const StepChunk c[] = {{r.seq, 1, 0}};
          const double t0 = NowSeconds();
          for (int l = 0; l < r.layers; ++l) r.cache->Attend(pool, l, c, q.data(), qw, out.data(), qw, scale);
          const double dt = (NowSeconds() - t0) / r.layers;
          if (round >= 0) r.seconds.push_back(dt);
        }
        if (!o.hot) {
          const double gbps = probe->Pass();
          if (round >= 0) bw_passes.push_back(gbps);
        }
      }
      // Hot runs read from the caches: their fraction of the memory bandwidth is not a bound.
      const double bw_gbps = o.hot ? 0 : Median(bw_passes);
      all_bw.insert(all_bw.end(), bw_passes.begin(), bw_passes.end());
      std::fprintf(stderr, "%s %d tokens: bandwidth %.1f GB/s (median of %zu passes)\n", sh.name.c_str(), n_tok,
                   bw_gbps, bw_passes.size());
      double fp16 = 0;
      for (Run& r : runs) {
        r.median = Median(r.seconds);
        if (r.preset == "fp16") fp16 = r.median;
      }
      for (Run& r : runs) {
        const double gbps = r.bytes_per_step / r.median / 1e9;
        const bool ok = r.err <= kTolerance;
        rows.push_back({sh.name, r.preset, n_tok, r.bytes_per_token, r.bytes_per_step, r.median * 1e6,
                        fp16 > 0 ? fp16 / r.median : 0, gbps, bw_gbps > 0 ? 100 * gbps / bw_gbps : 0, bw_gbps,
                        r.err, ok});
        if (o.json) {
          std::printf(
              "{\"shape\":\"%s\",\"preset\":\"%s\",\"tokens\":%d,\"layers\":%d,\"bytes_per_token\":%.1f,"
              "\"bytes_per_step\":%.0f,\"us_per_step\":%.3f,\"speedup_vs_fp16\":%.3f,\"gbps\":%.2f,"
              "\"bandwidth_gbps\":%.2f,\"pct_bandwidth\":%.1f,\"check_error\":%.3g,\"check_ok\":%s,\"hot\":%s}\n",
              sh.name.c_str(), r.preset.c_str(), n_tok, r.layers, r.bytes_per_token, r.bytes_per_step,
              r.median * 1e6, fp16 > 0 ? fp16 / r.median : 0, gbps, bw_gbps, bw_gbps > 0 ? 100 * gbps / bw_gbps : 0, r.err,
              ok ? "true" : "false", o.hot ? "true" : "false");
          std::fflush(stdout);
        }
      }
    }
    if (!o.json) PrintMarkdown(rows, o, sh.name);
    if (!o.svg.empty()) {
      eval::LineChart chart{.title = "Attention per decode step, one layer of " + sh.name + " (" +
                                     std::to_string(sh.n_kv_heads) + " KV heads, " + std::to_string(sh.n_q_heads) +
                                     " query heads, head dim " + std::to_string(sh.head_dim) + "), 2 threads",
                            .x_label = "cached tokens", .y_label = "µs per step (median)",
                            .log_x = true, .log_y = true};
      for (int n : o.tokens) {
        chart.x_ticks.push_back(n);
        chart.x_tick_labels.push_back(std::to_string(n / 1024) + "K");
      }
      for (const std::string& p : o.presets) {
        eval::LineSeries line{.name = p};
        for (const Row& r : rows) {
          if (r.shape == sh.name && r.preset == p) {
            line.x.push_back(r.tokens);
            line.y.push_back(r.us);
          }
        }
        if (!line.x.empty()) chart.series.push_back(std::move(line));
      }
      // The memory bound: the time to read a preset's bytes of one layer at the bandwidth
      // measured in the same rounds (fp16 and int4, the pair the targets compare).
      for (const char* p : {"fp16", "int4"}) {
        eval::LineSeries bound;
        double lo = 1e30, hi = 0;
        for (const Row& r : rows) {
          if (r.shape == sh.name && r.preset == p && r.bw_gbps > 0) {
            bound.x.push_back(r.tokens);
            bound.y.push_back(r.bytes_per_step / (r.bw_gbps * 1e9) * 1e6);
            lo = std::min(lo, r.bw_gbps);
            hi = std::max(hi, r.bw_gbps);
          }
        }
        bound.name = fmt::format("{} bytes at the measured {:.1f}-{:.1f} GB/s", p, lo, hi);
        if (!bound.x.empty()) chart.series.push_back(std::move(bound));
      }
      const std::string path = o.svg + "_" + sh.name + ".svg";
      const Status st = chart.WriteFile(path);
      std::fprintf(stderr, "%s %s\n", st.ok() ? "wrote" : "could not write", st.ok() ? path.c_str() : st.message().c_str());
    }
  }
  if (!o.json) {
    std::printf("\nbandwidth (eval::ReadBandwidthProbe, %d threads, one 1 GiB pass per round): median %.1f GB/s, "
                "range %.1f-%.1f; %s; load average %.2f %.2f %.2f\n",
                o.threads, Median(all_bw), all_bw.empty() ? 0.0 : *std::min_element(all_bw.begin(), all_bw.end()),
                all_bw.empty() ? 0.0 : *std::max_element(all_bw.begin(), all_bw.end()), o.hot ? "hot (one layer, cache-resident)" : "cold (KV streamed from memory)",
                load[0], load[1], load[2]);
  }
  return all_ok ? 0 : 1;
}
