// Messages assembled without iostreams. In the PyTorch image of the GPU machines, formatting a
// number through std::ostream inside the Python extension crashed the interpreter (SIGSEGV in
// std::ostream::_M_insert<long>; bench/NOTES.md, "Python package"), with either compiler
// there; std::to_string and snprintf work everywhere. Library and binding code use this.
#pragma once

#include <cstdio>
#include <string>
#include <type_traits>

namespace dilated {

inline void append_text(std::string& s, const std::string& x) {
  s += x;
}
inline void append_text(std::string& s, const char* x) {
  s += x;
}
inline void append_text(std::string& s, char x) {
  s += x;
}
// Numbers as std::ostream prints them by default (bool as 0/1, floating point like %g).
template <class T>
std::enable_if_t<std::is_arithmetic_v<T>> append_text(std::string& s, T x) {
  if constexpr (std::is_floating_point_v<T>) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%g", static_cast<double>(x));
    s += buffer;
  } else if constexpr (std::is_same_v<T, bool>) {
    s += x ? '1' : '0';
  } else {
    s += std::to_string(x);
  }
}

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::string s;
  (append_text(s, parts), ...);
  return s;
}

}  // namespace dilated
