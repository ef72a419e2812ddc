// Layer-normalised LSTM and GRU time loops (LN over each whole gate vector, eps 1e-5).
//
// LSTM:  r = hm W_hh^T (B,4H);  r^ = (r − mean r) * rstd_r          hm = h_{t-1} ⊙ rmask
//        a = u_t + γ_hh ⊙ r^         u_t = LN(W_ih x_t; γ_ih) + b (the cell's project)
//        i, f, g, o = σ, σ, tanh, σ (a);  c~ = f ⊙ c_{t-1} + i ⊙ g
//        c^ = (c~ − mean c~) * rstd_c;  m = o ⊙ tanh(γ_c ⊙ c^ + β_c)
//        zoneout c_t = c~ + kc (c_{t-1} − c~), h_t = m + kh (h_{t-1} − m);  y_t = h_t
// GRU:   e = γ_hh ⊙ LN(hm W_hh^T) + b_hh (B,3H);  r = σ(u_r + e_r), z = σ(u_z + e_z),
//        n = tanh(u_n + r ⊙ e_n);  h~ = (1 − z) ⊙ n + z ⊙ h_{t-1};  zoneout;  y_t = h_t
//
// Mixed precision: w_hh may be bfloat16 with everything else float32 (the recurrent GEMMs then run in
// bfloat16 with float32 accumulation, StepGemm's Bf16 route); layer-norm statistics, gates and state stay
// float32.
//
// Buffers, LSTM (G = 4H):
//   forward  in : u (T,B,G), w_hh (G,H), g_hh (G), g_c (H), b_c (H), h0, c0 (B,H), lengths?, rmask?, zh?, zc?
//            out: y (T,B,H), h_n, c_n (B,H), gates (T,B,G) activated, rn (T,B,G) = r^, cs (T+1,B,H),
//                 chat (T,B,H) = c^, rstd (T,B,2) = rstd_r, rstd_c                           (saved)
//   backward in : dy, dh_n, dc_n, gates, rn, cs, chat, rstd, w_hh, g_hh, g_c, b_c, lengths?, rmask?, zh?, zc?
//            out: du (T,B,G) = ∂L/∂a_t, dr (T,B,G) = ∂L/∂r_t (for dW_hh), dh0, dc0,
//                 dg_hh (G), dg_c (H), db_c (H)
// Buffers, GRU (G = 3H):
//   forward  in : u (T,B,G), w_hh (G,H), g_hh (G), b_hh (G)?, h0, lengths?, rmask?, zh?
//            out: y (T,B,H), h_n, gates (T,B,4H) = r, z, n, e_n, en (T,B,G) = LN(r) normalised, rstd (T,B)
//   backward in : dy, dh_n, gates, en, rstd, y, h0, w_hh, g_hh, lengths?, rmask?, zh?
//            out: du (T,B,G), dq (T,B,G) = ∂L/∂(hm W_hh^T) (for dW_hh), dh0, dg_hh (G), db_hh (G)
#include "common.h"

namespace rnnkit {
namespace {

constexpr double kEps = 1e-5;

// x^ = (x − mean) * rstd over n values, into out; returns rstd. The sums run in
// double even for float data: layer norm over a few dozen units is badly
// conditioned, and float sums cost up to 1e-4 relative error in the gradients.
template <typename R>
inline R normalize(const R* __restrict__ x, R* __restrict__ out, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += double(x[j]);
  const double mean = s / double(n);
  double v = 0;
#pragma omp simd reduction(+ : v)
  for (int64_t j = 0; j < n; ++j) v += (double(x[j]) - mean) * (double(x[j]) - mean);
  const double rstd = 1.0 / std::sqrt(v / double(n) + kEps);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] = R((double(x[j]) - mean) * rstd);
  return R(rstd);
}

// ∂L/∂x of x^ = LN(x) given ∂L/∂x^ (dxh) and x^: rstd (dxh − mean dxh − x^ mean(dxh x^)); out may alias dxh
template <typename R>
inline void normalize_backward(const R* dxh, const R* __restrict__ xh, R rstd, R* out, int64_t n) {
  double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t j = 0; j < n; ++j) {
    s1 += double(dxh[j]);
    s2 += double(dxh[j]) * double(xh[j]);
  }
  // the difference cancels most of dxh when the gradient lies nearly along 1 and x^: take it in double too
  const double m1 = s1 / double(n), m2 = s2 / double(n), r = double(rstd);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] = R(r * (double(dxh[j]) - m1 - double(xh[j]) * m2));
}

// ------------------------------------------------------------------- LSTM
template <typename R>
void ln_lstm_forward_impl(const Tensor& u, const Tensor& w_hh, const Tensor& g_hh, const Tensor& g_c,
                          const Tensor& b_c, const Tensor& h0, const Tensor& c0, const OptTensor& lengths,
                          const Tensor& rmask, const OptTensor& zh_, const OptTensor& zc_, Tensor& y, Tensor& h_n,
                          Tensor& c_n, Tensor& gates, Tensor& rn, Tensor& cs, Tensor& chat, Tensor& rstd) {
  const int64_t T = u.size(0), B = u.size(1), G = u.size(2), H = G / 4;
  const auto opts = u.options();
  const R* up = u.data_ptr<R>();
  const R* gh = g_hh.data_ptr<R>();
  const R* gc = g_c.data_ptr<R>();
  const R* bc = b_c.data_ptr<R>();
  const R* rm = rmask.defined() ? rmask.data_ptr<R>() : nullptr;
  Keep<R> zh(zh_, H, opts), zc(zc_, H, opts);
  Steps steps(lengths, B);
  R* yp = y.data_ptr<R>();
  R* gp = gates.data_ptr<R>();
  R* rnp = rn.data_ptr<R>();
  R* csp = cs.data_ptr<R>();
  R* chp = chat.data_ptr<R>();
  R* rsp = rstd.data_ptr<R>();
  h_n.copy_(h0);
  R* h = h_n.data_ptr<R>();
  std::memcpy(csp, c0.data_ptr<R>(), sizeof(R) * B * H);
  Tensor hm_buf = rm ? at::empty({B, H}, opts) : Tensor();
  Tensor ct_buf = at::empty({B, H}, opts);
  R* hm = rm ? hm_buf.data_ptr<R>() : h;
  R* ctb = ct_buf.data_ptr<R>();
  const StepGemm<R> rec_gemm(true, G, H, w_hh, 0, H, B);  // (h ⊙ rmask) W_hh^T
  for (int64_t t = 0; t < T; ++t) {
    const int64_t nb = steps.active(t);
    R* gt = gp + t * B * G;
    if (rm)
      for (int64_t k = 0; k < nb * H; ++k) hm[k] = h[k] * rm[k];
    rec_gemm(nb, hm, H, R(0), gt, G);
    for_rows(B, G, [&](int64_t b) {
      R* __restrict__ g = gt + b * G;
      R* __restrict__ rr = rnp + (t * B + b) * G;
      const R* __restrict__ cp = csp + (t * B + b) * H;
      R* __restrict__ cn = csp + ((t + 1) * B + b) * H;
      R* __restrict__ ch = chp + (t * B + b) * H;
      R* __restrict__ yr = yp + (t * B + b) * H;
      R* rs = rsp + (t * B + b) * 2;
      if (!steps.valid(t, b)) {
        std::memcpy(cn, cp, sizeof(R) * H);
        std::fill(g, g + G, R(0));
        std::fill(rr, rr + G, R(0));
        std::fill(ch, ch + H, R(0));
        std::fill(yr, yr + H, R(0));
        rs[0] = rs[1] = R(0);
        return;
      }
      const R* __restrict__ ur = up + (t * B + b) * G;
      const R* __restrict__ kc = zc.row(t, b);
      const R* __restrict__ kh = zh.row(t, b);
      R* __restrict__ hr = h + b * H;
      R* __restrict__ ct = ctb + b * H;
      rs[0] = normalize(g, rr, G);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        R i = sigmoid(ur[j] + gh[j] * rr[j]);
        R f = sigmoid(ur[H + j] + gh[H + j] * rr[H + j]);
        R gg = std::tanh(ur[2 * H + j] + gh[2 * H + j] * rr[2 * H + j]);
        R o = sigmoid(ur[3 * H + j] + gh[3 * H + j] * rr[3 * H + j]);
        g[j] = i; g[H + j] = f; g[2 * H + j] = gg; g[3 * H + j] = o;
        R c = f * cp[j] + i * gg;
        ct[j] = c;
        cn[j] = c + kc[j] * (cp[j] - c);
      }
      rs[1] = normalize(ct, ch, H);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        R m = g[3 * H + j] * std::tanh(gc[j] * ch[j] + bc[j]);
        R v = m + kh[j] * (hr[j] - m);
        hr[j] = v;
        yr[j] = v;
      }
    });
  }
  c_n.copy_(cs.select(0, T));
}

template <typename R>
void ln_lstm_backward_impl(const Tensor& dy, const Tensor& gates, const Tensor& rn, const Tensor& cs,
                           const Tensor& chat, const Tensor& rstd, const Tensor& w_hh, const Tensor& g_hh,
                           const Tensor& g_c, const Tensor& b_c, const OptTensor& lengths, const Tensor& rmask,
                           const OptTensor& zh_, const OptTensor& zc_, Tensor& du, Tensor& dr, Tensor& dh, Tensor& dc,
                           Tensor& dgh_rows, Tensor& dgc_rows, Tensor& dbc_rows) {
  const int64_t T = gates.size(0), B = gates.size(1), G = gates.size(2), H = G / 4;
  const auto opts = gates.options();
  const R* gh = g_hh.data_ptr<R>();
  const R* gc = g_c.data_ptr<R>();
  const R* bc = b_c.data_ptr<R>();
  const R* rm = rmask.defined() ? rmask.data_ptr<R>() : nullptr;
  Keep<R> zh(zh_, H, opts), zc(zc_, H, opts);
  Steps steps(lengths, B);
  const R* dyp = dy.data_ptr<R>();
  const R* gp = gates.data_ptr<R>();
  const R* rnp = rn.data_ptr<R>();
  const R* csp = cs.data_ptr<R>();
  const R* chp = chat.data_ptr<R>();
  const R* rsp = rstd.data_ptr<R>();
  R* dup = du.data_ptr<R>();
  R* drp = dr.data_ptr<R>();
  R* dhv = dh.data_ptr<R>();
  R* dcv = dc.data_ptr<R>();
  // per-row accumulators of the LN gain/bias gradients (rows are independent, so no races)
  R* dghp = dgh_rows.data_ptr<R>();
  R* dgcp = dgc_rows.data_ptr<R>();
  R* dbcp = dbc_rows.data_ptr<R>();
  Tensor tmp_buf = at::empty({B, G}, opts);
  Tensor rec_buf = rm ? at::empty({B, H}, opts) : Tensor();
  R* tmp = tmp_buf.data_ptr<R>();
  R* rec = rm ? rec_buf.data_ptr<R>() : nullptr;
  const StepGemm<R> back_gemm(false, H, G, w_hh, 0, H, B);  // ∂L/∂(W_hh h) W_hh
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t nb = steps.active(t);
    R* drt = drp + t * B * G;
    for_rows(B, G, [&](int64_t b) {
      R* __restrict__ da = dup + (t * B + b) * G;
      R* __restrict__ drr = drt + b * G;
      if (!steps.valid(t, b)) {
        std::fill(da, da + G, R(0));
        std::fill(drr, drr + G, R(0));
        return;
      }
      const R* __restrict__ g = gp + (t * B + b) * G;
      const R* __restrict__ rr = rnp + (t * B + b) * G;
      const R* __restrict__ cp = csp + (t * B + b) * H;
      const R* __restrict__ ch = chp + (t * B + b) * H;
      const R* rs = rsp + (t * B + b) * 2;
      const R* __restrict__ kc = zc.row(t, b);
      const R* __restrict__ kh = zh.row(t, b);
      const R* __restrict__ dyr = dyp + (t * B + b) * H;
      R* __restrict__ dhr = dhv + b * H;
      R* __restrict__ dcr = dcv + b * H;
      R* __restrict__ dch = tmp + b * G;  // ∂L/∂c^, then ∂L/∂c~ (LN backward in place)
      R* __restrict__ dgc = dgcp + b * H;
      R* __restrict__ dbc = dbcp + b * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        R o = g[3 * H + j];
        R tcn = std::tanh(gc[j] * ch[j] + bc[j]);
        R gsum = dhr[j] + dyr[j];
        R dm = (R(1) - kh[j]) * gsum;
        dhr[j] = kh[j] * gsum;
        da[3 * H + j] = dm * tcn * o * (R(1) - o);
        R dcn = dm * o * (R(1) - tcn * tcn);
        dgc[j] += dcn * ch[j];
        dbc[j] += dcn;
        dch[j] = dcn * gc[j];
      }
      normalize_backward(dch, ch, rs[1], dch, H);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        R i = g[j], f = g[H + j], gg = g[2 * H + j];
        R dct = (R(1) - kc[j]) * dcr[j] + dch[j];
        da[j] = dct * gg * i * (R(1) - i);
        da[H + j] = dct * cp[j] * f * (R(1) - f);
        da[2 * H + j] = dct * i * (R(1) - gg * gg);
        dcr[j] = kc[j] * dcr[j] + dct * f;
      }
      R* __restrict__ dgh = dghp + b * G;
#pragma omp simd
      for (int64_t j = 0; j < G; ++j) {
        dgh[j] += da[j] * rr[j];
        drr[j] = da[j] * gh[j];
      }
      normalize_backward(drr, rr, rs[0], drr, G);
    });
    if (rm) {
      back_gemm(nb, drt, G, R(0), rec, H);
      for (int64_t k = 0; k < nb * H; ++k) dhv[k] += rec[k] * rm[k];
    } else {
      back_gemm(nb, drt, G, R(1), dhv, H);
    }
  }
}

// -------------------------------------------------------------------- GRU
template <typename R>
void ln_gru_forward_impl(const Tensor& u, const Tensor& w_hh, const Tensor& g_hh, const Tensor& b_hh,
                         const Tensor& h0, const OptTensor& lengths, const Tensor& rmask, const OptTensor& zh_,
                         Tensor& y, Tensor& h_n, Tensor& gates, Tensor& en, Tensor& rstd) {
  const int64_t T = u.size(0), B = u.size(1), G = u.size(2), H = G / 3;
  const auto opts = u.options();
  const R* up = u.data_ptr<R>();
  const R* gh = g_hh.data_ptr<R>();
  MaybeVec<R> bias(b_hh, G, opts);
  const R* bh = bias.p;
  const R* rm = rmask.defined() ? rmask.data_ptr<R>() : nullptr;
  Keep<R> zh(zh_, H, opts);
  Steps steps(lengths, B);
  R* yp = y.data_ptr<R>();
  R* gp = gates.data_ptr<R>();
  R* enp = en.data_ptr<R>();
  R* rsp = rstd.data_ptr<R>();
  h_n.copy_(h0);
  R* h = h_n.data_ptr<R>();
  Tensor hm_buf = rm ? at::empty({B, H}, opts) : Tensor();
  Tensor w_buf = at::empty({B, G}, opts);
  R* hm = rm ? hm_buf.data_ptr<R>() : h;
  R* w = w_buf.data_ptr<R>();
  const StepGemm<R> rec_gemm(true, G, H, w_hh, 0, H, B);  // (h ⊙ rmask) W_hh^T
  for (int64_t t = 0; t < T; ++t) {
    const int64_t nb = steps.active(t);
    if (rm)
      for (int64_t k = 0; k < nb * H; ++k) hm[k] = h[k] * rm[k];
    rec_gemm(nb, hm, H, R(0), w, G);
    for_rows(B, G, [&](int64_t b) {
      R* __restrict__ g = gp + (t * B + b) * 4 * H;
      R* __restrict__ e = enp + (t * B + b) * G;
      R* __restrict__ yr = yp + (t * B + b) * H;
      if (!steps.valid(t, b)) {
        std::fill(g, g + 4 * H, R(0));
        std::fill(e, e + G, R(0));
        std::fill(yr, yr + H, R(0));
        rsp[t * B + b] = R(0);
        return;
      }
      const R* __restrict__ ur = up + (t * B + b) * G;
      const R* __restrict__ kh = zh.row(t, b);
      R* __restrict__ hr = h + b * H;
      rsp[t * B + b] = normalize(w + b * G, e, G);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        R r = sigmoid(ur[j] + gh[j] * e[j] + bh[j]);
        R z = sigmoid(ur[H + j] + gh[H + j] * e[H + j] + bh[H + j]);
        R wn = gh[2 * H + j] * e[2 * H + j] + bh[2 * H + j];
        R n = std::tanh(ur[2 * H + j] + r * wn);
        R hv = (R(1) - z) * n + z * hr[j];
        hv += kh[j] * (hr[j] - hv);
        g[j] = r; g[H + j] = z; g[2 * H + j] = n; g[3 * H + j] = wn;
        hr[j] = hv;
        yr[j] = hv;
      }
    });
  }
}

template <typename R>
void ln_gru_backward_impl(const Tensor& dy, const Tensor& gates, const Tensor& en, const Tensor& rstd,
                          const Tensor& y, const Tensor& h0, const Tensor& w_hh, const Tensor& g_hh,
                          const OptTensor& lengths, const Tensor& rmask, const OptTensor& zh_, Tensor& du, Tensor& dq,
                          Tensor& dh, Tensor& dgh_rows, Tensor& dbh_rows) {
  const int64_t T = gates.size(0), B = gates.size(1), H = h0.size(1), G = 3 * H;
  const auto opts = gates.options();
  const R* gh = g_hh.data_ptr<R>();
  const R* rm = rmask.defined() ? rmask.data_ptr<R>() : nullptr;
  Keep<R> zh(zh_, H, opts);
  Steps steps(lengths, B);
  const R* dyp = dy.data_ptr<R>();
  const R* gp = gates.data_ptr<R>();
  const R* enp = en.data_ptr<R>();
  const R* rsp = rstd.data_ptr<R>();
  const R* yp = y.data_ptr<R>();
  const R* h0p = h0.data_ptr<R>();
  R* dup = du.data_ptr<R>();
  R* dqp = dq.data_ptr<R>();
  R* dhv = dh.data_ptr<R>();
  R* dghp = dgh_rows.data_ptr<R>();
  R* dbhp = dbh_rows.data_ptr<R>();
  Tensor rec_buf = rm ? at::empty({B, H}, opts) : Tensor();
  R* rec = rm ? rec_buf.data_ptr<R>() : nullptr;
  const StepGemm<R> back_gemm(false, H, G, w_hh, 0, H, B);  // ∂L/∂(W_hh h) W_hh
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t nb = steps.active(t);
    R* dqt = dqp + t * B * G;
    const R* hprev_all = t == 0 ? h0p : yp + (t - 1) * B * H;
    for_rows(B, G, [&](int64_t b) {
      R* __restrict__ d = dup + (t * B + b) * G;
      R* __restrict__ q = dqt + b * G;
      if (!steps.valid(t, b)) {
        std::fill(d, d + G, R(0));
        std::fill(q, q + G, R(0));
        return;
      }
      const R* __restrict__ g = gp + (t * B + b) * 4 * H;
      const R* __restrict__ e = enp + (t * B + b) * G;
      const R* __restrict__ hp = hprev_all + b * H;
      const R* __restrict__ dyr = dyp + (t * B + b) * H;
      const R* __restrict__ kh = zh.row(t, b);
      R* __restrict__ dhr = dhv + b * H;
      R* __restrict__ dgh = dghp + b * G;
      R* __restrict__ dbh = dbhp + b * G;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        R r = g[j], z = g[H + j], n = g[2 * H + j], wn = g[3 * H + j];
        R gs = dhr[j] + dyr[j];
        R dht = (R(1) - kh[j]) * gs;
        R dan = dht * (R(1) - z) * (R(1) - n * n);
        R daz = dht * (hp[j] - n) * z * (R(1) - z);
        R dar = dan * wn * r * (R(1) - r);
        dhr[j] = kh[j] * gs + dht * z;
        d[j] = dar; d[H + j] = daz; d[2 * H + j] = dan;
        q[j] = dar; q[H + j] = daz; q[2 * H + j] = dan * r;  // ∂L/∂e
      }
#pragma omp simd
      for (int64_t j = 0; j < G; ++j) {
        dbh[j] += q[j];
        dgh[j] += q[j] * e[j];
        q[j] *= gh[j];
      }
      normalize_backward(q, e, rsp[t * B + b], q, G);
    });
    if (rm) {
      back_gemm(nb, dqt, G, R(0), rec, H);
      for (int64_t k = 0; k < nb * H; ++k) dhv[k] += rec[k] * rm[k];
    } else {
      back_gemm(nb, dqt, G, R(1), dhv, H);
    }
  }
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> ln_lstm_forward(
    const Tensor& u, const Tensor& w_hh, const Tensor& g_hh, const Tensor& g_c, const Tensor& b_c, const Tensor& h0,
    const Tensor& c0, const OptTensor& lengths, const OptTensor& rmask, const OptTensor& zh, const OptTensor& zc) {
  const int64_t T = u.size(0), B = u.size(1), G = u.size(2), H = G / 4;
  auto o = u.options();
  auto y = at::empty({T, B, H}, o), h_n = at::empty({B, H}, o), c_n = at::empty({B, H}, o);
  auto gates = at::empty({T, B, G}, o), rn = at::empty({T, B, G}, o), cs = at::empty({T + 1, B, H}, o);
  auto chat = at::empty({T, B, H}, o), rstd = at::empty({T, B, 2}, o);
  auto rm = contiguous_or_undefined(rmask);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "rnnkit_ln_lstm_forward", [&] {
    ln_lstm_forward_impl<scalar_t>(u.contiguous(), w_hh.contiguous(), g_hh.contiguous(), g_c.contiguous(),
                                   b_c.contiguous(), h0.contiguous(), c0.contiguous(), lengths, rm, zh, zc, y, h_n,
                                   c_n, gates, rn, cs, chat, rstd);
  });
  return {y, h_n, c_n, gates, rn, cs, chat, rstd};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> ln_lstm_backward(
    const Tensor& dy, const Tensor& dh_n, const Tensor& dc_n, const Tensor& gates, const Tensor& rn, const Tensor& cs,
    const Tensor& chat, const Tensor& rstd, const Tensor& w_hh, const Tensor& g_hh, const Tensor& g_c,
    const Tensor& b_c, const OptTensor& lengths, const OptTensor& rmask, const OptTensor& zh, const OptTensor& zc) {
  const int64_t T = gates.size(0), B = gates.size(1), G = gates.size(2), H = G / 4;
  auto o = gates.options();
  auto du = at::empty({T, B, G}, o), dr = at::empty({T, B, G}, o);
  auto dh = dh_n.contiguous().clone(), dc = dc_n.contiguous().clone();
  auto dgh = at::zeros({B, G}, o), dgc = at::zeros({B, H}, o), dbc = at::zeros({B, H}, o);
  auto rm = contiguous_or_undefined(rmask);
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "rnnkit_ln_lstm_backward", [&] {
    ln_lstm_backward_impl<scalar_t>(dy.contiguous(), gates.contiguous(), rn.contiguous(), cs.contiguous(),
                                    chat.contiguous(), rstd.contiguous(), w_hh.contiguous(), g_hh.contiguous(),
                                    g_c.contiguous(), b_c.contiguous(), lengths, rm, zh, zc, du, dr, dh, dc, dgh, dgc,
                                    dbc);
  });
  return {du, dr, dh, dc, dgh.sum(0), dgc.sum(0), dbc.sum(0)};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> ln_gru_forward(const Tensor& u, const Tensor& w_hh,
                                                                  const Tensor& g_hh, const OptTensor& b_hh,
                                                                  const Tensor& h0, const OptTensor& lengths,
                                                                  const OptTensor& rmask, const OptTensor& zh) {
  const int64_t T = u.size(0), B = u.size(1), G = u.size(2), H = G / 3;
  auto o = u.options();
  auto y = at::empty({T, B, H}, o), h_n = at::empty({B, H}, o);
  auto gates = at::empty({T, B, 4 * H}, o), en = at::empty({T, B, G}, o), rstd = at::empty({T, B}, o);
  auto rm = contiguous_or_undefined(rmask), bh = contiguous_or_undefined(b_hh);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "rnnkit_ln_gru_forward", [&] {
    ln_gru_forward_impl<scalar_t>(u.contiguous(), w_hh.contiguous(), g_hh.contiguous(), bh, h0.contiguous(),
                                  lengths, rm, zh, y, h_n, gates, en, rstd);
  });
  return {y, h_n, gates, en, rstd};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> ln_gru_backward(
    const Tensor& dy, const Tensor& dh_n, const Tensor& gates, const Tensor& en, const Tensor& rstd, const Tensor& y,
    const Tensor& h0, const Tensor& w_hh, const Tensor& g_hh, const OptTensor& lengths, const OptTensor& rmask,
    const OptTensor& zh) {
  const int64_t T = gates.size(0), B = gates.size(1), H = h0.size(1), G = 3 * H;
  auto o = gates.options();
  auto du = at::empty({T, B, G}, o), dq = at::empty({T, B, G}, o);
  auto dh = dh_n.contiguous().clone();
  auto dgh = at::zeros({B, G}, o), dbh = at::zeros({B, G}, o);
  auto rm = contiguous_or_undefined(rmask);
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "rnnkit_ln_gru_backward", [&] {
    ln_gru_backward_impl<scalar_t>(dy.contiguous(), gates.contiguous(), en.contiguous(), rstd.contiguous(),
                                   y.contiguous(), h0.contiguous(), w_hh.contiguous(), g_hh.contiguous(), lengths, rm,
                                   zh, du, dq, dh, dgh, dbh);
  });
  return {du, dq, dh, dgh.sum(0), dbh.sum(0)};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("ln_lstm_forward", &ln_lstm_forward);
  m.impl("ln_lstm_backward", &ln_lstm_backward);
  m.impl("ln_gru_forward", &ln_gru_forward);
  m.impl("ln_gru_backward", &ln_gru_backward);
}

}  // namespace rnnkit
