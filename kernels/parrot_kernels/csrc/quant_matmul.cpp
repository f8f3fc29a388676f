// Matmul and dequantisation over GGML block-quantised weights (Q4_0, Q4_1, Q8_0), kept in memory
// as the GGUF file's bytes regrouped by row.
//
// GGML stores a row of K values as K / 32 blocks, each its scale(s) then its values:
//   Q4_0: fp16 d, 16 bytes of nibbles;          value = d * (q - 8)
//   Q4_1: fp16 d, fp16 m, 16 bytes of nibbles;  value = d * q + m
//   Q8_0: fp16 d, 32 int8;                      value = d * q
// (nibble byte j holds element j low and element j + 16 high). Here a row holds the same bytes
// grouped: every block's d, then (Q4_1) every block's m, then every block's values, so that a
// row's scales convert to fp32 in a few vector instructions instead of one by one per block
// (`from_gguf` in quant_matmul.py regroups; row sizes are unchanged).
//
// matmul(x [N, K] fp32, w) -> [N, M] fp32 multiplies each block in registers without expanding
// the weight. For one or two rows of x (decode) it sums d * (q . x) + m * sum(x) per block,
// which costs fewer vector operations per block than dequantising first; for more rows it
// dequantises each block once and multiplies it with up to eight rows. A tile of weight rows
// stays in cache while each group of x rows passes over it (the group in L1), so the weights
// stream from memory once per call. Results equal the dequantised fp32 product up to float
// rounding, but for one or two rows on the vector paths (decode): there x is first rounded per
// block to 16-bit integers (a step of 1/32767 of the block's largest value) and q . x is an
// exact integer dot (vpmaddwd), fewer vector operations than converting q to floats, which is
// what bounds decode on a core or two. A decode token's log-probability moves by about 1e-3
// (tests/test_compact_weights.py holds it within 1e-2). (Rounding x to 8-bit integers, as
// llama.cpp does, moved this model's perplexity by about half a percent, at the limit we hold
// to.) The vector paths (AVX-512, AVX2 + FMA + F16C) are picked at run time from the CPU's
// features; other CPUs take the scalar path.

#include "cpu_ops.h"
#include "quant_blocks.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <immintrin.h>

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>


namespace parrot {

namespace {

using namespace quant;

// -- scalar ------------------------------------------------------------------------------------

// Out: float, or c10::BFloat16 (its conversion from float rounds to nearest even).
template <typename Out>
void dequant_block_scalar(int64_t qtype, const uint8_t* q, float d, float m, Out* out) {
  if (qtype == Q8_0) {
    const int8_t* v = reinterpret_cast<const int8_t*>(q);
    for (int j = 0; j < 32; ++j) out[j] = d * v[j];
    return;
  }
  for (int j = 0; j < 16; ++j) {
    out[j] = d * (q[j] & 0x0F) + m;
    out[j + 16] = d * (q[j] >> 4) + m;
  }
}

void matmul_rows_scalar(const Job& J, int64_t r0, int64_t r1) {
  const RowLayout& L = J.L;
  RowScales s(L.nb);
  float wv[kBlock];
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = J.w + r * L.row_bytes;
    scales_scalar(J.qtype, L, row, s);
    for (int64_t i = 0; i < J.n; ++i) J.out[i * J.m + r] = 0.0f;
    for (int64_t b = 0; b < L.nb; ++b) {
      dequant_block_scalar(J.qtype, row + L.values_at + b * L.value_bytes, s.d[b], s.m[b], wv);
      for (int64_t i = 0; i < J.n; ++i) {
        const float* xb = J.x + i * J.k + b * kBlock;
        float acc = 0.0f;
        for (int j = 0; j < kBlock; ++j) acc += wv[j] * xb[j];
        J.out[i * J.m + r] += acc;
      }
    }
  }
}

template <typename Out>
void dequant_rows_scalar(int64_t qtype, const RowLayout& L, const uint8_t* w, Out* out,
                         int64_t r0, int64_t r1) {
  RowScales s(L.nb);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w + r * L.row_bytes;
    scales_scalar(qtype, L, row, s);
    for (int64_t b = 0; b < L.nb; ++b)
      dequant_block_scalar(qtype, row + L.values_at + b * L.value_bytes, s.d[b], s.m[b],
                           out + (r * L.nb + b) * kBlock);
  }
}

// -- AVX2 --------------------------------------------------------------------------------------

#define AVX2 __attribute__((target("avx2,fma,f16c")))

// A row's scales eight at a time (both vector paths use it). Reading eight halves past the
// last block stays inside the row, which is longer than its scales.
AVX2 void scales_f16c(int64_t qtype, const RowLayout& L, const uint8_t* row, RowScales& s) {
  for (int64_t b = 0; b < L.nb; b += 8) {
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * b)));
    _mm256_storeu_ps(&s.d[b], d);
    __m256 m = _mm256_setzero_ps();
    if (L.offsets)
      m = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * (L.nb + b))));
    else if (qtype == Q4_0)
      m = _mm256_mul_ps(d, _mm256_set1_ps(-8.0f));
    _mm256_storeu_ps(&s.m[b], m);
  }
}

// One block's quantised values (not yet scaled) as four vectors of eight.
template <int64_t Q>
AVX2 inline void values_avx2(const uint8_t* p, __m256 v[4]) {
  if constexpr (Q == Q8_0) {
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16));
    v[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
    v[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
    v[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
    v[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
  } else {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(q, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
  v[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
  v[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
  v[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
  v[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
  }
}

AVX2 inline float hsum_avx2(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// sum over blocks of m[b] * sx[b] (the offsets' share of one dot).
AVX2 float offsets_dot_avx2(const float* m, const float* sx, int64_t nb) {
  __m256 acc = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8)
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(m + b), _mm256_loadu_ps(sx + b), acc);
  float s = hsum_avx2(acc);
  for (; b < nb; ++b) s += m[b] * sx[b];
  return s;
}

// Row r of w against NR rows of x from row i0. Few rows: sum d * (q . x) per block, then add
// the offsets' share; more rows: dequantise the block once and multiply it with each.
template <int64_t Q, int NR>
AVX2 void dot_rows_avx2(const Job& J, const RowScales& s, int64_t r, int64_t i0) {
  constexpr int64_t kValueBytes = Q == Q8_0 ? 32 : 16;
  const int64_t nb = J.L.nb, k = J.k;
  const float* x = J.x + i0 * k;
  const float* d_of = s.d.data();
  const float* m_of = s.m.data();
  const uint8_t* vals = J.w + r * J.L.row_bytes + J.L.values_at;
  __m256 acc[NR][2];
  for (int i = 0; i < NR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  __m256 v[4];
  for (int64_t b = 0; b < nb; ++b) {
    _mm_prefetch(reinterpret_cast<const char*>(vals + b * kValueBytes + kPrefetchBytes), _MM_HINT_T0);
    values_avx2<Q>(vals + b * kValueBytes, v);
    const __m256 d = _mm256_broadcast_ss(d_of + b);
    if constexpr (NR <= 2) {
      for (int i = 0; i < NR; ++i) {
        const float* xb = x + i * k + b * kBlock;
        __m256 t = _mm256_mul_ps(v[0], _mm256_loadu_ps(xb));
        t = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(xb + 8), t);
        t = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(xb + 16), t);
        t = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(xb + 24), t);
        // Alternate accumulators (swapping registers, not indexing by b, which would
        // put them in memory) so consecutive blocks do not wait on one another.
        acc[i][0] = _mm256_fmadd_ps(t, d, acc[i][0]);
        std::swap(acc[i][0], acc[i][1]);
      }
    } else {
      const __m256 m = _mm256_broadcast_ss(m_of + b);
      for (int j = 0; j < 4; ++j) v[j] = _mm256_fmadd_ps(v[j], d, m);
      for (int i = 0; i < NR; ++i) {
        const float* xb = x + i * k + b * kBlock;
        acc[i][0] = _mm256_fmadd_ps(v[0], _mm256_loadu_ps(xb), acc[i][0]);
        acc[i][1] = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(xb + 8), acc[i][1]);
        acc[i][0] = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(xb + 16), acc[i][0]);
        acc[i][1] = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(xb + 24), acc[i][1]);
      }
    }
  }
  for (int i = 0; i < NR; ++i) {
    float sum = hsum_avx2(_mm256_add_ps(acc[i][0], acc[i][1]));
    if (NR <= 2 && Q != Q8_0) sum += offsets_dot_avx2(m_of, J.sx + (i0 + i) * nb, nb);
    J.out[(i0 + i) * J.m + r] = sum;
  }
}

// The rows of x from i0 (fewer than four) against weight row r.
template <int64_t Q>
AVX2 void tail_avx2(const Job& J, const RowScales& s, int64_t r, int64_t i0) {
  switch (J.n - i0) {
    case 3: dot_rows_avx2<Q, 3>(J, s, r, i0); break;
    case 2: dot_rows_avx2<Q, 2>(J, s, r, i0); break;
    case 1: dot_rows_avx2<Q, 1>(J, s, r, i0); break;
    default: break;
  }
}

// x [n, k] to 16-bit integers per block, as `quantize_i16_avx512` (quant_blocks.h).
AVX2 void quantize_i16_avx2(const float* x, int64_t n, int64_t k, int16_t* xq, float* xs) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t i = 0; i < n * (k / kBlock); ++i) {
    const float* p = x + i * kBlock;
    __m256 v[4], top = _mm256_setzero_ps(), unordered = _mm256_setzero_ps();
    for (int j = 0; j < 4; ++j) {
      v[j] = _mm256_loadu_ps(p + 8 * j);
      top = _mm256_max_ps(top, _mm256_andnot_ps(sign, v[j]));
      unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(v[j], v[j], _CMP_UNORD_Q));
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(top), _mm256_extractf128_ps(top, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    const float amax = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
    const bool nan = _mm256_movemask_ps(unordered) != 0;
    xs[i] = nan ? __builtin_nanf("") : amax / 32767.0f;
    const __m256 inv = _mm256_set1_ps(amax >= 1e-30f && !nan ? 32767.0f / amax : 0.0f);
    for (int j = 0; j < 4; j += 2) {
      // packs works within 128-bit lanes: quadwords 0, 2, 1, 3 put the sixteen in order.
      const __m256i packed = _mm256_packs_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v[j], inv)),
                                                _mm256_cvtps_epi32(_mm256_mul_ps(v[j + 1], inv)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq + i * kBlock + 8 * j),
                          _mm256_permute4x64_epi64(packed, 0xD8));
    }
  }
}

// Row r of w against the NR (at most kIntRows) rows of x in 16-bit integers, as
// int_dot_rows_avx512: per block two vpmaddwd of q widened to 16 bits against xq.
template <int64_t Q, int NR>
AVX2 void int_dot_rows_avx2(const Job& J, const RowScales& s, float* ds, int64_t r) {
  constexpr int64_t kValueBytes = Q == Q8_0 ? 32 : 16;
  const int64_t nb = J.L.nb, k = J.k, stride = nb + 16;
  for (int i = 0; i < NR; ++i) {
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8)
      _mm256_storeu_ps(ds + i * stride + b, _mm256_mul_ps(_mm256_loadu_ps(&s.d[b]),
                                                          _mm256_loadu_ps(J.xs + i * nb + b)));
    for (; b < nb; ++b) ds[i * stride + b] = s.d[b] * J.xs[i * nb + b];
  }
  const uint8_t* vals = J.w + r * J.L.row_bytes + J.L.values_at;
  __m256 acc[NR][2];
  for (int i = 0; i < NR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* p = vals + b * kValueBytes;
    _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p + kFarPrefetchBytes), _MM_HINT_T1);
    __m256i lo, hi;  // values 0-15 and 16-31 as 16-bit integers
    if constexpr (Q == Q8_0) {
      lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)));
    } else {
      const __m256i bytes = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      lo = _mm256_and_si256(bytes, _mm256_set1_epi16(0x0F));
      hi = _mm256_srli_epi16(bytes, 4);
    }
    for (int i = 0; i < NR; ++i) {
      const int16_t* xb = J.xq + i * k + b * kBlock;
      const __m256i dot = _mm256_add_epi32(
          _mm256_madd_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb))),
          _mm256_madd_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + 16))));
      acc[i][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_broadcast_ss(ds + i * stride + b),
                                  acc[i][0]);
      std::swap(acc[i][0], acc[i][1]);
    }
  }
  for (int i = 0; i < NR; ++i)
    J.out[i * J.m + r] = hsum_avx2(_mm256_add_ps(acc[i][0], acc[i][1])) +
                         (Q == Q8_0 ? 0.0f : offsets_dot_avx2(s.m.data(), J.sx + i * nb, nb));
}

// Four rows of x per pass; up to four, one weight row after another, past four in tiles, as
// in the AVX-512 kernel.
template <int64_t Q>
AVX2 void matmul_rows_avx2(const Job& J, int64_t r0, int64_t r1) {
  if (J.xq) {
    RowScales s(J.L.nb);
    std::vector<float> ds(kIntRows * (J.L.nb + 16));
    for (int64_t r = r0; r < r1; ++r) {
      scales_f16c(Q, J.L, J.w + r * J.L.row_bytes, s);
      if (J.n == 2) int_dot_rows_avx2<Q, 2>(J, s, ds.data(), r);
      else int_dot_rows_avx2<Q, 1>(J, s, ds.data(), r);
    }
    return;
  }
  if (J.n <= 4) {
    RowScales s(J.L.nb);
    for (int64_t r = r0; r < r1; ++r) {
      scales_f16c(Q, J.L, J.w + r * J.L.row_bytes, s);
      if (J.n == 4) dot_rows_avx2<Q, 4>(J, s, r, 0);
      else tail_avx2<Q>(J, s, r, 0);
    }
    return;
  }
  std::vector<RowScales> s(std::min(kRowTile, r1 - r0), RowScales(J.L.nb));
  for (int64_t t0 = r0; t0 < r1; t0 += kRowTile) {
    const int64_t t1 = std::min(t0 + kRowTile, r1);
    for (int64_t r = t0; r < t1; ++r) scales_f16c(Q, J.L, J.w + r * J.L.row_bytes, s[r - t0]);
    int64_t i = 0;
    for (; i + 4 <= J.n; i += 4)
      for (int64_t r = t0; r < t1; ++r) dot_rows_avx2<Q, 4>(J, s[r - t0], r, i);
    if (i < J.n)
      for (int64_t r = t0; r < t1; ++r) tail_avx2<Q>(J, s[r - t0], r, i);
  }
}

AVX2 inline void store8(float* o, __m256 v) { _mm256_storeu_ps(o, v); }

// Eight floats to bfloat16, rounded to nearest even as torch rounds (weights are finite).
AVX2 inline void store8(c10::BFloat16* o, __m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF))), 16);
  // packus packs within 128-bit lanes: take quadwords 0 and 2 for the eight results in order.
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(rounded, rounded), 0xD8);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(o), _mm256_castsi256_si128(packed));
}

template <int64_t Q, typename Out>
AVX2 void dequant_rows_avx2(const RowLayout& L, const uint8_t* w, Out* out, int64_t r0,
                            int64_t r1) {
  RowScales s(L.nb);
  __m256 v[4];
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w + r * L.row_bytes;
    scales_f16c(Q, L, row, s);
    for (int64_t b = 0; b < L.nb; ++b) {
      values_avx2<Q>(row + L.values_at + b * L.value_bytes, v);
      const __m256 d = _mm256_broadcast_ss(&s.d[b]), m = _mm256_broadcast_ss(&s.m[b]);
      Out* o = out + (r * L.nb + b) * kBlock;
      for (int j = 0; j < 4; ++j) store8(o + 8 * j, _mm256_fmadd_ps(v[j], d, m));
    }
  }
}

// The row kernels of one vector path for one block type.
template <int64_t Q>
void matmul_rows(Isa isa, const Job& J, int64_t r0, int64_t r1) {
  switch (isa) {
    case Isa::Avx512: matmul_rows_avx512(Q, J, r0, r1); break;
    case Isa::Avx2: matmul_rows_avx2<Q>(J, r0, r1); break;
    default: matmul_rows_scalar(J, r0, r1); break;
  }
}

template <typename Out>
void dequant_rows(Isa isa, int64_t qtype, const RowLayout& L, const uint8_t* w, Out* out,
                  int64_t r0, int64_t r1) {
  if (isa == Isa::Scalar) return dequant_rows_scalar(qtype, L, w, out, r0, r1);
  switch (qtype) {
    case Q4_0: return dequant_rows_avx2<Q4_0>(L, w, out, r0, r1);
    case Q4_1: return dequant_rows_avx2<Q4_1>(L, w, out, r0, r1);
    default: return dequant_rows_avx2<Q8_0>(L, w, out, r0, r1);
  }
}

// -- dispatch ----------------------------------------------------------------------------------

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "scalar";
  }
}

void check_weight(const torch::Tensor& w, int64_t qtype, int64_t k) {
  TORCH_CHECK_VALUE(w.device().is_cpu() && w.scalar_type() == torch::kUInt8 && w.dim() == 2 &&
                        w.is_contiguous(),
                    "weight must be a contiguous 2-D uint8 CPU tensor");
  TORCH_CHECK_VALUE(k > 0 && k % kBlock == 0, "in_features must be a positive multiple of 32, got ", k);
  TORCH_CHECK_VALUE(w.size(1) == k / kBlock * block_bytes(qtype), "weight rows hold ", w.size(1),
                    " bytes; ", k, " values of this type take ", k / kBlock * block_bytes(qtype));
}

}  // namespace

Isa detect_isa() {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl"))
    return Isa::Avx512;
  return avx2 ? Isa::Avx2 : Isa::Scalar;
}

Isa& active_isa() {
  static Isa isa = detect_isa();
  return isa;
}

// Rows per task: a handful of rows is already tens of microseconds of work.
constexpr int64_t kGrain = 16;

torch::Tensor matmul(const torch::Tensor& x_in, const torch::Tensor& w, int64_t qtype, int64_t k) {
  check_weight(w, qtype, k);
  TORCH_CHECK_VALUE(x_in.device().is_cpu() && x_in.scalar_type() == torch::kFloat32 &&
                        x_in.dim() == 2 && x_in.size(1) == k,
                    "x must be a 2-D float32 CPU tensor with ", k, " columns");
  const torch::Tensor x = x_in.contiguous();
  const int64_t n = x.size(0), m = w.size(0);
  torch::Tensor out = torch::empty({n, m}, x.options());
  const std::vector<float> sx = block_sums(x.data_ptr<float>(), n, k);
  Job job{qtype, RowLayout(qtype, k), x.data_ptr<float>(), sx.data(),
          w.data_ptr<uint8_t>(), out.data_ptr<float>(), n, k, m};
  const Isa isa = active_isa();
  std::vector<int16_t> xq;
  std::vector<float> xs;
  if (isa != Isa::Scalar && n <= kIntRows) {
    xq.resize(n * k);
    xs.resize(n * (k / kBlock));
    if (isa == Isa::Avx512) quantize_i16_avx512(job.x, n, k, xq.data(), xs.data());
    else quantize_i16_avx2(job.x, n, k, xq.data(), xs.data());
    job.xq = xq.data();
    job.xs = xs.data();
  }
  at::parallel_for(0, m, kGrain, [&](int64_t r0, int64_t r1) {
    switch (qtype) {
      case Q4_0: matmul_rows<Q4_0>(isa, job, r0, r1); break;
      case Q4_1: matmul_rows<Q4_1>(isa, job, r0, r1); break;
      default: matmul_rows<Q8_0>(isa, job, r0, r1); break;
    }
  });
  return out;
}

torch::Tensor dequantize(const torch::Tensor& w, int64_t qtype, int64_t k,
                         const std::optional<torch::Tensor>& out_buffer) {
  check_weight(w, qtype, k);
  const int64_t m = w.size(0);
  torch::Tensor out;
  if (out_buffer) {
    const auto type = out_buffer->scalar_type();
    TORCH_CHECK_VALUE(out_buffer->device().is_cpu() &&
                          (type == torch::kFloat32 || type == torch::kBFloat16) &&
                          out_buffer->is_contiguous() && out_buffer->numel() >= m * k,
                      "out must be a contiguous float32 or bfloat16 CPU tensor of at least ", m * k,
                      " values");
    out = out_buffer->view(-1).narrow(0, 0, m * k).view({m, k});
  } else {
    out = torch::empty({m, k}, torch::TensorOptions().dtype(torch::kFloat32));
  }
  const RowLayout layout(qtype, k);
  const uint8_t* wp = w.data_ptr<uint8_t>();
  const Isa isa = active_isa();
  const auto rows_into = [&](auto* op) {
    at::parallel_for(0, m, kGrain, [&](int64_t r0, int64_t r1) {
      dequant_rows(isa, qtype, layout, wp, op, r0, r1);
    });
  };
  if (out.scalar_type() == torch::kBFloat16) rows_into(out.data_ptr<c10::BFloat16>());
  else rows_into(out.data_ptr<float>());
  return out;
}

// For tests and benchmarks: run a chosen path ("scalar", "avx2", "avx512") if this CPU has it.
std::string set_isa(const std::string& name) {
  const Isa best = detect_isa();
  Isa want = name == "avx512" ? Isa::Avx512 : name == "avx2" ? Isa::Avx2 : Isa::Scalar;
  TORCH_CHECK_VALUE(name == "scalar" || name == "avx2" || name == "avx512" || name == "best",
                    "unknown instruction set ", name);
  if (name == "best" || static_cast<int>(want) > static_cast<int>(best)) want = best;
  active_isa() = want;
  return isa_name(want);
}

std::string isa() { return isa_name(active_isa()); }

}  // namespace parrot