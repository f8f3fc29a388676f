// Causal attention of a prompt chunk over its request's history, on AVX2: the chunk's n queries
// are the last n positions of the L keys (a cached prefix first, then the chunk), query i sees
// keys 0 .. L - n + i. torch's fused CPU attention runs at a fraction of the FMA rate for short
// heads; here eight query vectors are scored against eight keys at a time from registers (keys
// transposed once per call, so a key's values load as one vector across eight keys), the
// softmax is exponentiated in vectors, and values are summed two query vectors at a time.
//
// Work is split by KV head and tile of eight query vectors (a row's query heads sharing that KV
// head, row after row). Each query vector's arithmetic, the order of its sums included, depends
// only on its own row and keys, never on the chunk it came in or the rows beside it.

#include "cpu_ops.h"
#include "vec_math.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <vector>

namespace parrot {

namespace {

constexpr int64_t kTile = 8;  // query vectors scored together (eight accumulators)

struct Problem {
  const float* q;   // [n, hq, d]
  const float* kt;  // [hkv, lp / 8, d, 8]: keys in panels of eight, transposed, zero past L
  const float* v;   // [L, hkv, d]
  float* out;       // [n, hq, d]
  int64_t n, hq, hkv, group, d, L, lp;
  float scale;

  const float* query(int64_t h, int64_t m) const {  // vector m of KV head h: row m / group
    return q + ((m / group) * hq + h * group + m % group) * d;
  }
  int64_t visible(int64_t m) const { return L - n + m / group + 1; }
};

// scores[t][j] = scale * (query t . key j) for j < keys (a multiple of 8), eight query vectors.
AVX2 void score_tile(const Problem& P, int64_t h, const float* const* qv, int64_t keys,
                     float* scores) {
  const __m256 scale = _mm256_set1_ps(P.scale);
  for (int64_t j = 0; j < keys; j += 8) {
    const float* panel = P.kt + (h * P.lp + j) * P.d;
    __m256 acc[kTile];
    for (int t = 0; t < kTile; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t e = 0; e < P.d; ++e) {
      const __m256 k = _mm256_loadu_ps(panel + 8 * e);
      for (int t = 0; t < kTile; ++t)
        acc[t] = _mm256_fmadd_ps(_mm256_broadcast_ss(qv[t] + e), k, acc[t]);
    }
    for (int t = 0; t < kTile; ++t)
      _mm256_storeu_ps(scores + t * P.lp + j, _mm256_mul_ps(acc[t], scale));
  }
}

// out rows a and b (from e0, 8 * L values) = their weights (zero past each one's keys) times
// the values, over keys; L a constant, so the accumulators stay in registers.
template <int L>
AVX2 void sum_values_pair(const Problem& P, int64_t h, int64_t e0, const float* wa,
                          const float* wb, int64_t keys, float* oa, float* ob) {
  const int64_t stride = P.hkv * P.d;
  __m256 acc_a[L], acc_b[L];
  for (int u = 0; u < L; ++u) acc_a[u] = acc_b[u] = _mm256_setzero_ps();
  const float* vj = P.v + h * P.d + e0;
  for (int64_t j = 0; j < keys; ++j, vj += stride) {
    const __m256 pa = _mm256_broadcast_ss(wa + j), pb = _mm256_broadcast_ss(wb + j);
    for (int u = 0; u < L; ++u) {
      const __m256 x = _mm256_loadu_ps(vj + 8 * u);
      acc_a[u] = _mm256_fmadd_ps(pa, x, acc_a[u]);
      acc_b[u] = _mm256_fmadd_ps(pb, x, acc_b[u]);
    }
  }
  for (int u = 0; u < L; ++u) {
    _mm256_storeu_ps(oa + e0 + 8 * u, acc_a[u]);
    _mm256_storeu_ps(ob + e0 + 8 * u, acc_b[u]);
  }
}

// Both rows over every value: 32 at a time, then what is left.
AVX2 void sum_values(const Problem& P, int64_t h, const float* wa, const float* wb,
                     int64_t keys, float* oa, float* ob) {
  int64_t e0 = 0;
  for (; e0 + 32 <= P.d; e0 += 32) sum_values_pair<4>(P, h, e0, wa, wb, keys, oa, ob);
  switch ((P.d - e0) / 8) {
    case 3: sum_values_pair<3>(P, h, e0, wa, wb, keys, oa, ob); break;
    case 2: sum_values_pair<2>(P, h, e0, wa, wb, keys, oa, ob); break;
    case 1: sum_values_pair<1>(P, h, e0, wa, wb, keys, oa, ob); break;
    default: break;
  }
}

AVX2 void attend_tile(const Problem& P, int64_t h, int64_t m0, std::vector<float>& scores,
                      std::vector<float>& scratch) {
  const int64_t count = std::min(kTile, P.n * P.group - m0);
  const float* qv[kTile];
  for (int t = 0; t < kTile; ++t) qv[t] = P.query(h, m0 + std::min<int64_t>(t, count - 1));
  const int64_t last = P.visible(m0 + count - 1);
  const int64_t keys = (last + 7) / 8 * 8;
  score_tile(P, h, qv, keys, scores.data());
  float sums[kTile];
  for (int64_t t = 0; t < count; ++t) {
    float* s = scores.data() + t * P.lp;
    const int64_t seen = P.visible(m0 + t);
    const float mx = max_avx2(s, seen);
    sums[t] = exp_sum_avx2(s, seen, mx);
    std::fill(s + seen, s + keys, 0.0f);
  }
  for (int64_t t = 0; t < count; t += 2) {
    const int64_t u = std::min(t + 1, count - 1);  // an odd last vector is summed twice
    float* oa = scratch.data();
    float* ob = scratch.data() + P.d;
    sum_values(P, h, scores.data() + t * P.lp, scores.data() + u * P.lp, last, oa, ob);
    for (int64_t w : {t, u}) {
      const int64_t m = m0 + w;
      float* o = P.out + ((m / P.group) * P.hq + h * P.group + m % P.group) * P.d;
      const float* src = w == t ? oa : ob;
      const float inv = 1.0f / sums[w];
      for (int64_t e = 0; e < P.d; ++e) o[e] = src[e] * inv;
    }
  }
}

}  // namespace

std::optional<torch::Tensor> prefill_attention(const torch::Tensor& q, const torch::Tensor& k,
                                               const torch::Tensor& v, double scale) {
  auto is_rows = [](const torch::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.dim() == 3 &&
           t.is_contiguous();
  };
  TORCH_CHECK_VALUE(is_rows(q) && is_rows(k) && is_rows(v) && k.sizes() == v.sizes(),
                    "q [n, Hq, D], k and v [L, Hkv, D] must be contiguous float32 CPU tensors");
  const int64_t n = q.size(0), hq = q.size(1), d = q.size(2), L = k.size(0), hkv = k.size(1);
  TORCH_CHECK_VALUE(k.size(2) == d && hkv > 0 && hq % hkv == 0 && n >= 1 && n <= L,
                    "the chunk's n queries must be the last of the L keys, its heads a multiple "
                    "of the keys'");
  if (active_isa() == Isa::Scalar || d % 8 != 0) return std::nullopt;
  const int64_t lp = (L + 7) / 8 * 8;
  std::vector<float> kt(hkv * d * lp, 0.0f);
  const float* kp = k.data_ptr<float>();
  at::parallel_for(0, hkv, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t j = 0; j < L; ++j)
        for (int64_t e = 0; e < d; ++e)
          kt[((h * lp + j / 8 * 8) * d + 8 * e) + j % 8] = kp[(j * hkv + h) * d + e];
  });
  torch::Tensor out = torch::empty_like(q);
  const Problem P{q.data_ptr<float>(), kt.data(), v.data_ptr<float>(), out.data_ptr<float>(),
                  n, hq, hkv, hq / hkv, d, L, lp, static_cast<float>(scale)};
  const int64_t tiles = (n * P.group + kTile - 1) / kTile;
  at::parallel_for(0, hkv * tiles, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> scores(kTile * lp), scratch(2 * d);
    for (int64_t t = t0; t < t1; ++t) attend_tile(P, t / tiles, (t % tiles) * kTile, scores, scratch);
  });
  return out;
}

}  // namespace parrot
