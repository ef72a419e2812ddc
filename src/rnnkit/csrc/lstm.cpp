// LSTM time loops: plain, with output projection (proj_size) and/or peepholes.
//
//   a_t = u_t + (h_{t-1} ⊙ rmask) W_hh^T         u_t already holds W_ih x_t + b_ih + b_hh
//   a_i += p_i ⊙ c_{t-1},  a_f += p_f ⊙ c_{t-1}  (peephole)
//   i, f, g = σ(a_i), σ(a_f), tanh(a_g)
//   c~_t = f ⊙ c_{t-1} + i ⊙ g
//   a_o += p_o ⊙ c~_t (peephole);  o = σ(a_o)
//   m_t = o ⊙ tanh(c~_t);  h~_t = m_t W_hr^T (proj) or m_t
//   zoneout: c_t = c~_t + kc (c_{t-1} − c~_t),  h_t = h~_t + kh (h_{t-1} − h~_t);  y_t = h_t
//
// Buffers (H hidden, P = proj_size or H, G = 4H; gate order i, f, g, o):
//   forward  in : u (T,B,G), w_hh (G,P), w_hr (P,H)?, w_peep (3H)?, h0 (B,P), c0 (B,H),
//                 lengths (B)?, rmask (B,P)?, zh (T,B,P)?, zc (T,B,H)?
//            out: y (T,B,P), h_n (B,P), c_n (B,H),
//                 gates (T,B,G) activated i,f,g,o (saved), cs (T+1,B,H) states c_0..c_T (saved),
//                 ct (T,B,H) c~_t, only with zoneout on c (else 0 elements; c~_t = cs[t+1] then)
//   backward in : dy (T,B,P), dh_n (B,P), dc_n (B,H), gates, cs, ct, w_hh, w_hr?, w_peep?, lengths?,
//                 rmask?, zh?, zc?
//            out: dgates (T,B,G) = ∂L/∂a_t (= ∂L/∂u_t), dh0 (B,P), dc0 (B,H),
//                 dhp (T,B,P) ∂L/∂h~_t and ms (T,B,H) m_t, both only with proj (for dW_hr)
// The weight gradients (dW_hh = Σ_t dgates_t^T (h_{t-1} ⊙ rmask), dW_hr, dp) are
// single GEMMs/reductions over all steps, done by the caller.
#include "common.h"

namespace rnnkit {
namespace {

template <typename R>
void lstm_forward_impl(const Tensor& u, const Tensor& w_hh, const Tensor& w_hr, const Tensor& w_peep,
                       const Tensor& h0, const Tensor& c0, const OptTensor& lengths, const Tensor& rmask,
                       const OptTensor& zh_, const OptTensor& zc_, Tensor& y, Tensor& h_n, Tensor& c_n,
                       Tensor& gates, Tensor& cs, Tensor& ct) {
  const int64_t T = u.size(0), B = u.size(1), G = u.size(2), H = G / 4, P = h0.size(1);
  const bool proj = w_hr.defined();
  const R* up = u.data_ptr<R>();
  const R* W = w_hh.data_ptr<R>();
  const R* Wr = proj ? w_hr.data_ptr<R>() : nullptr;
  const R* pe = w_peep.defined() ? w_peep.data_ptr<R>() : nullptr;
  const R* rm = rmask.defined() ? rmask.data_ptr<R>() : nullptr;
  Keep<R> zh(zh_), zc(zc_);
  Steps steps(lengths, B);

  R* yp = y.data_ptr<R>();
  R* gp = gates.data_ptr<R>();
  R* csp = cs.data_ptr<R>();
  R* ctp = ct.numel() ? ct.data_ptr<R>() : nullptr;
  h_n.copy_(h0);
  R* h = h_n.data_ptr<R>();                      // running h_{t-1} (B,P)
  std::memcpy(csp, c0.data_ptr<R>(), sizeof(R) * B * H);
  Tensor hm_buf = rm ? at::empty({B, P}, u.options()) : Tensor();
  Tensor m_buf = proj ? at::empty({B, H}, u.options()) : Tensor();
  Tensor hp_buf = proj ? at::empty({B, P}, u.options()) : Tensor();
  R* hm = rm ? hm_buf.data_ptr<R>() : h;
  R* mb = proj ? m_buf.data_ptr<R>() : nullptr;
  R* hpb = proj ? hp_buf.data_ptr<R>() : nullptr;

  for (int64_t t = 0; t < T; ++t) {
    const int64_t nb = steps.active(t);
    R* gt = gp + t * B * G;
    if (rm)
      for (int64_t k = 0; k < nb * P; ++k) hm[k] = h[k] * rm[k];
    gemm_nt<R>(nb, G, P, hm, P, W, P, R(0), gt, G);  // a_t - u_t
    const R* cprev_all = csp + t * B * H;
    R* cnew_all = csp + (t + 1) * B * H;
    for_rows(B, G, [&](int64_t b) {
      R* g = gt + b * G;
      const R* cp = cprev_all + b * H;
      R* cn = cnew_all + b * H;
      R* yr = yp + (t * B + b) * P;
      if (!steps.valid(t, b)) {  // padded step: carry the state, output zero
        std::memcpy(cn, cp, sizeof(R) * H);
        std::fill(g, g + G, R(0));
        std::fill(yr, yr + P, R(0));
        if (ctp) std::memcpy(ctp + (t * B + b) * H, cp, sizeof(R) * H);
        if (proj) std::fill(mb + b * H, mb + (b + 1) * H, R(0));
        return;
      }
      const R* ur = up + (t * B + b) * G;
      const R* kc = zc ? zc.row(t, b) : nullptr;
      R* ctr = ctp ? ctp + (t * B + b) * H : nullptr;
      R* hr = h + b * P;
      const R* kh = zh ? zh.row(t, b) : nullptr;
      R* mr = proj ? mb + b * H : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        R ai = g[j] + ur[j], af = g[H + j] + ur[H + j];
        R ag = g[2 * H + j] + ur[2 * H + j], ao = g[3 * H + j] + ur[3 * H + j];
        if (pe) {
          ai += pe[j] * cp[j];
          af += pe[H + j] * cp[j];
        }
        R i = sigmoid(ai), f = sigmoid(af), gg = std::tanh(ag);
        R c = f * cp[j] + i * gg;
        if (pe) ao += pe[2 * H + j] * c;
        R o = sigmoid(ao);
        R m = o * std::tanh(c);
        g[j] = i; g[H + j] = f; g[2 * H + j] = gg; g[3 * H + j] = o;
        if (ctr) ctr[j] = c;
        cn[j] = kc ? c + kc[j * zc.sj] * (cp[j] - c) : c;
        if (proj) {
          mr[j] = m;
        } else {
          R hv = kh ? m + kh[j * zh.sj] * (hr[j] - m) : m;
          hr[j] = hv;
          yr[j] = hv;
        }
      }
    });
    if (proj) {
      gemm_nt<R>(nb, P, H, mb, H, Wr, H, R(0), hpb, P);  // h~_t = m_t W_hr^T
      for (int64_t b = 0; b < B; ++b) {
        R* yr = yp + (t * B + b) * P;
        if (!steps.valid(t, b)) continue;  // y already zero, h carried
        R* hr = h + b * P;
        const R* hv = hpb + b * P;
        const R* kh = zh ? zh.row(t, b) : nullptr;
        for (int64_t j = 0; j < P; ++j) {
          R v = kh ? hv[j] + kh[j * zh.sj] * (hr[j] - hv[j]) : hv[j];
          hr[j] = v;
          yr[j] = v;
        }
      }
    }
  }
  // final c of each row = the carried state after its last valid step = cs[T]
  c_n.copy_(cs.select(0, T));
}

template <typename R>
void lstm_backward_impl(const Tensor& dy, const Tensor& gates, const Tensor& cs, const Tensor& ct,
                        const Tensor& w_hh, const Tensor& w_hr, const Tensor& w_peep, const OptTensor& lengths,
                        const Tensor& rmask, const OptTensor& zh_, const OptTensor& zc_, Tensor& dgates, Tensor& dh,
                        Tensor& dc, Tensor& dhp, Tensor& ms) {
  const int64_t T = gates.size(0), B = gates.size(1), G = gates.size(2), H = G / 4, P = dh.size(1);
  const bool proj = w_hr.defined();
  const R* W = w_hh.data_ptr<R>();
  const R* Wr = proj ? w_hr.data_ptr<R>() : nullptr;
  const R* pe = w_peep.defined() ? w_peep.data_ptr<R>() : nullptr;
  const R* rm = rmask.defined() ? rmask.data_ptr<R>() : nullptr;
  Keep<R> zh(zh_), zc(zc_);
  Steps steps(lengths, B);
  const R* dyp = dy.data_ptr<R>();
  const R* gp = gates.data_ptr<R>();
  const R* csp = cs.data_ptr<R>();
  const R* ctp = ct.numel() ? ct.data_ptr<R>() : nullptr;
  R* dgp = dgates.data_ptr<R>();
  R* dhv = dh.data_ptr<R>();   // running ∂L/∂h_t (B,P)
  R* dcv = dc.data_ptr<R>();   // running ∂L/∂c_t (B,H)
  R* dhpp = proj ? dhp.data_ptr<R>() : nullptr;
  R* msp = proj ? ms.data_ptr<R>() : nullptr;
  Tensor dm_buf = proj ? at::empty({B, H}, dh.options()) : Tensor();
  Tensor rec_buf = rm ? at::empty({B, P}, dh.options()) : Tensor();
  R* dmb = proj ? dm_buf.data_ptr<R>() : nullptr;
  R* rec = rm ? rec_buf.data_ptr<R>() : nullptr;

  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t nb = steps.active(t);
    R* dgt = dgp + t * B * G;
    if (proj) {
      // ∂L/∂h~_t, then ∂L/∂m_t = (∂L/∂h~_t) W_hr
      R* dht = dhpp + t * B * P;
      for (int64_t b = 0; b < B; ++b) {
        R* d = dht + b * P;
        if (!steps.valid(t, b)) {
          std::fill(d, d + P, R(0));
          continue;
        }
        const R* kh = zh ? zh.row(t, b) : nullptr;
        const R* dyr = dyp + (t * B + b) * P;
        R* dhr = dhv + b * P;
        for (int64_t j = 0; j < P; ++j) {
          R g = dhr[j] + dyr[j];
          R k = kh ? kh[j * zh.sj] : R(0);
          d[j] = (R(1) - k) * g;
          dhr[j] = k * g;  // the part that skips the cell through zoneout
        }
      }
      gemm_nn<R>(nb, H, P, dht, P, Wr, H, R(0), dmb, H);
    }
    const R* cprev_all = csp + t * B * H;
    const R* ctil_all = ctp ? ctp + t * B * H : csp + (t + 1) * B * H;
    for_rows(B, G, [&](int64_t b) {
      R* dg = dgt + b * G;
      if (!steps.valid(t, b)) {  // state was carried: gradients pass through untouched
        std::fill(dg, dg + G, R(0));
        if (proj) std::fill(msp + (t * B + b) * H, msp + (t * B + b + 1) * H, R(0));
        return;
      }
      const R* g = gp + (t * B + b) * G;
      const R* cp = cprev_all + b * H;
      const R* ctl = ctil_all + b * H;
      R* dcr = dcv + b * H;
      const R* kc = zc ? zc.row(t, b) : nullptr;
      const R* kh = zh ? zh.row(t, b) : nullptr;
      R* dhr = dhv + b * P;
      const R* dyr = dyp + (t * B + b) * P;
      const R* dmr = proj ? dmb + b * H : nullptr;
      R* mr = proj ? msp + (t * B + b) * H : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        R i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j];
        R tc = std::tanh(ctl[j]);
        R dm;
        if (proj) {
          dm = dmr[j];
          mr[j] = o * tc;
        } else {
          R gh = dhr[j] + dyr[j];
          R k = kh ? kh[j * zh.sj] : R(0);
          dm = (R(1) - k) * gh;
          dhr[j] = k * gh;
        }
        R kcv = kc ? kc[j * zc.sj] : R(0);
        R dct = (R(1) - kcv) * dcr[j];
        R dao = dm * tc * o * (R(1) - o);
        dct += dm * o * (R(1) - tc * tc);
        if (pe) dct += dao * pe[2 * H + j];
        R dai = dct * gg * i * (R(1) - i);
        R daf = dct * cp[j] * f * (R(1) - f);
        R dag = dct * i * (R(1) - gg * gg);
        R dcp = kcv * dcr[j] + dct * f;
        if (pe) dcp += dai * pe[j] + daf * pe[H + j];
        dcr[j] = dcp;
        dg[j] = dai; dg[H + j] = daf; dg[2 * H + j] = dag; dg[3 * H + j] = dao;
      }
    });
    // ∂L/∂h_{t-1} += (dgates_t W_hh) ⊙ rmask
    if (rm) {
      gemm_nn<R>(nb, P, G, dgt, G, W, P, R(0), rec, P);
      for (int64_t k = 0; k < nb * P; ++k) dhv[k] += rec[k] * rm[k];
    } else {
      gemm_nn<R>(nb, P, G, dgt, G, W, P, R(1), dhv, P);
    }
  }
}

Tensor undef_if_none(const OptTensor& t) { return (t.has_value() && t->defined()) ? t->contiguous() : Tensor(); }

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_forward(
    const Tensor& u, const Tensor& w_hh, const OptTensor& w_hr, const OptTensor& w_peep, const Tensor& h0,
    const Tensor& c0, const OptTensor& lengths, const OptTensor& rmask, const OptTensor& zh, const OptTensor& zc) {
  const int64_t T = u.size(0), B = u.size(1), H = u.size(2) / 4, P = h0.size(1);
  auto uc = u.contiguous();
  auto W = w_hh.contiguous();
  auto Wr = undef_if_none(w_hr), pe = undef_if_none(w_peep), rm = undef_if_none(rmask);
  auto h0c = h0.contiguous(), c0c = c0.contiguous();
  auto y = at::empty({T, B, P}, u.options());
  auto h_n = at::empty({B, P}, u.options());
  auto c_n = at::empty({B, H}, u.options());
  auto gates = at::empty({T, B, 4 * H}, u.options());
  auto cs = at::empty({T + 1, B, H}, u.options());
  const bool need_ct = zc.has_value() && zc->defined();
  auto ct = at::empty({need_ct ? T : 0, B, H}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "rnnkit_lstm_forward", [&] {
    lstm_forward_impl<scalar_t>(uc, W, Wr, pe, h0c, c0c, lengths, rm, zh, zc, y, h_n, c_n, gates, cs, ct);
  });
  return {y, h_n, c_n, gates, cs, ct};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(
    const Tensor& dy, const Tensor& dh_n, const Tensor& dc_n, const Tensor& gates, const Tensor& cs, const Tensor& ct,
    const Tensor& w_hh, const OptTensor& w_hr, const OptTensor& w_peep, const OptTensor& lengths,
    const OptTensor& rmask, const OptTensor& zh, const OptTensor& zc) {
  const int64_t T = gates.size(0), B = gates.size(1), H = gates.size(2) / 4, P = dh_n.size(1);
  auto W = w_hh.contiguous();
  auto Wr = undef_if_none(w_hr), pe = undef_if_none(w_peep), rm = undef_if_none(rmask);
  auto dyc = dy.contiguous();
  auto dgates = at::empty({T, B, 4 * H}, gates.options());
  auto dh = dh_n.contiguous().clone();
  auto dc = dc_n.contiguous().clone();
  const bool proj = Wr.defined();
  auto dhp = at::empty({proj ? T : 0, B, P}, gates.options());
  auto ms = at::empty({proj ? T : 0, B, H}, gates.options());
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "rnnkit_lstm_backward", [&] {
    lstm_backward_impl<scalar_t>(dyc, gates.contiguous(), cs.contiguous(), ct.contiguous(), W, Wr, pe, lengths, rm,
                                 zh, zc, dgates, dh, dc, dhp, ms);
  });
  return {dgates, dh, dc, dhp, ms};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("lstm_forward", &lstm_forward);
  m.impl("lstm_backward", &lstm_backward);
}

}  // namespace rnnkit
