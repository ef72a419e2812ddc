// One step of torch's LSTM and GRU cells (nn.LSTMCell / nn.GRUCell math, gate orders i, f, g, o and
// r, z, n), for streaming inference: no autograd (Recurrent.step calls these only when nothing needs a
// gradient, else torch's own cell), float32 or float64, row-major, B rows.
//
// Where torch's cell runs a dozen ATen operators per step (two linears, an add, a chunk, five
// activations, the products), each allocating its result, these run two BLAS products into one
// buffer and one vectorised pointwise pass: at batch 1 the per-operator cost is most of a step.
//
// h and c may also be (1,B,H), a one-layer stack's state as Recurrent.step takes and returns it: h', c'
// take h's shape and y is h' viewed as (B,H) (no view or stack ops left to Python per step).
//   lstm_cell_step in : x (B,I), h (B,H), c (B,H), w_ih (4H,I), w_hh (4H,H), b_ih (4H)?, b_hh (4H)?
//                  out: y (B,H), h' (B,H), c' (B,H)
//       a = x W_ih^T + h W_hh^T + b_ih + b_hh;  c' = σ(a_f) c + σ(a_i) tanh(a_g);  h' = σ(a_o) tanh(c')
//   gru_cell_step  in : x (B,I), h (B,H), w_ih (3H,I), w_hh (3H,H), b_ih (3H)?, b_hh (3H)?
//                  out: y (B,H), h' (B,H)
//       gi = x W_ih^T + b_ih, gh = h W_hh^T + b_hh;  r = σ(gi_r + gh_r), z = σ(gi_z + gh_z),
//       n = tanh(gi_n + r gh_n);  h' = (1 − z) n + z h
#include "common.h"

namespace rnnkit {
namespace {

// C (B, n) = beta·C + A (B, k) W (n, k)^T, W in torch's layout read in place by BLAS
template <typename R>
inline void product(int64_t B, int64_t n, int64_t k, const Tensor& A, const Tensor& W, R beta, R* C) {
  blas_gemm<R>('T', 'N', n, B, k, R(1), W.data_ptr<R>(), k, A.data_ptr<R>(), k, beta, C, n);
}

// (templates outside the dispatch macro: a #pragma cannot sit inside a macro argument)
template <typename R>
void lstm_cell_step_impl(const Tensor& x, const Tensor& h, const Tensor& c, const Tensor& w_ih, const Tensor& w_hh,
                         const Tensor& b_ih, const Tensor& b_hh, Tensor& a, Tensor& h_n, Tensor& c_n) {
  const int64_t B = x.size(0), I = x.size(1), H = h.size(1), G = 4 * H;
  MaybeVec<R> bi(b_ih, G, x.options()), bh(b_hh, G, x.options());
  R* ap = a.data_ptr<R>();
  product<R>(B, G, I, x, w_ih, R(0), ap);
  product<R>(B, G, H, h, w_hh, R(1), ap);
  const R *cp = c.data_ptr<R>(), *b1 = bi.p, *b2 = bh.p;
  R *hn = h_n.data_ptr<R>(), *cn = c_n.data_ptr<R>();
  for (int64_t b = 0; b < B; ++b) {
    const R* __restrict__ g = ap + b * G;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      R i = sigmoid(g[j] + b1[j] + b2[j]), f = sigmoid(g[H + j] + b1[H + j] + b2[H + j]);
      R gg = std::tanh(g[2 * H + j] + b1[2 * H + j] + b2[2 * H + j]);
      R o = sigmoid(g[3 * H + j] + b1[3 * H + j] + b2[3 * H + j]);
      R cv = f * cp[b * H + j] + i * gg;
      cn[b * H + j] = cv;
      hn[b * H + j] = o * std::tanh(cv);
    }
  }
}

template <typename R>
void gru_cell_step_impl(const Tensor& x, const Tensor& h, const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih,
                        const Tensor& b_hh, Tensor& gi, Tensor& gh, Tensor& h_n) {
  const int64_t B = x.size(0), I = x.size(1), H = h.size(1), G = 3 * H;
  MaybeVec<R> bi(b_ih, G, x.options()), bh(b_hh, G, x.options());
  product<R>(B, G, I, x, w_ih, R(0), gi.data_ptr<R>());
  product<R>(B, G, H, h, w_hh, R(0), gh.data_ptr<R>());
  const R *hp = h.data_ptr<R>(), *b1 = bi.p, *b2 = bh.p;
  R* hn = h_n.data_ptr<R>();
  for (int64_t b = 0; b < B; ++b) {
    const R* __restrict__ xi = gi.data_ptr<R>() + b * G;
    const R* __restrict__ hh = gh.data_ptr<R>() + b * G;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      R r = sigmoid(xi[j] + b1[j] + hh[j] + b2[j]);
      R z = sigmoid(xi[H + j] + b1[H + j] + hh[H + j] + b2[H + j]);
      R n = std::tanh(xi[2 * H + j] + b1[2 * H + j] + r * (hh[2 * H + j] + b2[2 * H + j]));
      hn[b * H + j] = (R(1) - z) * n + z * hp[b * H + j];
    }
  }
}

// Every operand checked here (sizes, dtypes): Recurrent.step calls these without its Python checks and
// runs those only to name a mismatch these report.
// A state tensor as (B, H) rows: itself, or the one layer of a (1, B, H) stack state.
Tensor state_rows(const char* name, const Tensor& s) {
  TORCH_CHECK(s.dim() == 2 || (s.dim() == 3 && s.size(0) == 1), name, ": a state must be (B, H) or (1, B, H)");
  return s.dim() == 3 ? s.select(0, 0) : s;
}

void check_step(const char* name, const Tensor& x, const Tensor& h, const Tensor& w_ih, const Tensor& w_hh,
                const OptTensor& b_ih, const OptTensor& b_hh, int64_t gates) {
  TORCH_CHECK(x.dim() == 2 && w_ih.dim() == 2 && w_hh.dim() == 2, name, ": x and the weights must be matrices");
  const int64_t B = x.size(0), H = h.size(1);
  TORCH_CHECK(h.size(0) == B && w_ih.size(0) == gates * H && w_ih.size(1) == x.size(1) && w_hh.size(0) == gates * H &&
              w_hh.size(1) == H, name, ": sizes do not match");
  const auto dt = x.scalar_type();
  TORCH_CHECK(h.scalar_type() == dt && w_ih.scalar_type() == dt && w_hh.scalar_type() == dt, name, ": dtypes differ");
  for (const auto* b : {&b_ih, &b_hh})
    TORCH_CHECK(!b->has_value() || !(*b)->defined() || ((*b)->numel() == gates * H && (*b)->scalar_type() == dt),
                name, ": bias must be (", gates * H, ",) of the input's dtype");
}

std::tuple<Tensor, Tensor, Tensor> lstm_cell_step(const Tensor& x, const Tensor& h_, const Tensor& c_,
                                                  const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
                                                  const OptTensor& b_hh) {
  const char* name = "rnnkit::lstm_cell_step";
  const Tensor h = state_rows(name, h_), c = state_rows(name, c_);
  check_step(name, x, h, w_ih, w_hh, b_ih, b_hh, 4);
  TORCH_CHECK(c_.sizes() == h_.sizes() && c.scalar_type() == h.scalar_type(), name, ": c must be like h");
  const int64_t B = x.size(0), H = h.size(1);
  auto a = at::empty({B, 4 * H}, x.options()), h_n = at::empty(h_.sizes(), x.options()),
       c_n = at::empty(h_.sizes(), x.options());
  Tensor y = h_n.view({B, H}), c_rows = c_n.view({B, H});
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnnkit_lstm_cell_step", [&] {
    lstm_cell_step_impl<scalar_t>(x.contiguous(), h.contiguous(), c.contiguous(), w_ih.contiguous(), w_hh.contiguous(),
                                  contiguous_or_undefined(b_ih), contiguous_or_undefined(b_hh), a, y, c_rows);
  });
  return {y, h_n, c_n};
}

std::tuple<Tensor, Tensor> gru_cell_step(const Tensor& x, const Tensor& h_, const Tensor& w_ih, const Tensor& w_hh,
                                         const OptTensor& b_ih, const OptTensor& b_hh) {
  const char* name = "rnnkit::gru_cell_step";
  const Tensor h = state_rows(name, h_);
  check_step(name, x, h, w_ih, w_hh, b_ih, b_hh, 3);
  const int64_t B = x.size(0), H = h.size(1);
  auto gi = at::empty({B, 3 * H}, x.options()), gh = at::empty({B, 3 * H}, x.options());
  auto h_n = at::empty(h_.sizes(), x.options());
  Tensor y = h_n.view({B, H});
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnnkit_gru_cell_step", [&] {
    gru_cell_step_impl<scalar_t>(x.contiguous(), h.contiguous(), w_ih.contiguous(), w_hh.contiguous(),
                                 contiguous_or_undefined(b_ih), contiguous_or_undefined(b_hh), gi, gh, y);
  });
  return {y, h_n};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("lstm_cell_step", &lstm_cell_step);
  m.impl("gru_cell_step", &gru_cell_step);
}

}  // namespace rnnkit
