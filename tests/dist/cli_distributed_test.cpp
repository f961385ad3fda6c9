// `dilated run --distributed` and `dilated bench --distributed` under mpirun, as a user runs
// them: the distributed run writes the files a single-process run writes (within the float32
// tolerance argued in sequence_parallel_test.cpp), errors come once and leave no files, and
// the bench reports per-rank times, bytes and the weak-scaling efficiency.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cli/cli_runner.hpp"
#include "cpu_fast/compare.hpp"
#include "io/npy.hpp"

namespace dilated::testing {
namespace {

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::stringstream s(text);
  for (std::string part; std::getline(s, part, sep);) parts.push_back(part);
  return parts;
}

// Runs argv (argv[0] a path) and captures its output.
CliResult run_process(std::vector<std::string> argv_strings) {
  ScratchDir capture;
  const std::string out_path = capture / "stdout", err_path = capture / "stderr";
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    if (!freopen(out_path.c_str(), "w", stdout) || !freopen(err_path.c_str(), "w", stderr)) {
      _exit(127);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream out(out_path), err(err_path);
  std::stringstream o, e;
  o << out.rdbuf();
  e << err.rdbuf();
  r.out = o.str();
  r.err = e.str();
  return r;
}

CliResult dilated(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {DILATED_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv);
}

CliResult mpirun(int ranks, const std::vector<std::string>& args) {
  // OpenMPI's shared-memory transport copies through the kernel's cross-memory attach by
  // default, which containers often forbid; copying through shared buffers always works.
  setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);
  std::vector<std::string> argv = split(DILATED_MPIRUN, ';');
  argv.push_back(DILATED_MPIEXEC_NUMPROC_FLAG);
  argv.push_back(std::to_string(ranks));
  argv.push_back(DILATED_CLI_PATH);
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv);
}

void save_random(const std::string& path, const std::vector<int64_t>& shape, std::mt19937_64& rng) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  std::vector<float> values(static_cast<size_t>(count));
  std::normal_distribution<float> normal;
  for (float& x : values) x = normal(rng);
  ASSERT_TRUE(io::write_npy(path, values.data(), shape).ok());
}

std::vector<double> load(const std::string& path, std::vector<int64_t>* shape) {
  io::NpyArray a;
  EXPECT_TRUE(io::read_npy(path, &a).ok()) << path;
  std::vector<float> f;
  EXPECT_TRUE(io::to_float32(a, &f).ok());
  *shape = a.shape;
  return std::vector<double>(f.begin(), f.end());
}

// Inputs of one run: B=2, N=150, H=4, Hkv=2 (GQA), D=16.
struct Inputs {
  ScratchDir dir;
  std::vector<std::string> args;
  explicit Inputs(uint64_t seed) {
    std::mt19937_64 rng(seed);
    save_random(dir / "q.npy", {2, 150, 4, 16}, rng);
    save_random(dir / "k.npy", {2, 150, 2, 16}, rng);
    save_random(dir / "v.npy", {2, 150, 2, 16}, rng);
    save_random(dir / "dout.npy", {2, 150, 4, 16}, rng);
    args = {"run", "--q",         dir / "q.npy", "--k",           dir / "k.npy",
            "--v", dir / "v.npy", "--dout",      dir / "dout.npy"};
  }
};

// Segments cut by the shard boundaries, and one (w = N) spanning every rank.
TEST(CliDistributed, RunWritesTheSameFilesAsOneProcess) {
  const uint64_t seed = test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Inputs in(seed);
  for (const char* mode : {"longnet", "head_groups"}) {
    for (int ranks : {2, 3}) {
      SCOPED_TRACE(std::string(mode) + ", " + std::to_string(ranks) + " ranks");
      ScratchDir out;
      std::vector<std::string> layer = {"--segments", "40,150", "--dilations", "2,5",
                                        "--causal",   "--mode", mode};
      std::vector<std::string> single = in.args, multi = in.args;
      single.insert(single.end(), layer.begin(), layer.end());
      multi.insert(multi.end(), layer.begin(), layer.end());
      single.insert(single.end(), {"--out-dir", out / "single"});
      multi.insert(multi.end(), {"--out-dir", out / "multi", "--distributed"});
      // On 3 ranks a budget below one exchange's rows: the ring variant, same files.
      if (ranks == 3) multi.insert(multi.end(), {"--exchange-budget", "512"});
      const CliResult a = dilated(single);
      ASSERT_EQ(a.exit_code, 0) << a.err;
      const CliResult b = mpirun(ranks, multi);
      ASSERT_EQ(b.exit_code, 0) << b.err;
      EXPECT_NE(b.out.find("cpu on " + std::to_string(ranks) + " ranks (MPI)"), std::string::npos)
          << b.out;
      if (ranks == 3) {
        EXPECT_NE(b.out.find("exchange budget 512 bytes"), std::string::npos) << b.out;
      }
      EXPECT_EQ(entries(out.path() / "multi"), entries(out.path() / "single"));
      ProblemConfig config;  // for the tolerance: D = 16, default scale
      for (const char* name : {"out", "lse", "dq", "dk", "dv"}) {
        std::vector<int64_t> sa, sb;
        const std::string file = std::string(name) + ".npy";
        const std::vector<double> va = load((out.path() / "single" / file).string(), &sa);
        const std::vector<double> vb = load((out.path() / "multi" / file).string(), &sb);
        EXPECT_EQ(sa, sb) << name;
        EXPECT_LE(output_error(vb, va), 4 * float32_tolerance(config)) << name;
      }
    }
  }
}

// An unreadable input (seen by rank 0 only) and a bad flag (seen by every rank): exit 2, the
// message once, no output files.
TEST(CliDistributed, ErrorsComeOnceAndLeaveNoFiles) {
  Inputs in(test_seed());
  ScratchDir out;
  std::vector<std::string> missing = {"run",
                                      "--q",
                                      in.dir / "nope.npy",
                                      "--k",
                                      in.dir / "k.npy",
                                      "--v",
                                      in.dir / "v.npy",
                                      "--segments",
                                      "10",
                                      "--dilations",
                                      "1",
                                      "--out-dir",
                                      out / "o",
                                      "--distributed"};
  CliResult r = mpirun(3, missing);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--q = " + in.dir / "nope.npy"), std::string::npos) << r.err;
  size_t lines = 0;
  for (const std::string& line : split(r.err, '\n')) lines += line.find("dilated run") == 0;
  EXPECT_EQ(lines, 1u) << r.err;
  EXPECT_TRUE(entries(out.path() / "o").empty());

  std::vector<std::string> bad = in.args;
  bad.insert(bad.end(),
             {"--segments", "10,20", "--dilations", "1", "--out-dir", out / "o", "--distributed"});
  r = mpirun(2, bad);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--dilations = 1: expected 2 values"), std::string::npos) << r.err;
  lines = 0;
  for (const std::string& line : split(r.err, '\n')) lines += line.find("dilated run") == 0;
  EXPECT_EQ(lines, 1u) << r.err;
  EXPECT_TRUE(entries(out.path() / "o").empty());

  std::vector<std::string> budget = in.args;
  budget.insert(budget.end(), {"--segments", "10", "--dilations", "1", "--out-dir", out / "o",
                               "--distributed", "--exchange-budget", "-5"});
  r = mpirun(2, budget);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--exchange-budget = -5: expected bytes >= 0"), std::string::npos) << r.err;
  EXPECT_TRUE(entries(out.path() / "o").empty());
}

// LongNet's pattern (w = N, r = N/64) on 2 ranks of 1024 tokens: per rank, the other rank's
// 32 selected rows per head arrive (r = 32; 4 heads, each its own offset), not N; ring
// attention would bring all 1024 rows of every kv head.
TEST(CliDistributed, BenchReportsPerRankTimesBytesAndEfficiency) {
  ScratchDir out;
  const CliResult r = mpirun(2, {"bench",
                                 "--distributed",
                                 "--seq-len",
                                 "1024",
                                 "--heads",
                                 "4",
                                 "--head-dim",
                                 "16",
                                 "--segments",
                                 "256,N",
                                 "--dilations",
                                 "1,N/64",
                                 "--backward",
                                 "--repeats",
                                 "2",
                                 "--format",
                                 "json",
                                 "--out",
                                 out / "bench.json",
                                 "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  std::ifstream file(out / "bench.json");
  const nlohmann::json j = nlohmann::json::parse(file);
  EXPECT_EQ(j["ranks"], 2);
  ASSERT_EQ(j["cases"].size(), 1u);
  const nlohmann::json& c = j["cases"][0];
  EXPECT_EQ(c["seq_len"], 2048);
  EXPECT_EQ(c["verified"], true);
  EXPECT_GT(c["single_forward_ms"].get<double>(), 0);
  EXPECT_GT(c["efficiency"].get<double>(), 0);
  // Ring: the other rank's 1024 rows of k and v, 4 kv heads x 16 x 2 floats.
  EXPECT_EQ(c["ring_bytes_per_rank"].get<double>(), 1024.0 * 4 * 32 * 4);
  ASSERT_EQ(c["per_rank"].size(), 2u);
  for (const nlohmann::json& rank : c["per_rank"]) {
    EXPECT_GT(rank["forward_ms"].get<double>(), 0);
    EXPECT_GT(rank["backward_ms"].get<double>(), 0);
    EXPECT_EQ(rank["remote_rows"].get<double>(), 4 * 32);  // 4 classes x 32 rows of the other
    // Forward: those rows of k and v (float32), plus the small configuration records.
    EXPECT_GE(rank["forward_bytes_received"].get<double>(), 128.0 * 32 * 4);
    EXPECT_LT(rank["forward_bytes_received"].get<double>(), 128.0 * 32 * 4 + 4096);
  }
}

}  // namespace
}  // namespace dilated::testing
