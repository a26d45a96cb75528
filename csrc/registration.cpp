// d2c_fast operator schemas: the single place where the `d2c_fast` operator namespace is
// declared to the PyTorch dispatcher (TORCH_LIBRARY). Kernels live elsewhere and attach
// themselves with TORCH_LIBRARY_IMPL:
//   csrc/cpu/bn_swish.cpp          -> CPU
//   csrc/cpu/dwconv.cpp            -> CPU (dwconv_bias_swish, up2_dwconv_bias_swish)
//   csrc/cpu/se_residual.cpp       -> CPU (se_residual)
//   csrc/cpu/mbconv.cpp            -> CPU (mbconv)
//   csrc/cuda/bn_swish_launch.cpp  -> CUDA (only in builds against a CUDA torch)
// d2c_fast/ops/bn_swish.py adds a CompositeExplicitAutograd reference implementation, a fake
// (meta) implementation and an autograd formula from Python.
//
// The schema strings here must equal the Python constants in d2c_fast/ops/ (e.g.
// BN_SWISH_SCHEMA); tests/test_op_bn_swish.py asserts it. When the compiled library is absent,
// Python defines the same schema itself, so the operator always exists.
//
// Tensor functions are exposed ONLY through the dispatcher (torch.ops.d2c_fast.*), never via
// pybind11. The Python extension build (setup.py -> d2c_fast/_C*.so) still needs a module init
// symbol so that `import d2c_fast._C` loads the library; that stub is compiled out of the
// CMake build (D2C_NO_PYTHON), whose libd2c_fast_ops.so therefore does not need libpython and
// can be loaded with torch.ops.load_library() from Python or from C++ (libtorch).
#ifndef D2C_NO_PYTHON
#include <Python.h>  // must come before any standard header
#endif

#include <torch/library.h>

TORCH_LIBRARY(d2c_fast, m) {
  // y = swish(x * scale[c] + shift[c]), swish(v) = v * sigmoid(v); c = dim 1 of x (N,C,H,W)
  // or (N,C). Inference BatchNorm folded to per-channel float32 scale/shift, then Swish.
  m.def("bn_swish(Tensor x, Tensor scale, Tensor shift) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // Depthwise k x k conv (groups == C, zero padding) + bias (+ Swish if `swish`); x (N,C,H,W)
  // float32/bfloat16, weight (C,1,k,k) and bias (C,) float32; output in x's memory format.
  // CPU kernel: csrc/cpu/dwconv.cpp.
  m.def("dwconv_bias_swish(Tensor x, Tensor weight, Tensor bias, int stride, int padding, int dilation, bool swish) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // dwconv_bias_swish(nearest x2 up-sampling of x, stride 1, 'same' padding, dilation 1) for
  // odd k, without materialising the up-sampled x; output (N, C, 2H, 2W) in x's memory format.
  // CPU kernel: csrc/cpu/dwconv.cpp.
  m.def("up2_dwconv_bias_swish(Tensor x, Tensor weight, Tensor bias, bool swish) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // The body of a stride-1 MBConv cell, BN folded: conv1x1(swish(dwconv_kxk(swish(conv1x1(x,
  // w_expand) + b_expand)) + b_dw), w_project) + b_project, row-streamed so the expanded hidden
  // tensor stays in cache. x (N,C,H,W) float32/bfloat16; weights float32 in conv shapes, odd k.
  // CPU kernel: csrc/cpu/mbconv.cpp.
  m.def("mbconv(Tensor x, Tensor w_expand, Tensor b_expand, Tensor w_dw, Tensor b_dw, Tensor w_project, Tensor b_project) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // Squeeze-excitation + residual: skip + alpha * s * sigmoid(w2 @ relu(w1 @ mean_hw(s) + b1)
  // + b2) per image; s, skip (N,C,H,W) float32/bfloat16, FC parameters float32; output in s's
  // memory format. CPU kernel: csrc/cpu/se_residual.cpp.
  m.def("se_residual(Tensor s, Tensor skip, Tensor w1, Tensor b1, Tensor w2, Tensor b2, float alpha) -> Tensor",
        {at::Tag::pt2_compliant_tag});
}

#ifndef D2C_NO_PYTHON
static struct PyModuleDef d2c_fast_C_module = {
    PyModuleDef_HEAD_INIT,
    "_C",
    "d2c_fast compiled operators. Nothing is exported here: importing this module registers "
    "the operators with the PyTorch dispatcher (torch.ops.d2c_fast.*).",
    -1,
    nullptr,
};

PyMODINIT_FUNC PyInit__C(void) {
  return PyModule_Create(&d2c_fast_C_module);
}
#endif
