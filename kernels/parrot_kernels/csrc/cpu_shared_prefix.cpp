// Shared-prefix decode attention on CPU as one call from Python (parrot_kernels.cpu_shared_prefix).
//
// The same algorithm as the torch path (parrot_kernels.shared_prefix): each request's suffix is
// one batched call of ATen's fused flash-attention op, the prefix is one call over every query
// row of a KV head at once (so the prefix K/V is read once per batch), and the two parts are
// merged by their log-sum-exp. What this file adds is that the glue between those two calls
// (views, the query copy, the masks, the merge) runs here instead of as a dozen Python-level op
// calls: in an engine step, or any loop that streams other data between calls, each of those
// costs tens of microseconds with cold caches, about a fifth of the whole at B = 16, P = 2048.
// The merge itself is one pass written straight into the output layout.
//
// Shapes (the torch path's, see shared_prefix.py): q [B, Hq, D]; prefix_k/v [P, Hkv, D];
// suffix_k/v [B, S, Hkv, D]; suffix_lens: None (all S) or an integer tensor [B]; the suffix
// includes the token being decoded. Query head h uses KV head h / (Hq / Hkv). Bad shapes raise
// ValueError; inputs this file does not cover (not all fp32 on CPU, an empty prefix or suffix,
// autograd) return None, and the caller runs the torch path. The checks are here rather than
// in Python for the same reason as the rest: Python-level code is slow with cold caches.

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace {

// The suffix mask for ragged lengths: [B, 1, 1, S], 0 where visible, -inf past each length.
at::Tensor suffix_mask(const at::Tensor& lens, int64_t s_len) {
  const at::Tensor pos = at::arange(s_len, lens.options());
  const at::Tensor hidden = pos.unsqueeze(0) >= lens.unsqueeze(1);
  return at::zeros({lens.size(0), s_len}, lens.options().dtype(at::kFloat))
      .masked_fill_(hidden, -std::numeric_limits<float>::infinity())
      .view({lens.size(0), 1, 1, s_len});
}

std::string shape(const at::Tensor& t) { return c10::str(t.sizes()); }

// ValueError for shapes that fit no decode problem (the torch path's checks and messages).
void check_shapes(const at::Tensor& q, const at::Tensor& pk, const at::Tensor& pv,
                  const at::Tensor& sk, const at::Tensor& sv, const at::Tensor* lens) {
  TORCH_CHECK_VALUE(q.dim() == 3, "decode q must be [B, Hq, D], got ", shape(q));
  TORCH_CHECK_VALUE(pk.dim() == 3, "prefix K must be [P, Hkv, D], got ", shape(pk));
  const int64_t b = q.size(0), hq = q.size(1), d = q.size(2), hkv = pk.size(1);
  TORCH_CHECK_VALUE(pk.size(2) == d, "query head_dim ", d, " != KV head_dim ", pk.size(2));
  TORCH_CHECK_VALUE(pv.sizes() == pk.sizes(), "prefix K ", shape(pk), " and V ", shape(pv),
                    " differ");
  TORCH_CHECK_VALUE(sk.dim() == 4 && sk.sizes() == sv.sizes() && sk.size(0) == b &&
                        sk.size(2) == hkv && sk.size(3) == d,
                    "suffix K/V ", shape(sk), " ", shape(sv), " do not fit ", b,
                    " requests x [S, ", hkv, ", ", d, "]");
  TORCH_CHECK_VALUE(hkv > 0 && hq % hkv == 0, "num_heads ", hq,
                    " is not a multiple of num_kv_heads ", hkv);
  TORCH_CHECK_VALUE(lens == nullptr || (lens->dim() == 1 && lens->size(0) == b), "expected ", b,
                    " lengths, got shape ", lens ? shape(*lens) : "");
}

bool covered(std::initializer_list<const at::Tensor*> ts) {
  for (const at::Tensor* t : ts) {
    if (!t->device().is_cpu() || t->scalar_type() != at::kFloat) return false;
    if (at::GradMode::is_enabled() && t->requires_grad()) return false;
  }
  return true;
}

}  // namespace

c10::optional<at::Tensor> decode(const at::Tensor& q, const at::Tensor& prefix_k,
                                 const at::Tensor& prefix_v, const at::Tensor& suffix_k,
                                 const at::Tensor& suffix_v,
                                 const c10::optional<at::Tensor>& given_lens,
                                 c10::optional<double> given_scale) {
  const bool ragged = given_lens.has_value() && given_lens->defined();
  check_shapes(q, prefix_k, prefix_v, suffix_k, suffix_v, ragged ? &*given_lens : nullptr);
  const int64_t B = q.size(0), Hq = q.size(1), D = q.size(2);
  const int64_t P = prefix_k.size(0), Hkv = prefix_k.size(1), S = suffix_k.size(1), G = Hq / Hkv;
  if (B == 0 || P == 0 || S == 0 || !covered({&q, &prefix_k, &prefix_v, &suffix_k, &suffix_v}) ||
      (ragged && !given_lens->device().is_cpu()))
    return c10::nullopt;
  const double scale = given_scale.value_or(1.0 / std::sqrt(static_cast<double>(D)));
  at::Tensor lens_t;
  if (ragged) lens_t = given_lens->to(at::kLong).contiguous();
  const at::Tensor qs = q.reshape({B, Hkv, G, D});  // a view for a contiguous q

  // Suffix: request b's G query rows per KV head against its own S keys.
  c10::optional<at::Tensor> mask;
  if (ragged) mask = suffix_mask(lens_t, S);
  const auto suf = at::_scaled_dot_product_flash_attention_for_cpu(
      qs, suffix_k.transpose(1, 2), suffix_v.transpose(1, 2), 0.0, false, mask, scale);
  // Prefix: all B*G query rows of a KV head as one problem against the shared keys.
  const at::Tensor qg = qs.transpose(0, 1).reshape({1, Hkv, B * G, D});
  const auto pre = at::_scaled_dot_product_flash_attention_for_cpu(
      qg, prefix_k.transpose(0, 1).unsqueeze(0), prefix_v.transpose(0, 1).unsqueeze(0), 0.0,
      false, c10::nullopt, scale);

  const at::Tensor &o_s = std::get<0>(suf), &l_s = std::get<1>(suf);  // [B, Hkv, G, (D)]
  const at::Tensor &o_p = std::get<0>(pre), &l_p = std::get<1>(pre);  // [1, Hkv, B*G, (D)]
  TORCH_CHECK(o_s.stride(3) == 1 && o_p.stride(3) == 1, "unexpected flash-attention layout");
  at::Tensor out = at::empty({B, Hq, D}, q.options());
  const float* os = o_s.data_ptr<float>();
  const float* ls = l_s.data_ptr<float>();
  const float* op = o_p.data_ptr<float>();
  const float* lp = l_p.data_ptr<float>();
  const int64_t* lens = ragged ? lens_t.data_ptr<int64_t>() : nullptr;
  float* y = out.data_ptr<float>();
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const int64_t os_b = o_s.stride(0), os_h = o_s.stride(1), os_g = o_s.stride(2);
  const int64_t ls_b = l_s.stride(0), ls_h = l_s.stride(1), ls_g = l_s.stride(2);
  const int64_t op_h = o_p.stride(1), op_r = o_p.stride(2);
  const int64_t lp_h = l_p.stride(1), lp_r = l_p.stride(2);

  // o = (e^{l_s} o_s + e^{l_p} o_p) / (e^{l_s} + e^{l_p}); the prefix is never empty, so the
  // sum is never 0. A request with no suffix key (length 0) gets the prefix part alone (the op
  // reports o = 0, lse = 0 for such rows).
  for (int64_t b = 0; b < B; ++b) {
    const bool no_suffix = lens != nullptr && lens[b] <= 0;
    for (int64_t kh = 0; kh < Hkv; ++kh) {
      for (int64_t g = 0; g < G; ++g) {
        const int64_t r = b * G + g;  // row within the prefix problem
        const float la = no_suffix ? neg_inf : ls[b * ls_b + kh * ls_h + g * ls_g];
        const float lb = lp[kh * lp_h + r * lp_r];
        const float m = std::max(la, lb);
        const float wa = std::exp(la - m), wb = std::exp(lb - m);
        const float inv = 1.0f / (wa + wb);
        const float ca = wa * inv, cb = wb * inv;
        const float* xa = os + b * os_b + kh * os_h + g * os_g;
        const float* xb = op + kh * op_h + r * op_r;
        float* dst = y + (b * Hq + kh * G + g) * D;
        if (no_suffix) {
          std::copy(xb, xb + D, dst);
        } else {
          for (int64_t d = 0; d < D; ++d) dst[d] = ca * xa[d] + cb * xb[d];
        }
      }
    }
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode", &decode, "shared-prefix decode attention (fp32, CPU)");
}
