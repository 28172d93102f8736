// The tiny Point-BERT tokenizer (pointbert-tiny: widths 16, 32, 32, 32) fused per patch, float32,
// forward and backward, for the CPU. One patch's points, activations and statistics stay in L1
// and registers; torch's ops stream each layer's (P * k, C) tensor through memory instead.
//
// The function is PatchTokenizer's (mmmixlab/encoders/pointbert.py), per patch of k points:
//   h = relu(LN16(W1 x + b1))                      x: CIN = 3 or 6 input channels
//   f = W2 h + b2                                   (k, 32)
//   u = W3[:, :32] max_k f + W3[:, 32:] f + b3      (k, 32)
//   g = relu(LN32(u))
//   t = max_k (W4 g)                                (32,)  (the caller adds b4 once per patch)
// computed in float32 whatever the caller's autocast (the products accumulate in float32, the
// norms' statistics too). The forward also returns which row each max-pool chose (64 bytes a
// patch); backward recomputes the forward of those rows alone (cheaper than storing it, and
// only they carry gradient) and returns the parameters' gradients; the input's gradient is not
// computed (the caller only uses this when the patches do not require one). ReLU and the
// max-pools keep NaN as torch's do. Weight gradients are summed per chunk of CHUNK patches in
// float32 and the chunks added in order in float64, so the result does not depend on how many
// threads ran the chunks.
//
// Written with GCC/Clang vector extensions (vec.h), not intrinsics; built with -O3
// -march=native by mmmixlab.native on first use.
#include <ATen/ATen.h>  // not torch/extension.h, which triples the build time (bindings.cpp)
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "vec.h"

namespace {

using namespace mmmixlab_native;

// max(a, 0) lane by lane, NaN kept (torch's relu)
inline v16 relu(v16 a) { return (a > 0) | (a != a) ? a : (v16){}; }

constexpr int H1 = 16, MID = 32, H2 = 32, TOK = 32, KMAX = 64, CHUNK = 64, PB = 8;
constexpr int CHOICE = MID + TOK;  // a patch's max-pool rows: argp, then argt

struct Weights {  // row-major copies; "t": transposed (in, out) for the forward's products
  const float *w1t, *b1, *g1, *be1, *w2t, *w2, *b2, *w3at, *w3bt, *w3, *b3, *g2, *be2, *w4t, *w4;
  float eps;
};

struct Patch {  // one patch's forward, kept for its backward
  alignas(64) float xh1[KMAX * H1];
  alignas(64) float h[KMAX * H1];
  alignas(64) float f[KMAX * MID];
  alignas(64) float xh2[KMAX * H2];
  alignas(64) float g[KMAX * H2];
  alignas(64) float pooled[MID];
  alignas(64) float t[KMAX * TOK];
  alignas(64) float token[TOK];
  float rs1[KMAX], rs2[KMAX];
  int argp[MID], argt[TOK];
  // backward: the rows a max-pool chose (argp | argt) in order, and each row's slot among them
  int n, rows[KMAX], slot[KMAX];
};

struct Grads {  // float32 sums over one chunk of patches
  alignas(64) float w1t[8 * H1];  // (in, out); CIN <= 8
  alignas(64) float b1[H1];
  alignas(64) float g1[H1];
  alignas(64) float be1[H1];
  alignas(64) float w2[MID * H1];
  alignas(64) float b2[MID];
  alignas(64) float w3a[H2 * MID];
  alignas(64) float w3b[H2 * MID];
  alignas(64) float b3[H2];
  alignas(64) float g2[H2];
  alignas(64) float be2[H2];
  alignas(64) float w4[TOK * H2];
};

// arg[c]: the first of the k rows of a (k, C) block holding column c's maximum (or NaN)
inline void first_max_rows(const float* a, int k, int C, const float* max, int* arg) {
  for (int c = 0; c < C; ++c) {
    const bool nan = max[c] != max[c];
    int r = 0;
    for (int i = 0; i < k; ++i) {
      const float v = a[i * C + c];
      if (nan ? v != v : v == max[c]) { r = i; break; }
    }
    arg[c] = r;
  }
}

// o0/o1[p] (32 outputs as two vectors) = init + sum_c wt[c, :] rows[min(i0 + p, k - 1), c] for
// PB rows at once: the forward's three 32-wide products (rows of IN values, wt (IN, 32))
template <int IN>
inline void rows_times(const float* rows, int i0, int k, const float* wt, v16 init0, v16 init1,
                       v16* o0, v16* o1) {
  for (int p = 0; p < PB; ++p) { o0[p] = init0; o1[p] = init1; }
  for (int c = 0; c < IN; ++c) {
    const v16 w0 = ld(wt + c * 32), w1 = ld(wt + c * 32 + 16);
    for (int p = 0; p < PB; ++p) {
      const float v = rows[std::min(i0 + p, k - 1) * IN + c];
      o0[p] += w0 * v;
      o1[p] += w1 * v;
    }
  }
}

// rows i0.. of a (k, 32) block stored from o0/o1, and folded into the running max m0/m1
inline void store_rows_max(float* dst, int i0, int k, const v16* o0, const v16* o1, v16& m0,
                           v16& m1) {
  for (int p = 0; p < PB && i0 + p < k; ++p) {
    st(dst + (i0 + p) * 32, o0[p]);
    st(dst + (i0 + p) * 32 + 16, o1[p]);
    m0 = nanmax(m0, o0[p]);
    m1 = nanmax(m1, o1[p]);
  }
}

// h = relu(LN16(W1 x + b1)) of one point, its normalised values and 1/std kept (row `at`)
template <int CIN>
inline void first_layer_row(const float* xi, const Weights& w, Patch& s, int at) {
  v16 a = ld(w.b1);
  for (int c = 0; c < CIN; ++c) a += ld(w.w1t + c * H1) * xi[c];
  const float m = hsum(a) * (1.f / H1);
  const v16 d = a - m;
  const float rs = 1.f / std::sqrt(hsum(d * d) * (1.f / H1) + w.eps);
  st(s.xh1 + at * H1, d * rs);
  s.rs1[at] = rs;
  st(s.h + at * H1, relu(d * rs * ld(w.g1) + ld(w.be1)));
}

// g = relu(LN32(u)) of one point's u (two vectors), normalised values and 1/std kept (row `at`)
inline void second_norm_row(v16 u0, v16 u1, const Weights& w, Patch& s, int at) {
  const float m = (hsum(u0) + hsum(u1)) * (1.f / H2);
  const v16 d0 = u0 - m, d1 = u1 - m;
  const float rs = 1.f / std::sqrt((hsum(d0 * d0) + hsum(d1 * d1)) * (1.f / H2) + w.eps);
  st(s.xh2 + at * H2, d0 * rs);
  st(s.xh2 + at * H2 + 16, d1 * rs);
  s.rs2[at] = rs;
  st(s.g + at * H2, relu(d0 * rs * ld(w.g2) + ld(w.be2)));
  st(s.g + at * H2 + 16, relu(d1 * rs * ld(w.g2 + 16) + ld(w.be2 + 16)));
}

// W3a pooled + b3: the pooled half of the second layer, once per patch
inline void pooled_part(const Weights& w, const float* pooled, v16& pp0, v16& pp1) {
  pp0 = ld(w.b3);
  pp1 = ld(w.b3 + 16);
  for (int c = 0; c < MID; ++c) {
    pp0 += ld(w.w3at + c * H2) * pooled[c];
    pp1 += ld(w.w3at + c * H2 + 16) * pooled[c];
  }
}

template <int CIN>
void forward_patch(const float* __restrict x, int k, const Weights& w, Patch& s) {
  for (int i = 0; i < k; ++i) first_layer_row<CIN>(x + (size_t)i * CIN, w, s, i);
  const v16 b20 = ld(w.b2), b21 = ld(w.b2 + 16);
  v16 pool0 = bc(-INFINITY), pool1 = bc(-INFINITY);
  for (int i0 = 0; i0 < k; i0 += PB) {
    v16 f0[PB], f1[PB];
    rows_times<H1>(s.h, i0, k, w.w2t, b20, b21, f0, f1);
    store_rows_max(s.f, i0, k, f0, f1, pool0, pool1);
  }
  st(s.pooled, pool0);
  st(s.pooled + 16, pool1);
  first_max_rows(s.f, k, MID, s.pooled, s.argp);
  v16 pp0, pp1;
  pooled_part(w, s.pooled, pp0, pp1);
  v16 tok0 = bc(-INFINITY), tok1 = bc(-INFINITY);
  for (int i0 = 0; i0 < k; i0 += PB) {
    v16 u0[PB], u1[PB];
    rows_times<MID>(s.f, i0, k, w.w3bt, pp0, pp1, u0, u1);
    for (int p = 0; p < PB && i0 + p < k; ++p) second_norm_row(u0[p], u1[p], w, s, i0 + p);
    v16 t0[PB], t1[PB];
    rows_times<H2>(s.g, i0, k, w.w4t, (v16){}, (v16){}, t0, t1);
    store_rows_max(s.t, i0, k, t0, t1, tok0, tok1);
  }
  st(s.token, tok0);
  st(s.token + 16, tok1);
  first_max_rows(s.t, k, TOK, s.token, s.argt);
}

// The backward needs the forward only at the rows a max-pool chose: the token's max sends the
// gradient to its rows' g (and so u), the pooled feature's max to its rows' f, and every other
// row's gradient is exactly 0, adding exact zeros to every sum. Given the forward's choices
// (argp, argt), this recomputes those rows alone (a NaN row is always chosen: the pools keep
// NaN), in order, at their slots, with forward_patch's own code: the same bits, without the last
// layer or the other rows (for 32-point patches ~60% of the rows are chosen).
template <int CIN>
void recompute_chosen(const float* __restrict x, int k, const Weights& w, const uint8_t* choice,
                      Patch& s) {
  bool chosen[KMAX] = {};
  for (int c = 0; c < MID; ++c) chosen[s.argp[c] = choice[c]] = true;
  for (int o = 0; o < TOK; ++o) chosen[s.argt[o] = choice[MID + o]] = true;
  s.n = 0;
  for (int i = 0; i < k; ++i)
    if (chosen[i]) { s.slot[i] = s.n; s.rows[s.n++] = i; }
  const int n = s.n;
  for (int j = 0; j < n; ++j) first_layer_row<CIN>(x + (size_t)s.rows[j] * CIN, w, s, j);
  const v16 b20 = ld(w.b2), b21 = ld(w.b2 + 16);
  for (int j0 = 0; j0 < n; j0 += PB) {
    v16 f0[PB], f1[PB];
    rows_times<H1>(s.h, j0, n, w.w2t, b20, b21, f0, f1);
    for (int p = 0; p < PB && j0 + p < n; ++p) {
      st(s.f + (j0 + p) * MID, f0[p]);
      st(s.f + (j0 + p) * MID + 16, f1[p]);
    }
  }
  for (int c = 0; c < MID; ++c) s.pooled[c] = s.f[s.slot[s.argp[c]] * MID + c];  // the max
  v16 pp0, pp1;
  pooled_part(w, s.pooled, pp0, pp1);
  for (int j0 = 0; j0 < n; j0 += PB) {
    v16 u0[PB], u1[PB];
    rows_times<MID>(s.f, j0, n, w.w3bt, pp0, pp1, u0, u1);
    for (int p = 0; p < PB && j0 + p < n; ++p) second_norm_row(u0[p], u1[p], w, s, j0 + p);
  }
}

// LayerNorm + ReLU backward of one row of 16 * NV values; dgamma, dbeta accumulate
template <int NV>
inline void norm_relu_backward(const float* dy, const float* xh, float rs, const float* gamma,
                               const float* y, v16* dgamma, v16* dbeta, float* dx) {
  v16 gy[NV], xv[NV], dxh[NV];
  v16 sa = {}, sb = {};
  for (int v = 0; v < NV; ++v) {
    xv[v] = ld(xh + 16 * v);
    gy[v] = ld(y + 16 * v) > 0 ? ld(dy + 16 * v) : (v16){};
    dgamma[v] += gy[v] * xv[v];
    dbeta[v] += gy[v];
    dxh[v] = gy[v] * ld(gamma + 16 * v);
    sa += dxh[v];
    sb += dxh[v] * xv[v];
  }
  const float a = hsum(sa) * (1.f / (16 * NV)), b = hsum(sb) * (1.f / (16 * NV));
  for (int v = 0; v < NV; ++v) st(dx + 16 * v, (dxh[v] - a - xv[v] * b) * rs);
}

// acc (O, 16 NV) += sum_i d[i, o] r[i, :] over k rows (d: (k, O), r: (k, 16 NV))
template <int O, int NV>
inline void add_outer(const float* d, const float* r, int k, float* acc) {
  for (int o0 = 0; o0 < O; o0 += 4) {
    v16 a[4][NV];
    for (int q = 0; q < 4; ++q)
      for (int v = 0; v < NV; ++v) a[q][v] = (v16){};
    for (int i = 0; i < k; ++i) {
      v16 rv[NV];
      for (int v = 0; v < NV; ++v) rv[v] = ld(r + i * 16 * NV + 16 * v);
      for (int q = 0; q < 4; ++q) {
        const float dv = d[i * O + o0 + q];
        for (int v = 0; v < NV; ++v) a[q][v] += rv[v] * dv;
      }
    }
    for (int q = 0; q < 4; ++q)
      for (int v = 0; v < NV; ++v) {
        float* p = acc + (o0 + q) * 16 * NV + 16 * v;
        st(p, ld(p) + a[q][v]);
      }
  }
}

// The parameters' gradients of one patch from its tokens' gradient, over the chosen rows that
// recompute_chosen left in s (slot j is row s.rows[j]).
template <int CIN>
void backward_patch(const float* __restrict x, const Weights& w, const Patch& s,
                    const float* dtok, Grads& G) {
  const int n = s.n;
  // t = max_k W4 g: each output's gradient goes to its maximum's row
  alignas(64) float dg[KMAX * H2];
  std::memset(dg, 0, sizeof(float) * n * H2);
  for (int o = 0; o < TOK; ++o) {
    const int j = s.slot[s.argt[o]];
    const float d = dtok[o];
    float* r = G.w4 + o * H2;
    st(r, ld(r) + ld(s.g + j * H2) * d);
    st(r + 16, ld(r + 16) + ld(s.g + j * H2 + 16) * d);
    st(dg + j * H2, ld(dg + j * H2) + ld(w.w4 + o * H2) * d);
    st(dg + j * H2 + 16, ld(dg + j * H2 + 16) + ld(w.w4 + o * H2 + 16) * d);
  }
  alignas(64) float du[KMAX * H2];
  v16 dg2[2] = {ld(G.g2), ld(G.g2 + 16)}, dbe2[2] = {ld(G.be2), ld(G.be2 + 16)};
  for (int j = 0; j < n; ++j)
    norm_relu_backward<2>(dg + j * H2, s.xh2 + j * H2, s.rs2[j], w.g2, s.g + j * H2, dg2, dbe2,
                          du + j * H2);
  st(G.g2, dg2[0]); st(G.g2 + 16, dg2[1]); st(G.be2, dbe2[0]); st(G.be2 + 16, dbe2[1]);
  // u = W3b f + W3a pooled + b3
  add_outer<H2, 2>(du, s.f, n, G.w3b);
  alignas(64) float df[KMAX * MID];
  for (int j0 = 0; j0 < n; j0 += 4) {
    v16 a0[4], a1[4];
    for (int p = 0; p < 4; ++p) { a0[p] = (v16){}; a1[p] = (v16){}; }
    for (int o = 0; o < H2; ++o) {
      const v16 w0 = ld(w.w3 + o * 2 * MID + MID), w1 = ld(w.w3 + o * 2 * MID + MID + 16);
      for (int p = 0; p < 4; ++p) {
        const float d = du[std::min(j0 + p, n - 1) * H2 + o];
        a0[p] += w0 * d;
        a1[p] += w1 * d;
      }
    }
    for (int p = 0; p < 4 && j0 + p < n; ++p) {
      st(df + (j0 + p) * MID, a0[p]);
      st(df + (j0 + p) * MID + 16, a1[p]);
    }
  }
  v16 dpp0 = {}, dpp1 = {};
  for (int j = 0; j < n; ++j) { dpp0 += ld(du + j * H2); dpp1 += ld(du + j * H2 + 16); }
  alignas(64) float dpp[H2];
  st(dpp, dpp0); st(dpp + 16, dpp1);
  st(G.b3, ld(G.b3) + dpp0); st(G.b3 + 16, ld(G.b3 + 16) + dpp1);
  const v16 p0 = ld(s.pooled), p1 = ld(s.pooled + 16);
  v16 dpool0 = {}, dpool1 = {};
  for (int o = 0; o < H2; ++o) {
    const float d = dpp[o];
    st(G.w3a + o * MID, ld(G.w3a + o * MID) + p0 * d);
    st(G.w3a + o * MID + 16, ld(G.w3a + o * MID + 16) + p1 * d);
    dpool0 += ld(w.w3 + o * 2 * MID) * d;
    dpool1 += ld(w.w3 + o * 2 * MID + 16) * d;
  }
  for (int c = 0; c < MID; ++c)
    df[s.slot[s.argp[c]] * MID + c] += c < 16 ? dpool0[c] : dpool1[c - 16];
  // f = W2 h + b2
  add_outer<MID, 1>(df, s.h, n, G.w2);
  v16 db20 = {}, db21 = {};
  for (int j = 0; j < n; ++j) { db20 += ld(df + j * MID); db21 += ld(df + j * MID + 16); }
  st(G.b2, ld(G.b2) + db20); st(G.b2 + 16, ld(G.b2 + 16) + db21);
  alignas(64) float dh[KMAX * H1];
  for (int j0 = 0; j0 < n; j0 += PB) {
    v16 a[PB];
    for (int p = 0; p < PB; ++p) a[p] = (v16){};
    for (int o = 0; o < MID; ++o) {
      const v16 w0 = ld(w.w2 + o * H1);
      for (int p = 0; p < PB; ++p) a[p] += w0 * df[std::min(j0 + p, n - 1) * MID + o];
    }
    for (int p = 0; p < PB && j0 + p < n; ++p) st(dh + (j0 + p) * H1, a[p]);
  }
  // h = relu(LN16(W1 x + b1))
  v16 dg1[1] = {ld(G.g1)}, dbe1[1] = {ld(G.be1)};
  v16 db1 = {}, dw1[CIN];
  for (int c = 0; c < CIN; ++c) dw1[c] = (v16){};
  alignas(64) float da[H1];
  for (int j = 0; j < n; ++j) {
    norm_relu_backward<1>(dh + j * H1, s.xh1 + j * H1, s.rs1[j], w.g1, s.h + j * H1, dg1, dbe1,
                          da);
    const v16 dav = ld(da);
    const float* xi = x + (size_t)s.rows[j] * CIN;
    db1 += dav;
    for (int c = 0; c < CIN; ++c) dw1[c] += dav * xi[c];
  }
  st(G.g1, dg1[0]); st(G.be1, dbe1[0]);
  st(G.b1, ld(G.b1) + db1);
  for (int c = 0; c < CIN; ++c) st(G.w1t + c * H1, ld(G.w1t + c * H1) + dw1[c]);
}

struct Prepared {
  std::vector<at::Tensor> keep;
  Weights w;
};

Prepared prepare(const std::vector<at::Tensor>& p, double eps, int cin) {
  // p: w1 (16, cin), b1, g1, be1, w2 (32, 16), b2, w3 (32, 64), b3, g2, be2, w4 (32, 32)
  const std::vector<std::vector<int64_t>> shapes = {
      {H1, cin}, {H1}, {H1}, {H1}, {MID, H1}, {MID}, {H2, 2 * MID}, {H2}, {H2}, {H2}, {TOK, H2}};
  TORCH_CHECK(p.size() == shapes.size(), "fused tokenizer: expected 11 parameters, got ", p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    TORCH_CHECK(p[i].device().is_cpu() && p[i].scalar_type() == at::kFloat,
                "fused tokenizer: parameter ", i, " must be a float32 CPU tensor");
    TORCH_CHECK(p[i].sizes().vec() == shapes[i], "fused tokenizer: parameter ", i, " has shape ",
                p[i].sizes(), ", expected ", c10::IntArrayRef(shapes[i]));
  }
  Prepared r;
  r.keep = {p[0].t().contiguous(), p[1].contiguous(), p[2].contiguous(), p[3].contiguous(),
            p[4].t().contiguous(), p[4].contiguous(), p[5].contiguous(),
            p[6].narrow(1, 0, MID).t().contiguous(), p[6].narrow(1, MID, MID).t().contiguous(),
            p[6].contiguous(), p[7].contiguous(), p[8].contiguous(), p[9].contiguous(),
            p[10].t().contiguous(), p[10].contiguous()};
  auto f = [&](int i) { return r.keep[i].data_ptr<float>(); };
  r.w = Weights{f(0), f(1), f(2), f(3), f(4), f(5), f(6), f(7), f(8), f(9), f(10), f(11), f(12),
                f(13), f(14), (float)eps};
  return r;
}

void check_input(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 3, "fused tokenizer: patches must be (P, k, C), got ", x.sizes());
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "fused tokenizer: patches must be a contiguous float32 CPU tensor");
  TORCH_CHECK(x.size(1) >= 1 && x.size(1) <= KMAX, "fused tokenizer: 1 to ", KMAX,
              " points per patch, got ", x.size(1));
  TORCH_CHECK(x.size(2) == 3 || x.size(2) == 6, "fused tokenizer: 3 or 6 input channels, got ",
              x.size(2));
}

template <int CIN>
void forward_all(const at::Tensor& x, const Weights& w, at::Tensor& out, at::Tensor& choice) {
  const int64_t P = x.size(0), k = x.size(1);
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  uint8_t* cp = choice.data_ptr<uint8_t>();
  at::parallel_for(0, P, 16, [&](int64_t lo, int64_t hi) {
    auto s = std::make_unique<Patch>();
    for (int64_t p = lo; p < hi; ++p) {
      forward_patch<CIN>(xp + p * k * CIN, (int)k, w, *s);
      std::memcpy(op + p * TOK, s->token, sizeof(float) * TOK);
      for (int c = 0; c < MID; ++c) cp[p * CHOICE + c] = static_cast<uint8_t>(s->argp[c]);
      for (int o = 0; o < TOK; ++o) cp[p * CHOICE + MID + o] = static_cast<uint8_t>(s->argt[o]);
    }
  });
}

template <int CIN>
std::vector<double> backward_all(const at::Tensor& x, const at::Tensor& dtok,
                                 const at::Tensor& choice, const Weights& w) {
  const int64_t P = x.size(0), k = x.size(1), chunks = (P + CHUNK - 1) / CHUNK;
  const float* xp = x.data_ptr<float>();
  const float* dp = dtok.data_ptr<float>();
  const uint8_t* cp = choice.data_ptr<uint8_t>();
  std::vector<Grads> parts(chunks);
  at::parallel_for(0, chunks, 1, [&](int64_t lo, int64_t hi) {
    auto s = std::make_unique<Patch>();
    for (int64_t c = lo; c < hi; ++c) {
      Grads& G = parts[c];
      std::memset(&G, 0, sizeof(Grads));
      for (int64_t p = c * CHUNK; p < std::min(P, (c + 1) * CHUNK); ++p) {
        recompute_chosen<CIN>(xp + p * k * CIN, (int)k, w, cp + p * CHOICE, *s);
        backward_patch<CIN>(xp + p * k * CIN, w, *s, dp + p * TOK, G);
      }
    }
  });
  const size_t n = sizeof(Grads) / sizeof(float);
  std::vector<double> total(n, 0.0);
  for (const Grads& G : parts) {  // in chunk order: the same sums on any number of threads
    const float* g = reinterpret_cast<const float*>(&G);
    for (size_t i = 0; i < n; ++i) total[i] += g[i];
  }
  return total;
}

}  // namespace

// tokens (P, 32) and the max-pools' choices (P, 64) uint8: the pooled feature's rows, then the
// token's, which the backward needs
std::vector<at::Tensor> tokenizer_forward(at::Tensor x, std::vector<at::Tensor> params,
                                          double eps) {
  check_input(x);
  const int cin = (int)x.size(2);
  Prepared pr = prepare(params, eps, cin);
  auto out = at::empty({x.size(0), TOK}, x.options());
  auto choice = at::empty({x.size(0), CHOICE}, x.options().dtype(at::kByte));
  if (cin == 3) forward_all<3>(x, pr.w, out, choice); else forward_all<6>(x, pr.w, out, choice);
  return {out, choice};
}

std::vector<at::Tensor> tokenizer_backward(at::Tensor x, at::Tensor dtok, at::Tensor choice,
                                           std::vector<at::Tensor> params, double eps) {
  check_input(x);
  TORCH_CHECK(dtok.device().is_cpu() && dtok.scalar_type() == at::kFloat &&
                  dtok.is_contiguous() && dtok.dim() == 2 && dtok.size(0) == x.size(0) &&
                  dtok.size(1) == TOK,
              "fused tokenizer: the gradient must be a contiguous float32 (P, ", TOK, ") tensor");
  TORCH_CHECK(choice.device().is_cpu() && choice.scalar_type() == at::kByte &&
                  choice.is_contiguous() && choice.dim() == 2 && choice.size(0) == x.size(0) &&
                  choice.size(1) == CHOICE,
              "fused tokenizer: the choices must be the forward's contiguous uint8 (P, ", CHOICE,
              ") tensor");
  TORCH_CHECK(x.size(0) == 0 || choice.max().item<int>() < x.size(1),
              "fused tokenizer: a choice names a row past the patch's ", x.size(1), " points");
  const int cin = (int)x.size(2);
  Prepared pr = prepare(params, eps, cin);
  const std::vector<double> t = cin == 3 ? backward_all<3>(x, dtok, choice, pr.w)
                                         : backward_all<6>(x, dtok, choice, pr.w);
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  const double* base = t.data();
  Grads layout;
  auto grad_of = [&](const float* field, std::vector<int64_t> shape) {
    const size_t off = field - reinterpret_cast<const float*>(&layout);
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return at::from_blob(const_cast<double*>(base + off), {n}, f64).view(shape).to(at::kFloat);
  };
  auto w1 = grad_of(layout.w1t, {8, H1}).narrow(0, 0, cin).t().contiguous();
  auto w3 = at::cat({grad_of(layout.w3a, {H2, MID}), grad_of(layout.w3b, {H2, MID})}, 1);
  return {w1, grad_of(layout.b1, {H1}), grad_of(layout.g1, {H1}), grad_of(layout.be1, {H1}),
          grad_of(layout.w2, {MID, H1}), grad_of(layout.b2, {MID}), w3, grad_of(layout.b3, {H2}),
          grad_of(layout.g2, {H2}), grad_of(layout.be2, {H2}), grad_of(layout.w4, {TOK, H2})};
}
