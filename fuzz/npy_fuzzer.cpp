// Any byte string through the .npy parser: an error or a consistent array, never a crash, a
// sanitizer report, or an allocation the input's own size does not justify.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "io/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dilated::io::NpyArray array;
  const dilated::Status s = dilated::io::parse_npy(data, size, &array);
  if (!s.ok()) {
    if (s.message().empty()) __builtin_trap();  // every refusal must say why
    return 0;
  }
  // Accepted: the shape accounts for exactly the data that was kept.
  const int64_t elements = array.elements();
  if (elements < 0 || static_cast<uint64_t>(elements) *
                              static_cast<uint64_t>(dilated::io::NpyArray::item_size(array.type)) !=
                          array.data.size()) {
    __builtin_trap();
  }
  if (array.data.size() > size) __builtin_trap();
  std::vector<float> values;
  const dilated::Status converted = dilated::io::to_float32(array, &values);
  if (converted.ok() && values.size() != static_cast<size_t>(elements)) __builtin_trap();
  return 0;
}
