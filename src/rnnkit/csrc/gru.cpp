// GRU time loops, both forms (gate order r, z, n; torch's layout).
//
//   hm = h_{t-1} ⊙ rmask
//   reset="after" (torch.nn.GRU):  w = hm W_hh^T + b_hh                        (B,3H)
//       r = σ(u_r + w_r), z = σ(u_z + w_z), n = tanh(u_n + r ⊙ w_n)
//   reset="before" (textbook):    w_rz = hm W_rz^T + b_rz                       (B,2H)
//       r = σ(u_r + w_r), z = σ(u_z + w_z), n = tanh(u_n + (r ⊙ hm) W_n^T + b_n)
//   h~_t = (1 − z) ⊙ n + z ⊙ h_{t-1};  zoneout h_t = h~_t + kh (h_{t-1} − h~_t);  y_t = h_t
//   u_t = W_ih x_t + b_ih (no b_hh: it sits inside the reset product).
//
// Buffers (G = 3H):
//   (mixed precision: u and w_hh may be bfloat16 with everything else float32)
//   forward  in : u (T,B,G), w_hh (G,H), b_hh (G)?, h0 (B,H), lengths?, rmask (B,H)?, zh (T,B,H)?
//            out: y (T,B,H), h_n (B,H),
//                 gates (T,B,4H) = r, z, n, w_n (after) or (T,B,3H) = r, z, n (before)  (saved)
//   backward in : dy (T,B,H), dh_n (B,H), gates, y, h0, w_hh, lengths?, rmask?, zh?
//            out: du (T,B,G) = ∂L/∂u_t;
//                 dw (T,B,G) = ∂L/∂w_t (after; = du except the n block, which is du_n ⊙ r),
//                 0 elements for "before" (there ∂L/∂(W_hh-product) equals du);
//                 dh0 (B,H)
// The caller forms dW_hh = Σ_t dw_t^T hm_{t-1} (before: [du_rz^T hm ; du_n^T (r ⊙ hm)]) and
// db_hh = Σ_t dw_t as one GEMM / reduction each.
#include "common.h"

namespace rnnkit {
namespace {

// U: u's type (dispatch_state_and_u); rows: the batch rows this call carries (split_batch); h_n holds h0
template <typename R, typename U>
void gru_forward_impl(Rows rows, bool after, const Tensor& u, const Tensor& w_hh, const Tensor& b_hh, const Tensor& h0,
                      const OptTensor& lengths, const Tensor& rmask, const OptTensor& zh_, Tensor& y, Tensor& h_n,
                      Tensor& gates) {
  const int64_t T = u.size(0), B = u.size(1), H = u.size(2) / 3, G = 3 * H, S = gates.size(2);
  const U* up = u.data_ptr<U>();
  MaybeVec<R> bias(b_hh, G, h0.options());
  const R* bh = bias.p;
  const R* rm = rmask.defined() ? rmask.data_ptr<R>() : nullptr;
  Keep<R> zh(zh_, H, h0.options());
  Steps steps(lengths, B);
  R* yp = y.data_ptr<R>();
  const StepRows<R> gate_rows(gates, B, S, 1, h0.options());  // saved, or this step's only
  const int64_t b0 = rows.begin;
  R* h = h_n.data_ptr<R>();
  Tensor hm_buf = rm ? at::empty({B, H}, h0.options()) : Tensor();
  Tensor w_buf = at::empty({B, G}, h0.options());
  Tensor q_buf = after ? Tensor() : at::empty({B, H}, h0.options());
  R* hm = rm ? hm_buf.data_ptr<R>() : h;
  R* w = w_buf.data_ptr<R>();
  R* q = after ? nullptr : q_buf.data_ptr<R>();

  // after: all three blocks at once; before: r, z first (n needs r)
  const StepGemm<R> rec_gemm(true, after ? G : 2 * H, H, w_hh, 0, H, rows.size());
  std::optional<StepGemm<R>> n_gemm;  // (r ⊙ hm) W_n^T, reset before only
  if (!after) n_gemm.emplace(true, H, H, w_hh, 2 * H * H, H, rows.size());
  for (int64_t t = 0; t < T; ++t) {
    const int64_t nb = steps.active(t, rows);
    R* gt = gate_rows[t];
    if (rm)
      for (int64_t k = b0 * H; k < (b0 + nb) * H; ++k) hm[k] = h[k] * rm[k];
    // after: all three blocks; before: only r, z (n needs r first)
    rec_gemm(nb, hm + b0 * H, H, R(0), w + b0 * G, G);
    if (after) {
      for_rows(rows, G, [&](int64_t b) {
        R* g = gt + b * S;
        R* yr = yp + (t * B + b) * H;
        if (!steps.valid(t, b)) {
          std::fill(g, g + S, R(0));
          std::fill(yr, yr + H, R(0));
          return;
        }
        const U* ur = up + (t * B + b) * G;
        const R* wr = w + b * G;
        R* hr = h + b * H;
        const R* kh = zh.row(t, b);
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          R wr_ = wr[j] + bh[j], wz = wr[H + j] + bh[H + j], wn = wr[2 * H + j] + bh[2 * H + j];
          R r = sigmoid(R(ur[j]) + wr_), z = sigmoid(R(ur[H + j]) + wz);
          R n = std::tanh(R(ur[2 * H + j]) + r * wn);
          R hv = (R(1) - z) * n + z * hr[j];
          hv += kh[j] * (hr[j] - hv);
          g[j] = r; g[H + j] = z; g[2 * H + j] = n; g[3 * H + j] = wn;
          hr[j] = hv;
          yr[j] = hv;
        }
      });
    } else {
      for_rows(rows, G, [&](int64_t b) {
        R* g = gt + b * S;
        R* qr = q + b * H;
        if (!steps.valid(t, b)) {
          std::fill(g, g + S, R(0));
          std::fill(qr, qr + H, R(0));
          return;
        }
        const U* ur = up + (t * B + b) * G;
        const R* wr = w + b * G;
        const R* hmr = hm + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          R ar = R(ur[j]) + wr[j] + bh[j], az = R(ur[H + j]) + wr[H + j] + bh[H + j];
          R r = sigmoid(ar);
          g[j] = r;
          g[H + j] = sigmoid(az);
          qr[j] = r * hmr[j];
        }
      });
      (*n_gemm)(nb, q + b0 * H, H, R(0), w + b0 * G + 2 * H, G);  // (r ⊙ hm) W_n^T
      for_rows(rows, G, [&](int64_t b) {
        R* yr = yp + (t * B + b) * H;
        if (!steps.valid(t, b)) {
          std::fill(yr, yr + H, R(0));
          return;
        }
        R* g = gt + b * S;
        const U* ur = up + (t * B + b) * G;
        const R* wn = w + b * G + 2 * H;
        R* hr = h + b * H;
        const R* kh = zh.row(t, b);
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          R n = std::tanh(R(ur[2 * H + j]) + wn[j] + bh[2 * H + j]), z = g[H + j];
          R hv = (R(1) - z) * n + z * hr[j];
          hv += kh[j] * (hr[j] - hv);
          g[2 * H + j] = n;
          hr[j] = hv;
          yr[j] = hv;
        }
      });
    }
  }
}

template <typename R>
void gru_backward_impl(Rows rows, bool after, const Tensor& dy, const Tensor& gates, const Tensor& y, const Tensor& h0,
                       const Tensor& w_hh, const OptTensor& lengths, const Tensor& rmask, const OptTensor& zh_,
                       Tensor& du, Tensor& dw, Tensor& dh) {
  const int64_t T = gates.size(0), B = gates.size(1), H = h0.size(1), G = 3 * H, S = gates.size(2);
  const R* rm = rmask.defined() ? rmask.data_ptr<R>() : nullptr;
  Keep<R> zh(zh_, H, gates.options());
  Steps steps(lengths, B);
  const R* dyp = dy.data_ptr<R>();
  const R* gp = gates.data_ptr<R>();
  const R* yp = y.data_ptr<R>();
  const R* h0p = h0.data_ptr<R>();
  R* dup = du.data_ptr<R>();
  R* dwp = after ? dw.data_ptr<R>() : nullptr;
  R* dhv = dh.data_ptr<R>();
  Tensor rec_buf = at::empty({B, H}, dh.options());
  Tensor dq_buf = after ? Tensor() : at::empty({B, H}, dh.options());
  R* rec = rec_buf.data_ptr<R>();
  R* dq = after ? nullptr : dq_buf.data_ptr<R>();

  // after: dw_t W_hh; before: da_n W_n and [da_r, da_z] W_rz
  std::optional<StepGemm<R>> back_gemm, n_gemm, rz_gemm;
  if (after) {
    back_gemm.emplace(false, H, G, w_hh, 0, H, rows.size());
  } else {
    n_gemm.emplace(false, H, H, w_hh, 2 * H * H, H, rows.size());
    rz_gemm.emplace(false, H, 2 * H, w_hh, 0, H, rows.size());
  }
  const int64_t b0 = rows.begin;
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t nb = steps.active(t, rows);
    R* dut = dup + t * B * G;
    R* dwt = after ? dwp + t * B * G : nullptr;
    const R* hprev_all = t == 0 ? h0p : yp + (t - 1) * B * H;
    for_rows(rows, G, [&](int64_t b) {
      R* d = dut + b * G;
      if (!steps.valid(t, b)) {
        std::fill(d, d + G, R(0));
        if (after) std::fill(dwt + b * G, dwt + (b + 1) * G, R(0));
        return;
      }
      const R* g = gp + (t * B + b) * S;
      const R* hp = hprev_all + b * H;
      const R* dyr = dyp + (t * B + b) * H;
      R* dhr = dhv + b * H;
      const R* kh = zh.row(t, b);
      R* dwr = after ? dwt + b * G : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        R r = g[j], z = g[H + j], n = g[2 * H + j];
        R gh = dhr[j] + dyr[j];
        R k = kh[j];
        R dht = (R(1) - k) * gh;
        R dn = dht * (R(1) - z);
        R dz = dht * (hp[j] - n);
        R dan = dn * (R(1) - n * n);
        R daz = dz * z * (R(1) - z);
        dhr[j] = k * gh + dht * z;  // direct paths: zoneout and the z ⊙ h_{t-1} term
        d[H + j] = daz;
        d[2 * H + j] = dan;
      }
      if (after) {
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          R r = g[j], dan = d[2 * H + j];
          R dar = dan * g[3 * H + j] * r * (R(1) - r);
          d[j] = dar;
          dwr[j] = dar;
          dwr[H + j] = d[H + j];
          dwr[2 * H + j] = dan * r;
        }
      }
    });
    if (after) {
      // ∂L/∂h_{t-1} += (dw_t W_hh) ⊙ rmask
      if (rm) {
        (*back_gemm)(nb, dwt + b0 * G, G, R(0), rec + b0 * H, H);
        for (int64_t k = b0 * H; k < (b0 + nb) * H; ++k) dhv[k] += rec[k] * rm[k];
      } else {
        (*back_gemm)(nb, dwt + b0 * G, G, R(1), dhv + b0 * H, H);
      }
    } else {
      // dq = ∂L/∂(r ⊙ hm) = da_n W_n
      (*n_gemm)(nb, dut + b0 * G + 2 * H, G, R(0), dq + b0 * H, H);
      for_rows(rows, G, [&](int64_t b) {
        R* d = dut + b * G;
        R* recr = rec + b * H;
        if (!steps.valid(t, b)) {
          std::fill(recr, recr + H, R(0));
          return;
        }
        const R* g = gp + (t * B + b) * S;
        const R* hp = hprev_all + b * H;
        const R* rmr = rm ? rm + b * H : nullptr;
        const R* dqr = dq + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          R r = g[j];
          R hmv = rmr ? hp[j] * rmr[j] : hp[j];
          d[j] = dqr[j] * hmv * r * (R(1) - r);
          recr[j] = dqr[j] * r;  // ∂L/∂hm through the reset product
        }
      });
      // rec += [da_r, da_z] W_rz, then ∂L/∂h_{t-1} += rec ⊙ rmask
      (*rz_gemm)(nb, dut + b0 * G, G, R(1), rec + b0 * H, H);
      for (int64_t k = b0 * H; k < (b0 + nb) * H; ++k) dhv[k] += rm ? rec[k] * rm[k] : rec[k];
    }
  }
}

std::tuple<Tensor, Tensor, Tensor> gru_forward(const Tensor& u, const Tensor& w_hh, const OptTensor& b_hh,
                                               const Tensor& h0, const OptTensor& lengths, const OptTensor& rmask,
                                               const OptTensor& zh, bool reset_after, bool save) {
  const int64_t T = u.size(0), B = u.size(1), H = u.size(2) / 3;
  const auto opts = h0.options();  // u may be bfloat16 (mixed precision); everything else is h0's dtype
  auto y = at::empty({T, B, H}, opts);
  auto h_n = h0.contiguous().clone();  // the running h_{t-1}
  auto gates = at::empty({save ? T : 0, B, (reset_after ? 4 : 3) * H}, opts);
  auto bh = contiguous_or_undefined(b_hh), rm = contiguous_or_undefined(rmask);
  const auto uc = u.contiguous();
  const auto W = w_hh.contiguous(), h0c = h0.contiguous();
  dispatch_state_and_u(h0.scalar_type(), uc, "rnnkit_gru_forward", [&](auto r, auto v) {
    split_batch(B, B * 3 * H * H, W.scalar_type() != h0.scalar_type(), [&](Rows rows) {
      gru_forward_impl<decltype(r), decltype(v)>(rows, reset_after, uc, W, bh, h0c, lengths, rm, zh, y, h_n, gates);
    });
  });
  return {y, h_n, gates};
}

std::tuple<Tensor, Tensor, Tensor> gru_backward(const Tensor& dy, const Tensor& dh_n, const Tensor& gates,
                                                const Tensor& y, const Tensor& h0, const Tensor& w_hh,
                                                const OptTensor& lengths, const OptTensor& rmask, const OptTensor& zh,
                                                bool reset_after) {
  const int64_t T = gates.size(0), B = gates.size(1), H = h0.size(1);
  auto du = at::empty({T, B, 3 * H}, gates.options());
  auto dw = at::empty({reset_after ? T : 0, B, 3 * H}, gates.options());
  auto dh = dh_n.contiguous().clone();
  auto rm = contiguous_or_undefined(rmask);
  const auto dyc = dy.contiguous(), gc = gates.contiguous(), yc = y.contiguous(), h0c = h0.contiguous();
  const auto W = w_hh.contiguous();
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "rnnkit_gru_backward", [&] {
    split_batch(B, B * 3 * H * H, W.scalar_type() != gates.scalar_type(), [&](Rows rows) {
      gru_backward_impl<scalar_t>(rows, reset_after, dyc, gc, yc, h0c, W, lengths, rm, zh, du, dw, dh);
    });
  });
  return {du, dw, dh};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("gru_forward", &gru_forward);
  m.impl("gru_backward", &gru_backward);
}

}  // namespace rnnkit
