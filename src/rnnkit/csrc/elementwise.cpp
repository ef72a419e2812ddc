// Cells whose recurrence is element-wise (no W_hh): SRU and minGRU.
//
// There is no per-step GEMM, so each thread takes a block of rows and runs the
// whole time loop for them (no synchronisation per step); the loop is memory
// bound. f, r (SRU) and z (minGRU) are recomputed in backward from u and the
// saved states instead of being stored.
//
// SRU (u = W x + (0, b_f, b_r[, 0]): x~, W_f x + b_f, W_r x + b_r[, W_h x]; the highway x' is u's
// fourth block, or the input x itself (passed as `highway`) when input_size == hidden_size):
//   f = σ(u_f + v_f ⊙ c_{t-1}),  r = σ(u_r + v_r ⊙ c_{t-1})
//   c~ = f ⊙ c_{t-1} + (1 − f) ⊙ x~;  y_t = r ⊙ c~ + (1 − r) ⊙ x'
//   zoneout c_t = c~ + kc (c_{t-1} − c~)
//   forward  in : u (T,B,K) K = 3H or 4H, highway (T,B,H)? (when K = 3H), v (2H) = v_f, v_r, c0 (B,H),
//                 lengths?, zc (T,B,H)?
//            out: y (T,B,H), c_n (B,H), cs (T+1,B,H) states c_0..c_T (saved)
//   backward in : dy (T,B,H), dc_n (B,H), u, highway?, cs, v, lengths?, zc?
//            out: du (T,B,K), dhighway (T,B,H) (0 elements without `highway`), dc0 (B,H), dv (2H)
// minGRU (u = W x + b: u_z, h^):
//   z = σ(u_z);  h~ = (1 − z) ⊙ h_{t-1} + z ⊙ h^;  zoneout h_t = h~ + kh (h_{t-1} − h~);  y_t = h_t
//   forward  in : u (T,B,2H), h0 (B,H), lengths?, zh?      out: y (T,B,H), h_n (B,H)
//   backward in : dy, dh_n, u, y, h0, lengths?, zh?        out: du (T,B,2H), dh0 (B,H)
#include "common.h"

namespace rnnkit {
namespace {

template <typename F>
inline void for_row_blocks(int64_t B, int64_t work, const F& f) {
  if (B > 1 && work >= 32768) {
    at::parallel_for(0, B, 1, f);
  } else {
    f(0, B);
  }
}

template <typename R>
void sru_forward_impl(const Tensor& u, const Tensor& highway, const Tensor& v, const Tensor& c0,
                      const OptTensor& lengths, const OptTensor& zc_, Tensor& y, Tensor& c_n, Tensor& cs) {
  const int64_t T = u.size(0), B = u.size(1), K = u.size(2), H = v.size(0) / 2;
  // highway row (t, b) = hwp + (t * B + b) * hws
  const R* hwp = highway.defined() ? highway.data_ptr<R>() : u.data_ptr<R>() + 3 * H;
  const int64_t hws = highway.defined() ? H : K;
  Keep<R> zc(zc_, H, u.options());
  Steps steps(lengths, B);
  const R* up = u.data_ptr<R>();
  const R* vf = v.data_ptr<R>();
  const R* vr = vf + H;
  R* yp = y.data_ptr<R>();
  R* csp = cs.data_ptr<R>();
  std::memcpy(csp, c0.data_ptr<R>(), sizeof(R) * B * H);
  for_row_blocks(B, T * B * H, [&](int64_t b0, int64_t b1) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t b = b0; b < b1; ++b) {
        const R* __restrict__ cp = csp + (t * B + b) * H;
        R* __restrict__ cn = csp + ((t + 1) * B + b) * H;
        R* __restrict__ yr = yp + (t * B + b) * H;
        if (!steps.valid(t, b)) {
          std::memcpy(cn, cp, sizeof(R) * H);
          std::fill(yr, yr + H, R(0));
          continue;
        }
        const R* __restrict__ ur = up + (t * B + b) * K;
        const R* __restrict__ hw = hwp + (t * B + b) * hws;
        const R* __restrict__ kc = zc.row(t, b);
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          R f = sigmoid(ur[H + j] + vf[j] * cp[j]);
          R r = sigmoid(ur[2 * H + j] + vr[j] * cp[j]);
          R c = f * cp[j] + (R(1) - f) * ur[j];
          yr[j] = r * c + (R(1) - r) * hw[j];
          cn[j] = c + kc[j] * (cp[j] - c);
        }
      }
    }
  });
  c_n.copy_(cs.select(0, T));
}

template <typename R>
void sru_backward_impl(const Tensor& dy, const Tensor& u, const Tensor& highway, const Tensor& cs, const Tensor& v,
                       const OptTensor& lengths, const OptTensor& zc_, Tensor& du, Tensor& dhw, Tensor& dc,
                       Tensor& dv_rows) {
  const int64_t T = u.size(0), B = u.size(1), K = u.size(2), H = v.size(0) / 2;
  const R* hwp = highway.defined() ? highway.data_ptr<R>() : u.data_ptr<R>() + 3 * H;
  R* dhwp = highway.defined() ? dhw.data_ptr<R>() : du.data_ptr<R>() + 3 * H;
  const int64_t hws = highway.defined() ? H : K;
  Keep<R> zc(zc_, H, u.options());
  Steps steps(lengths, B);
  const R* up = u.data_ptr<R>();
  const R* csp = cs.data_ptr<R>();
  const R* dyp = dy.data_ptr<R>();
  const R* vf = v.data_ptr<R>();
  const R* vr = vf + H;
  R* dup = du.data_ptr<R>();
  R* dcv = dc.data_ptr<R>();
  R* dvp = dv_rows.data_ptr<R>();
  for_row_blocks(B, T * B * H, [&](int64_t b0, int64_t b1) {
    for (int64_t t = T - 1; t >= 0; --t) {
      for (int64_t b = b0; b < b1; ++b) {
        R* __restrict__ d = dup + (t * B + b) * K;
        R* __restrict__ dh = dhwp + (t * B + b) * hws;
        if (!steps.valid(t, b)) {
          std::fill(d, d + K, R(0));
          std::fill(dh, dh + H, R(0));
          continue;
        }
        const R* __restrict__ ur = up + (t * B + b) * K;
        const R* __restrict__ hw = hwp + (t * B + b) * hws;
        const R* __restrict__ cp = csp + (t * B + b) * H;
        const R* __restrict__ dyr = dyp + (t * B + b) * H;
        const R* __restrict__ kc = zc.row(t, b);
        R* __restrict__ dcr = dcv + b * H;
        R* __restrict__ dvf = dvp + b * 2 * H;
        R* __restrict__ dvr = dvf + H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          R f = sigmoid(ur[H + j] + vf[j] * cp[j]);
          R r = sigmoid(ur[2 * H + j] + vr[j] * cp[j]);
          R c = f * cp[j] + (R(1) - f) * ur[j];
          R dct = (R(1) - kc[j]) * dcr[j] + dyr[j] * r;
          R dar = dyr[j] * (c - hw[j]) * r * (R(1) - r);
          R daf = dct * (cp[j] - ur[j]) * f * (R(1) - f);
          d[j] = dct * (R(1) - f);
          d[H + j] = daf;
          d[2 * H + j] = dar;
          dh[j] = dyr[j] * (R(1) - r);
          dvf[j] += daf * cp[j];
          dvr[j] += dar * cp[j];
          dcr[j] = kc[j] * dcr[j] + dct * f + daf * vf[j] + dar * vr[j];
        }
      }
    }
  });
}

template <typename R>
void mingru_forward_impl(const Tensor& u, const Tensor& h0, const OptTensor& lengths, const OptTensor& zh_, Tensor& y,
                         Tensor& h_n) {
  const int64_t T = u.size(0), B = u.size(1), H = u.size(2) / 2, K = 2 * H;
  Keep<R> zh(zh_, H, u.options());
  Steps steps(lengths, B);
  const R* up = u.data_ptr<R>();
  R* yp = y.data_ptr<R>();
  h_n.copy_(h0);
  R* h = h_n.data_ptr<R>();
  for_row_blocks(B, T * B * H, [&](int64_t b0, int64_t b1) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t b = b0; b < b1; ++b) {
        R* __restrict__ yr = yp + (t * B + b) * H;
        if (!steps.valid(t, b)) {
          std::fill(yr, yr + H, R(0));
          continue;
        }
        const R* __restrict__ ur = up + (t * B + b) * K;
        const R* __restrict__ kh = zh.row(t, b);
        R* __restrict__ hr = h + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          R z = sigmoid(ur[j]);
          R hv = (R(1) - z) * hr[j] + z * ur[H + j];
          hv += kh[j] * (hr[j] - hv);
          hr[j] = hv;
          yr[j] = hv;
        }
      }
    }
  });
}

template <typename R>
void mingru_backward_impl(const Tensor& dy, const Tensor& u, const Tensor& y, const Tensor& h0,
                          const OptTensor& lengths, const OptTensor& zh_, Tensor& du, Tensor& dh) {
  const int64_t T = u.size(0), B = u.size(1), H = u.size(2) / 2, K = 2 * H;
  Keep<R> zh(zh_, H, u.options());
  Steps steps(lengths, B);
  const R* up = u.data_ptr<R>();
  const R* yp = y.data_ptr<R>();
  const R* h0p = h0.data_ptr<R>();
  const R* dyp = dy.data_ptr<R>();
  R* dup = du.data_ptr<R>();
  R* dhv = dh.data_ptr<R>();
  for_row_blocks(B, T * B * H, [&](int64_t b0, int64_t b1) {
    for (int64_t t = T - 1; t >= 0; --t) {
      for (int64_t b = b0; b < b1; ++b) {
        R* __restrict__ d = dup + (t * B + b) * K;
        if (!steps.valid(t, b)) {
          std::fill(d, d + K, R(0));
          continue;
        }
        const R* __restrict__ ur = up + (t * B + b) * K;
        const R* __restrict__ hp = (t == 0 ? h0p : yp + (t - 1) * B * H) + b * H;
        const R* __restrict__ dyr = dyp + (t * B + b) * H;
        const R* __restrict__ kh = zh.row(t, b);
        R* __restrict__ dhr = dhv + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          R z = sigmoid(ur[j]);
          R gs = dhr[j] + dyr[j];
          R dht = (R(1) - kh[j]) * gs;
          d[j] = dht * (ur[H + j] - hp[j]) * z * (R(1) - z);
          d[H + j] = dht * z;
          dhr[j] = kh[j] * gs + dht * (R(1) - z);
        }
      }
    }
  });
}

std::tuple<Tensor, Tensor, Tensor> sru_forward(const Tensor& u, const OptTensor& highway, const Tensor& v,
                                               const Tensor& c0, const OptTensor& lengths, const OptTensor& zc) {
  const int64_t T = u.size(0), B = u.size(1), H = v.size(0) / 2;
  auto hw = contiguous_or_undefined(highway);
  auto o = u.options();
  auto y = at::empty({T, B, H}, o), c_n = at::empty({B, H}, o), cs = at::empty({T + 1, B, H}, o);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "rnnkit_sru_forward", [&] {
    sru_forward_impl<scalar_t>(u.contiguous(), hw, v.contiguous(), c0.contiguous(), lengths, zc, y, c_n, cs);
  });
  return {y, c_n, cs};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> sru_backward(const Tensor& dy, const Tensor& dc_n, const Tensor& u,
                                                        const OptTensor& highway, const Tensor& cs, const Tensor& v,
                                                        const OptTensor& lengths, const OptTensor& zc) {
  const int64_t T = u.size(0), B = u.size(1), H = v.size(0) / 2;
  auto hw = contiguous_or_undefined(highway);
  auto du = at::empty_like(u);
  auto dhw = at::empty({hw.defined() ? T : 0, B, H}, u.options());
  auto dc = dc_n.contiguous().clone();
  auto dv = at::zeros({B, 2 * H}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "rnnkit_sru_backward", [&] {
    sru_backward_impl<scalar_t>(dy.contiguous(), u.contiguous(), hw, cs.contiguous(), v.contiguous(), lengths, zc, du,
                                dhw, dc, dv);
  });
  return {du, dhw, dc, dv.sum(0)};
}

std::tuple<Tensor, Tensor> mingru_forward(const Tensor& u, const Tensor& h0, const OptTensor& lengths,
                                          const OptTensor& zh) {
  const int64_t T = u.size(0), B = u.size(1), H = u.size(2) / 2;
  auto y = at::empty({T, B, H}, u.options()), h_n = at::empty({B, H}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "rnnkit_mingru_forward", [&] {
    mingru_forward_impl<scalar_t>(u.contiguous(), h0.contiguous(), lengths, zh, y, h_n);
  });
  return {y, h_n};
}

std::tuple<Tensor, Tensor> mingru_backward(const Tensor& dy, const Tensor& dh_n, const Tensor& u, const Tensor& y,
                                           const Tensor& h0, const OptTensor& lengths, const OptTensor& zh) {
  auto du = at::empty_like(u);
  auto dh = dh_n.contiguous().clone();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "rnnkit_mingru_backward", [&] {
    mingru_backward_impl<scalar_t>(dy.contiguous(), u.contiguous(), y.contiguous(), h0.contiguous(), lengths, zh, du,
                                   dh);
  });
  return {du, dh};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("sru_forward", &sru_forward);
  m.impl("sru_backward", &sru_backward);
  m.impl("mingru_forward", &mingru_forward);
  m.impl("mingru_backward", &mingru_backward);
}

}  // namespace rnnkit

// The setter behind rnnkit.backends.set_step_gemm (called through ctypes): -1 auto, else a GemmRoute.
extern "C" void rnnkit_set_step_gemm(int route) { rnnkit::forced_step_gemm().store(route); }
extern "C" int rnnkit_step_gemm() { return rnnkit::forced_step_gemm().load(); }
// Whether a bfloat16 recurrent weight runs the step GEMM in bfloat16 here (oneDNN's brgemm on AMX or
// AVX512-BF16); elsewhere it is widened to float32 (rnnkit.backends.extension.bf16_step_gemm).
extern "C" int rnnkit_bf16_step_gemm() { return rnnkit::Bf16Gemm::available() ? 1 : 0; }
// The setter behind rnnkit.backends.set_recurrence_threads: 0 auto, 1 never split the batch, n >= 2 into n blocks.
extern "C" void rnnkit_set_recurrence_threads(int threads) { rnnkit::forced_recurrence_threads().store(threads); }
// How many row blocks a time loop over `batch` rows with a per-step product of `step_gemm_size`
// (rows x n x k) runs in, now (rnnkit.backends.extension.recurrence_blocks).
extern "C" int64_t rnnkit_recurrence_blocks(int64_t batch, int64_t step_gemm_size) {
  return rnnkit::recurrence_blocks(batch, step_gemm_size, false);
}
// The measured step-GEMM routes (common.h: RouteCache), for rnnkit.backends.extension's per-machine file:
// entries as (rows, n, k, threads, route), how many shapes this process measured, and a reset for tests.
extern "C" int64_t rnnkit_route_measurements() { return rnnkit::RouteCache::get().measurements.load(); }
extern "C" void rnnkit_route_cache_clear() { rnnkit::RouteCache::get().clear(); }
extern "C" void rnnkit_route_cache_put(int64_t rows, int64_t n, int64_t k, int64_t threads, int64_t route) {
  rnnkit::RouteCache::get().put({rows, n, k, threads}, static_cast<rnnkit::GemmRoute>(route));
}
// Writes up to `capacity` entries as 5 int64 each into `out`; returns the number of entries in the cache.
extern "C" int64_t rnnkit_route_cache_entries(int64_t* out, int64_t capacity) {
  const auto entries = rnnkit::RouteCache::get().entries();
  for (int64_t i = 0; i < std::min<int64_t>(capacity, entries.size()); ++i) {
    const auto& [key, route] = entries[i];
    for (int j = 0; j < 4; ++j) out[5 * i + j] = key[j];
    out[5 * i + 4] = static_cast<int64_t>(route);
  }
  return entries.size();
}
