// The block-pattern and grid options of `dilated run` and `dilated bench` through the binary:
// results agree with the oracle, --dump-mask and --dump-order hold what the definitions say,
// bad values exit 2 naming their flag, bench reports and verifies block cases.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "cli_runner.hpp"
#include "dilated/dilated.hpp"
#include "io/npy.hpp"
#include "support/problem.hpp"

namespace dilated::testing {
namespace {

constexpr int64_t kN = 120, kHeads = 2, kDim = 8, kBlock = 16, kBlocks = 8;

std::vector<unsigned char> random_floats(int64_t count, std::mt19937_64& rng) {
  std::normal_distribution<float> normal;
  std::vector<unsigned char> bytes(static_cast<size_t>(count * 4));
  for (int64_t i = 0; i < count; ++i) {
    float x = normal(rng);
    if (x == 0.0f) x = 0.5f;
    std::memcpy(&bytes[i * 4], &x, 4);
  }
  return bytes;
}

io::NpyArray load(const std::string& path) {
  io::NpyArray array;
  const Status s = io::read_npy(path, &array);
  EXPECT_TRUE(s.ok()) << s.message();
  return array;
}

std::vector<float> floats(const std::string& path) {
  std::vector<float> values;
  EXPECT_TRUE(io::to_float32(load(path), &values).ok()) << path;
  return values;
}

class BlockCli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 rng(test_seed());
    const std::string shape = "(1, " + std::to_string(kN) + ", 2, 8)";
    for (const char* name : {"q", "k", "v", "dout"}) {
      write_raw_npy(files / (std::string(name) + ".npy"), "<f4", shape,
                    random_floats(kN * kHeads * kDim, rng));
    }
    std::vector<unsigned char> mask(kHeads * kBlocks * kBlocks);
    for (unsigned char& bit : mask) bit = rng() % 3 == 0;
    write_raw_npy(files / "mask.npy", "|b1", "(2, 8, 8)", mask);
    write_raw_npy(files / "mask_bad.npy", "|b1", "(2, 7, 7)",
                  std::vector<unsigned char>(2 * 49, 1));
  }

  std::vector<std::string> run_args(const std::string& out_dir,
                                    const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"run",           "--q",           files / "q.npy",
                                     "--k",           files / "k.npy", "--v",
                                     files / "v.npy", "--out-dir",     out_dir};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  ScratchDir files, out;
};

TEST_F(BlockCli, EveryBlockOptionMatchesTheOracleForwardAndBackward) {
  const std::vector<std::string> layer = {"--dout",           files / "dout.npy",
                                          "--segments",       "40",
                                          "--dilations",      "2",
                                          "--block-size",     "16",
                                          "--local",          "1",
                                          "--global",         "1",
                                          "--dilated-blocks", "3,1",
                                          "--random",         "2",
                                          "--seed",           "11",
                                          "--topk",           "1",
                                          "--block-mask",     files / "mask.npy",
                                          "--grid",           "8x15",
                                          "--causal"};
  for (const char* backend : {"cpu", "reference"}) {
    std::vector<std::string> args = run_args(out / backend, layer);
    args.insert(args.end(), {"--backend", backend});
    const CliResult r = run_cli(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("grid=8x15"), std::string::npos) << r.out;
  }
  for (const char* name : {"out.npy", "lse.npy", "dq.npy", "dk.npy", "dv.npy"}) {
    const std::vector<float> got = floats(out / (std::string("cpu/") + name));
    const std::vector<float> want = floats(out / (std::string("reference/") + name));
    ASSERT_EQ(got.size(), want.size());
    double diff = 0, largest = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      diff = std::max(diff, std::fabs(double(got[i]) - want[i]));
      largest = std::max(largest, std::fabs(double(want[i])));
    }
    // fp32 accumulation over at most a few hundred keys against the double oracle.
    EXPECT_LE(diff, 5e-5 * std::max(1.0, largest)) << name;
  }
}

TEST_F(BlockCli, DumpsHoldTheRealisedMaskAndTheHilbertOrder) {
  const CliResult r =
      run_cli(run_args(out / "result", {"--block-size", "16", "--local", "1", "--global", "2",
                                        "--causal", "--grid", "8x15", "--dump-mask",
                                        out / "mask.npy", "--dump-order", out / "order.npy"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const io::NpyArray mask = load(out / "mask.npy");
  ASSERT_EQ(mask.type, io::NpyType::boolean);
  ASSERT_EQ(mask.shape, (std::vector<int64_t>{kHeads, kBlocks, kBlocks}));
  for (int64_t h = 0; h < kHeads; ++h) {
    for (int64_t I = 0; I < kBlocks; ++I) {
      for (int64_t J = 0; J < kBlocks; ++J) {
        const bool want = (std::abs(I - J) <= 1 || I < 2 || J < 2) && J <= I;
        EXPECT_EQ(mask.data[(h * kBlocks + I) * kBlocks + J] != 0, want) << I << "," << J;
      }
    }
  }
  // int64 [N] (the library's reader takes float and bool only: the header is checked as text).
  std::ifstream file(out / "order.npy", std::ios::binary);
  const std::string image((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  ASSERT_GT(image.size(), static_cast<size_t>(kN * 8));
  const std::string header = image.substr(0, image.size() - kN * 8);
  EXPECT_NE(header.find("'descr': '<i8'"), std::string::npos) << header;
  EXPECT_NE(header.find("'shape': (120,"), std::string::npos) << header;
  std::vector<int64_t> cells(kN);
  std::memcpy(cells.data(), image.data() + header.size(), kN * 8);
  EXPECT_EQ(cells, hilbert_order(8, 15));
}

TEST_F(BlockCli, BadValuesExitTwoNamingTheFlag) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--local", "-1"}, "--local = -1"},
      {{"--global", "0"}, "--global = 0"},
      {{"--dilated-blocks", "2"}, "--dilated-blocks = 2"},
      {{"--dilated-blocks", "0,1"}, "--dilated-blocks = 0,1"},
      {{"--random", "0"}, "--random = 0"},
      {{"--local", "1", "--seed", "3"}, "--seed = 3"},
      {{"--topk", "-2"}, "--topk = -2"},
      {{"--block-size", "0", "--local", "1"}, "--block-size = 0"},
      {{"--local", "1", "--grid", "8x16"}, "--grid = 8x16"},
      {{"--local", "1", "--grid", "8by15"}, "--grid = 8by15"},
      {{"--block-mask", files / "q.npy"}, "--block-mask"},
      {{"--block-size", "16", "--block-mask", files / "mask_bad.npy"}, "[1 or 2, 8, 8]"},
      {{"--segments", "40", "--dilations", "2", "--dump-mask", out / "m.npy"}, "--dump-mask"},
      {{"--local", "1", "--segments", "40"}, "--dilations"},
  };
  for (const auto& [extra, named] : cases) {
    const std::vector<std::string> args = run_args(out / "result", extra);
    const CliResult r = run_cli(args);
    EXPECT_EQ(r.exit_code, 2) << named << ": " << r.err;
    EXPECT_NE(r.err.find(named), std::string::npos) << "missing '" << named << "' in: " << r.err;
    EXPECT_TRUE(entries(out.path()).empty()) << named << ": files were written";
  }
}

TEST(BlockCliBench, VerifiesAndReportsBlockAndGridCases) {
  ScratchDir dir;
  const CliResult r = run_cli({"bench",
                               "--seq-len",
                               "512",
                               "--heads",
                               "2",
                               "--head-dim",
                               "16",
                               "--block-size",
                               "32",
                               "--local",
                               "1",
                               "--random",
                               "2",
                               "--block-seed",
                               "5",
                               "--topk",
                               "1",
                               "--backward",
                               "--backend",
                               "cpu",
                               "--repeats",
                               "1",
                               "--min-repeats",
                               "1",
                               "--warmup",
                               "0",
                               "--fma-seconds",
                               "0.05",
                               "--quiet",
                               "--format",
                               "json",
                               "--out",
                               dir / "blocks.json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json blocks = nlohmann::json::parse(std::ifstream(dir / "blocks.json"));
  const nlohmann::json& row = blocks["results"][0];
  EXPECT_EQ(row["status"], "ok");
  EXPECT_EQ(row["blocks"], "local(1)+random(2,seed 5)+topk(1)");
  EXPECT_EQ(row["block_size"], 32);
  EXPECT_EQ(row["segments"], nlohmann::json::array());
  EXPECT_LT(row["fwd_rel_err"].get<double>(), 1e-5);
  EXPECT_LT(row["bwd_rel_err"].get<double>(), 5e-5);

  const CliResult g = run_cli({"bench",
                               "--grid",
                               "20x30",
                               "--heads",
                               "2",
                               "--head-dim",
                               "16",
                               "--segments",
                               "100",
                               "--dilations",
                               "2",
                               "--backward",
                               "--backend",
                               "cpu",
                               "--repeats",
                               "1",
                               "--min-repeats",
                               "1",
                               "--warmup",
                               "0",
                               "--fma-seconds",
                               "0.05",
                               "--quiet",
                               "--verify-pairs",
                               "20000",
                               "--format",
                               "json",
                               "--out",
                               dir / "grid.json"});
  ASSERT_EQ(g.exit_code, 0) << g.err;
  const nlohmann::json grid = nlohmann::json::parse(std::ifstream(dir / "grid.json"));
  const nlohmann::json& grid_row = grid["results"][0];
  EXPECT_EQ(grid_row["status"], "ok");
  EXPECT_EQ(grid_row["n"], 600);
  EXPECT_EQ(grid_row["grid"], "20x30");
  // The verified instance is a smaller grid of the same shape: ceil(20 s / 30) x s.
  const int64_t verify_n = grid_row["verify_n"].get<int64_t>();
  EXPECT_LT(verify_n, 600);
  bool same_shape = false;
  for (int64_t side = 1; side < 30; ++side) {
    same_shape = same_shape || (20 * side + 29) / 30 * side == verify_n;
  }
  EXPECT_TRUE(same_shape) << verify_n;
}

}  // namespace
}  // namespace dilated::testing
