// colbert_engine._C: one registration function per kernel family (bindings/cpu/<family>.cpp).
#include <pybind11/pybind11.h>

#include "common/isa.h"
#include "cpu/parallel.h"

namespace py = pybind11;

void bind_maxsim(py::module_& m);
void bind_codec(py::module_& m);
void bind_lut_maxsim(py::module_& m);
void bind_plaid(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "colbert_engine CPU kernels (pure functions over caller-owned buffers)";
  m.def("isa", [] { return std::string(ce::isa_name(ce::cpu_isa())); });
  m.def("max_threads", &ce::max_threads);
  m.def("set_num_threads", &ce::set_num_threads, py::arg("n"));
  m.def("kernel_threads_setting", &ce::kernel_threads_setting);
  m.def("set_kernel_threads_setting", &ce::set_kernel_threads_setting, py::arg("n"));
  m.def("parallel_spin_us", &ce::parallel_spin_us);
  m.def("parallel_wake", [] { ce::parallel_wake(ce::max_threads()); });
  m.def("set_parallel_spin_us", &ce::set_parallel_spin_us, py::arg("microseconds"));
#ifdef CE_HAVE_OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  bind_maxsim(m);
  bind_codec(m);
  bind_lut_maxsim(m);
  bind_plaid(m);
}
