// Reading and writing NumPy .npy files: an input boundary. Malformed headers, unknown dtypes,
// truncated data and shapes that overflow or exceed the file are errors, never crashes, and
// nothing is allocated before the size has been checked against the file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dilated/status.hpp"

namespace dilated::io {

enum class NpyType { f32, f16, f64, boolean };

struct NpyArray {
  NpyType type = NpyType::f32;
  std::vector<int64_t> shape;
  std::vector<unsigned char> data;  // C order, little endian

  int64_t elements() const;
  static int64_t item_size(NpyType t);
};

// Parses the header of a .npy image: on success `header_bytes` is where the data starts and
// `array` has its type and shape (no data yet).
Status parse_npy_header(const unsigned char* bytes, size_t size, NpyArray* array,
                        size_t* header_bytes);

// Parses a whole .npy image held in memory.
Status parse_npy(const unsigned char* bytes, size_t size, NpyArray* array);

// Reads `path`; the error message starts with the path.
Status read_npy(const std::string& path, NpyArray* array);

// The bytes of a version-1 .npy file before its data: magic, version, header length and the
// header dict, e.g. npy_file_header("<f4", "(2, 3)").
std::string npy_file_header(const std::string& descr, const std::string& shape_tuple);

// Writes float32 data as a C-order little-endian .npy. The file appears complete or not at all
// (written to a temporary name, then renamed).
Status write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape);

// Converts f32/f16/f64 data to float32 (f64 rounds); other types are an error.
Status to_float32(const NpyArray& array, std::vector<float>* values);

}  // namespace dilated::io
