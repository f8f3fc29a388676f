// The elementwise work of a decoder layer as single calls: RMSNorm (with the residual add
// before it), RoPE on q and k in place, SiLU(gate) * up. Each replaces several torch ops,
// which matters on CPU where every op called between weight streams costs tens of
// microseconds with cold caches. fp32, contiguous rows; the callers check and otherwise run
// their torch path. SiLU takes AVX2's vector exp where the CPU has it.

#include "cpu_ops.h"
#include "vec_math.h"

#include <ATen/Parallel.h>

#include <cmath>

namespace parrot {

namespace {

void check_rows(const torch::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.dim() == 2 &&
                        t.is_contiguous(),
                    name, " must be a contiguous 2-D float32 CPU tensor");
}

// out = x / rms(x) * w for one row; sum of squares in double (dims are small, rows few).
inline void norm_row(const float* x, const float* w, float* out, int64_t d, double eps) {
  double ss = 0.0;
  for (int64_t j = 0; j < d; ++j) ss += static_cast<double>(x[j]) * x[j];
  const float scale = static_cast<float>(1.0 / std::sqrt(ss / d + eps));
  for (int64_t j = 0; j < d; ++j) out[j] = w[j] * (x[j] * scale);
}

}  // namespace

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  check_rows(x, "x");
  TORCH_CHECK_VALUE(w.dim() == 1 && w.size(0) == x.size(1) && w.is_contiguous() &&
                        w.scalar_type() == torch::kFloat32,
                    "weight must be float32 [", x.size(1), "]");
  const int64_t n = x.size(0), d = x.size(1);
  torch::Tensor out = torch::empty_like(x);
  const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, n, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) norm_row(xp + r * d, wp, op + r * d, d, eps);
  });
  return out;
}

std::tuple<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x,
                                                      const torch::Tensor& delta,
                                                      const torch::Tensor& w, double eps) {
  check_rows(x, "x");
  check_rows(delta, "delta");
  TORCH_CHECK_VALUE(delta.sizes() == x.sizes(), "delta must have x's shape");
  const int64_t n = x.size(0), d = x.size(1);
  torch::Tensor sum = torch::empty_like(x);
  const float* dp = delta.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  float* sp = sum.data_ptr<float>();
  for (int64_t i = 0; i < n * d; ++i) sp[i] = xp[i] + dp[i];
  return {sum, rms_norm(sum, w, eps)};
}

void rope_(torch::Tensor& qkv, const torch::Tensor& table, int64_t rotated_heads,
           int64_t head_dim) {
  check_rows(qkv, "qkv");
  const int64_t n = qkv.size(0), half = head_dim / 2;
  TORCH_CHECK_VALUE(head_dim % 2 == 0 && rotated_heads * head_dim <= qkv.size(1),
                    "the rotated heads do not fit in qkv's rows");
  TORCH_CHECK_VALUE(table.device().is_cpu() && table.scalar_type() == torch::kFloat32 &&
                        table.is_contiguous() && table.dim() == 3 && table.size(0) == n &&
                        table.size(1) == 2 && table.size(2) == half,
                    "the cos/sin table must be a contiguous float32 [", n, ", 2, ", half, "]");
  float* p = qkv.data_ptr<float>();
  const float* tp = table.data_ptr<float>();
  const int64_t stride = qkv.size(1);
  for (int64_t t = 0; t < n; ++t) {
    const float* c = tp + t * 2 * half;
    const float* s = c + half;
    for (int64_t h = 0; h < rotated_heads; ++h) {
      float* x = p + t * stride + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = x[i], b = x[i + half];
        x[i] = a * c[i] - b * s[i];
        x[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

// Without AVX2, from this many rows on torch's vectorised SiLU beats the loop below with its
// scalar exp.
constexpr int64_t kSiluLoopRows = 8;

void silu_mul_row_scalar(const float* g, const float* u, float* out, int64_t d) {
  for (int64_t j = 0; j < d; ++j) out[j] = g[j] / (1.0f + std::exp(-g[j])) * u[j];
}

AVX2 void silu_mul_row_avx2(const float* g, const float* u, float* out, int64_t d) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t j = 0;
  for (; j + 8 <= d; j += 8) {
    const __m256 x = _mm256_loadu_ps(g + j);
    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    _mm256_storeu_ps(out + j,
                     _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + j)));
  }
  silu_mul_row_scalar(g + j, u + j, out + j, d - j);
}

torch::Tensor silu_mul(const torch::Tensor& gate_up) {
  check_rows(gate_up, "gate_up");
  const int64_t n = gate_up.size(0), d = gate_up.size(1) / 2;
  TORCH_CHECK_VALUE(gate_up.size(1) % 2 == 0, "gate_up must have an even width");
  const bool vector = active_isa() != Isa::Scalar;
  if (!vector && n >= kSiluLoopRows)
    return torch::silu(gate_up.narrow(1, 0, d)) * gate_up.narrow(1, d, d);
  torch::Tensor out = torch::empty({n, d}, gate_up.options());
  const float* g = gate_up.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, n, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* gr = g + r * 2 * d;
      if (vector) silu_mul_row_avx2(gr, gr + d, o + r * d, d);
      else silu_mul_row_scalar(gr, gr + d, o + r * d, d);
    }
  });
  return out;
}

}  // namespace parrot
