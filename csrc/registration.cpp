// d2c_fast operator schemas: the single place where the `d2c_fast` operator namespace is
// declared to the PyTorch dispatcher (TORCH_LIBRARY). The schemas themselves are not written
// here: they are the D2C_OP lines of d2c_fast/ops/schemas.def, the one list of the namespace's
// operators that d2c_fast/ops/_registry.py reads as well (and uses to define them from Python
// when this library is not loaded). Kernels live elsewhere and attach themselves with
// TORCH_LIBRARY_IMPL:
//   csrc/cpu/bn_swish.cpp          -> CPU
//   csrc/cpu/dwconv.cpp            -> CPU (dwconv_bias_swish, up2_dwconv_bias_swish)
//   csrc/cpu/se_residual.cpp       -> CPU (se_residual)
//   csrc/cpu/mbconv.cpp            -> CPU (mbconv)
//   csrc/cuda/*_launch.cpp         -> CUDA (bn_swish, dwconv_bias_swish, se_residual; only in
//                                     builds against a CUDA torch)
// d2c_fast/ops/<op>.py adds a CompositeExplicitAutograd reference implementation, a fake (meta)
// implementation and, for bn_swish, an autograd formula from Python.
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
#define D2C_OP(schema) m.def(schema, {at::Tag::pt2_compliant_tag});
#define D2C_PYTHON_OP(schema)  // defined from Python (d2c_fast/ops/_registry.py)
#include "../d2c_fast/ops/schemas.def"
#undef D2C_PYTHON_OP
#undef D2C_OP
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
