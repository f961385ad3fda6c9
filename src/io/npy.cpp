#include "io/npy.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/dtype_convert.hpp"

namespace dilated::io {
namespace {

constexpr unsigned char kMagic[] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
constexpr size_t kMaxHeaderBytes = 1 << 16;  // numpy itself writes a few hundred bytes
constexpr size_t kMaxDims = 32;              // numpy's own limit

Status bad(const std::string& what) {
  return Status::Invalid("malformed .npy: " + what);
}

// A cursor over the header's Python dict literal, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class DictParser {
 public:
  DictParser(const char* text, size_t size) : p_(text), end_(text + size) {}

  void skip_space() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool eat(char c) {
    skip_space();
    if (p_ < end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }
  bool at_end() {
    skip_space();
    return p_ == end_;
  }
  bool string(std::string* out) {
    skip_space();
    if (p_ >= end_ || (*p_ != '\'' && *p_ != '"')) return false;
    const char quote = *p_++;
    const char* start = p_;
    while (p_ < end_ && *p_ != quote) ++p_;
    if (p_ >= end_) return false;
    out->assign(start, p_);
    ++p_;
    return true;
  }
  bool word(const char* w) {
    skip_space();
    const size_t n = std::strlen(w);
    if (static_cast<size_t>(end_ - p_) < n || std::strncmp(p_, w, n) != 0) return false;
    p_ += n;
    return true;
  }
  bool integer(int64_t* out) {
    skip_space();
    const char* start = p_;
    int64_t value = 0;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9') {
      if (value > (std::numeric_limits<int64_t>::max() - (*p_ - '0')) / 10) return false;
      value = value * 10 + (*p_ - '0');
      ++p_;
    }
    if (p_ < end_ && *p_ == 'L') ++p_;  // Python 2 long suffix
    *out = value;
    return p_ != start;
  }

 private:
  const char* p_;
  const char* end_;
};

Status parse_descr(const std::string& descr, NpyType* type) {
  if (descr == "<f4" || descr == "=f4")
    *type = NpyType::f32;
  else if (descr == "<f2" || descr == "=f2")
    *type = NpyType::f16;
  else if (descr == "<f8" || descr == "=f8")
    *type = NpyType::f64;
  else if (descr == "|b1")
    *type = NpyType::boolean;
  else
    return bad("dtype '" + descr + "' is not supported: expected <f4, <f2, <f8 or |b1");
  return {};
}

Status parse_shape(DictParser& d, std::vector<int64_t>* shape) {
  if (!d.eat('(')) return bad("'shape' is not a tuple");
  shape->clear();
  while (!d.eat(')')) {
    int64_t dim;
    if (!d.integer(&dim)) return bad("'shape' holds something other than non-negative integers");
    shape->push_back(dim);
    if (shape->size() > kMaxDims) return bad("'shape' has more than 32 dimensions");
    if (!d.eat(',')) {
      if (!d.eat(')')) return bad("'shape' tuple is not closed");
      break;
    }
  }
  return {};
}

Status parse_dict(const char* text, size_t size, NpyArray* array) {
  DictParser d(text, size);
  bool have_descr = false, have_order = false, have_shape = false;
  if (!d.eat('{')) return bad("header is not a dict");
  while (!d.eat('}')) {
    std::string key;
    if (!d.string(&key) || !d.eat(':')) return bad("header dict entry without a quoted key");
    if ((key == "descr" && have_descr) || (key == "fortran_order" && have_order) ||
        (key == "shape" && have_shape)) {
      return bad("header key '" + key + "' appears twice");
    }
    if (key == "descr") {
      std::string descr;
      if (!d.string(&descr)) return bad("'descr' is not a string");
      if (Status s = parse_descr(descr, &array->type); !s.ok()) return s;
      have_descr = true;
    } else if (key == "fortran_order") {
      if (d.word("True")) return bad("fortran_order arrays are not supported: save C order");
      if (!d.word("False")) return bad("'fortran_order' is not True or False");
      have_order = true;
    } else if (key == "shape") {
      if (Status s = parse_shape(d, &array->shape); !s.ok()) return s;
      have_shape = true;
    } else {
      return bad("unexpected header key '" + key + "'");
    }
    if (!d.eat(',')) {
      if (!d.eat('}')) return bad("header dict is not closed");
      break;
    }
  }
  if (!d.at_end()) return bad("text after the header dict");
  if (!have_descr || !have_order || !have_shape) {
    return bad("header lacks one of 'descr', 'fortran_order', 'shape'");
  }
  return {};
}

// Data bytes the shape needs, or -1 if that overflows.
int64_t data_bytes(const NpyArray& a) {
  int64_t n = NpyArray::item_size(a.type);
  for (int64_t dim : a.shape) {
    if (dim != 0 && n > std::numeric_limits<int64_t>::max() / dim) return -1;
    n *= dim;
  }
  return n;
}

}  // namespace

int64_t NpyArray::item_size(NpyType t) {
  switch (t) {
    case NpyType::f32:
      return 4;
    case NpyType::f16:
      return 2;
    case NpyType::f64:
      return 8;
    case NpyType::boolean:
      return 1;
  }
  return 1;
}

int64_t NpyArray::elements() const {
  int64_t n = 1;
  for (int64_t dim : shape) n *= dim;
  return n;
}

Status parse_npy_header(const unsigned char* bytes, size_t size, NpyArray* array,
                        size_t* header_bytes) {
  if (size < sizeof kMagic || std::memcmp(bytes, kMagic, sizeof kMagic) != 0) {
    return bad("missing the \\x93NUMPY magic string");
  }
  if (size < 10) return bad("file ends inside the header");
  const int major = bytes[6];
  size_t prefix, dict_len;
  if (major == 1) {
    prefix = 10;
    dict_len = bytes[8] | (size_t{bytes[9]} << 8);
  } else if (major == 2 || major == 3) {
    if (size < 12) return bad("file ends inside the header");
    prefix = 12;
    dict_len =
        bytes[8] | (size_t{bytes[9]} << 8) | (size_t{bytes[10]} << 16) | (size_t{bytes[11]} << 24);
  } else {
    return bad("format version " + std::to_string(major) + " is not 1, 2 or 3");
  }
  if (dict_len > kMaxHeaderBytes) return bad("header longer than 64 KiB");
  if (size < prefix + dict_len) return bad("file ends inside the header");
  if (Status s = parse_dict(reinterpret_cast<const char*>(bytes + prefix), dict_len, array);
      !s.ok()) {
    return s;
  }
  if (data_bytes(*array) < 0) return bad("shape's element count overflows 64 bits");
  *header_bytes = prefix + dict_len;
  return {};
}

Status parse_npy(const unsigned char* bytes, size_t size, NpyArray* array) {
  size_t header = 0;
  if (Status s = parse_npy_header(bytes, size, array, &header); !s.ok()) return s;
  const int64_t need = data_bytes(*array);
  if (static_cast<uint64_t>(need) != size - header) {
    return bad("shape needs " + std::to_string(need) + " data bytes, the file holds " +
               std::to_string(size - header));
  }
  array->data.assign(bytes + header, bytes + size);
  return {};
}

Status read_npy(const std::string& path, NpyArray* array) {
  std::error_code error;
  const std::filesystem::file_status status = std::filesystem::status(path, error);
  if (error) return Status::Invalid(path + ": cannot open (" + error.message() + ")");
  // A directory or a FIFO has no size to check the header against.
  if (!std::filesystem::is_regular_file(status)) {
    return Status::Invalid(path + ": not a regular file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Invalid(path + ": cannot open (" + std::strerror(errno) + ")");
  in.seekg(0, std::ios::end);
  const std::streamoff file_size = in.tellg();
  in.seekg(0);
  if (file_size < 0) return Status::Invalid(path + ": cannot determine the file size");
  std::vector<unsigned char> head(
      static_cast<size_t>(std::min<std::streamoff>(file_size, kMaxHeaderBytes + 12)));
  in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
  size_t header = 0;
  if (Status s = parse_npy_header(head.data(), head.size(), array, &header); !s.ok()) {
    return Status::Invalid(path + ": " + s.message());
  }
  const int64_t need = data_bytes(*array);
  const int64_t have = static_cast<int64_t>(file_size) - static_cast<int64_t>(header);
  if (need != have) {
    return Status::Invalid(path + ": malformed .npy: shape needs " + std::to_string(need) +
                           " data bytes, the file holds " + std::to_string(have));
  }
  array->data.resize(static_cast<size_t>(need));
  in.seekg(static_cast<std::streamoff>(header));
  in.read(reinterpret_cast<char*>(array->data.data()), static_cast<std::streamsize>(need));
  if (in.gcount() != need) return Status::Invalid(path + ": read failed");
  return {};
}

std::string npy_file_header(const std::string& descr, const std::string& shape_tuple) {
  std::string dict =
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape_tuple + ", }";
  const size_t unpadded = 10 + dict.size() + 1;  // magic, version, length, dict, newline
  dict.append((64 - unpadded % 64) % 64, ' ');   // numpy aligns the data to 64 bytes
  dict.push_back('\n');
  std::string file = {'\x93', 'N', 'U', 'M', 'P', 'Y', '\x01', '\x00'};
  file.push_back(static_cast<char>(dict.size() & 0xff));
  file.push_back(static_cast<char>(dict.size() >> 8));
  return file + dict;
}

Status write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  std::string dict = "(";
  int64_t count = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0 ||
        (shape[i] > 0 && count > std::numeric_limits<int64_t>::max() / 4 / shape[i])) {
      return Status::Invalid(path + ": shape[" + std::to_string(i) + "] = " +
                             std::to_string(shape[i]) + ": expected a size the file can hold");
    }
    dict += std::to_string(shape[i]) + (shape.size() == 1 ? "," : i + 1 < shape.size() ? ", " : "");
    count *= shape[i];
  }
  dict += ")";
  if (shape.size() > kMaxDims) {
    return Status::Invalid(path + ": " + std::to_string(shape.size()) +
                           " dimensions: expected at most 32");
  }
  const std::string header = npy_file_header("<f4", dict);
  const std::string temp = path + ".partial";
  std::FILE* f = std::fopen(temp.c_str(), "wb");
  if (!f) return Status::Runtime(path + ": cannot create (" + std::strerror(errno) + ")");
  bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
            // An empty array may come with a null pointer, which fwrite must not see.
            (count == 0 || std::fwrite(data, sizeof(float), static_cast<size_t>(count), f) ==
                               static_cast<size_t>(count));
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(temp.c_str(), path.c_str()) != 0) {
    std::remove(temp.c_str());
    return Status::Runtime(path + ": write failed (" + std::strerror(errno) + ")");
  }
  return {};
}

Status to_float32(const NpyArray& array, std::vector<float>* values) {
  const int64_t n = array.elements();
  values->resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const unsigned char* item = array.data.data() + i * NpyArray::item_size(array.type);
    switch (array.type) {
      case NpyType::f32:
        std::memcpy(&(*values)[i], item, 4);
        break;
      case NpyType::f16: {
        uint16_t h;
        std::memcpy(&h, item, 2);
        (*values)[i] = f16_to_float(h);
        break;
      }
      case NpyType::f64: {
        double x;
        std::memcpy(&x, item, 8);
        (*values)[i] = static_cast<float>(x);
        break;
      }
      case NpyType::boolean:
        return Status::Invalid("expected a floating-point array, got bool");
    }
  }
  return {};
}

}  // namespace dilated::io
