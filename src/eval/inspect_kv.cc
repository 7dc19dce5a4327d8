#include "eval/inspect_kv.h"

#include <algorithm>
#include <cmath>

#include "base/aligned_buffer.h"
#include "eval/svg.h"
#include "kv/codec.h"

namespace slimkv::eval {
namespace {

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

// x: [n][d] vectors of one side pooled over the layer's heads (rows of each head are
// contiguous runs of `per_head` tokens, so blocks never straddle two heads).
SideStats Analyse(const std::vector<float>& x, int n, int d, int per_head, int bt, bool is_key) {
  SideStats s;
  std::vector<double> ch_mean_abs(d, 0), ch_mean(d, 0), tok_norm(n, 0);
  double energy = 0;
  for (int t = 0; t < n; ++t) {
    double norm = 0;
    for (int c = 0; c < d; ++c) {
      const double v = x[static_cast<size_t>(t) * d + c];
      ch_mean_abs[c] += std::abs(v) / n;
      ch_mean[c] += v / n;
      norm += v * v;
    }
    energy += norm;
    tok_norm[t] = std::sqrt(norm);
  }
  const double ch_med = Median(ch_mean_abs), tok_med = Median(tok_norm);
  s.channel_outlier = ch_med > 0 ? *std::max_element(ch_mean_abs.begin(), ch_mean_abs.end()) / ch_med : 0;
  s.token_spread = tok_med > 0 ? *std::max_element(tok_norm.begin(), tok_norm.end()) / tok_med : 0;
  double mean_energy = 0;
  for (double m : ch_mean) mean_energy += m * m * n;
  s.channel_share = energy > 0 ? mean_energy / energy : 0;

  const char* specs[2][3] = {{"int4:token", "int4:channel", "int4:g32"}, {"int2:token", "int2:channel", "int2:g32"}};
  std::vector<float> y(d);
  for (int b = 0; b < 2; ++b) {
    for (int g = 0; g < 3; ++g) {
      auto f = kv::ParseFormat(specs[b][g], is_key);
      if (!kv::CheckFormat(*f, d, is_key).ok()) continue;
      const kv::PartLayout lay = is_key ? kv::KLayout(*f, bt, d) : kv::VLayout(*f, bt, d);
      AlignedBuffer<uint8_t> part(lay.total());
      double err = 0;
      for (int h0 = 0; h0 < n; h0 += per_head) {
        for (int t0 = h0; t0 < h0 + per_head; t0 += bt) {
          const int m = std::min(bt, h0 + per_head - t0);
          const float* xs = x.data() + static_cast<size_t>(t0) * d;
          (is_key ? kv::EncodeKPart : kv::EncodeVPart)(*f, bt, d, xs, m, part.data());
          for (int t = 0; t < m; ++t) {
            (is_key ? kv::DecodeK : kv::DecodeV)(*f, bt, d, t, part.data(), y.data());
            for (int c = 0; c < d; ++c) {
              const double e = y[c] - xs[static_cast<size_t>(t) * d + c];
              err += e * e;
            }
          }
        }
      }
      s.rel_error[b][g] = energy > 0 ? err / energy : 0;
    }
  }
  return s;
}

}  // namespace

Result<InspectResult> InspectKv(engine::Engine& engine, const std::vector<int32_t>& tokens, int block_tokens) {
  if (tokens.size() < static_cast<size_t>(block_tokens)) {
    return InvalidArgument("inspect-kv needs at least {} tokens, got {}", block_tokens, tokens.size());
  }
  kv::KvCache& kv = engine.kv();
  const kv::KvSpec& spec = kv.spec();
  const kv::SeqId seq = kv.AddSequence();
  std::vector<float> logits;
  Status st = engine.Prefill(seq, tokens, -1, &logits);
  if (!st.ok()) {
    kv.RemoveSequence(seq);
    return st;
  }
  InspectResult r;
  r.tokens = static_cast<int>(tokens.size());
  const int d = spec.head_dim, H = spec.n_kv_heads;
  for (int l = 0; l < spec.n_layers; ++l) {
    // A window layer keeps only its last tokens (whole blocks): analyse what it holds.
    const int w = spec.window(l);
    const int first = w > 0 ? std::max(0, r.tokens - w) / block_tokens * block_tokens : 0;
    const int n = r.tokens - first;
    std::vector<float> k(static_cast<size_t>(n) * d * H), v(k.size());
    for (int h = 0; h < H; ++h) {
      st = kv.ReadTokens(seq, l, h, 0, n, k.data() + static_cast<size_t>(h) * n * d,
                         v.data() + static_cast<size_t>(h) * n * d);
      if (!st.ok()) break;
    }
    if (!st.ok()) break;
    LayerStats ls;
    ls.layer = l;
    ls.window = w;
    ls.k = Analyse(k, n * H, d, n, block_tokens, true);
    ls.v = Analyse(v, n * H, d, n, block_tokens, false);
    r.layers.push_back(ls);
  }
  kv.RemoveSequence(seq);
  RETURN_IF_ERROR(st);
  return r;
}

std::string FormatInspectTable(const InspectResult& r) {
  std::string s = fmt::format(
      "| layer | K channel outliers | K token spread | K channel share | V channel outliers | V token spread | "
      "K int4 err token / g32 / channel | V int4 err token / g32 / channel | K int2 err token / g32 / channel | "
      "V int2 err token / g32 / channel |\n|---|---|---|---|---|---|---|---|---|---|\n");
  auto errs = [](const SideStats& x, int b) {
    return fmt::format("{:.4f} / {:.4f} / {:.4f}", x.rel_error[b][0], x.rel_error[b][2], x.rel_error[b][1]);
  };
  int k_channel_wins = 0, v_channel_wins = 0;
  SideStats mk, mv;
  const double n = static_cast<double>(r.layers.size());
  for (const auto& l : r.layers) {
    s += fmt::format("| {}{} | {:.1f} | {:.2f} | {:.2f} | {:.1f} | {:.2f} | {} | {} | {} | {} |\n", l.layer,
                     l.window ? " (local)" : "", l.k.channel_outlier, l.k.token_spread, l.k.channel_share,
                     l.v.channel_outlier, l.v.token_spread, errs(l.k, 0), errs(l.v, 0), errs(l.k, 1), errs(l.v, 1));
    k_channel_wins += l.k.rel_error[0][1] < l.k.rel_error[0][2];
    v_channel_wins += l.v.rel_error[0][1] < l.v.rel_error[0][2];
    mk.channel_outlier += l.k.channel_outlier / n;
    mv.channel_outlier += l.v.channel_outlier / n;
    mk.token_spread += l.k.token_spread / n;
    mv.token_spread += l.v.token_spread / n;
    for (int b = 0; b < 2; ++b)
      for (int g = 0; g < 3; ++g) {
        mk.rel_error[b][g] += l.k.rel_error[b][g] / n;
        mv.rel_error[b][g] += l.v.rel_error[b][g] / n;
      }
  }
  s += fmt::format("| mean | {:.1f} | {:.2f} | | {:.1f} | {:.2f} | {} | {} | {} | {} |\n\n", mk.channel_outlier,
                   mk.token_spread, mv.channel_outlier, mv.token_spread, errs(mk, 0), errs(mv, 0), errs(mk, 1),
                   errs(mv, 1));
  s += fmt::format(
      "Over {} tokens, at equal metadata (per channel over blocks of 32 tokens vs per token in groups of 32 "
      "channels): int4 keys lose less per channel in {} of {} layers (mean relative error {:.4f} vs {:.4f}); int4 "
      "values lose less per channel in {} of {} layers ({:.4f} vs {:.4f}).\n",
      r.tokens, k_channel_wins, r.layers.size(), mk.rel_error[0][1], mk.rel_error[0][2], v_channel_wins,
      r.layers.size(), mv.rel_error[0][1], mv.rel_error[0][2]);
  return s;
}

Status WriteInspectChart(const InspectResult& r, const std::string& model_name, const std::string& path) {
  LineChart c;
  c.title = fmt::format("{}: int4 error of cached K, V per layer", model_name);
  c.x_label = fmt::format("layer ({} tokens of text)", r.tokens);
  c.y_label = "relative squared error";
  c.log_y = true;
  const char* names[3] = {"per token", "per channel", "per token, groups of 32"};
  for (int side = 0; side < 2; ++side) {
    for (int g : {0, 2, 1}) {
      LineSeries s;
      s.name = fmt::format("{} {}", side == 0 ? "K" : "V", names[g]);
      for (const auto& l : r.layers) {
        s.x.push_back(l.layer);
        s.y.push_back((side == 0 ? l.k : l.v).rel_error[0][g]);
      }
      c.series.push_back(std::move(s));
    }
  }
  return c.WriteFile(path);
}

}  // namespace slimkv::eval
