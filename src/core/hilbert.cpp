// A generalised Hilbert curve over any height x width rectangle (docs/design.md 1.2).
//
// A rectangle is walked from one corner to the next corner along its major side a, through
// edge-adjacent cells only. Long rectangles (2|a| > 3|b|) are cut across a into two halves
// walked one after the other; others are cut into three parts: the lower part of the first
// half of a (walked along b), the whole upper part (walked along a), and the lower part of
// the second half (walked back along -b). The cuts are the ones nearest the halves for which
// every part can be walked: by a colouring argument an L x M walk between those corners
// exists iff M == 1, or L >= 2 and (L is even or M is odd); such a cut always exists when the
// rectangle itself can be walked, so the whole curve moves between grid neighbours only.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "dilated/dilated.hpp"

namespace dilated {
namespace {

bool walkable(int64_t major, int64_t minor) {
  if (minor == 1) return true;
  return major >= 2 && (major % 2 == 0 || minor % 2 == 1);
}

// 0, 1, -1, 2, -2, ...: offsets from a half, nearest first.
int64_t nth_offset(int64_t i) {
  return i % 2 == 1 ? (i + 1) / 2 : -(i / 2);
}

struct Vec2 {
  int64_t x, y;
  Vec2 operator*(int64_t s) const { return {x * s, y * s}; }
  Vec2 operator+(Vec2 o) const { return {x + o.x, y + o.y}; }
  Vec2 operator-() const { return {-x, -y}; }
};

int64_t length(Vec2 v) {
  return std::llabs(v.x) + std::llabs(v.y);
}

Vec2 unit(Vec2 v) {
  return {v.x > 0 ? 1 : v.x < 0 ? -1 : 0, v.y > 0 ? 1 : v.y < 0 ? -1 : 0};
}

class Walker {
 public:
  Walker(int64_t width, int64_t* out) : width_(width), out_(out) {}

  // Visits the rectangle spanned from `origin` by the axis-aligned sides a (major) and b,
  // from origin to origin + (|a| - 1) unit(a).
  void walk(Vec2 origin, Vec2 a, Vec2 b) {
    const int64_t L = length(a), M = length(b);
    const Vec2 ua = unit(a), ub = unit(b);
    if (M == 1) {
      for (int64_t i = 0; i < L; ++i) visit(origin + ua * i);
      return;
    }
    if (2 * L > 3 * M) {
      for (int64_t i = 0; i < 2 * L; ++i) {
        const int64_t L1 = L / 2 + nth_offset(i);
        if (L1 >= 1 && L1 < L && walkable(L1, M) && walkable(L - L1, M)) {
          walk(origin, ua * L1, b);
          walk(origin + ua * L1, ua * (L - L1), b);
          return;
        }
      }
    }
    // Nearest feasible (M1, L1) by total distance from the halves.
    for (int64_t distance = 0; distance < L + M; ++distance) {
      for (int64_t i = 0; i <= 2 * distance; ++i) {
        for (int64_t j = 0; j <= 2 * distance; ++j) {
          const int64_t di = nth_offset(i), dj = nth_offset(j);
          if (std::llabs(di) + std::llabs(dj) != distance) continue;
          const int64_t M1 = M / 2 + di, L1 = L / 2 + dj;
          if (M1 < 1 || M1 >= M || L1 < 1 || L1 >= L) continue;
          if (!walkable(M1, L1) || !walkable(L, M - M1) || !walkable(M1, L - L1)) continue;
          walk(origin, ub * M1, ua * L1);
          walk(origin + ub * M1, a, ub * (M - M1));
          walk(origin + ua * (L - 1) + ub * (M1 - 1), -(ub * M1), -(ua * (L - L1)));
          return;
        }
      }
    }
    // Unreachable for walkable rectangles (see above); rows back and forth keep it a bijection.
    for (int64_t j = 0; j < M; ++j) {
      for (int64_t i = 0; i < L; ++i) visit(origin + ub * j + ua * (j % 2 == 0 ? i : L - 1 - i));
    }
  }

 private:
  void visit(Vec2 cell) { out_[next_++] = cell.y * width_ + cell.x; }

  int64_t width_;
  int64_t* out_;
  int64_t next_ = 0;
};

}  // namespace

std::vector<int64_t> hilbert_order(int64_t height, int64_t width) {
  if (height < 1 || width < 1) return {};
  std::vector<int64_t> order(static_cast<size_t>(height * width));
  Walker walker(width, order.data());
  // The major side must be walkable; of two, the longer one keeps the curve's parts square.
  const bool along_x = walkable(width, height) && (width >= height || !walkable(height, width));
  if (along_x) {
    walker.walk({0, 0}, {width, 0}, {0, height});
  } else {
    walker.walk({0, 0}, {0, height}, {width, 0});
  }
  return order;
}

}  // namespace dilated
