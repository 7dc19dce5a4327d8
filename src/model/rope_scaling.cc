#include "model/rope_scaling.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace slimkv::model {
namespace {

// ggml_rope_yarn_corr_dim: the pair index whose wavelength fits `n_rot` times into the
// original context.
double CorrDim(int rope_dim, int orig_context, double n_rot, double base) {
  return rope_dim * std::log(orig_context / (n_rot * 2 * std::numbers::pi)) / (2 * std::log(base));
}

}  // namespace

std::vector<float> LayerInvFreq(int rope_dim, float base, const RopeScaling& s,
                                const std::vector<float>& factors) {
  const int half = rope_dim / 2;
  std::vector<float> inv(half);
  const bool yarn = s.kind == RopeScalingKind::kYarn && s.ext_factor != 0.0f;
  double low = 0, high = 0;
  if (yarn) {
    low = std::max(0.0, std::floor(CorrDim(rope_dim, s.orig_context, s.beta_fast, base)));
    high = std::min<double>(rope_dim - 1, std::ceil(CorrDim(rope_dim, s.orig_context, s.beta_slow, base)));
  }
  for (int i = 0; i < half; ++i) {
    double extrap = std::pow(static_cast<double>(base), -2.0 * i / rope_dim);
    if (!factors.empty()) extrap /= factors[i];
    double theta = s.freq_scale * extrap;
    if (yarn) {  // ggml's rope_yarn_ramp: 1 below `low` (kept), 0 above `high` (interpolated)
      const double y = (i - low) / std::max(0.001, high - low);
      const double mix = (1 - std::clamp(y, 0.0, 1.0)) * s.ext_factor;
      theta = theta * (1 - mix) + extrap * mix;
    }
    inv[i] = static_cast<float>(theta);
  }
  return inv;
}

float RopeMscale(const RopeScaling& s) {
  float m = s.attn_factor;
  if (s.kind == RopeScalingKind::kYarn && s.ext_factor != 0.0f)
    m *= 1.0f + 0.1f * std::log(1.0f / s.freq_scale);
  return m;
}

}  // namespace slimkv::model
