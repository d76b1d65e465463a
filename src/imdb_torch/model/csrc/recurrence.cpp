// Fused CPU recurrences for imdb_torch.fused_rnn: the time loop of one LSTM or GRU layer
// (one direction), forward and backward, for a whole batch in one call; and the row sums of
// an embedding's backward (add_rows, at the end).
//
// PyTorch's CPU LSTM and GRU run a handful of tensor operations per time step; with the
// lesson's 8 units every one of them is tiny, so a step costs its dispatch overhead, and the
// GRU has no fused CPU kernel at all. Here the input projection W_ih·x + b and the weight
// gradients stay large matrix products in PyTorch; this file runs only the recurrence.
//
// Layouts (float32, C-contiguous, with the batch innermost: every loop below runs over
// contiguous batch columns and vectorises whatever the number of units). What PyTorch's matrix
// products read or write is feature-major, so that a layer's input projection W_ih · x is one
// matrix product of W_ih with x seen as [features, T·B]:
//   gx, dgx, dgh   [G, T, B]  input projections / their gradients,
//                             G = 4H (LSTM: i, f, g, o) or 3H (GRU: r, z, n)
//   h_all, dh_all  [H, T, B]  hidden state after each step (the layer's output), its gradient
//   w_hh           [G, H]     recurrent weights as nn.LSTM / nn.GRU hold them
// What only the kernel reads back is time-major, so that each step writes, and its backward
// reads, one contiguous block rather than a row in every feature's plane (measured inside a
// training step of the lesson's LSTM: a fifth less time forward, a tenth to a fifth backward):
//   act            [T, G, B]  activated gates
//   c_all, tanh_c  [T, H, B]  LSTM: cell state after each step (also the c_n PyTorch returns
//                             and the gradient dc_all), and its tanh
//   ghn            [T, H, B]  GRU: W_hn · h + b_hn
// Batch columns are independent, so threads split them and share nothing.
// `reverse` runs t = T-1 .. 0 (the backward direction of a bidirectional layer).
// Plain C++17 with no PyTorch headers: it compiles in about a second.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

// exp(x) for float: Cephes's range reduction and polynomial (about 2 ulp), written without
// branches or library calls so that loops over a gate vector vectorise.
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return e * scale;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

// tanh(x) = 2σ(2x) - 1: absolute error near 1e-7, which is what matters for a gate.
inline float tanh_approx(float x) { return 2.0f * sigmoid(2.0f * x) - 1.0f; }

// Runs body(first_column, end_column) on `threads` threads over columns [0, columns).
template <typename Body>
void parallel_columns(int64_t columns, int threads, Body body) {
  // Chunks of whole vectors (16 floats), so that threads never share a cache line.
  const int64_t chunk = ((columns + threads - 1) / threads + 15) / 16 * 16;
  std::vector<std::thread> workers;
  for (int i = 1; i < threads; ++i) {
    const int64_t begin = i * chunk, end = std::min(columns, begin + chunk);
    if (begin < end) workers.emplace_back(body, begin, end);
  }
  body(0, std::min(columns, chunk));
  for (auto& worker : workers) worker.join();
}

inline int64_t time_index(int64_t step, int64_t steps, bool reverse) {
  return reverse ? steps - 1 - step : step;
}

// The element-wise parts of a step, over one thread's n batch columns. They are separate
// functions because compilers trust __restrict__ on parameters: it lets every loop vectorise.

// out = x + Σ_k w[k] · h[k], h holding H rows of n columns; x: one row of n columns.
inline void matvec_columns(int64_t n, int64_t H, float* __restrict__ out,
                           const float* __restrict__ x, const float* __restrict__ w,
                           const float* __restrict__ h) {
  for (int64_t q = 0; q < n; ++q) out[q] = x[q];
  for (int64_t k = 0; k < H; ++k) {
    const float wk = w[k];
    const float* __restrict__ hk = h + k * n;
    for (int64_t q = 0; q < n; ++q) out[q] += wk * hk[q];
  }
}

// out += w · d
inline void add_scaled(int64_t n, float* __restrict__ out, float w, const float* __restrict__ d) {
  for (int64_t q = 0; q < n; ++q) out[q] += w * d[q];
}

inline void apply_sigmoid(int64_t n, float* __restrict__ out, const float* __restrict__ x,
                          float bias) {
  for (int64_t q = 0; q < n; ++q) out[q] = sigmoid(x[q] + bias);
}

inline void apply_tanh(int64_t n, float* __restrict__ out, const float* __restrict__ x) {
  for (int64_t q = 0; q < n; ++q) out[q] = tanh_approx(x[q]);
}

inline void lstm_cell(int64_t n, const float* __restrict__ i, const float* __restrict__ f,
                      const float* __restrict__ g, const float* __restrict__ o,
                      float* __restrict__ c, float* __restrict__ h, float* __restrict__ c_out,
                      float* __restrict__ tc_out, float* __restrict__ h_out) {
  for (int64_t q = 0; q < n; ++q) {
    const float cell = f[q] * c[q] + i[q] * g[q];
    const float tc = tanh_approx(cell);
    c[q] = c_out[q] = cell;
    tc_out[q] = tc;
    h[q] = h_out[q] = o[q] * tc;
  }
}

// Gate gradients of one unit. dh: the gradient from the step after; dc: likewise on entry,
// and on exit the one for the step before.
inline void lstm_cell_grad(int64_t n, const float* __restrict__ i, const float* __restrict__ f,
                           const float* __restrict__ g, const float* __restrict__ o,
                           const float* __restrict__ tc, const float* __restrict__ c_prev,
                           const float* __restrict__ dh_out, const float* __restrict__ dc_out,
                           const float* __restrict__ dh, float* __restrict__ dc,
                           float* __restrict__ di, float* __restrict__ df,
                           float* __restrict__ dg, float* __restrict__ d_o) {
  for (int64_t q = 0; q < n; ++q) {
    const float dhq = dh[q] + dh_out[q];
    const float dcq = dc[q] + dc_out[q] + dhq * o[q] * (1.0f - tc[q] * tc[q]);
    di[q] = dcq * g[q] * i[q] * (1.0f - i[q]);
    df[q] = dcq * c_prev[q] * f[q] * (1.0f - f[q]);
    dg[q] = dcq * i[q] * (1.0f - g[q] * g[q]);
    d_o[q] = dhq * tc[q] * o[q] * (1.0f - o[q]);
    dc[q] = dcq * f[q];
  }
}

inline void gru_cell(int64_t n, const float* __restrict__ r, const float* __restrict__ z,
                     const float* __restrict__ x, const float* __restrict__ gn,
                     float* __restrict__ candidate, float* __restrict__ h,
                     float* __restrict__ h_out) {
  for (int64_t q = 0; q < n; ++q) {
    const float nq = tanh_approx(x[q] + r[q] * gn[q]);
    candidate[q] = nq;
    h[q] = h_out[q] = (1.0f - z[q]) * nq + z[q] * h[q];
  }
}

// dh: the gradient from the step after on entry; on exit its part for the step before that
// flows through z ⊙ h (the caller adds W_hhᵀ · dgh).
inline void gru_cell_grad(int64_t n, const float* __restrict__ r, const float* __restrict__ z,
                          const float* __restrict__ candidate, const float* __restrict__ gn,
                          const float* __restrict__ h_prev, const float* __restrict__ dh_out,
                          float* __restrict__ dh, float* __restrict__ dxr,
                          float* __restrict__ dxz, float* __restrict__ dxn,
                          float* __restrict__ dhr, float* __restrict__ dhz,
                          float* __restrict__ dhn) {
  for (int64_t q = 0; q < n; ++q) {
    const float dhq = dh[q] + dh_out[q];
    const float nq = candidate[q];
    const float dn = dhq * (1.0f - z[q]) * (1.0f - nq * nq);
    const float dz = dhq * (h_prev[q] - nq) * z[q] * (1.0f - z[q]);
    const float dr = dn * gn[q] * r[q] * (1.0f - r[q]);
    dxr[q] = dhr[q] = dr;
    dxz[q] = dhz[q] = dz;
    dxn[q] = dn;
    dhn[q] = dn * r[q];
    dh[q] = dhq * z[q];
  }
}

}  // namespace

extern "C" {

// Saves, per step, the activated gates (act), the cell state (c_all) and its tanh (tanh_c).
void lstm_forward(int64_t B, int64_t T, int64_t H, const float* gx, const float* w_hh,
                  int reverse, int threads, float* h_all, float* c_all, float* tanh_c,
                  float* act) {
  const int64_t G = 4 * H;
  parallel_columns(B, threads, [&](int64_t b0, int64_t b1) {
    const int64_t n = b1 - b0;
    std::vector<float> h(H * n, 0.0f), c(H * n, 0.0f), pre(n);
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = time_index(s, T, reverse);
      auto gate = [&](int64_t j) { return act + (t * G + j) * B + b0; };
      for (int64_t j = 0; j < G; ++j) {
        matvec_columns(n, H, pre.data(), gx + (j * T + t) * B + b0, w_hh + j * H, h.data());
        if (j >= 2 * H && j < 3 * H) {
          apply_tanh(n, gate(j), pre.data());
        } else {
          apply_sigmoid(n, gate(j), pre.data(), 0.0f);
        }
      }
      for (int64_t k = 0; k < H; ++k) {
        const int64_t at = (k * T + t) * B + b0, saved = (t * H + k) * B + b0;
        lstm_cell(n, gate(k), gate(H + k), gate(2 * H + k), gate(3 * H + k), c.data() + k * n,
                  h.data() + k * n, c_all + saved, tanh_c + saved, h_all + at);
      }
    }
  });
}

// Gradients with respect to gx, from those with respect to h_all and c_all (dh_all, dc_all;
// either may be null when that output was not used).
void lstm_backward(int64_t B, int64_t T, int64_t H, const float* w_hh, const float* c_all,
                   const float* tanh_c, const float* act, const float* dh_all,
                   const float* dc_all, int reverse, int threads, float* dgx) {
  const int64_t G = 4 * H;
  parallel_columns(B, threads, [&](int64_t b0, int64_t b1) {
    const int64_t n = b1 - b0;
    // Absent inputs read as zeros, so that the element-wise loops have no branches.
    std::vector<float> dh(H * n, 0.0f), dc(H * n, 0.0f), zeros(n, 0.0f);
    for (int64_t s = T - 1; s >= 0; --s) {
      const int64_t t = time_index(s, T, reverse);
      const int64_t before = s > 0 ? time_index(s - 1, T, reverse) : -1;
      auto gate = [&](int64_t j) { return act + (t * G + j) * B + b0; };
      auto d_gate = [&](int64_t j) { return dgx + (j * T + t) * B + b0; };
      for (int64_t k = 0; k < H; ++k) {
        const int64_t at = (k * T + t) * B + b0, saved = (t * H + k) * B + b0;
        lstm_cell_grad(n, gate(k), gate(H + k), gate(2 * H + k), gate(3 * H + k), tanh_c + saved,
                       before >= 0 ? c_all + (before * H + k) * B + b0 : zeros.data(),
                       dh_all ? dh_all + at : zeros.data(), dc_all ? dc_all + saved : zeros.data(),
                       dh.data() + k * n, dc.data() + k * n, d_gate(k), d_gate(H + k),
                       d_gate(2 * H + k), d_gate(3 * H + k));
      }
      // The gradient reaching the previous step's hidden state: W_hhᵀ · d.
      std::fill(dh.begin(), dh.end(), 0.0f);
      for (int64_t j = 0; j < G; ++j)
        for (int64_t k = 0; k < H; ++k)
          add_scaled(n, dh.data() + k * n, w_hh[j * H + k], d_gate(j));
    }
  });
}

// nn.GRU's formulation (Keras's reset_after=True): r, z = σ(gx + W_hh·h + b_hh) for their
// rows; n = tanh(gx_n + r ⊙ (W_hn·h + b_hn)); h' = (1 - z) ⊙ n + z ⊙ h. Saves the activated
// gates (act [T, 3H, B]) and W_hn·h + b_hn (ghn [T, H, B]).
void gru_forward(int64_t B, int64_t T, int64_t H, const float* gx, const float* w_hh,
                 const float* b_hh, int reverse, int threads, float* h_all, float* ghn,
                 float* act) {
  const int64_t G = 3 * H;
  parallel_columns(B, threads, [&](int64_t b0, int64_t b1) {
    const int64_t n = b1 - b0;
    std::vector<float> h(H * n, 0.0f), pre(n), zeros(n, 0.0f);
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = time_index(s, T, reverse);
      auto gate = [&](int64_t j) { return act + (t * G + j) * B + b0; };
      for (int64_t j = 0; j < 2 * H; ++j) {
        matvec_columns(n, H, pre.data(), gx + (j * T + t) * B + b0, w_hh + j * H, h.data());
        apply_sigmoid(n, gate(j), pre.data(), b_hh[j]);
      }
      // W_hn·h + b_hn needs all of the old state, so all of it is computed before h changes.
      for (int64_t k = 0; k < H; ++k) {
        float* gn = ghn + (t * H + k) * B + b0;
        matvec_columns(n, H, gn, zeros.data(), w_hh + (2 * H + k) * H, h.data());
        for (int64_t q = 0; q < n; ++q) gn[q] += b_hh[2 * H + k];
      }
      for (int64_t k = 0; k < H; ++k) {
        const int64_t at = (k * T + t) * B + b0, saved = (t * H + k) * B + b0;
        gru_cell(n, gate(k), gate(H + k), gx + ((2 * H + k) * T + t) * B + b0, ghn + saved,
                 gate(2 * H + k), h.data() + k * n, h_all + at);
      }
    }
  });
}

// Gradients with respect to gx (dgx) and to W_hh·h + b_hh (dgh), both [3H, T, B], from
// those with respect to h_all.
void gru_backward(int64_t B, int64_t T, int64_t H, const float* w_hh, const float* h_all,
                  const float* ghn, const float* act, const float* dh_all, int reverse,
                  int threads, float* dgx, float* dgh) {
  const int64_t G = 3 * H;
  parallel_columns(B, threads, [&](int64_t b0, int64_t b1) {
    const int64_t n = b1 - b0;
    std::vector<float> dh(H * n, 0.0f), zeros(n, 0.0f);
    for (int64_t s = T - 1; s >= 0; --s) {
      const int64_t t = time_index(s, T, reverse);
      const int64_t before = s > 0 ? time_index(s - 1, T, reverse) : -1;
      auto at_gate = [&](int64_t j) { return (j * T + t) * B + b0; };
      auto gate = [&](int64_t j) { return act + (t * G + j) * B + b0; };
      for (int64_t k = 0; k < H; ++k) {
        const int64_t at = (k * T + t) * B + b0, saved = (t * H + k) * B + b0;
        gru_cell_grad(n, gate(k), gate(H + k), gate(2 * H + k), ghn + saved,
                      before >= 0 ? h_all + (k * T + before) * B + b0 : zeros.data(),
                      dh_all + at, dh.data() + k * n, dgx + at_gate(k), dgx + at_gate(H + k),
                      dgx + at_gate(2 * H + k), dgh + at_gate(k), dgh + at_gate(H + k),
                      dgh + at_gate(2 * H + k));
      }
      for (int64_t j = 0; j < G; ++j)
        for (int64_t k = 0; k < H; ++k)
          add_scaled(n, dh.data() + k * n, w_hh[j * H + k], dgh + at_gate(j));
    }
  });
}

// out[rows[i]] += values[i] for i < n, each a row of `width` floats, in order: an embedding's
// gradient (or Keras's per-occurrence squares) from its output's. PyTorch's CPU index_add_
// runs a general scatter that costs several times as much for the lesson's 6,400 rows of 16.
// The caller guarantees 0 <= rows[i] < the rows of out (the embedding's forward checked them).
void add_rows(int64_t n, int64_t width, const int64_t* rows, const float* values, float* out) {
  for (int64_t i = 0; i < n; ++i)
    add_scaled(width, out + rows[i] * width, 1.0f, values + i * width);
}

}  // extern "C"
