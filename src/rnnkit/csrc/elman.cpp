// Elman RNN time loops (tanh or relu).
//
//   h~_t = act(u_t + (h_{t-1} ⊙ rmask) W_hh^T)    u_t = W_ih x_t + b_ih + b_hh
//   zoneout h_t = h~_t + kh (h_{t-1} − h~_t);  y_t = h_t
//
// Buffers:
//   forward  in : u (T,B,H), w_hh (H,H), h0 (B,H), lengths?, rmask (B,H)?, zh (T,B,H)?
//            out: y (T,B,H), h_n (B,H), ht (T,B,H) = h~_t (saved; act' is read from it)
//   backward in : dy (T,B,H), dh_n (B,H), ht, w_hh, lengths?, rmask?, zh?
//            out: du (T,B,H) = ∂L/∂(pre-activation), dh0 (B,H)
#include "common.h"

namespace rnnkit {
namespace {

// rows: the batch rows this call carries through the loop (split_batch); h_n holds h0 on entry
template <typename R>
void elman_forward_impl(Rows rows, bool relu, const Tensor& u, const Tensor& w_hh, const Tensor& h0, const OptTensor& lengths,
                        const Tensor& rmask, const OptTensor& zh_, Tensor& y, Tensor& h_n, Tensor& ht) {
  const int64_t T = u.size(0), B = u.size(1), H = u.size(2);
  const R* up = u.data_ptr<R>();
  const R* rm = rmask.defined() ? rmask.data_ptr<R>() : nullptr;
  Keep<R> zh(zh_, H, u.options());
  Steps steps(lengths, B);
  R* yp = y.data_ptr<R>();
  const StepRows<R> act_rows(ht, B, H, 1, u.options());  // activations (saved, or this step's)
  R* h = h_n.data_ptr<R>();
  Tensor hm_buf = rm ? at::empty({B, H}, u.options()) : Tensor();
  R* hm = rm ? hm_buf.data_ptr<R>() : h;
  const int64_t b0 = rows.begin;
  const StepGemm<R> rec_gemm(true, H, H, w_hh, 0, H, rows.size());  // (h ⊙ rmask) W_hh^T
  for (int64_t t = 0; t < T; ++t) {
    const int64_t nb = steps.active(t, rows);
    R* a = act_rows[t];
    if (rm)
      for (int64_t k = b0 * H; k < (b0 + nb) * H; ++k) hm[k] = h[k] * rm[k];
    rec_gemm(nb, hm + b0 * H, H, R(0), a + b0 * H, H);
    for_rows(rows, H, [&](int64_t b) {
      R* ar = a + b * H;
      R* yr = yp + (t * B + b) * H;
      if (!steps.valid(t, b)) {
        std::fill(ar, ar + H, R(0));
        std::fill(yr, yr + H, R(0));
        return;
      }
      const R* ur = up + (t * B + b) * H;
      R* hr = h + b * H;
      const R* kh = zh.row(t, b);
      if (relu) {
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) ar[j] = std::max(ar[j] + ur[j], R(0));
      } else {
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) ar[j] = std::tanh(ar[j] + ur[j]);
      }
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        R hv = ar[j] + kh[j] * (hr[j] - ar[j]);
        hr[j] = hv;
        yr[j] = hv;
      }
    });
  }
}

template <typename R>
void elman_backward_impl(Rows rows, bool relu, const Tensor& dy, const Tensor& ht, const Tensor& w_hh, const OptTensor& lengths,
                         const Tensor& rmask, const OptTensor& zh_, Tensor& du, Tensor& dh) {
  const int64_t T = ht.size(0), B = ht.size(1), H = ht.size(2);
  const R* rm = rmask.defined() ? rmask.data_ptr<R>() : nullptr;
  Keep<R> zh(zh_, H, ht.options());
  Steps steps(lengths, B);
  const R* dyp = dy.data_ptr<R>();
  const R* htp = ht.data_ptr<R>();
  R* dup = du.data_ptr<R>();
  R* dhv = dh.data_ptr<R>();
  Tensor rec_buf = rm ? at::empty({B, H}, dh.options()) : Tensor();
  R* rec = rm ? rec_buf.data_ptr<R>() : nullptr;
  const int64_t b0 = rows.begin;
  const StepGemm<R> back_gemm(false, H, H, w_hh, 0, H, rows.size());  // du_t W_hh
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t nb = steps.active(t, rows);
    R* dut = dup + t * B * H;
    for_rows(rows, H, [&](int64_t b) {
      R* d = dut + b * H;
      if (!steps.valid(t, b)) {
        std::fill(d, d + H, R(0));
        return;
      }
      const R* v = htp + (t * B + b) * H;
      const R* dyr = dyp + (t * B + b) * H;
      R* dhr = dhv + b * H;
      const R* kh = zh.row(t, b);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        R gh = dhr[j] + dyr[j];
        R k = kh[j];
        R dv = (R(1) - k) * gh;
        d[j] = dv * (relu ? R(v[j] > R(0)) : R(1) - v[j] * v[j]);
        dhr[j] = k * gh;
      }
    });
    if (rm) {
      back_gemm(nb, dut + b0 * H, H, R(0), rec + b0 * H, H);
      for (int64_t k = b0 * H; k < (b0 + nb) * H; ++k) dhv[k] += rec[k] * rm[k];
    } else {
      back_gemm(nb, dut + b0 * H, H, R(1), dhv + b0 * H, H);
    }
  }
}

std::tuple<Tensor, Tensor, Tensor> elman_forward(const Tensor& u, const Tensor& w_hh, const Tensor& h0,
                                                 const OptTensor& lengths, const OptTensor& rmask,
                                                 const OptTensor& zh, bool relu, bool save) {
  const int64_t T = u.size(0), B = u.size(1), H = u.size(2);
  auto y = at::empty({T, B, H}, u.options());
  auto h_n = h0.contiguous().clone();  // the running h_{t-1}
  auto ht = at::empty({save ? T : 0, B, H}, u.options());
  auto rm = contiguous_or_undefined(rmask);
  const auto uc = u.contiguous(), W = w_hh.contiguous(), h0c = h0.contiguous();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "rnnkit_elman_forward", [&] {
    split_batch(B, B * H * H, W.scalar_type() != uc.scalar_type(), [&](Rows rows) {
      elman_forward_impl<scalar_t>(rows, relu, uc, W, h0c, lengths, rm, zh, y, h_n, ht);
    });
  });
  return {y, h_n, ht};
}

std::tuple<Tensor, Tensor> elman_backward(const Tensor& dy, const Tensor& dh_n, const Tensor& ht, const Tensor& w_hh,
                                          const OptTensor& lengths, const OptTensor& rmask, const OptTensor& zh,
                                          bool relu) {
  auto du = at::empty_like(ht);
  auto dh = dh_n.contiguous().clone();
  auto rm = contiguous_or_undefined(rmask);
  const auto dyc = dy.contiguous(), htc = ht.contiguous(), W = w_hh.contiguous();
  AT_DISPATCH_FLOATING_TYPES(ht.scalar_type(), "rnnkit_elman_backward", [&] {
    split_batch(ht.size(1), ht.size(1) * ht.size(2) * ht.size(2), W.scalar_type() != htc.scalar_type(), [&](Rows rows) {
      elman_backward_impl<scalar_t>(rows, relu, dyc, htc, W, lengths, rm, zh, du, dh);
    });
  });
  return {du, dh};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("elman_forward", &elman_forward);
  m.impl("elman_backward", &elman_backward);
}

}  // namespace rnnkit
