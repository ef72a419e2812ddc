// Shared helpers for rnnkit's fused CPU time loops.
//
// Every kernel file implements one cell family as two functions, a forward time
// loop and a backward (BPTT) time loop, registered as CPU kernels of the
// `rnnkit::<family>_forward` / `rnnkit::<family>_backward` operators whose
// schemas, fake (meta) implementations and autograd formulas live in Python
// (rnnkit/backends/fused_ops.py). Only the time loop is here: the input
// projection for all steps (one GEMM) and the weight gradients (one GEMM over
// all steps) are done by the Python side with ordinary torch ops.
//
// Conventions shared by all kernels (T steps, B rows, time-major, row-major):
//   u        (T, B, K)   projected input of every step (cell.project + folded biases)
//   lengths  (B,) int64 or undefined: row b is valid for t < lengths[b]; at padded
//            steps the state is carried unchanged and the output is zero
//   rmask    (B, P) or undefined: multiplies h_{t-1} where it enters W_hh
//   zoneout  (T, B, S) keep-mask (train) or a broadcast scalar p (eval), or undefined:
//            s_t = s~_t + k * (s_{t-1} - s~_t)
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#ifdef RNNKIT_HAVE_FORTRAN_BLAS
// The BLAS linked into libtorch_cpu (MKL on x86-64 wheels). Calling it directly
// skips the dispatcher, which costs several microseconds per call: at T=1000,
// H=64 that overhead would be a third of the whole step.
extern "C" {
void sgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc);
void dgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc);
}
#else
#include <ATen/ops/addmm.h>
#include <ATen/ops/from_blob.h>
#endif

namespace rnnkit {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// ----------------------------------------------------------------- BLAS glue
// Column-major BLAS call; the row-major wrappers below pick the transposes.
template <typename R>
inline void blas_gemm(char ta, char tb, int64_t m, int64_t n, int64_t k, R alpha, const R* a, int64_t lda,
                      const R* b, int64_t ldb, R beta, R* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
#ifdef RNNKIT_HAVE_FORTRAN_BLAS
  const int M = (int)m, N = (int)n, K = (int)k, LDA = (int)lda, LDB = (int)ldb, LDC = (int)ldc;
  if constexpr (std::is_same_v<R, float>) {
    sgemm_(&ta, &tb, &M, &N, &K, &alpha, a, &LDA, b, &LDB, &beta, c, &LDC);
  } else {
    dgemm_(&ta, &tb, &M, &N, &K, &alpha, a, &LDA, b, &LDB, &beta, c, &LDC);
  }
#else
  // Portable fallback: the same product through ATen (row-major views of the
  // column-major operands).
  auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<R>::value);
  auto A = at::from_blob(const_cast<R*>(a), {ta == 'N' ? k : m, ta == 'N' ? m : k}, {lda, 1}, opts);
  auto Bm = at::from_blob(const_cast<R*>(b), {tb == 'N' ? n : k, tb == 'N' ? k : n}, {ldb, 1}, opts);
  auto C = at::from_blob(c, {n, m}, {ldc, 1}, opts);
  // column-major C = op(A) op(B)  <=>  row-major C^T = op(B)^T op(A)^T
  auto opA_T = ta == 'N' ? A : A.t();   // (k, m) row-major view == op(A)^T
  auto opB_T = tb == 'N' ? Bm : Bm.t(); // (n, k)
  at::addmm_out(C, C, opB_T, opA_T, beta, alpha);
#endif
}

// C(rows, n) = beta * C + A(rows, k) @ W(n, k)^T     W in torch's (out, in) weight layout
template <typename R>
inline void gemm_nt(int64_t rows, int64_t n, int64_t k, const R* A, int64_t lda, const R* W, int64_t ldw, R beta,
                    R* C, int64_t ldc) {
  blas_gemm<R>('T', 'N', n, rows, k, R(1), W, ldw, A, lda, beta, C, ldc);
}

// C(rows, k) = beta * C + A(rows, n) @ W(n, k)
template <typename R>
inline void gemm_nn(int64_t rows, int64_t k, int64_t n, const R* A, int64_t lda, const R* W, int64_t ldw, R beta,
                    R* C, int64_t ldc) {
  blas_gemm<R>('N', 'N', k, rows, n, R(1), W, ldw, A, lda, beta, C, ldc);
}

// ------------------------------------------------------------- pointwise math
template <typename R>
inline R sigmoid(R x) {
  return R(1) / (R(1) + std::exp(-x));
}

// Rows of one step's pointwise pass; threads only when the step is big enough
// to pay for waking them (the GEMMs are threaded by BLAS either way).
template <typename F>
inline void for_rows(int64_t B, int64_t width, const F& f) {
  if (B > 1 && B * width >= 32768) {
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) f(b);
    });
  } else {
    for (int64_t b = 0; b < B; ++b) f(b);
  }
}

// ------------------------------------------------------------ optional inputs
template <typename R>
inline const R* ptr_or_null(const OptTensor& t) {
  return (t.has_value() && t->defined()) ? t->data_ptr<R>() : nullptr;
}

// A zoneout keep tensor viewed as (T, B, S) rows with a contiguous last axis
// (a broadcast scalar p from eval mode has strides (0, 0, 1)). Without
// zoneout it reads a row of zeros, so the gate loops stay branch-free (and
// vectorise) whatever the configuration: k = 0 leaves the state untouched.
template <typename R>
struct Keep {
  Tensor zeros_;
  const R* p = nullptr;
  int64_t st = 0, sb = 0;
  bool on = false;
  Keep(const OptTensor& z, int64_t S, const at::TensorOptions& opts) {
    if (z.has_value() && z->defined()) {
      TORCH_CHECK(z->dim() == 3 && z->stride(2) == 1, "rnnkit: zoneout keep tensor must be (T, B, S) with a "
                  "contiguous last axis");
      p = z->data_ptr<R>();
      st = z->stride(0);
      sb = z->stride(1);
      on = true;
    } else {
      zeros_ = at::zeros({S}, opts);
      p = zeros_.data_ptr<R>();
    }
  }
  const R* row(int64_t t, int64_t b) const { return p + t * st + b * sb; }
};

// A parameter vector that may be absent (bias, peepholes): zeros then, for the
// same reason as above.
template <typename R>
struct MaybeVec {
  Tensor owned_;
  const R* p = nullptr;
  bool on = false;
  MaybeVec(const Tensor& v, int64_t n, const at::TensorOptions& opts) {
    if (v.defined()) {
      owned_ = v.contiguous();
      on = true;
    } else {
      owned_ = at::zeros({n}, opts);
    }
    p = owned_.data_ptr<R>();
  }
};

// Valid-step bookkeeping. When the lengths are sorted in non-increasing order
// the valid rows of step t are a prefix [0, active(t)), so the per-step GEMMs
// only run over rows still alive (what a PackedSequence gives cuDNN).
struct Steps {
  const int64_t* len = nullptr;
  int64_t B = 0;
  bool sorted = false;
  Steps(const OptTensor& lengths, int64_t B_) : B(B_) {
    if (lengths.has_value() && lengths->defined()) {
      len = lengths->data_ptr<int64_t>();
      sorted = true;
      for (int64_t b = 1; b < B; ++b)
        if (len[b] > len[b - 1]) sorted = false;
    }
  }
  bool valid(int64_t t, int64_t b) const { return len == nullptr || t < len[b]; }
  // rows the GEMM of step t must cover
  int64_t active(int64_t t) const {
    if (len == nullptr || !sorted) return B;
    int64_t n = B;
    while (n > 0 && len[n - 1] <= t) --n;
    return n;
  }
};

inline Tensor contiguous_or_undefined(const OptTensor& t) {
  return (t.has_value() && t->defined()) ? t->contiguous() : Tensor();
}

inline OptTensor opt_contig(const OptTensor& t) {
  if (t.has_value() && t->defined()) return t->contiguous();
  return std::nullopt;
}

}  // namespace rnnkit
