// Accumulation type and the Welford / Chan merge of two sets of moments: one definition for the
// CPU kernels, the CUDA kernels and tests/simt. Plain C++17.
//
// Moments of a set of values are (count, mean, M2 = sum of squared deviations from the mean),
// always of data shifted by the group's first element (csrc/README.md). Merging b into a:
//   n = na + nb, f = nb / n, delta = mean_b - mean_a,
//   mean = mean_a + delta * f,  M2 = M2_a + M2_b + delta^2 * na * f.
// Never E[x^2] - E[x]^2.
#pragma once

#include "common/host_device.h"

namespace groupnorm_cuda {

// float64 accumulates in float64, everything else (float32, float16, bfloat16) in float32.
template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };
template <typename T> using acc_t = typename AccType<T>::type;

// The merge above with f = nb / n given (each backend divides its own way: the CPU exactly,
// CUDA with the fast division): updates mean and m2 of a, whose count was na.
template <typename A>
GN_HOST_DEVICE inline void chan_combine(A& mean, A& m2, A na, A mean_b, A m2_b, A f) {
  const A delta = mean_b - mean;
  mean += delta * f;
  m2 += m2_b + delta * delta * na * f;
}

}  // namespace groupnorm_cuda
