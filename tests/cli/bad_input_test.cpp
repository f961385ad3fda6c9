// Every bad input of DESIGN 4.1/7 through the binary: exit code 2, one line on stderr naming
// the argument, and no file left in the output folder.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "cli_runner.hpp"
#include "core/dtype_convert.hpp"
#include "golden/golden_case.hpp"
#include "support/problem.hpp"

namespace dilated::testing {
namespace {

// Non-zero random data of `count` items of `item` bytes: float32, float16 or float64.
std::vector<unsigned char> random_data(int64_t count, int item, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> uniform(0.5f, 1.5f);
  std::vector<unsigned char> bytes(static_cast<size_t>(count * item));
  for (int64_t i = 0; i < count; ++i) {
    const float x = uniform(rng);
    if (item == 4) std::memcpy(&bytes[i * 4], &x, 4);
    if (item == 8) {
      const double d = x;
      std::memcpy(&bytes[i * 8], &d, 8);
    }
    if (item == 2) {
      const uint16_t h = float_to_f16(x);
      std::memcpy(&bytes[i * 2], &h, 2);
    }
  }
  return bytes;
}

// The hg_basic golden case ([1, 512, 6, 16], segments 128,256,512, dilations 1,2,4) and
// spoiled companions of it.
class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    const GoldenCase c = load_golden_case("hg_basic");
    q = c.dir + "/q.npy";
    k = c.dir + "/k.npy";
    v = c.dir + "/v.npy";
    dout = c.dir + "/dout.npy";
    std::mt19937_64 rng(test_seed());
    const int64_t n = 512 * 6 * 16;
    write_raw_npy(files / "k4.npy", "<f4", "(1, 512, 4, 16)", random_data(512 * 4 * 16, 4, rng));
    write_raw_npy(files / "k_short.npy", "<f4", "(1, 256, 6, 16)", random_data(n / 2, 4, rng));
    write_raw_npy(files / "q_f16.npy", "<f2", "(1, 512, 6, 16)", random_data(n, 2, rng));
    write_raw_npy(files / "q_f64.npy", "<f8", "(1, 512, 6, 16)", random_data(n, 8, rng));
    write_raw_npy(files / "q_3d.npy", "<f4", "(512, 6, 16)", random_data(n, 4, rng));
    write_raw_npy(files / "q_be.npy", ">f4", "(1, 512, 6, 16)", random_data(n, 4, rng));
    write_raw_npy(files / "dout_d8.npy", "<f4", "(1, 512, 6, 8)", random_data(n / 2, 4, rng));
    write_raw_npy(files / "v_d8.npy", "<f4", "(1, 512, 6, 8)", random_data(n / 2, 4, rng));
    std::vector<unsigned char> cut = random_data(n, 4, rng);
    cut.resize(cut.size() - 4);
    write_raw_npy(files / "truncated.npy", "<f4", "(1, 512, 6, 16)", cut);
    std::ofstream(files / "text.npy") << "this is not a .npy file\n";
    std::ofstream(files / "a_file") << "x";
  }

  // `run` with the good inputs, `changes` replacing (or, with an empty value, removing) flags.
  std::vector<std::string> run_args(const std::vector<std::pair<std::string, std::string>>& changes,
                                    const std::vector<std::string>& extra = {}) {
    std::vector<std::pair<std::string, std::string>> flags = {
        {"--q", q},
        {"--k", k},
        {"--v", v},
        {"--dout", dout},
        {"--segments", "128,256,512"},
        {"--dilations", "1,2,4"},
        {"--mode", "head_groups"},
        {"--out-dir", out.path().string() + "/result"}};
    for (const auto& [flag, value] : changes) {
      bool found = false;
      for (auto& f : flags) {
        if (f.first == flag) {
          f.second = value;
          found = true;
        }
      }
      if (!found) flags.emplace_back(flag, value);
    }
    std::vector<std::string> args = {"run"};
    for (const auto& [flag, value] : flags) {
      if (value.empty()) continue;
      args.push_back(flag);
      args.push_back(value);
    }
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  // Exit 2, one stderr line containing every `named` text, nothing written.
  void expect_refused(const std::vector<std::string>& args, const std::vector<std::string>& named) {
    std::string command;
    for (const std::string& a : args) command += a + " ";
    SCOPED_TRACE(command);
    const CliResult r = run_cli(args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    ASSERT_FALSE(r.err.empty());
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "not one line: " << r.err;
    for (const std::string& text : named) {
      EXPECT_NE(r.err.find(text), std::string::npos) << "missing '" << text << "' in: " << r.err;
    }
    EXPECT_TRUE(r.out.empty()) << r.out;
    EXPECT_TRUE(entries(out.path()).empty()) << "files were written";
  }

  ScratchDir files, out;
  std::string q, k, v, dout;
};

TEST_F(BadInput, TheGoodInvocationWorks) {
  // The baseline every other test spoils: it must succeed, or the refusals prove nothing.
  const CliResult r = run_cli(run_args({}));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(entries(out.path() / "result").size(), 5u);
}

TEST_F(BadInput, CommandsAndFlags) {
  expect_refused({"frobnicate"}, {"unknown command 'frobnicate'"});
  expect_refused({}, {"missing command"});
  expect_refused(run_args({}, {"--bogus"}), {"--bogus"});
  expect_refused(run_args({}, {"--bogus=1"}), {"--bogus"});
  expect_refused(run_args({}, {"stray"}), {"'stray'"});
  expect_refused(run_args({{"--dout", ""}}, {"--dout"}), {"--dout", "expected a value"});
  expect_refused(run_args({{"--dout", ""}}, {"--dout", "--causal"}),
                 {"--dout", "expected a value"});
  expect_refused(run_args({}, {"--q", q}), {"--q", "twice"});
  expect_refused(run_args({{"--q", ""}}), {"--q", "missing"});
  expect_refused(run_args({{"--out-dir", ""}}), {"--out-dir", "missing"});
  expect_refused(run_args({{"--segments", ""}}), {"--segments", "missing"});
  expect_refused(run_args({}, {"--causal=yes"}), {"--causal", "no value"});
  expect_refused({"list", "--verbose"}, {"--verbose"});
  expect_refused({"check", "--cases", "0"}, {"--cases = 0"});
  expect_refused({"check", "--backend", "nope"}, {"--backend", "nope"});
  expect_refused({"check", "--dtype", "fp64"}, {"--dtype", "fp64"});
  expect_refused({"check", "--seed", "abc"}, {"--seed = abc"});
}

TEST_F(BadInput, Files) {
  expect_refused(run_args({{"--q", files / "absent.npy"}}), {"--q", "absent.npy", "cannot open"});
  expect_refused(run_args({{"--k", files.path().string()}}), {"--k", "not a regular file"});
  expect_refused(run_args({{"--q", files / "text.npy"}}), {"--q", "text.npy", "magic"});
  expect_refused(run_args({{"--v", files / "truncated.npy"}}),
                 {"--v", "truncated.npy", "the file holds"});
  expect_refused(run_args({{"--q", files / "q_f64.npy"}}),
                 {"--q", "float64", "float32 or float16"});
  expect_refused(run_args({{"--q", files / "q_be.npy"}}), {"--q", "'>f4' is not supported"});
  expect_refused(run_args({{"--q", files / "q_3d.npy"}}), {"--q", "[512, 6, 16]", "4 dimensions"});
  expect_refused(run_args({{"--q", files / "q_f16.npy"}}), {"--k", "float32", "float16"});
  expect_refused(run_args({{"--out-dir", files / "a_file"}}), {"--out-dir", "not a directory"});
}

TEST_F(BadInput, MismatchedShapes) {
  expect_refused(run_args({{"--k", files / "k_short.npy"}}), {"--k", "[1, 256, 6, 16]"});
  expect_refused(run_args({{"--v", files / "k4.npy"}}), {"--v", "[1, 512, 4, 16]"});
  expect_refused(run_args({{"--v", files / "v_d8.npy"}}), {"--v", "[1, 512, 6, 8]"});
  expect_refused(run_args({{"--dout", files / "dout_d8.npy"}}), {"--dout", "[1, 512, 6, 8]"});
  // H % Hkv != 0: the library's message names heads_kv.
  expect_refused(run_args({{"--k", files / "k4.npy"}, {"--v", files / "k4.npy"}}),
                 {"heads_kv = 4", "divisor of heads = 6"});
  expect_refused(run_args({{"--heads-kv", "3"}}), {"--heads-kv = 3", "6"});
}

TEST_F(BadInput, Patterns) {
  expect_refused(run_args({{"--segments", "0,256,512"}}), {"segments[0] = 0"});
  expect_refused(run_args({{"--segments", "-128,256,512"}}), {"segments[0] = -128"});
  expect_refused(run_args({{"--dilations", "1,2,1024"}}), {"dilations[2] = 1024", "512"});
  expect_refused(run_args({{"--dilations", "0,2,4"}}), {"dilations[0] = 0"});
  expect_refused(run_args({{"--segments", "128,abc,512"}}), {"--segments = 128,abc,512"});
  expect_refused(run_args({{"--segments", "128,,512"}}), {"--segments"});
  expect_refused(run_args({{"--segments", "99999999999999999999"}, {"--dilations", "1"}}),
                 {"--segments"});
  expect_refused(run_args({{"--dilations", "1,2"}}), {"--dilations = 1,2", "3 values"});
  // head_groups needs a head per pattern: 7 patterns over 6 heads.
  expect_refused(run_args({{"--segments", "8,8,8,8,8,8,8"}, {"--dilations", "1,1,1,1,1,1,1"}}),
                 {"heads = 6", "7 patterns"});
  expect_refused(run_args({{"--mode", "dense"}}), {"--mode = dense"});
  expect_refused(run_args({{"--mode", "longnet"}, {"--head-offsets", "odd"}}),
                 {"--head-offsets = odd"});
  expect_refused(run_args({{"--head-offsets", "grouped"}}), {"head_offsets = grouped"});
}

TEST_F(BadInput, NumbersAndBackends) {
  expect_refused(run_args({{"--scale", "abc"}}), {"--scale = abc"});
  expect_refused(run_args({{"--scale", "1e39"}}), {"scale = inf"});
  expect_refused(run_args({{"--scale", "-1e39"}}), {"scale = -inf"});
  expect_refused(run_args({{"--scale", "nan"}}), {"--scale = nan"});
  expect_refused(run_args({{"--threads", "-1"}}), {"--threads = -1"});
  expect_refused(run_args({{"--backend", "gpu9000"}}), {"--backend = gpu9000", "reference"});
}

// A backend that cannot run the problem (unavailable here, or declining its dtype): exit 2
// naming --backend. Which backends decline what is the registry's word, asked directly.
TEST_F(BadInput, BackendThatCannotRunTheProblem) {
  int refused = 0;
  for (const Backend* b : backends()) {
    for (DType dtype : {DType::f32, DType::f16}) {
      Params p;
      p.batch = 1;
      p.seqlen = 512;
      p.heads = p.heads_kv = 6;
      p.head_dim = p.head_dim_v = 16;
      p.dtype = dtype;
      p.mode = Mode::head_groups;
      p.device = b->device();
      set_patterns(p, {{128, 1}, {256, 2}, {512, 4}});
      std::string reason = b->unavailable_reason();
      if (reason.empty()) reason = b->unsupported_reason(p, Direction::backward);
      if (reason.empty()) continue;
      SCOPED_TRACE(std::string(b->name()) + ": " + reason);
      std::vector<std::pair<std::string, std::string>> changes = {{"--backend", b->name()}};
      if (dtype == DType::f16) {
        // All inputs float16 (one dtype for all): q_f16 stands for every input.
        const std::string h = files / "q_f16.npy";
        changes.insert(changes.end(), {{"--q", h}, {"--k", h}, {"--v", h}, {"--dout", h}});
      }
      expect_refused(run_args(changes), {"--backend = " + std::string(b->name()), reason});
      ++refused;
      break;
    }
  }
  if (refused == 0) GTEST_SKIP() << "every backend here runs fp32 and fp16 at D=16";
}

TEST_F(BadInput, BenchAndItsSweeps) {
  const std::vector<std::string> tiny = {"bench", "--quiet", "--fma-seconds", "0.05"};
  auto bench = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = tiny;
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(), {"--out", out / "bench.json"});
    return args;
  };
  expect_refused(bench({"--suite", "huge"}), {"--suite = huge"});
  expect_refused(bench({"--seq-len", "2048,x"}), {"--seq-len = 2048,x"});
  expect_refused(bench({"--seq-len", "-5"}), {"seqlen = -5"});
  expect_refused(bench({"--heads", "6", "--heads-kv", "4"}), {"heads_kv = 4"});
  expect_refused(bench({"--head-dim", "0"}), {"head_dim = 0"});
  expect_refused(bench({"--segments", "64"}), {"--dilations is missing"});
  expect_refused(bench({"--segments", "64", "--dilations", "128"}), {"dilations[0] = 128"});
  expect_refused(bench({"--dtype", "fp8"}), {"--dtype = fp8"});
  expect_refused(bench({"--mode", "longnet,flat"}), {"--mode = longnet,flat"});
  expect_refused(bench({"--format", "xml"}), {"--format = xml"});
  expect_refused(bench({"--repeats", "0"}), {"--repeats = 0"});
  expect_refused(bench({"--max-time", "soon"}), {"--max-time = soon"});
  expect_refused({"bench", "--out", files.path().string()}, {"--out", "is a directory"});
}

}  // namespace
}  // namespace dilated::testing
