// colbert_engine._cuda: one registration function per kernel family (bindings/cuda/<family>.cpp).
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_maxsim(py::module_& m);
void bind_plaid(py::module_& m);
void bind_codec(py::module_& m);
void bind_lut_maxsim(py::module_& m);

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "colbert_engine CUDA kernels (pure functions over caller-owned device buffers)";
  // Number of devices the runtime sees, or -cudaError when there is no usable driver.
  m.def("device_count", [] {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    return err == cudaSuccess ? n : -static_cast<int>(err);
  });
  m.def("error_string", [](int code) {
    return std::string(cudaGetErrorString(static_cast<cudaError_t>(code)));
  });
  m.attr("cuda_version") = CUDART_VERSION;
  bind_maxsim(m);
  bind_plaid(m);
  bind_codec(m);
  bind_lut_maxsim(m);
}
