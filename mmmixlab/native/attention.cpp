// Multi-head self-attention softmax(q k^T / sqrt(d)) v for short sequences on the CPU, float32,
// forward and backward, read straight from a transformer's packed qkv projection.
//
// The function is mmmixlab.encoders.common.attention's (torch's scaled_dot_product_attention,
// no mask, no dropout) for qkv of shape (B, T, 3, H, D), float32 or bfloat16 (read exactly as
// float32): out[b, i, h*D:(h+1)*D] = sum_j softmax_j(q_i . k_j / sqrt(D)) v_j, float32, in the
// (B, T, H * D) layout the output projection reads, so no permute or copy is needed on either
// side. The forward keeps each row's log-sum-exp; backward recomputes the probabilities from it
// (as flash attention does) and returns d qkv in qkv's dtype (bfloat16 rounded to nearest even,
// as torch's cast does):
//   dv_j = sum_i p_ij do_i,  dp_ij = do_i . v_j,  ds_ij = p_ij (dp_ij - sum_l p_il dp_il),
//   dq_i = sum_j ds_ij k_j / sqrt(D),  dk_j = sum_i ds_ij q_i / sqrt(D).
// (sum_l p_il dp_il = do_i . o_i, so the output is not kept.)
//
// Why: the tiny presets' attention is 4 heads of 32 over 65 tokens. torch's CPU flash kernel ran
// it at 3.4 ms forward, 6.1 ms backward a block for 64 clouds in float32, plus the casts and
// copies around it (its bf16 backward was 6x slower still). Here one (batch, head) slice's q, k,
// v, probabilities and gradients stay in L1; every product keeps its accumulators in registers.
//
// One slice per task (at::parallel_for); each slice's arithmetic is the same on any thread
// count. Written with GCC/Clang vector extensions (vec.h), built with -O3
// -march=native by mmmixlab.native on first use. NaN in q, k or v gives NaN rows, as in torch.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "vec.h"

namespace {

using namespace mmmixlab_native;

constexpr int TMAX = 128, DMAX = 64, TPMAX = TMAX;  // tokens, head width, padded tokens

// e^x lane by lane (Cephes' expf: x = n ln2 + r, |r| <= ln2 / 2, degree-5 polynomial in r,
// times 2^n from the exponent bits), to float32 rounding over the range used here (x <= 0: the
// outputs match float64 attention to 1e-5 relative, tests/test_fused_attention.py). NaN stays
// NaN; below -87 (e^-87 is under float32's resolution of a softmax row's sum, which is >= 1)
// it is 0, so exp(-inf) of the padding is 0.
inline v16 vexp(v16 x) {
  const auto underflow = x < -87.0f;
  x = underflow ? bc(-87.0f) : x;
  x = x > 88.0f ? bc(88.0f) : x;
  const v16 magic = bc(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const v16 t = x * 1.44269504088896341f + magic;
  const v16 n = t - magic;
  v16 r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  v16 p = bc(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  vi16 ti, magic_i;
  std::memcpy(&ti, &t, 64);
  std::memcpy(&magic_i, &magic, 64);
  const vi16 bits = ((ti - magic_i) + 127) << 23;
  v16 scale;
  std::memcpy(&scale, &bits, 64);
  return underflow ? (v16){} : p * scale;
}

// One (batch, head) slice in float32 scratch: rows of q, k, v (T x D), k and v transposed and
// padded to TP columns (D x TP), probabilities / score gradients (T x TP).
struct Slice {
  alignas(64) float q[TMAX * DMAX];
  alignas(64) float k[TMAX * DMAX];
  alignas(64) float v[TMAX * DMAX];
  alignas(64) float kt[DMAX * TPMAX];
  alignas(64) float vt[DMAX * TPMAX];
  alignas(64) float p[TMAX * TPMAX];
  alignas(64) float ds[TMAX * TPMAX];
  alignas(64) float rows[TMAX * DMAX];  // the gradient of the output (backward)
  alignas(64) float out[3][TMAX * DMAX];  // o (forward); dq, dk, dv (backward)
};

// 16 values from memory as float32 lanes (bfloat16: exactly, its bits are float32's top half)
inline v16 ld16(const float* p) { return ld(p); }
inline v16 ld16(const c10::BFloat16* p) {
  vh16 h;
  std::memcpy(&h, p, 32);
  const vi16 bits = __builtin_convertvector(h, vi16) << 16;
  v16 f;
  std::memcpy(&f, &bits, 64);
  return f;
}

// 16 float32 lanes to memory (bfloat16: rounded to nearest even, NaN kept a quiet NaN, as
// torch's cast rounds)
inline void st16(float* p, v16 v) { st(p, v); }
inline void st16(c10::BFloat16* p, v16 v) {
  vi16 bits;
  std::memcpy(&bits, &v, 64);
  const vi16 rounded = (bits + (0x7fff + ((bits >> 16) & 1))) >> 16;
  const vi16 nan = (bits >> 16) | 0x40;
  const vi16 half = (bits & 0x7fffffff) > 0x7f800000 ? nan : rounded;
  const vh16 h = __builtin_convertvector(half, vh16);
  std::memcpy(p, &h, 32);
}

// qkv or its gradient: float32 or bfloat16 elements, a run-time choice (templates on the dtype
// would double the build time for a branch taken once per 16 values)
struct Packed {
  void* data;
  bool bf16;
  v16 load(int64_t at) const {
    return bf16 ? ld16(static_cast<const c10::BFloat16*>(data) + at)
                : ld(static_cast<const float*>(data) + at);
  }
  void store(int64_t at, v16 v) const {
    if (bf16) st16(static_cast<c10::BFloat16*>(data) + at, v);
    else st(static_cast<float*>(data) + at, v);
  }
};

// q, k, v of slice (b, h) from the packed (B, T, 3, H, D) tensor as T x D float32 rows, k also
// as D x TP columns and, with `transpose_v`, v too (zero-padded)
void load_slice(const Packed& qkv, int64_t b, int64_t h, int t, int tp, int nh, int d, Slice& s,
                bool transpose_v) {
  const int64_t row = 3LL * nh * d;
  for (int i = 0; i < t; ++i) {
    const int64_t base = (b * t + i) * row + h * d;
    for (int c = 0; c < d; c += 16) {
      st(s.q + i * d + c, qkv.load(base + c));
      st(s.k + i * d + c, qkv.load(base + nh * d + c));
      st(s.v + i * d + c, qkv.load(base + 2 * nh * d + c));
    }
  }
  for (int c = 0; c < d; ++c) {
    for (int i = 0; i < t; ++i) s.kt[c * tp + i] = s.k[i * d + c];
    for (int i = t; i < tp; ++i) s.kt[c * tp + i] = 0.0f;
  }
  if (!transpose_v) return;
  for (int c = 0; c < d; ++c) {
    for (int i = 0; i < t; ++i) s.vt[c * tp + i] = s.v[i * d + c];
    for (int i = t; i < tp; ++i) s.vt[c * tp + i] = 0.0f;
  }
}

// out rows i0..i0+R-1 (each NT vectors wide): out[i][:] = scale * sum_c a[i][c] * bt[c][:]
// (a: T x D rows, bt: D x TP). The products q k^T and do v^T.
template <int NT, int R>
inline void rows_times_t(const float* a, const float* bt, int d, int tp, int i0, float scale,
                         float* out) {
  v16 acc[R][NT];
  for (int r = 0; r < R; ++r)
    for (int n = 0; n < NT; ++n) acc[r][n] = (v16){};
  for (int c = 0; c < d; ++c) {
    v16 col[NT];
    for (int n = 0; n < NT; ++n) col[n] = ld(bt + c * tp + 16 * n);
    for (int r = 0; r < R; ++r) {
      const v16 x = bc(a[(i0 + r) * d + c]);
      for (int n = 0; n < NT; ++n) acc[r][n] += x * col[n];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int n = 0; n < NT; ++n) st(out + (i0 + r) * tp + 16 * n, acc[r][n] * scale);
}

// out rows i0..i0+R-1 (D wide, ND vectors): out[i][:] = scale * sum_j w[i][j] * m[j][:], where
// w[i][j] is w[i * wi + j * wj] (wi, wj strides: p or its transpose) and m is T x D rows.
// The products p v, ds k (w row-major) and p^T do, ds^T q (w transposed).
template <int ND, int R>
inline void weights_times_rows(const float* w, int wi, int wj, const float* m, int d, int t,
                               int i0, float scale, float* out) {
  v16 acc[R][ND];
  for (int r = 0; r < R; ++r)
    for (int n = 0; n < ND; ++n) acc[r][n] = (v16){};
  for (int j = 0; j < t; ++j) {
    v16 row[ND];
    for (int n = 0; n < ND; ++n) row[n] = ld(m + j * d + 16 * n);
    for (int r = 0; r < R; ++r) {
      const v16 x = bc(w[(i0 + r) * wi + j * wj]);
      for (int n = 0; n < ND; ++n) acc[r][n] += x * row[n];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int n = 0; n < ND; ++n) st(out + (i0 + r) * d + 16 * n, acc[r][n] * scale);
}

template <int NT>
void scores(const float* a, const float* bt, int d, int tp, int t, float scale, float* out) {
  constexpr int R = NT <= 3 ? 4 : (NT <= 6 ? 3 : 2);
  int i = 0;
  for (; i + R <= t; i += R) rows_times_t<NT, R>(a, bt, d, tp, i, scale, out);
  for (; i < t; ++i) rows_times_t<NT, 1>(a, bt, d, tp, i, scale, out);
}

template <int ND>
void weighted_rows(const float* w, int wi, int wj, const float* m, int d, int t, float scale,
                   float* out) {
  constexpr int R = ND == 1 ? 8 : (ND == 2 ? 4 : 2);
  int i = 0;
  for (; i + R <= t; i += R) weights_times_rows<ND, R>(w, wi, wj, m, d, t, i, scale, out);
  for (; i < t; ++i) weights_times_rows<ND, 1>(w, wi, wj, m, d, t, i, scale, out);
}

// The lanes of the last score vector that are tokens (the rest is padding up to TP).
template <int NT>
inline v16 last_valid(int t) {
  v16 lane;
  for (int n = 0; n < 16; ++n) lane[n] = static_cast<float>(n);
  return lane < static_cast<float>(t - 16 * (NT - 1)) ? bc(1.0f) : (v16){};
}

// Row i of s (TP scores, T of them tokens) -> exp(s - m), its padding 0: with lse (backward)
// m = lse[i], the probabilities; without, m is the row's max and the row's sum is returned
// (the forward divides the output by it instead of every probability).
template <int NT>
inline float exp_row(float* row, v16 valid_last, const float* lse, int i, float* max_out) {
  const float ninf = -std::numeric_limits<float>::infinity();
  v16 x[NT];
  for (int n = 0; n < NT; ++n) x[n] = ld(row + 16 * n);
  x[NT - 1] = valid_last > 0.0f ? x[NT - 1] : bc(ninf);
  float m;
  if (lse) {
    m = lse[i];
  } else {
    v16 mv = x[0];
    for (int n = 1; n < NT; ++n) mv = nanmax(mv, x[n]);
    m = hmax(mv);
    *max_out = m;
  }
  v16 sum = (v16){};
  for (int n = 0; n < NT; ++n) {
    const v16 e = vexp(x[n] - m);  // the padding's -inf gives 0
    st(row + 16 * n, e);
    sum += e;
  }
  return lse ? 0.0f : hsum(sum);
}

template <int NT, int ND>
void forward_slices(const Packed& qkv, float* out, float* lse, int64_t B, int t, int nh) {
  constexpr int d = 16 * ND, tp = 16 * NT;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const v16 valid_last = last_valid<NT>(t);
  at::parallel_for(0, B * nh, 1, [&](int64_t lo, int64_t hi) {
    std::unique_ptr<Slice> s(new Slice);
    float* o = s->out[0];
    for (int64_t bh = lo; bh < hi; ++bh) {
      const int64_t b = bh / nh, h = bh % nh;
      load_slice(qkv, b, h, t, tp, nh, d, *s, false);
      scores<NT>(s->q, s->kt, d, tp, t, scale, s->p);
      float sums[TMAX];
      for (int i = 0; i < t; ++i) {
        float m = 0.0f;
        sums[i] = exp_row<NT>(s->p + i * tp, valid_last, nullptr, i, &m);
        lse[bh * t + i] = m + std::log(sums[i]);
      }
      weighted_rows<ND>(s->p, tp, 1, s->v, d, t, 1.0f, o);  // (sum_j e_ij v_j), then / sum_i
      for (int i = 0; i < t; ++i) {
        float* dst = out + ((b * t + i) * nh + h) * d;
        const v16 inv = bc(1.0f / sums[i]);
        for (int n = 0; n < ND; ++n) st(dst + 16 * n, ld(o + i * d + 16 * n) * inv);
      }
    }
  });
}

template <int NT, int ND>
void backward_slices(const Packed& qkv, const float* lse, const float* dout, const Packed& dqkv,
                     int64_t B, int t, int nh) {
  constexpr int d = 16 * ND, tp = 16 * NT;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const v16 valid_last = last_valid<NT>(t);
  at::parallel_for(0, B * nh, 1, [&](int64_t lo, int64_t hi) {
    std::unique_ptr<Slice> s(new Slice);
    auto& g = s->out;  // dq, dk, dv rows
    for (int64_t bh = lo; bh < hi; ++bh) {
      const int64_t b = bh / nh, h = bh % nh;
      load_slice(qkv, b, h, t, tp, nh, d, *s, true);
      for (int i = 0; i < t; ++i)
        std::memcpy(s->rows + i * d, dout + ((b * t + i) * nh + h) * d, sizeof(float) * d);
      scores<NT>(s->q, s->kt, d, tp, t, scale, s->p);
      for (int i = 0; i < t; ++i) exp_row<NT>(s->p + i * tp, valid_last, lse + bh * t, i, nullptr);
      scores<NT>(s->rows, s->vt, d, tp, t, 1.0f, s->ds);  // dp = do v^T
      for (int i = 0; i < t; ++i) {  // ds = p (dp - sum_l p_il dp_il); padded columns: p = 0
        const float* p = s->p + i * tp;
        float* ds = s->ds + i * tp;
        v16 acc = (v16){};
        for (int n = 0; n < NT; ++n) acc += ld(p + 16 * n) * ld(ds + 16 * n);
        float delta = 0.0f;
        for (int n = 0; n < 16; ++n) delta += acc[n];
        for (int n = 0; n < NT; ++n)
          st(ds + 16 * n, ld(p + 16 * n) * (ld(ds + 16 * n) - delta));
      }
      weighted_rows<ND>(s->ds, tp, 1, s->k, d, t, scale, g[0]);    // dq = ds k
      weighted_rows<ND>(s->ds, 1, tp, s->q, d, t, scale, g[1]);    // dk = ds^T q
      weighted_rows<ND>(s->p, 1, tp, s->rows, d, t, 1.0f, g[2]);   // dv = p^T do
      for (int i = 0; i < t; ++i) {
        const int64_t base = (b * t + i) * 3LL * nh * d + h * d;
        for (int part = 0; part < 3; ++part)
          for (int c = 0; c < d; c += 16)
            dqkv.store(base + part * nh * d + c, ld(g[part] + i * d + c));
      }
    }
  });
}

void check_qkv(const at::Tensor& qkv, int64_t heads) {
  TORCH_CHECK(qkv.device().is_cpu(), "fused attention: qkv must be on the CPU");
  TORCH_CHECK(qkv.scalar_type() == at::kFloat || qkv.scalar_type() == at::kBFloat16,
              "fused attention: qkv must be float32 or bfloat16, got ", qkv.scalar_type());
  TORCH_CHECK(qkv.dim() == 5 && qkv.size(2) == 3 && qkv.size(3) == heads,
              "fused attention: qkv must be (B, T, 3, heads=", heads, ", D), got ", qkv.sizes());
  TORCH_CHECK(qkv.size(1) >= 1 && qkv.size(1) <= TMAX, "fused attention: 1 to ", TMAX,
              " tokens, got ", qkv.size(1));
  const int64_t d = qkv.size(4);
  TORCH_CHECK(d == 16 || d == 32 || d == 64, "fused attention: head width 16, 32 or 64, got ", d);
  TORCH_CHECK(qkv.is_contiguous(), "fused attention: qkv must be contiguous");
}

// NT (padded tokens / 16) and ND (head width / 16) as template arguments
template <typename F>
void dispatch(int t, int d, F&& f) {
  const int nt = (t + 15) / 16, nd = d / 16;
#define MMMIX_ND(NT)                                                   \
  if (nd == 1) f(std::integral_constant<int, NT>{}, std::integral_constant<int, 1>{}); \
  else if (nd == 2) f(std::integral_constant<int, NT>{}, std::integral_constant<int, 2>{}); \
  else f(std::integral_constant<int, NT>{}, std::integral_constant<int, 4>{});
  switch (nt) {
    case 1: MMMIX_ND(1) break;
    case 2: MMMIX_ND(2) break;
    case 3: MMMIX_ND(3) break;
    case 4: MMMIX_ND(4) break;
    case 5: MMMIX_ND(5) break;
    case 6: MMMIX_ND(6) break;
    case 7: MMMIX_ND(7) break;
    default: MMMIX_ND(8) break;
  }
#undef MMMIX_ND
}

}  // namespace

// (B, T, 3, H, D) qkv -> (out (B, T, H * D) float32, lse (B, H, T) float32)
std::vector<at::Tensor> attention_forward(at::Tensor qkv, int64_t heads) {
  check_qkv(qkv, heads);
  const int64_t B = qkv.size(0);
  const int t = qkv.size(1), d = qkv.size(4);
  auto out = at::empty({B, t, heads * d}, qkv.options().dtype(at::kFloat));
  auto lse = at::empty({B, heads, t}, qkv.options().dtype(at::kFloat));
  const Packed in{qkv.data_ptr(), qkv.scalar_type() == at::kBFloat16};
  dispatch(t, d, [&](auto nt, auto nd) {
    forward_slices<decltype(nt)::value, decltype(nd)::value>(in, out.data_ptr<float>(),
                                                             lse.data_ptr<float>(), B, t, heads);
  });
  return {out, lse};
}

// d qkv (qkv's shape and dtype) from the output's gradient (B, T, H * D) float32
at::Tensor attention_backward(at::Tensor qkv, at::Tensor lse, at::Tensor dout, int64_t heads) {
  check_qkv(qkv, heads);
  const int64_t B = qkv.size(0);
  const int t = qkv.size(1), d = qkv.size(4);
  TORCH_CHECK(dout.scalar_type() == at::kFloat && dout.is_contiguous() &&
                  dout.sizes() == at::IntArrayRef({B, t, heads * d}),
              "fused attention: the output gradient must be contiguous float32 (B, T, H * D)");
  TORCH_CHECK(lse.scalar_type() == at::kFloat && lse.is_contiguous() &&
                  lse.sizes() == at::IntArrayRef({B, heads, t}),
              "fused attention: lse must be contiguous float32 (B, H, T)");
  auto dqkv = at::empty_like(qkv);
  const bool bf16 = qkv.scalar_type() == at::kBFloat16;
  const Packed in{qkv.data_ptr(), bf16}, grad{dqkv.data_ptr(), bf16};
  dispatch(t, d, [&](auto nt, auto nd) {
    backward_slices<decltype(nt)::value, decltype(nd)::value>(
        in, lse.data_ptr<float>(), dout.data_ptr<float>(), grad, B, t, heads);
  });
  return dqkv;
}
