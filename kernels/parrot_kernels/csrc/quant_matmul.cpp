// Matmul and dequantisation over GGML block-quantised weights, kept as the GGUF file's bytes.
//
// A weight [M, K] is M rows of K / 32 blocks. Supported blocks (GGML's layouts):
//   Q4_0: fp16 d, 16 bytes of nibbles;          value = d * (q - 8)
//   Q4_1: fp16 d, fp16 m, 16 bytes of nibbles;  value = d * q + m
//   Q8_0: fp16 d, 32 int8;                      value = d * q
// Nibble byte j holds element j (low) and element j + 16 (high).
//
// matmul(x [N, K] fp32, w) -> [N, M] fp32 dequantises each block in registers and multiplies
// it with up to four rows of x at once; a weight row stays in L1 while all rows of x pass over
// it, so the weights stream from memory once per call. Results equal the dequantised fp32
// product up to float rounding. (Rounding x to integers per block, as llama.cpp does, was
// measured too: 8 bits moved this model's perplexity by 2.6%, its activations have outliers;
// 16 bits ran no faster than this.) The vector paths (AVX-512, AVX2 + FMA + F16C) are picked
// at run time from the CPU's features; other CPUs take the scalar path.

#include "cpu_ops.h"

#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace parrot {

namespace {

constexpr int64_t kBlock = 32;
// How far ahead of the block being read the weights are prefetched: rows are contiguous, so
// this reaches across row ends too (the hardware prefetcher alone leaves the loop waiting on
// memory, at a third of the bandwidth).
constexpr int64_t kPrefetchBytes = 1024;
enum QType : int64_t { Q4_0 = 2, Q4_1 = 3, Q8_0 = 8 };  // GGML's type ids

int64_t block_bytes(int64_t qtype) {
  switch (qtype) {
    case Q4_0: return 18;
    case Q4_1: return 20;
    case Q8_0: return 34;
    default: TORCH_CHECK_VALUE(false, "unsupported GGML block type ", qtype);
  }
}

inline float half(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return c10::detail::fp16_ieee_to_fp32_value(bits);
}

// -- scalar ------------------------------------------------------------------------------------

void dequant_block_scalar(int64_t qtype, const uint8_t* b, float* out) {
  const float d = half(b);
  if (qtype == Q8_0) {
    const int8_t* q = reinterpret_cast<const int8_t*>(b + 2);
    for (int j = 0; j < 32; ++j) out[j] = d * q[j];
    return;
  }
  const bool offset = qtype == Q4_1;
  const float m = offset ? half(b + 2) : -8.0f * d;
  const uint8_t* q = b + (offset ? 4 : 2);
  for (int j = 0; j < 16; ++j) {
    out[j] = d * (q[j] & 0x0F) + m;
    out[j + 16] = d * (q[j] >> 4) + m;
  }
}

void matmul_rows_scalar(int64_t qtype, const float* x, const uint8_t* w, float* out, int64_t n,
                        int64_t k, int64_t m, int64_t r0, int64_t r1) {
  const int64_t nb = k / kBlock, bb = block_bytes(qtype);
  float wv[kBlock];
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t i = 0; i < n; ++i) out[i * m + r] = 0.0f;
    for (int64_t b = 0; b < nb; ++b) {
      dequant_block_scalar(qtype, w + (r * nb + b) * bb, wv);
      for (int64_t i = 0; i < n; ++i) {
        const float* xb = x + i * k + b * kBlock;
        float s = 0.0f;
        for (int j = 0; j < kBlock; ++j) s += wv[j] * xb[j];
        out[i * m + r] += s;
      }
    }
  }
}

// -- AVX2 --------------------------------------------------------------------------------------

#define AVX2 __attribute__((target("avx2,fma,f16c")))

// One block as four vectors of eight values.
AVX2 inline void load_block_avx2(int64_t qtype, const uint8_t* b, __m256 v[4]) {
  uint16_t dbits;
  std::memcpy(&dbits, b, 2);
  const __m256 d = _mm256_set1_ps(_cvtsh_ss(dbits));
  if (qtype == Q8_0) {
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
    const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 18));
    v[0] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)));
    v[1] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))));
    v[2] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)));
    v[3] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))));
    return;
  }
  __m256 m;
  const uint8_t* qs;
  if (qtype == Q4_1) {
    uint16_t mbits;
    std::memcpy(&mbits, b + 2, 2);
    m = _mm256_set1_ps(_cvtsh_ss(mbits));
    qs = b + 4;
  } else {
    m = _mm256_mul_ps(d, _mm256_set1_ps(-8.0f));
    qs = b + 2;
  }
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(q, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
  v[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), d, m);
  v[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), d, m);
  v[2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), d, m);
  v[3] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), d, m);
}

AVX2 inline float hsum_avx2(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// Rows r of w against NR rows of x (two accumulators each, for independent FMA chains).
template <int NR>
AVX2 void dot_rows_avx2(int64_t qtype, const float* x, const uint8_t* wrow, float* out,
                        int64_t k, int64_t m, int64_t nb, int64_t bb) {
  __m256 acc[NR][2];
  for (int i = 0; i < NR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  __m256 v[4];
  for (int64_t b = 0; b < nb; ++b) {
    _mm_prefetch(reinterpret_cast<const char*>(wrow + b * bb + kPrefetchBytes), _MM_HINT_T0);
    load_block_avx2(qtype, wrow + b * bb, v);
    for (int i = 0; i < NR; ++i) {
      const float* xb = x + i * k + b * kBlock;
      acc[i][0] = _mm256_fmadd_ps(v[0], _mm256_loadu_ps(xb), acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(xb + 8), acc[i][1]);
      acc[i][0] = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(xb + 16), acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(xb + 24), acc[i][1]);
    }
  }
  for (int i = 0; i < NR; ++i) out[i * m] = hsum_avx2(_mm256_add_ps(acc[i][0], acc[i][1]));
}

AVX2 void matmul_rows_avx2(int64_t qtype, const float* x, const uint8_t* w, float* out, int64_t n,
                           int64_t k, int64_t m, int64_t r0, int64_t r1) {
  const int64_t nb = k / kBlock, bb = block_bytes(qtype);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* wrow = w + r * nb * bb;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) dot_rows_avx2<4>(qtype, x + i * k, wrow, out + i * m + r, k, m, nb, bb);
    switch (n - i) {
      case 3: dot_rows_avx2<3>(qtype, x + i * k, wrow, out + i * m + r, k, m, nb, bb); break;
      case 2: dot_rows_avx2<2>(qtype, x + i * k, wrow, out + i * m + r, k, m, nb, bb); break;
      case 1: dot_rows_avx2<1>(qtype, x + i * k, wrow, out + i * m + r, k, m, nb, bb); break;
      default: break;
    }
  }
}

AVX2 void dequant_rows_avx2(int64_t qtype, const uint8_t* w, float* out, int64_t k, int64_t r0,
                            int64_t r1) {
  const int64_t nb = k / kBlock, bb = block_bytes(qtype);
  __m256 v[4];
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t b = 0; b < nb; ++b) {
      load_block_avx2(qtype, w + (r * nb + b) * bb, v);
      float* o = out + r * k + b * kBlock;
      for (int j = 0; j < 4; ++j) _mm256_storeu_ps(o + 8 * j, v[j]);
    }
  }
}

// -- AVX-512 -----------------------------------------------------------------------------------

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma")))

// One block as two vectors of sixteen values.
AVX512 inline void load_block_avx512(int64_t qtype, const uint8_t* b, __m512 v[2]) {
  uint16_t dbits;
  std::memcpy(&dbits, b, 2);
  const __m512 d = _mm512_set1_ps(_cvtsh_ss(dbits));
  if (qtype == Q8_0) {
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
    const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 18));
    v[0] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)));
    v[1] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)));
    return;
  }
  __m512 m;
  const uint8_t* qs;
  if (qtype == Q4_1) {
    uint16_t mbits;
    std::memcpy(&mbits, b + 2, 2);
    m = _mm512_set1_ps(_cvtsh_ss(mbits));
    qs = b + 4;
  } else {
    m = _mm512_mul_ps(d, _mm512_set1_ps(-8.0f));
    qs = b + 2;
  }
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(q, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
  v[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)), d, m);
  v[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)), d, m);
}

template <int NR>
AVX512 void dot_rows_avx512(int64_t qtype, const float* x, const uint8_t* wrow, float* out,
                            int64_t k, int64_t m, int64_t nb, int64_t bb) {
  __m512 acc[NR][2];
  for (int i = 0; i < NR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  __m512 v[2];
  for (int64_t b = 0; b < nb; ++b) {
    _mm_prefetch(reinterpret_cast<const char*>(wrow + b * bb + kPrefetchBytes), _MM_HINT_T0);
    load_block_avx512(qtype, wrow + b * bb, v);
    for (int i = 0; i < NR; ++i) {
      const float* xb = x + i * k + b * kBlock;
      acc[i][0] = _mm512_fmadd_ps(v[0], _mm512_loadu_ps(xb), acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(v[1], _mm512_loadu_ps(xb + 16), acc[i][1]);
    }
  }
  for (int i = 0; i < NR; ++i) out[i * m] = _mm512_reduce_add_ps(_mm512_add_ps(acc[i][0], acc[i][1]));
}

// Eight rows of x per pass (sixteen accumulators fit in AVX-512's 32 registers), so a batch
// dequantises each block a quarter as often as four rows would.
AVX512 void matmul_rows_avx512(int64_t qtype, const float* x, const uint8_t* w, float* out,
                               int64_t n, int64_t k, int64_t m, int64_t r0, int64_t r1) {
  const int64_t nb = k / kBlock, bb = block_bytes(qtype);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* wrow = w + r * nb * bb;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      dot_rows_avx512<8>(qtype, x + i * k, wrow, out + i * m + r, k, m, nb, bb);
    const float* xi = x + i * k;
    float* oi = out + i * m + r;
    switch (n - i) {
      case 7: dot_rows_avx512<7>(qtype, xi, wrow, oi, k, m, nb, bb); break;
      case 6: dot_rows_avx512<6>(qtype, xi, wrow, oi, k, m, nb, bb); break;
      case 5: dot_rows_avx512<5>(qtype, xi, wrow, oi, k, m, nb, bb); break;
      case 4: dot_rows_avx512<4>(qtype, xi, wrow, oi, k, m, nb, bb); break;
      case 3: dot_rows_avx512<3>(qtype, xi, wrow, oi, k, m, nb, bb); break;
      case 2: dot_rows_avx512<2>(qtype, xi, wrow, oi, k, m, nb, bb); break;
      case 1: dot_rows_avx512<1>(qtype, xi, wrow, oi, k, m, nb, bb); break;
      default: break;
    }
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
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
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
  const float* xp = x.data_ptr<float>();
  const uint8_t* wp = w.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  const Isa isa = active_isa();
  at::parallel_for(0, m, kGrain, [&](int64_t r0, int64_t r1) {
    switch (isa) {
      case Isa::Avx512: matmul_rows_avx512(qtype, xp, wp, op, n, k, m, r0, r1); break;
      case Isa::Avx2: matmul_rows_avx2(qtype, xp, wp, op, n, k, m, r0, r1); break;
      default: matmul_rows_scalar(qtype, xp, wp, op, n, k, m, r0, r1); break;
    }
  });
  return out;
}

torch::Tensor dequantize(const torch::Tensor& w, int64_t qtype, int64_t k,
                         const std::optional<torch::Tensor>& out_buffer) {
  check_weight(w, qtype, k);
  const int64_t m = w.size(0), nb = k / kBlock, bb = block_bytes(qtype);
  torch::Tensor out;
  if (out_buffer) {
    TORCH_CHECK_VALUE(out_buffer->device().is_cpu() && out_buffer->scalar_type() == torch::kFloat32 &&
                          out_buffer->is_contiguous() && out_buffer->numel() >= m * k,
                      "out must be a contiguous float32 CPU tensor of at least ", m * k, " values");
    out = out_buffer->view(-1).narrow(0, 0, m * k).view({m, k});
  } else {
    out = torch::empty({m, k}, torch::TensorOptions().dtype(torch::kFloat32));
  }
  const uint8_t* wp = w.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  const Isa isa = active_isa();
  at::parallel_for(0, m, kGrain, [&](int64_t r0, int64_t r1) {
    if (isa != Isa::Scalar) {
      dequant_rows_avx2(qtype, wp, op, k, r0, r1);
      return;
    }
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t b = 0; b < nb; ++b)
        dequant_block_scalar(qtype, wp + (r * nb + b) * bb, op + r * k + b * kBlock);
  });
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
