// Decode attention straight from a paged KV pool: each query (one new token of a request)
// attends to its request's slots, read in place, with GQA. In a decode step it replaces the
// dozen torch ops of a gather (or view) plus a fused attention call, each of which runs with
// cold caches. fp32 on CPU; AVX2 or scalar, as `active_isa`. On AVX2 a chunk scores eight keys
// at a time (one reduction for eight dots), its exponentials are vectorised and its values
// summed in registers.
//
// Work is split by request and chunk of keys, so even one request keeps every thread busy: a
// chunk copies its keys' rows (every KV head of a slot lies together) into buffers in slot
// order, asks for the next chunk's rows meanwhile, and for each KV head scores its keys against
// the group of query heads sharing it, takes the softmax within the chunk and sums its values;
// the chunks' partial sums are then merged under their common maximum.

#include "cpu_ops.h"
#include "vec_math.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace parrot {

namespace {

float dot_scalar(const float* a, const float* b, int64_t d) {
  float r = 0.0f;
  for (int64_t e = 0; e < d; ++e) r += a[e] * b[e];
  return r;
}

// y += a * x
void axpy_scalar(float* y, float a, const float* x, int64_t d) {
  for (int64_t e = 0; e < d; ++e) y[e] += a * x[e];
}

AVX2 float dot_avx2(const float* a, const float* b, int64_t d) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t e = 0;
  for (; e + 16 <= d; e += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + e), _mm256_loadu_ps(b + e), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + e + 8), _mm256_loadu_ps(b + e + 8), acc1);
  }
  const __m256 acc = _mm256_add_ps(acc0, acc1);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  float r = _mm_cvtss_f32(s);
  for (; e < d; ++e) r += a[e] * b[e];
  return r;
}

AVX2 void axpy_avx2(float* y, float a, const float* x, int64_t d) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t e = 0;
  for (; e + 8 <= d; e += 8)
    _mm256_storeu_ps(y + e, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + e), _mm256_loadu_ps(y + e)));
  for (; e < d; ++e) y[e] += a * x[e];
}

// Eight keys' dot products with one query at a time: the eight sums of a0..a7, in order. One
// reduction tree for eight dots instead of one per dot (a 64-value dot is only 8 FMAs).
AVX2 inline __m256 hsum8(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// out[g * stride + j] = scale * (query g . key j), for the group's query heads (rows of q).
void scores_scalar(const float* q, int64_t group, const float* const* keys, int64_t n,
                   int64_t d, float scale, float* out, int64_t stride) {
  for (int64_t j = 0; j < n; ++j)
    for (int64_t g = 0; g < group; ++g) out[g * stride + j] = dot_scalar(q + g * d, keys[j], d) * scale;
}

AVX2 void scores_avx2(const float* q, int64_t group, const float* const* keys, int64_t n,
                      int64_t d, float scale, float* out, int64_t stride) {
  const int64_t dv = d & ~int64_t{7};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int64_t g = 0; g < group; ++g) {
      const float* qg = q + g * d;
      __m256 acc[8];
      for (int k = 0; k < 8; ++k) acc[k] = _mm256_setzero_ps();
      for (int64_t e = 0; e < dv; e += 8) {
        const __m256 qv = _mm256_loadu_ps(qg + e);
        for (int k = 0; k < 8; ++k)
          acc[k] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(keys[j + k] + e), acc[k]);
      }
      __m256 sums = hsum8(acc);
      if (dv < d) {  // a head size that is not a multiple of 8: the rest of each dot
        alignas(32) float rest[8];
        for (int k = 0; k < 8; ++k) rest[k] = dot_scalar(qg + dv, keys[j + k] + dv, d - dv);
        sums = _mm256_add_ps(sums, _mm256_load_ps(rest));
      }
      _mm256_storeu_ps(out + g * stride + j, _mm256_mul_ps(sums, _mm256_set1_ps(scale)));
    }
  }
  for (; j < n; ++j)
    for (int64_t g = 0; g < group; ++g) out[g * stride + j] = dot_avx2(q + g * d, keys[j], d) * scale;
}

// out[0 .. d) = sum over j < n of w[j] * rows[j][0 .. d), summed in key order (as repeated
// axpy would), the sums held in registers.
void values_scalar(float* out, const float* w, const float* const* rows, int64_t n, int64_t d) {
  std::fill(out, out + d, 0.0f);
  for (int64_t j = 0; j < n; ++j) axpy_scalar(out, w[j], rows[j], d);
}

template <int L>  // L vectors of eight values from e0
AVX2 void values_avx2_part(float* out, const float* w, const float* const* rows, int64_t n,
                           int64_t e0) {
  __m256 acc[L];
  for (int u = 0; u < L; ++u) acc[u] = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; ++j) {
    const __m256 a = _mm256_broadcast_ss(w + j);
    for (int u = 0; u < L; ++u)
      acc[u] = _mm256_fmadd_ps(a, _mm256_loadu_ps(rows[j] + e0 + 8 * u), acc[u]);
  }
  for (int u = 0; u < L; ++u) _mm256_storeu_ps(out + e0 + 8 * u, acc[u]);
}

AVX2 void values_avx2(float* out, const float* w, const float* const* rows, int64_t n,
                      int64_t d) {
  int64_t e0 = 0;
  for (; e0 + 64 <= d; e0 += 64) values_avx2_part<8>(out, w, rows, n, e0);
  for (; e0 + 8 <= d; e0 += 8) values_avx2_part<1>(out, w, rows, n, e0);
  for (; e0 < d; ++e0) {  // a head size that is not a multiple of 8
    float r = 0.0f;
    for (int64_t j = 0; j < n; ++j) r += w[j] * rows[j][e0];
    out[e0] = r;
  }
}

struct Attend {
  void (*scores)(const float*, int64_t, const float* const*, int64_t, int64_t, float, float*,
                 int64_t);
  float (*max)(const float*, int64_t);
  float (*exp_sum)(float*, int64_t, float);
  void (*axpy)(float*, float, const float*, int64_t);
  void (*values)(float*, const float*, const float* const*, int64_t, int64_t);
};

Attend pick() {
  if (active_isa() == Isa::Scalar)
    return {scores_scalar, max_scalar, exp_sum_scalar, axpy_scalar, values_scalar};
  // The AVX-512 path's CPUs have AVX2 too.
  return {scores_avx2, max_avx2, exp_sum_avx2, axpy_avx2, values_avx2};
}

// Keys per task: enough to amortise a task (its copies, its partial sums), few enough that one
// request's keys split over every thread.
constexpr int64_t kChunk = 64;

}  // namespace

torch::Tensor paged_decode_attention(const torch::Tensor& q, const torch::Tensor& k_pool,
                                     const torch::Tensor& v_pool, const torch::Tensor& slots,
                                     const torch::Tensor& lengths, double scale) {
  TORCH_CHECK_VALUE(q.device().is_cpu() && q.scalar_type() == torch::kFloat32 && q.dim() == 3 &&
                        q.is_contiguous(),
                    "q must be a contiguous float32 CPU tensor [B, Hq, D]");
  TORCH_CHECK_VALUE(k_pool.device().is_cpu() && k_pool.scalar_type() == torch::kFloat32 &&
                        k_pool.dim() == 3 && k_pool.is_contiguous() &&
                        v_pool.sizes() == k_pool.sizes() && v_pool.device().is_cpu() &&
                        v_pool.scalar_type() == torch::kFloat32 && v_pool.is_contiguous(),
                    "k_pool and v_pool must be contiguous float32 CPU [slots, Hkv, D], one shape");
  const int64_t b = q.size(0), hq = q.size(1), d = q.size(2);
  const int64_t num_slots = k_pool.size(0), hkv = k_pool.size(1);
  TORCH_CHECK_VALUE(k_pool.size(2) == d && hkv > 0 && hq % hkv == 0,
                    "the pool's head size must match q's, and its heads divide q's");
  TORCH_CHECK_VALUE(slots.device().is_cpu() && slots.scalar_type() == torch::kLong &&
                        slots.dim() == 2 && slots.size(0) == b && slots.is_contiguous(),
                    "slots must be a contiguous int64 CPU tensor [B, L]");
  TORCH_CHECK_VALUE(lengths.device().is_cpu() && lengths.scalar_type() == torch::kLong &&
                        lengths.dim() == 1 && lengths.size(0) == b && lengths.is_contiguous(),
                    "lengths must be a contiguous int64 CPU tensor [B]");
  const int64_t width = slots.size(1), group = hq / hkv;
  const int64_t* sp = slots.data_ptr<int64_t>();
  const int64_t* lp = lengths.data_ptr<int64_t>();
  for (int64_t i = 0; i < b; ++i) {
    TORCH_CHECK_VALUE(lp[i] >= 1 && lp[i] <= width, "lengths must be in [1, ", width, "]");
    for (int64_t j = 0; j < lp[i]; ++j)
      TORCH_CHECK_VALUE(sp[i * width + j] >= 0 && sp[i * width + j] < num_slots, "slot ",
                        sp[i * width + j], " is outside the pool");
  }
  const Attend attend = pick();
  torch::Tensor out = torch::empty_like(q);
  const float* qp = q.data_ptr<float>();
  const float* kp = k_pool.data_ptr<float>();
  const float* vp = v_pool.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float s = static_cast<float>(scale);
  const int64_t chunks = (width + kChunk - 1) / kChunk;
  // Per (request, KV head, chunk, query head of the group): the chunk's max score, its sum of
  // exp(score - max), and its values summed with those weights.
  const int64_t part = d + 2;
  std::vector<float> parts(b * hkv * chunks * group * part);
  // A task is a chunk of one request's keys, every KV head: its K and V rows are copied into
  // buffers first, read whole in slot order (the heads of a slot lie together in the pool), so
  // memory is streamed rather than visited one head's row at a time.
  const int64_t row = hkv * d;
  at::parallel_for(0, b * chunks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> score(kChunk * group), kbuf(kChunk * row), vbuf(kChunk * row);
    const float *keys[kChunk], *vals[kChunk];
    auto prefetch_rows = [&](int64_t t) {
      const int64_t c = t % chunks, i = t / chunks;
      const int64_t* si = sp + i * width;
      for (int64_t j = c * kChunk; j < std::min(lp[i], (c + 1) * kChunk); ++j)
        for (int64_t at = 0; at < row; at += 16) {
          _mm_prefetch(reinterpret_cast<const char*>(kp + si[j] * row + at), _MM_HINT_T1);
          _mm_prefetch(reinterpret_cast<const char*>(vp + si[j] * row + at), _MM_HINT_T1);
        }
    };
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t c = t % chunks, i = t / chunks;
      const int64_t j0 = c * kChunk, j1 = std::min(lp[i], j0 + kChunk);
      if (j0 >= j1) continue;
      const int64_t* si = sp + i * width;
      for (int64_t j = j0; j < j1; ++j) {
        std::memcpy(&kbuf[(j - j0) * row], kp + si[j] * row, row * sizeof(float));
        std::memcpy(&vbuf[(j - j0) * row], vp + si[j] * row, row * sizeof(float));
      }
      if (t + 1 < t1) prefetch_rows(t + 1);  // into L2 while this chunk computes
      for (int64_t h = 0; h < hkv; ++h) {
        const int64_t part_of = (i * hkv + h) * chunks + c;  // the parts' (request, head, chunk)
        const float* qi = qp + (i * hq + h * group) * d;
        for (int64_t j = 0; j < j1 - j0; ++j) {
          keys[j] = &kbuf[j * row + h * d];
          vals[j] = &vbuf[j * row + h * d];
        }
        attend.scores(qi, group, keys, j1 - j0, d, s, score.data(), kChunk);
        for (int64_t g = 0; g < group; ++g) {
          float* sg = score.data() + g * kChunk;
          float* pg = parts.data() + (part_of * group + g) * part;
          const float mx = attend.max(sg, j1 - j0);
          pg[0] = mx;
          pg[1] = attend.exp_sum(sg, j1 - j0, mx);
          attend.values(pg + 2, sg, vals, j1 - j0, d);
        }
      }
    }
  });
  // Merge each query head's chunks under their common maximum.
  at::parallel_for(0, b * hq, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r / hq, h = (r % hq) / group, g = r % group;
      const int64_t used = (lp[i] + kChunk - 1) / kChunk;
      const float* first = parts.data() + ((i * hkv + h) * chunks * group + g) * part;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t c = 0; c < used; ++c) mx = std::max(mx, first[c * group * part]);
      float* o = op + r * d;
      std::fill(o, o + d, 0.0f);
      float total = 0.0f;
      for (int64_t c = 0; c < used; ++c) {
        const float* pc = first + c * group * part;
        const float w = std::exp(pc[0] - mx);
        total += w * pc[1];
        attend.axpy(o, w, pc + 2, d);
      }
      const float inv = 1.0f / total;
      for (int64_t e = 0; e < d; ++e) o[e] *= inv;
    }
  });
  return out;
}

}  // namespace parrot
