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
//   (mixed precision: u and w_hh, w_hr may be bfloat16 with everything else float32)
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

// U: the type of u, R's own or bfloat16 (mixed precision: the projection's output read as it is)
// Rows: the batch rows this call carries through the loop (split_batch); h_n holds h0 on entry.
template <typename R, typename U>
void lstm_forward_impl(Rows rows, const Tensor& u, const Tensor& w_hh, const Tensor& w_hr, const Tensor& w_peep,
                       const Tensor& h0, const Tensor& c0, const OptTensor& lengths, const Tensor& rmask,
                       const OptTensor& zh_, const OptTensor& zc_, Tensor& y, Tensor& h_n, Tensor& c_n,
                       Tensor& gates, Tensor& cs, Tensor& ct) {
  const int64_t T = u.size(0), B = u.size(1), G = u.size(2), H = G / 4, P = h0.size(1);
  const bool proj = w_hr.defined();
  const auto opts = h0.options();
  const U* up = u.data_ptr<U>();
  MaybeVec<R> peep(w_peep, 3 * H, opts);
  const R* pe = peep.p;
  const R* rm = rmask.defined() ? rmask.data_ptr<R>() : nullptr;
  Keep<R> zh(zh_, P, opts), zc(zc_, H, opts);
  Steps steps(lengths, B);

  R* yp = y.data_ptr<R>();
  // saved for backward, or (nothing needs a gradient) one scratch step; cell states c_0..c_T in a ring of two
  const StepRows<R> gate_rows(gates, B, G, 1, opts), c_rows(cs, B, H, 2, opts);
  // c~_t goes to `ct` when zoneout needs it saved, else to a scratch row
  const StepRows<R> ctil_rows(ct, B, H, 1, opts);
  const int64_t b0 = rows.begin;
  R* h = h_n.data_ptr<R>();  // running h_{t-1} (B,P)
  std::memcpy(c_rows[0] + b0 * H, c0.data_ptr<R>() + b0 * H, sizeof(R) * rows.size() * H);
  Tensor hm_buf = rm ? at::empty({B, P}, opts) : Tensor();
  Tensor m_buf = proj ? at::empty({B, H}, opts) : Tensor();
  Tensor hp_buf = proj ? at::empty({B, P}, opts) : Tensor();
  R* hm = rm ? hm_buf.data_ptr<R>() : h;
  R* mb = proj ? m_buf.data_ptr<R>() : nullptr;
  R* hpb = proj ? hp_buf.data_ptr<R>() : nullptr;

  const StepGemm<R> rec_gemm(true, G, P, w_hh, 0, P, rows.size());  // (h ⊙ rmask) W_hh^T
  std::optional<StepGemm<R>> proj_gemm;                             // m_t W_hr^T
  if (proj) proj_gemm.emplace(true, P, H, w_hr, 0, H, rows.size());
  for (int64_t t = 0; t < T; ++t) {
    const int64_t nb = steps.active(t, rows);
    R* gt = gate_rows[t];
    if (rm)
      for (int64_t k = b0 * P; k < (b0 + nb) * P; ++k) hm[k] = h[k] * rm[k];
    rec_gemm(nb, hm + b0 * P, P, R(0), gt + b0 * G, G);  // a_t - u_t
    const R* cprev_all = c_rows[t];
    R* cnew_all = c_rows[t + 1];
    for_rows(rows, G, [&](int64_t b) {
      R* __restrict__ g = gt + b * G;
      const R* __restrict__ cp = cprev_all + b * H;
      R* __restrict__ cn = cnew_all + b * H;
      R* __restrict__ yr = yp + (t * B + b) * P;
      R* __restrict__ ctr = ctil_rows[t] + b * H;
      if (!steps.valid(t, b)) {  // padded step: carry the state, output zero
        std::memcpy(cn, cp, sizeof(R) * H);
        std::memcpy(ctr, cp, sizeof(R) * H);
        std::fill(g, g + G, R(0));
        std::fill(yr, yr + P, R(0));
        if (proj) std::fill(mb + b * H, mb + (b + 1) * H, R(0));
        return;
      }
      const U* __restrict__ ur = up + (t * B + b) * G;
      const R* __restrict__ kc = zc.row(t, b);
      const R* __restrict__ kh = zh.row(t, b);
      // one branch-free, vectorised pass over the gates; m_t lands in yr (no
      // proj: zoneout on h is applied right after) or in the proj buffer
      R* __restrict__ mr = proj ? mb + b * H : yr;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        R c_prev = cp[j];
        R i = sigmoid(g[j] + R(ur[j]) + pe[j] * c_prev);
        R f = sigmoid(g[H + j] + R(ur[H + j]) + pe[H + j] * c_prev);
        R gg = std::tanh(g[2 * H + j] + R(ur[2 * H + j]));
        R c = f * c_prev + i * gg;
        R o = sigmoid(g[3 * H + j] + R(ur[3 * H + j]) + pe[2 * H + j] * c);
        g[j] = i; g[H + j] = f; g[2 * H + j] = gg; g[3 * H + j] = o;
        ctr[j] = c;
        cn[j] = c + kc[j] * (c_prev - c);
        mr[j] = o * std::tanh(c);
      }
      if (!proj) {
        R* __restrict__ hr = h + b * P;
#pragma omp simd
        for (int64_t j = 0; j < P; ++j) {
          R v = yr[j] + kh[j] * (hr[j] - yr[j]);
          hr[j] = v;
          yr[j] = v;
        }
      }
    });
    if (proj) {
      (*proj_gemm)(nb, mb + b0 * H, H, R(0), hpb + b0 * P, P);  // h~_t = m_t W_hr^T
      for (int64_t b = rows.begin; b < rows.end; ++b) {
        if (!steps.valid(t, b)) continue;  // y already zero, h carried
        R* __restrict__ yr = yp + (t * B + b) * P;
        R* __restrict__ hr = h + b * P;
        const R* __restrict__ hv = hpb + b * P;
        const R* __restrict__ kh = zh.row(t, b);
#pragma omp simd
        for (int64_t j = 0; j < P; ++j) {
          R v = hv[j] + kh[j] * (hr[j] - hv[j]);
          hr[j] = v;
          yr[j] = v;
        }
      }
    }
  }
  // final c of each row = the carried state after its last valid step = cs[T]
  std::memcpy(c_n.data_ptr<R>() + b0 * H, c_rows[T] + b0 * H, sizeof(R) * rows.size() * H);
}

template <typename R>
void lstm_backward_impl(Rows rows, const Tensor& dy, const Tensor& gates, const Tensor& cs, const Tensor& ct,
                        const Tensor& w_hh, const Tensor& w_hr, const Tensor& w_peep, const OptTensor& lengths,
                        const Tensor& rmask, const OptTensor& zh_, const OptTensor& zc_, Tensor& dgates, Tensor& dh,
                        Tensor& dc, Tensor& dhp, Tensor& ms) {
  const int64_t T = gates.size(0), B = gates.size(1), G = gates.size(2), H = G / 4, P = dh.size(1);
  const bool proj = w_hr.defined();
  const auto opts = gates.options();
  MaybeVec<R> peep(w_peep, 3 * H, opts);
  const R* pe = peep.p;
  const R* rm = rmask.defined() ? rmask.data_ptr<R>() : nullptr;
  Keep<R> zh(zh_, P, opts), zc(zc_, H, opts);
  Steps steps(lengths, B);
  const R* dyp = dy.data_ptr<R>();
  const R* gp = gates.data_ptr<R>();
  const R* csp = cs.data_ptr<R>();
  const R* ctp = ct.numel() ? ct.data_ptr<R>() : nullptr;
  R* dgp = dgates.data_ptr<R>();
  R* dhv = dh.data_ptr<R>();  // running ∂L/∂h_t (B,P)
  R* dcv = dc.data_ptr<R>();  // running ∂L/∂c_t (B,H)
  // ∂L/∂h~_t (B,P) per step: saved for dW_hr with proj, a scratch row otherwise
  Tensor dht_scratch = proj ? Tensor() : at::empty({B, P}, opts);
  R* dhpp = proj ? dhp.data_ptr<R>() : dht_scratch.data_ptr<R>();
  const int64_t dhp_step = proj ? B * P : 0;
  R* msp = proj ? ms.data_ptr<R>() : nullptr;
  Tensor dm_buf = proj ? at::empty({B, H}, opts) : Tensor();
  Tensor rec_buf = rm ? at::empty({B, P}, opts) : Tensor();
  R* dmb = proj ? dm_buf.data_ptr<R>() : dhpp;  // without proj, ∂L/∂m_t = ∂L/∂h~_t
  R* rec = rm ? rec_buf.data_ptr<R>() : nullptr;

  const int64_t b0 = rows.begin;
  const StepGemm<R> back_gemm(false, P, G, w_hh, 0, P, rows.size());  // dgates_t W_hh
  std::optional<StepGemm<R>> proj_gemm;                              // ∂L/∂h~_t W_hr
  if (proj) proj_gemm.emplace(false, H, P, w_hr, 0, H, rows.size());
  for (int64_t t = T - 1; t >= 0; --t) {
    const int64_t nb = steps.active(t, rows);
    R* dgt = dgp + t * B * G;
    R* dht = dhpp + t * dhp_step;
    // ∂L/∂h~_t = (1 − kh)(∂L/∂h_t + dy_t); the kh part skips the cell (zoneout)
    for (int64_t b = rows.begin; b < rows.end; ++b) {
      R* __restrict__ d = dht + b * P;
      if (!steps.valid(t, b)) {
        std::fill(d, d + P, R(0));
        continue;
      }
      const R* __restrict__ kh = zh.row(t, b);
      const R* __restrict__ dyr = dyp + (t * B + b) * P;
      R* __restrict__ dhr = dhv + b * P;
#pragma omp simd
      for (int64_t j = 0; j < P; ++j) {
        R g = dhr[j] + dyr[j];
        d[j] = (R(1) - kh[j]) * g;
        dhr[j] = kh[j] * g;
      }
    }
    if (proj) (*proj_gemm)(nb, dht + b0 * P, P, R(0), dmb + b0 * H, H);  // ∂L/∂m_t = ∂L/∂h~_t W_hr
    const R* cprev_all = csp + t * B * H;
    const R* ctil_all = ctp ? ctp + t * B * H : csp + (t + 1) * B * H;
    for_rows(rows, G, [&](int64_t b) {
      R* __restrict__ dg = dgt + b * G;
      if (!steps.valid(t, b)) {  // state was carried: gradients pass through untouched
        std::fill(dg, dg + G, R(0));
        if (proj) std::fill(msp + (t * B + b) * H, msp + (t * B + b + 1) * H, R(0));
        return;
      }
      const R* __restrict__ g = gp + (t * B + b) * G;
      const R* __restrict__ cp = cprev_all + b * H;
      const R* __restrict__ ctl = ctil_all + b * H;
      R* __restrict__ dcr = dcv + b * H;
      const R* __restrict__ kc = zc.row(t, b);
      const R* __restrict__ dmr = dmb + b * H;
      if (proj) {
        R* __restrict__ mr = msp + (t * B + b) * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) mr[j] = g[3 * H + j] * std::tanh(ctl[j]);
      }
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        R i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j];
        R tc = std::tanh(ctl[j]);
        R dm = dmr[j];
        R dct = (R(1) - kc[j]) * dcr[j];
        R dao = dm * tc * o * (R(1) - o);
        dct += dm * o * (R(1) - tc * tc) + dao * pe[2 * H + j];
        R dai = dct * gg * i * (R(1) - i);
        R daf = dct * cp[j] * f * (R(1) - f);
        R dag = dct * i * (R(1) - gg * gg);
        dcr[j] = kc[j] * dcr[j] + dct * f + dai * pe[j] + daf * pe[H + j];
        dg[j] = dai; dg[H + j] = daf; dg[2 * H + j] = dag; dg[3 * H + j] = dao;
      }
    });
    // ∂L/∂h_{t-1} += (dgates_t W_hh) ⊙ rmask
    if (rm) {
      back_gemm(nb, dgt + b0 * G, G, R(0), rec + b0 * P, P);
      for (int64_t k = b0 * P; k < (b0 + nb) * P; ++k) dhv[k] += rec[k] * rm[k];
    } else {
      back_gemm(nb, dgt + b0 * G, G, R(1), dhv + b0 * P, P);
    }
  }
}

Tensor undef_if_none(const OptTensor& t) { return (t.has_value() && t->defined()) ? t->contiguous() : Tensor(); }

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_forward(
    const Tensor& u, const Tensor& w_hh, const OptTensor& w_hr, const OptTensor& w_peep, const Tensor& h0,
    const Tensor& c0, const OptTensor& lengths, const OptTensor& rmask, const OptTensor& zh, const OptTensor& zc,
    bool save) {
  const int64_t T = u.size(0), B = u.size(1), H = u.size(2) / 4, P = h0.size(1);
  auto uc = u.contiguous();
  auto W = w_hh.contiguous();
  auto Wr = undef_if_none(w_hr), pe = undef_if_none(w_peep), rm = undef_if_none(rmask);
  auto h0c = h0.contiguous(), c0c = c0.contiguous();
  const auto opts = h0.options();  // u may be bfloat16 (mixed precision); everything else is h0's dtype
  auto y = at::empty({T, B, P}, opts);
  auto h_n = h0c.clone();  // the running h_{t-1}
  auto c_n = at::empty({B, H}, opts);
  auto gates = at::empty({save ? T : 0, B, 4 * H}, opts);
  auto cs = at::empty({save ? T + 1 : 0, B, H}, opts);
  const bool need_ct = save && zc.has_value() && zc->defined();
  auto ct = at::empty({need_ct ? T : 0, B, H}, opts);
  dispatch_state_and_u(h0.scalar_type(), uc, "rnnkit_lstm_forward", [&](auto r, auto v) {
    split_batch(B, B * 4 * H * P, W.scalar_type() != h0.scalar_type(), [&](Rows rows) {
      lstm_forward_impl<decltype(r), decltype(v)>(rows, uc, W, Wr, pe, h0c, c0c, lengths, rm, zh, zc, y, h_n, c_n,
                                                  gates, cs, ct);
    });
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
  const auto gc = gates.contiguous(), csc = cs.contiguous(), ctc = ct.contiguous();
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "rnnkit_lstm_backward", [&] {
    split_batch(B, B * 4 * H * P, W.scalar_type() != gates.scalar_type(), [&](Rows rows) {
      lstm_backward_impl<scalar_t>(rows, dyc, gc, csc, ctc, W, Wr, pe, lengths, rm, zh, zc, dgates, dh, dc, dhp, ms);
    });
  });
  return {dgates, dh, dc, dhp, ms};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("lstm_forward", &lstm_forward);
  m.impl("lstm_backward", &lstm_backward);
}

}  // namespace rnnkit
