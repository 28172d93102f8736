// Vector helpers shared by the compiled kernels (tokenizer.cpp, attention.cpp): 16 float lanes
// through GCC/Clang vector extensions (one AVX-512 register, two AVX2 ones; no intrinsics),
// loads and stores through memcpy (no alignment assumed), a horizontal sum as a tree of halves,
// and maxima that keep NaN as torch.max does.
#pragma once

#include <cstdint>
#include <cstring>

namespace mmmixlab_native {

typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));
typedef int32_t vi16 __attribute__((vector_size(64)));
typedef uint16_t vh16 __attribute__((vector_size(32)));

inline v16 ld(const float* p) { v16 v; std::memcpy(&v, p, 64); return v; }
inline void st(float* p, v16 v) { std::memcpy(p, &v, 64); }
inline v16 bc(float s) { return (v16){} + s; }

inline float hsum(v16 v) {  // 4 dependent adds, not 15
  v8 lo, hi;
  std::memcpy(&lo, &v, 32);
  std::memcpy(&hi, reinterpret_cast<char*>(&v) + 32, 32);
  const v8 s8 = lo + hi;
  v4 a, b;
  std::memcpy(&a, &s8, 16);
  std::memcpy(&b, reinterpret_cast<const char*>(&s8) + 16, 16);
  const v4 s4 = a + b;
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

// b where it is larger than a or NaN, lane by lane: once NaN, a running max stays NaN
inline v16 nanmax(v16 a, v16 b) { return (b > a) | (b != b) ? b : a; }
inline v8 nanmax(v8 a, v8 b) { return (b > a) | (b != b) ? b : a; }
inline v4 nanmax(v4 a, v4 b) { return (b > a) | (b != b) ? b : a; }

inline float hmax(v16 v) {  // NaN if any lane is
  v8 lo, hi;
  std::memcpy(&lo, &v, 32);
  std::memcpy(&hi, reinterpret_cast<char*>(&v) + 32, 32);
  const v8 m8 = nanmax(lo, hi);
  v4 a, b;
  std::memcpy(&a, &m8, 16);
  std::memcpy(&b, reinterpret_cast<const char*>(&m8) + 16, 16);
  const v4 m4 = nanmax(a, b);
  float m = m4[0];
  for (int n = 1; n < 4; ++n) m = (m4[n] > m || m4[n] != m4[n]) ? m4[n] : m;
  return m;
}

}  // namespace mmmixlab_native
