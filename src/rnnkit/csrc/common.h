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
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <mutex>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

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
#endif
#include <ATen/ops/from_blob.h>
#include <ATen/native/CPUBlas.h>

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

// ------------------------------------------------------------ the step GEMM
// The recurrent product of every time step, C(rows, n) = beta·C + A(rows, k)·op(W),
// is the one GEMM left inside the loop: T small calls of the same weight. Which
// route is fastest depends on the size and on the CPU (benchmarks/NOTES.md, "step GEMM");
// on the AMD machine:
//  - small products (rows·n·k ≤ 2^19, e.g. B=8, H=64): a register-blocked kernel
//    below, single-threaded; BLAS's per-call cost (packing W, waking threads) is
//    larger than the product itself there;
//  - large float32 products (rows·n·k ≥ 2^21, e.g. B=64, H=256 for any gated
//    cell): oneDNN's matmul with the weight re-laid out once per sequence
//    (torch's mkldnn linear ops, called through the dispatcher); MKL re-packs W
//    on every call and runs 1.2–2x slower on these per-step shapes;
//  - BLAS in between;
// so float32 takes the route timed fastest at the first use of each shape (StepGemm::measured_route),
// and every float64 product BLAS;
//  - a bfloat16 weight with float32 A and C (mixed precision): bfloat16 products with float32
//    accumulation through oneDNN's brgemm (Bf16Gemm) where the CPU has bfloat16 units.
// rnnkit.backends.set_step_gemm("blas"|"onednn"|"small") forces one route where it applies (tests,
// benchmarks); "auto" (-1) measures: which of these wins where moves with the CPU (AVX2 vs AVX-512, core
// count), so the first float32 product of each shape times every applicable route on this machine and
// keeps the fastest (RouteCache). One value per process (inline: shared by every kernel file).
enum class GemmRoute { Blas, OneDnn, Small, Bf16 };

inline std::atomic<int>& forced_step_gemm() {
  static std::atomic<int> route{-1};
  return route;
}

// The measured route of each float32 step-GEMM shape, per process: (rows, n, k, threads) -> route, where
// threads is what BLAS/oneDNN may use for the call (1 inside a split_batch block). Python preloads it from
// and saves it to a per-machine JSON file (rnnkit.backends.extension: load_route_cache, save_route_cache).
class RouteCache {
 public:
  using Key = std::array<int64_t, 4>;
  static RouteCache& get() {
    static RouteCache cache;
    return cache;
  }
  std::optional<GemmRoute> find(const Key& key) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = routes_.find(key);
    if (it == routes_.end()) return std::nullopt;
    return it->second;
  }
  void put(const Key& key, GemmRoute route) {
    std::lock_guard<std::mutex> lock(mutex_);
    routes_[key] = route;
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    routes_.clear();
  }
  std::vector<std::pair<Key, GemmRoute>> entries() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {routes_.begin(), routes_.end()};
  }
  std::mutex& measuring() { return measuring_; }  // one measurement at a time: two would disturb each other
  std::atomic<int64_t> measurements{0};            // shapes measured in this process (tests read it)

 private:
  std::mutex mutex_, measuring_;
  std::map<Key, GemmRoute> routes_;
};

// torch's oneDNN linear operators, when this torch build has them
struct OneDnnLinear {
  using Reorder = at::Tensor(const at::Tensor&, std::optional<int64_t>);
  using Linear = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            c10::string_view, c10::List<std::optional<at::Scalar>>, std::optional<c10::string_view>);
  std::optional<c10::TypedOperatorHandle<Reorder>> reorder;
  std::optional<c10::TypedOperatorHandle<Linear>> linear;
  static const OneDnnLinear& get() {
    static const OneDnnLinear ops = [] {
      OneDnnLinear o;
      auto& d = c10::Dispatcher::singleton();
      auto r = d.findSchema({"mkldnn::_reorder_linear_weight", ""});
      auto l = d.findSchema({"mkldnn::_linear_pointwise", ""});
      if (r.has_value() && l.has_value() && r->hasKernelForDispatchKey(c10::DispatchKey::CPU) &&
          l->hasKernelForDispatchKey(c10::DispatchKey::CPU)) {
        o.reorder = r->typed<Reorder>();
        o.linear = l->typed<Linear>();
      }
      return o;
    }();
    return ops;
  }
  bool available() const { return linear.has_value(); }
};

// C(rows, n) = beta·C + A(rows, k)·Wt(k, n), Wt row-major and contiguous. Blocks
// of 4 rows × 64 columns keep 16 vector accumulators in registers while each row
// of Wt streams through once per block.
template <typename R>
inline void small_gemm(int64_t rows, int64_t n, int64_t k, const R* A, int64_t lda, const R* Wt, R beta, R* C,
                       int64_t ldc) {
  constexpr int64_t RB = 4, CB = 64;
  for (int64_t b0 = 0; b0 < rows; b0 += RB) {
    const int64_t nr = std::min(RB, rows - b0);
    for (int64_t j0 = 0; j0 < n; j0 += CB) {
      const int64_t nc = std::min(CB, n - j0);
      R acc[RB][CB];
      for (int64_t r = 0; r < RB; ++r)
        for (int64_t j = 0; j < CB; ++j)
          acc[r][j] = (r < nr && j < nc && beta != R(0)) ? beta * C[(b0 + r) * ldc + j0 + j] : R(0);
      if (nr == RB && nc == CB) {
        for (int64_t kk = 0; kk < k; ++kk) {
          const R* __restrict__ w = Wt + kk * n + j0;
          const R a0 = A[b0 * lda + kk], a1 = A[(b0 + 1) * lda + kk], a2 = A[(b0 + 2) * lda + kk],
                  a3 = A[(b0 + 3) * lda + kk];
#pragma omp simd
          for (int64_t j = 0; j < CB; ++j) {
            const R wv = w[j];
            acc[0][j] += a0 * wv;
            acc[1][j] += a1 * wv;
            acc[2][j] += a2 * wv;
            acc[3][j] += a3 * wv;
          }
        }
      } else {  // edge block: fewer rows or columns
        for (int64_t kk = 0; kk < k; ++kk) {
          const R* __restrict__ w = Wt + kk * n + j0;
          for (int64_t r = 0; r < nr; ++r) {
            const R av = A[(b0 + r) * lda + kk];
#pragma omp simd
            for (int64_t j = 0; j < nc; ++j) acc[r][j] += av * w[j];
          }
        }
      }
      for (int64_t r = 0; r < nr; ++r) std::memcpy(C + (b0 + r) * ldc + j0, acc[r], sizeof(R) * nc);
    }
  }
}

// C(rows, n) = beta·C + A(rows, k)·B(k, n) in bfloat16 with float32 accumulation, through oneDNN's
// brgemm ukernel (AMX or AVX512-BF16; torch's at::native::cpublas). B is packed once into VNNI blocks of
// 64 columns (packing a whole 4H-wide B fails in oneDNN) with K padded to even (VNNI pairs rows; an
// odd K crashes the ukernel); each call rounds A to bfloat16 into a scratch row block first.
class Bf16Gemm {
 public:
  static constexpr int64_t NB = 64;  // columns per packed block
  static bool available() { return at::native::cpublas::could_pack(at::kBFloat16); }

  // w_kn: the (k, n) view of the weight, bfloat16
  Bf16Gemm(const Tensor& w_kn, int64_t max_rows) : n_(w_kn.size(1)), k_(w_kn.size(0)), kp_(k_ + k_ % 2) {
    const int64_t blocks = (n_ + NB - 1) / NB;
    auto padded = at::zeros({kp_, blocks * NB}, w_kn.options().dtype(at::kBFloat16));
    padded.narrow(0, 0, k_).narrow(1, 0, n_).copy_(w_kn);
    packed_ = at::empty({blocks, kp_ * NB}, padded.options());
    for (int64_t j = 0; j < blocks; ++j)
      at::native::cpublas::pack(kp_, NB, blocks * NB, NB, at::kBFloat16, at::kBFloat16,
                                padded.data_ptr<at::BFloat16>() + j * NB, packed_[j].data_ptr<at::BFloat16>());
    a_ = at::zeros({max_rows, kp_}, padded.options());  // padding columns stay zero
    if (n_ % NB) tail_ = at::empty({max_rows, NB}, w_kn.options().dtype(at::kFloat));
  }
  ~Bf16Gemm() { at::native::cpublas::brgemm_release(true); }
  Bf16Gemm(const Bf16Gemm&) = delete;
  Bf16Gemm& operator=(const Bf16Gemm&) = delete;

  void operator()(int64_t rows, const float* A, int64_t lda, float beta, float* C, int64_t ldc) const {
    at::BFloat16* a = a_.data_ptr<at::BFloat16>();
    for (int64_t r = 0; r < rows; ++r) {
      const float* __restrict__ src = A + r * lda;
      at::BFloat16* __restrict__ dst = a + r * kp_;
      for (int64_t kk = 0; kk < k_; ++kk) dst[kk] = at::BFloat16(src[kk]);
    }
    if (beta != 0.0f && beta != 1.0f)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < n_; ++j) C[r * ldc + j] *= beta;
    const at::BFloat16* packed = packed_.data_ptr<at::BFloat16>();
    for (int64_t j0 = 0; j0 < n_; j0 += NB) {
      const at::BFloat16* b = packed + (j0 / NB) * kp_ * NB;
      if (j0 + NB <= n_) {
        at::native::cpublas::brgemm(rows, NB, kp_, kp_, NB, ldc, beta != 0.0f, a, b, C + j0, true);
        continue;
      }
      // last, partial block: its product lands in a scratch block, then the valid columns in C
      float* t = tail_.data_ptr<float>();
      at::native::cpublas::brgemm(rows, NB, kp_, kp_, NB, NB, false, a, b, t, true);
      const int64_t w = n_ - j0;
      for (int64_t r = 0; r < rows; ++r) {
        float* __restrict__ c = C + r * ldc + j0;
        const float* __restrict__ src = t + r * NB;
        for (int64_t j = 0; j < w; ++j) c[j] = (beta != 0.0f ? c[j] : 0.0f) + src[j];
      }
    }
  }

 private:
  int64_t n_, k_, kp_;
  Tensor packed_, a_, tail_;
};

template <typename R>
class StepGemm {
 public:
  // nt: W is (n, k) with row stride ldw (torch's weight layout), C = beta·C + A·Wᵀ;
  // otherwise W is (k, n), C = beta·C + A·W. The weight must outlive this object.
  // max_rows: the most rows any call will have (the batch).
  StepGemm(bool nt, int64_t n, int64_t k, const R* W, int64_t ldw, int64_t max_rows) : nt_(nt), n_(n), k_(k) {
    init(W, ldw, max_rows);
  }

  // The same from a weight tensor (contiguous) at element `offset`. A bfloat16 weight with float32 A and C
  // (mixed precision) runs the product in bfloat16 with float32 accumulation where the CPU has bfloat16
  // units; elsewhere, or when set_step_gemm forces a route, the weight is widened to float32 once and the
  // float32 routes run (bfloat16 is never emulated element by element).
  StepGemm(bool nt, int64_t n, int64_t k, const Tensor& W, int64_t offset, int64_t ldw, int64_t max_rows)
      : nt_(nt), n_(n), k_(k) {
    if (W.scalar_type() == c10::CppTypeToScalarType<R>::value) {
      init(W.data_ptr<R>() + offset, ldw, max_rows);
      return;
    }
    TORCH_CHECK((std::is_same_v<R, float> && W.scalar_type() == at::kBFloat16),
                "rnnkit: a recurrent weight must have the kernel's dtype, or be bfloat16 with float32 inputs; got ",
                W.scalar_type());
    const auto w = at::from_blob(W.data_ptr<at::BFloat16>() + offset, {nt ? n : k, nt ? k : n}, {ldw, 1},
                                 W.options());
    const auto w_kn = nt ? w.t() : w;
    if (forced_step_gemm().load() < 0 && Bf16Gemm::available()) {
      route_ = GemmRoute::Bf16;
      bf16_.emplace(w_kn, max_rows);
      return;
    }
    widened_ = w_kn.to(at::kFloat).contiguous();  // (k, n): exact, every bfloat16 is a float32
    nt_ = false;
    init(widened_.data_ptr<R>(), n, max_rows);
  }

  GemmRoute route() const { return route_; }

  void operator()(int64_t rows, const R* A, int64_t lda, R beta, R* C, int64_t ldc) const {
    if (rows == 0 || n_ == 0) return;
    switch (route_) {
      case GemmRoute::Small:
        small_gemm<R>(rows, n_, k_, A, lda, wt_.data_ptr<R>(), beta, C, ldc);
        return;
      case GemmRoute::OneDnn:
        onednn(rows, A, lda, beta, C, ldc);
        return;
      case GemmRoute::Blas:
        if (nt_) blas_gemm<R>('T', 'N', n_, rows, k_, R(1), W_, ldw_, A, lda, beta, C, ldc);
        else blas_gemm<R>('N', 'N', n_, rows, k_, R(1), W_, ldw_, A, lda, beta, C, ldc);
        return;
      case GemmRoute::Bf16:
        if constexpr (std::is_same_v<R, float>) (*bf16_)(rows, A, lda, beta, C, ldc);
        return;
    }
  }

 private:
  void init(const R* W, int64_t ldw, int64_t max_rows) {
    W_ = W;
    ldw_ = ldw;
    const int forced = forced_step_gemm().load();
    if (forced >= 0) {
      prepare(forced_route(forced), max_rows);
    } else if (!std::is_same_v<R, float> || max_rows == 0 || n_ == 0 || k_ == 0) {
      prepare(GemmRoute::Blas, max_rows);  // float64 is the accuracy path
    } else {
      prepare(measured_route(max_rows), max_rows);
    }
  }

  // Lays the weight out for `route` (BLAS reads W in place).
  void prepare(GemmRoute route, int64_t max_rows) {
    route_ = route;
    if (route_ == GemmRoute::Blas) return;
    const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<R>::value);
    const auto w = at::from_blob(const_cast<R*>(W_), {nt_ ? n_ : k_, nt_ ? k_ : n_}, {ldw_, 1}, opts);
    const auto w_kn = nt_ ? w.t() : w;  // the (k, n) view: C = A · w_kn
    if (route_ == GemmRoute::Small) {
      wt_ = w_kn.contiguous();
    } else {  // (n, k) contiguous, then oneDNN's blocked layout
      packed_ = OneDnnLinear::get().reorder->call(w_kn.t().contiguous(), max_rows);
    }
  }

  static bool onednn_ok() { return std::is_same_v<R, float> && OneDnnLinear::get().available(); }

  static GemmRoute forced_route(int forced) {
    if (forced == int(GemmRoute::Small)) return GemmRoute::Small;
    if (forced == int(GemmRoute::OneDnn) && onednn_ok()) return GemmRoute::OneDnn;
    return GemmRoute::Blas;
  }

  // The fastest route for this shape on this machine: from the cache, or timed now on the actual weight.
  GemmRoute measured_route(int64_t max_rows) {
    const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
    const RouteCache::Key key{max_rows, n_, k_, threads};
    auto& cache = RouteCache::get();
    if (auto hit = cache.find(key)) return *hit;
    std::lock_guard<std::mutex> one_at_a_time(cache.measuring());
    if (auto hit = cache.find(key)) return *hit;  // measured meanwhile by another thread
    // the register-blocked kernel is single-threaded: past 2^22 multiply-adds it cannot win, skip timing it
    std::vector<GemmRoute> routes{GemmRoute::Blas};
    if (max_rows * n_ * k_ <= (int64_t(1) << 22)) routes.push_back(GemmRoute::Small);
    if (onednn_ok()) routes.push_back(GemmRoute::OneDnn);
    std::vector<R> a(max_rows * k_, R(0.5)), c(max_rows * n_);
    GemmRoute best = GemmRoute::Blas;
    double best_s = INFINITY;
    for (GemmRoute route : routes) {
      prepare(route, max_rows);
      const double s = seconds_per_call(max_rows, a.data(), c.data());
      if (s < best_s) best_s = s, best = route;
    }
    cache.put(key, best);
    cache.measurements.fetch_add(1);
    return best;
  }

  // Best of 5 batches of calls, each batch about 0.2 ms (at least one call), after two warm-up calls.
  double seconds_per_call(int64_t rows, const R* A, R* C) const {
    using clock = std::chrono::steady_clock;
    auto time_calls = [&](int64_t calls) {
      const auto start = clock::now();
      for (int64_t i = 0; i < calls; ++i) (*this)(rows, A, k_, R(0), C, n_);
      return std::chrono::duration<double>(clock::now() - start).count() / double(calls);
    };
    const double first = time_calls(2);
    const int64_t calls = std::max<int64_t>(1, std::min<int64_t>(1000, int64_t(2e-4 / std::max(first, 1e-9))));
    double best = first;
    for (int batch = 0; batch < 5; ++batch) best = std::min(best, time_calls(calls));
    return best;
  }

  void onednn(int64_t rows, const R* A, int64_t lda, R beta, R* C, int64_t ldc) const {
    const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<R>::value);
    auto a = at::from_blob(const_cast<R*>(A), {rows, k_}, {lda, 1}, opts);
    if (lda != k_) a = a.contiguous();
    at::Tensor out = OneDnnLinear::get().linear->call(a, packed_, std::nullopt, "none",
                                                     c10::List<std::optional<at::Scalar>>(), "");
    const R* o = out.data_ptr<R>();
    for (int64_t r = 0; r < rows; ++r) {
      R* __restrict__ c = C + r * ldc;
      const R* __restrict__ src = o + r * n_;
      if (beta == R(0)) {
        std::memcpy(c, src, sizeof(R) * n_);
      } else {
#pragma omp simd
        for (int64_t j = 0; j < n_; ++j) c[j] = beta * c[j] + src[j];
      }
    }
  }

  bool nt_;
  int64_t n_, k_;
  const R* W_ = nullptr;
  int64_t ldw_ = 0;
  GemmRoute route_ = GemmRoute::Blas;
  Tensor wt_, packed_, widened_;
  std::optional<Bf16Gemm> bf16_;
};

// ------------------------------------------------------------- pointwise math
template <typename R>
inline R sigmoid(R x) {
  return R(1) / (R(1) + std::exp(-x));
}

// ------------------------------------------------------- two cores, one loop
// The batch rows [begin, end) that one thread carries through a whole time loop. Rows of a batch never
// meet inside a recurrence, so splitting the batch between threads needs no barrier at all: each thread
// runs every step of its own rows (its slice of each step GEMM, its gate math) from start to end, in one
// parallel region per sequence. This is what lets two cores share a long sequence at small H, where one
// step's product (B=8, H=64: 8 x 64 x 256) is far too small for BLAS to split.
struct Rows {
  int64_t begin, end;
  int64_t size() const { return end - begin; }
};

// rnnkit.backends.set_recurrence_threads(n): 0 = auto, 1 = never split, n >= 2 = always split into n
// row blocks (run by torch's intra-op threads; more blocks than threads run in turn). One value per process.
inline std::atomic<int>& forced_recurrence_threads() {
  static std::atomic<int> n{0};
  return n;
}

// Auto splits only where one step's recurrent product is small enough to run single-threaded anyway
// (the Small route's size, benchmarks/NOTES.md): larger products are threaded by BLAS/oneDNN inside the
// step, and a bfloat16 weight (mixed precision) keeps its own route.
inline int64_t recurrence_blocks(int64_t B, int64_t step_gemm_size, bool bf16_weight) {
  const int forced = forced_recurrence_threads().load();
  if (forced > 0) return std::max<int64_t>(1, std::min<int64_t>(forced, B));
  const int64_t threads = at::get_num_threads();
  if (threads < 2 || B < 2 || bf16_weight || at::in_parallel_region()) return 1;
  if (step_gemm_size > (int64_t(1) << 19)) return 1;
  return std::min(threads, B);
}

// Runs loop(Rows) over the batch: once over every row, or over `blocks` balanced row blocks in one
// parallel region (torch's intra-op pool). step_gemm_size: rows x n x k of the largest per-step product.
template <typename F>
inline void split_batch(int64_t B, int64_t step_gemm_size, bool bf16_weight, const F& loop) {
  const int64_t blocks = recurrence_blocks(B, step_gemm_size, bf16_weight);
  if (blocks <= 1) {
    loop(Rows{0, B});
    return;
  }
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) loop(Rows{i * B / blocks, (i + 1) * B / blocks});
  });
}

// Rows of one step's pointwise pass; threads only when the step is big enough
// to pay for waking them (the GEMMs are threaded by BLAS either way; inside a
// split_batch region this runs serially).
template <typename F>
inline void for_rows(Rows rows, int64_t width, const F& f) {
  if (rows.size() > 1 && rows.size() * width >= 32768) {
    at::parallel_for(rows.begin, rows.end, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) f(b);
    });
  } else {
    for (int64_t b = rows.begin; b < rows.end; ++b) f(b);
  }
}

template <typename F>
inline void for_rows(int64_t B, int64_t width, const F& f) {
  for_rows(Rows{0, B}, width, f);
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

// Rows (B, S) of step t in a per-step buffer (n, B, S) that backward reads back, or — when that
// buffer is empty because nothing needs a gradient — in a ring of `ring` scratch steps reused over
// the loop (1 for values used within their step, 2 for a state read by the next step).
template <typename R>
class StepRows {
 public:
  StepRows(const Tensor& saved, int64_t B, int64_t S, int64_t ring, const at::TensorOptions& opts)
      : scratch_(saved.numel() ? Tensor() : at::empty({ring, B, S}, opts)),
        base_((saved.numel() ? saved : scratch_).data_ptr<R>()),
        ring_(saved.numel() ? 0 : ring),
        stride_(B * S) {}
  R* operator[](int64_t t) const { return base_ + (ring_ ? t % ring_ : t) * stride_; }

 private:
  Tensor scratch_;
  R* base_;
  int64_t ring_, stride_;
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
  // rows from rows.begin on that the GEMM of step t must cover
  int64_t active(int64_t t, Rows rows) const {
    if (len == nullptr || !sorted) return rows.size();
    int64_t n = rows.end;
    while (n > rows.begin && len[n - 1] <= t) --n;
    return n - rows.begin;
  }
  int64_t active(int64_t t) const { return active(t, Rows{0, B}); }
};

// A forward kernel's dispatch: f(R(), U()) with R the state's dtype and U u's (R's own, or bfloat16 with
// float32 state under mixed precision: the projection's output read as it is, widened in the gate loop).
template <typename F>
inline void dispatch_state_and_u(at::ScalarType state, const Tensor& u, const char* name, const F& f) {
  AT_DISPATCH_FLOATING_TYPES(state, "rnnkit_forward", [&] {
    if (u.scalar_type() == state) {
      f(scalar_t(), scalar_t());
    } else if constexpr (std::is_same_v<scalar_t, float>) {
      TORCH_CHECK(u.scalar_type() == at::kBFloat16, name, ": u must be float32 or bfloat16; got ", u.scalar_type());
      f(float(), at::BFloat16());
    } else {
      TORCH_CHECK(false, name, ": u must have the state's dtype; got ", u.scalar_type(), " and ", state);
    }
  });
}

inline Tensor contiguous_or_undefined(const OptTensor& t) {
  return (t.has_value() && t->defined()) ? t->contiguous() : Tensor();
}

inline OptTensor opt_contig(const OptTensor& t) {
  if (t.has_value() && t->defined()) return t->contiguous();
  return std::nullopt;
}

}  // namespace rnnkit
