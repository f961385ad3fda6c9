// src/io/npy.cpp at its boundary: every malformed image is refused with a message saying what
// is wrong, nothing is allocated from a header's word alone, and what write_npy writes reads back.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "allocation_probe.hpp"
#include "core/dtype_convert.hpp"
#include "io/npy.hpp"
#include "support/problem.hpp"

namespace dilated::testing {
namespace {

using Bytes = std::vector<unsigned char>;

// A .npy image: magic, version, little-endian header length, the dict padded with spaces and
// a newline so that the data starts on a 64-byte boundary (as numpy writes it), then `data`.
Bytes npy_image(const std::string& dict, const Bytes& data, int version = 1) {
  const size_t prefix = version == 1 ? 10 : 12;
  std::string header = dict;
  header.append((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
  header.push_back('\n');
  Bytes image = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<unsigned char>(version), 0};
  for (size_t i = 0; i < prefix - 8; ++i) {
    image.push_back(static_cast<unsigned char>((header.size() >> (8 * i)) & 0xff));
  }
  image.insert(image.end(), header.begin(), header.end());
  image.insert(image.end(), data.begin(), data.end());
  return image;
}

Bytes float_bytes(const std::vector<float>& values) {
  Bytes bytes(values.size() * sizeof(float));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

std::string dict_for(const std::string& descr, const std::string& shape) {
  return "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
}

// A scratch directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("dilated_npy_test_" + std::to_string(test_seed()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::filesystem::path path() const { return path_; }

 private:
  std::filesystem::path path_;
};

void write_file(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

TEST(Npy, ParsesNumpyHeadersOfEveryVersion) {
  const std::vector<float> values = {1.5f, -2.0f, 3.25f, 0.125f, 7.0f, -0.5f};
  for (int version : {1, 2, 3}) {
    SCOPED_TRACE(version);
    const Bytes image = npy_image(dict_for("<f4", "(2, 3)"), float_bytes(values), version);
    io::NpyArray array;
    const Status s = io::parse_npy(image.data(), image.size(), &array);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(array.type, io::NpyType::f32);
    EXPECT_EQ(array.shape, (std::vector<int64_t>{2, 3}));
    std::vector<float> got;
    ASSERT_TRUE(io::to_float32(array, &got).ok());
    EXPECT_EQ(got, values);
  }
}

TEST(Npy, AcceptsNumpySpellings) {
  // Key order is free, a one-element tuple has a trailing comma, a 0-d array has shape ().
  const std::vector<std::pair<std::string, std::vector<int64_t>>> headers = {
      {"{'shape': (3,), 'fortran_order': False, 'descr': '<f4'}", {3}},
      {"{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (3,)}", {3}},
      {"{'descr':'<f4','fortran_order':False,'shape':(3L,)}", {3}},
  };
  const Bytes data = float_bytes({1, 2, 3});
  for (const auto& [dict, shape] : headers) {
    SCOPED_TRACE(dict);
    const Bytes image = npy_image(dict, data);
    io::NpyArray array;
    const Status s = io::parse_npy(image.data(), image.size(), &array);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(array.shape, shape);
  }
  const Bytes scalar = npy_image(dict_for("<f4", "()"), float_bytes({4.0f}));
  io::NpyArray array;
  ASSERT_TRUE(io::parse_npy(scalar.data(), scalar.size(), &array).ok());
  EXPECT_TRUE(array.shape.empty());
  EXPECT_EQ(array.elements(), 1);
}

struct Malformed {
  const char* what;
  Bytes image;
  const char* message;  // the error must say this
};

std::vector<Malformed> malformed_images() {
  const Bytes six = float_bytes({1, 2, 3, 4, 5, 6});
  const Bytes good = npy_image(dict_for("<f4", "(2, 3)"), six);
  Bytes bad_magic = good;
  bad_magic[1] = 'n';
  Bytes version0 = good;
  version0[6] = 0;
  Bytes version4 = good;
  version4[6] = 4;
  Bytes long_header = good;
  long_header[8] = 0xff;
  long_header[9] = 0x7f;
  Bytes v2_short = npy_image(dict_for("<f4", "(2, 3)"), six, 2);
  v2_short.resize(11);
  Bytes truncated = good;
  truncated.pop_back();
  Bytes trailing = good;
  trailing.push_back(0);
  std::string thirty_three_ones = "(";
  for (int i = 0; i < 33; ++i) thirty_three_ones += "1, ";
  thirty_three_ones += ")";
  return {
      {"empty", {}, "magic"},
      {"magic only", Bytes(good.begin(), good.begin() + 6), "ends inside the header"},
      {"wrong magic", bad_magic, "magic"},
      {"version 0", version0, "version 0"},
      {"version 4", version4, "version 4"},
      {"header length past the end", long_header, "ends inside the header"},
      {"version 2 prefix cut", v2_short, "ends inside the header"},
      {"not a dict", npy_image("['descr', '<f4']", six), "not a dict"},
      {"unterminated dict", npy_image("{'descr': '<f4', 'fortran_order': False", six),
       "not closed"},
      {"unterminated string", npy_image("{'descr': '<f4", six), "'descr' is not a string"},
      {"unquoted key", npy_image("{descr: '<f4'}", six), "quoted key"},
      {"missing shape", npy_image("{'descr': '<f4', 'fortran_order': False}", six), "lacks one of"},
      {"missing descr", npy_image("{'fortran_order': False, 'shape': (6,)}", six), "lacks one of"},
      {"missing fortran_order", npy_image("{'descr': '<f4', 'shape': (6,)}", six), "lacks one of"},
      {"unknown key",
       npy_image("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'x': 1}", six),
       "unexpected header key 'x'"},
      {"duplicate key",
       npy_image("{'descr': '<f4', 'descr': '<f2', 'fortran_order': False, 'shape': (6,)}", six),
       "appears twice"},
      {"fortran order", npy_image("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3)}", six),
       "fortran_order"},
      {"fortran_order not a bool",
       npy_image("{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3)}", six), "True or False"},
      {"big-endian float", npy_image(dict_for(">f4", "(2, 3)"), six), "'>f4' is not supported"},
      {"integer dtype", npy_image(dict_for("<i4", "(2, 3)"), six), "'<i4' is not supported"},
      {"complex dtype", npy_image(dict_for("<c8", "(3,)"), six), "'<c8' is not supported"},
      {"structured dtype",
       npy_image("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,)}", six),
       "'descr' is not a string"},
      {"shape not a tuple", npy_image(dict_for("<f4", "[2, 3]"), six), "not a tuple"},
      {"negative dimension", npy_image(dict_for("<f4", "(-2, 3)"), six), "non-negative integers"},
      {"shape tuple not closed", npy_image(dict_for("<f4", "(2 3)"), six), "not closed"},
      {"33 dimensions", npy_image(dict_for("<f4", thirty_three_ones), six),
       "more than 32 dimensions"},
      {"dimension above int64", npy_image(dict_for("<f4", "(99999999999999999999,)"), six),
       "non-negative integers"},
      {"product overflows", npy_image(dict_for("<f4", "(4294967296, 4294967296)"), six),
       "overflows"},
      {"product overflows only with the item size",
       npy_image(dict_for("<f8", "(2305843009213693952,)"), six), "overflows"},
      {"truncated data", truncated, "needs 24 data bytes, the file holds 23"},
      {"trailing data", trailing, "needs 24 data bytes, the file holds 25"},
      {"shape bigger than the file", npy_image(dict_for("<f4", "(1000000, 1000)"), six),
       "needs 4000000000 data bytes"},
      {"text after the dict", npy_image(dict_for("<f4", "(2, 3)") + " x", six),
       "text after the header dict"},
  };
}

TEST(Npy, RefusesEveryMalformedImage) {
  for (const Malformed& m : malformed_images()) {
    SCOPED_TRACE(m.what);
    io::NpyArray array;
    const Status s = io::parse_npy(m.image.data(), m.image.size(), &array);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::invalid_argument);
    EXPECT_NE(s.message().find("malformed .npy"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(m.message), std::string::npos) << s.message();
  }
}

TEST(Npy, ReadRefusesMalformedFilesNamingThePath) {
  TempDir dir;
  for (const Malformed& m : malformed_images()) {
    SCOPED_TRACE(m.what);
    const std::string path = dir.file("bad.npy");
    write_file(path, m.image);
    io::NpyArray array;
    const Status s = io::read_npy(path, &array);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.message().rfind(path + ": ", 0), 0u) << s.message();
    EXPECT_NE(s.message().find(m.message), std::string::npos) << s.message();
  }
}

TEST(Npy, ReadRefusesMissingFilesAndDirectories) {
  TempDir dir;
  io::NpyArray array;
  Status s = io::read_npy(dir.file("absent.npy"), &array);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cannot open"), std::string::npos) << s.message();
  s = io::read_npy(dir.path().string(), &array);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("not a regular file"), std::string::npos) << s.message();
}

TEST(Npy, LyingHeaderIsRefusedBeforeAllocatingWhatItClaims) {
  // The header claims 1 GiB (256 Mi floats) over 24 bytes of data: the reader must compare
  // with the file size before it reserves anything of that size.
  TempDir dir;
  const std::string path = dir.file("liar.npy");
  write_file(path, npy_image(dict_for("<f4", "(268435456,)"), float_bytes({1, 2, 3, 4, 5, 6})));
  io::NpyArray array;
  AllocationProbe probe;
  const Status s = io::read_npy(path, &array);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("needs 1073741824 data bytes"), std::string::npos) << s.message();
  EXPECT_LT(probe.largest(), size_t{1} << 20);  // the header buffer (<= 64 KiB) and messages
  const Bytes image = npy_image(dict_for("<f4", "(268435456,)"), float_bytes({1, 2}));
  EXPECT_FALSE(io::parse_npy(image.data(), image.size(), &array).ok());
  EXPECT_LT(probe.largest(), size_t{1} << 20);
}

TEST(Npy, WriteThenReadRoundTripsRandomArrays) {
  TempDir dir;
  const uint64_t seed = test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (const std::vector<int64_t>& shape :
       std::vector<std::vector<int64_t>>{{7}, {2, 5, 3, 4}, {1, 1, 1}, {0, 3}, {}}) {
    int64_t count = 1;
    for (int64_t d : shape) count *= d;
    std::vector<float> values(static_cast<size_t>(count));
    for (float& x : values) x = normal(rng);
    const std::string path = dir.file("round.npy");
    ASSERT_TRUE(io::write_npy(path, values.data(), shape).ok());
    EXPECT_FALSE(std::filesystem::exists(path + ".partial"));
    // numpy aligns the data to 64 bytes; readers such as np.load(mmap_mode) rely on it.
    EXPECT_EQ((std::filesystem::file_size(path) - values.size() * 4) % 64, 0u);
    io::NpyArray array;
    const Status s = io::read_npy(path, &array);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(array.shape, shape);
    std::vector<float> got;
    ASSERT_TRUE(io::to_float32(array, &got).ok());
    EXPECT_EQ(got, values);
  }
}

TEST(Npy, WriteRefusesImpossibleShapesAndUnwritablePaths) {
  TempDir dir;
  const float x = 1.0f;
  EXPECT_FALSE(io::write_npy(dir.file("neg.npy"), &x, {-1}).ok());
  EXPECT_FALSE(io::write_npy(dir.file("huge.npy"), &x, {int64_t{1} << 40, int64_t{1} << 40}).ok());
  const std::string nowhere = dir.file("missing_dir/out.npy");
  const Status s = io::write_npy(nowhere, &x, {1});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(nowhere), std::string::npos) << s.message();
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(Npy, ConvertsHalfAndDoubleAndRefusesBool) {
  const std::vector<float> want = {1.0f, -0.5f, 65504.0f, 0.0f};
  Bytes halves;
  for (float f : want) {
    const uint16_t h = float_to_f16(f);
    halves.push_back(static_cast<unsigned char>(h & 0xff));
    halves.push_back(static_cast<unsigned char>(h >> 8));
  }
  io::NpyArray array;
  Bytes image = npy_image(dict_for("<f2", "(4,)"), halves);
  ASSERT_TRUE(io::parse_npy(image.data(), image.size(), &array).ok());
  std::vector<float> got;
  ASSERT_TRUE(io::to_float32(array, &got).ok());
  EXPECT_EQ(got, want);

  const std::vector<double> doubles = {0.1, -3.0, 1e30, 2.5};
  Bytes double_bytes(doubles.size() * 8);
  std::memcpy(double_bytes.data(), doubles.data(), double_bytes.size());
  image = npy_image(dict_for("<f8", "(4,)"), double_bytes);
  ASSERT_TRUE(io::parse_npy(image.data(), image.size(), &array).ok());
  ASSERT_TRUE(io::to_float32(array, &got).ok());
  for (size_t i = 0; i < doubles.size(); ++i) EXPECT_EQ(got[i], static_cast<float>(doubles[i]));

  image = npy_image(dict_for("|b1", "(3,)"), Bytes{1, 0, 1});
  ASSERT_TRUE(io::parse_npy(image.data(), image.size(), &array).ok());
  EXPECT_FALSE(io::to_float32(array, &got).ok());
}

}  // namespace
}  // namespace dilated::testing
