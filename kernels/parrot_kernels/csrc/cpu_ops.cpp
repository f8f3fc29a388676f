// Python bindings of the CPU operators (parrot_kernels.cpu_ops loads this extension). The
// larger ones let go of the GIL while they run: they touch no Python object, and a step
// holding it would keep the server's event loop waiting.
#include "cpu_ops.h"

using NoGil = py::call_guard<py::gil_scoped_release>;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  mod.def("matmul", &parrot::matmul, "x [N, K] fp32 @ dequantised(w [M, K]).T -> [N, M] fp32",
          NoGil());
  mod.def("dequantize", &parrot::dequantize,
          "w [M, K] blocks -> [M, K] fp32, or into out (fp32 or bf16)", py::arg("w"),
          py::arg("qtype"), py::arg("k"), py::arg("out") = py::none(), NoGil());
  mod.def("set_isa", &parrot::set_isa, "pick the vector path (best available if the CPU lacks it)");
  mod.def("isa", &parrot::isa, "the vector path in use");
  mod.def("rms_norm", &parrot::rms_norm, "x [N, D] / rms * w");
  mod.def("add_rms_norm", &parrot::add_rms_norm, "(x + delta, rms_norm(x + delta))");
  mod.def("rope_", &parrot::rope_, "rotate the first heads of qkv [N, *] in place");
  mod.def("silu_mul", &parrot::silu_mul, "silu(gate) * up for gate_up [N, 2I] -> [N, I]");
  mod.def("paged_decode_attention", &parrot::paged_decode_attention,
          "q [B, Hq, D] against pool rows slots[b, :lengths[b]] -> [B, Hq, D]", NoGil());
  mod.def("prefill_attention", &parrot::prefill_attention,
          "causal q [n, Hq, D] over k, v [L, Hkv, D] (q the last n positions) -> [n, Hq, D], "
          "or None",
          NoGil());
  mod.def("decode_layers", &parrot::decode_layers,
          "Llama decoder layers in turn for B decoding requests over block weights -> x [B, "
          "hidden]; pools [layers, slots, Hkv, D]",
          NoGil());
}
