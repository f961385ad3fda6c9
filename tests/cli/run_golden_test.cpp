// The golden vectors of the original head_groups implementation through `dilated run`: the
// .npy files in, out/dq/dk/dv out, all through the binary.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "cli_runner.hpp"
#include "golden/golden_case.hpp"
#include "io/npy.hpp"

namespace dilated::testing {
namespace {

std::vector<float> read_floats(const std::string& path, std::vector<int64_t>* shape) {
  io::NpyArray array;
  std::vector<float> values;
  Status s = io::read_npy(path, &array);
  if (s.ok()) s = io::to_float32(array, &values);
  EXPECT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(array.type, io::NpyType::f32) << path;
  if (shape) *shape = array.shape;
  return values;
}

std::string join(const std::vector<Pattern>& patterns, bool segments) {
  std::string s;
  for (const Pattern& p : patterns) {
    s += (s.empty() ? "" : ",") + std::to_string(segments ? p.segment : p.dilation);
  }
  return s;
}

// Empty when `backend` runs the golden case here (fp32, forward and backward).
std::string declines(const Backend& backend, const GoldenCase& c) {
  if (std::string reason = backend.unavailable_reason(); !reason.empty()) return reason;
  Params p;
  p.batch = c.batch;
  p.seqlen = c.seqlen;
  p.heads = p.heads_kv = c.heads;
  p.head_dim = p.head_dim_v = c.head_dim;
  p.mode = Mode::head_groups;
  p.causal = c.causal;
  p.device = backend.device();
  set_patterns(p, c.patterns);
  std::string reason = backend.unsupported_reason(p, Direction::forward);
  return reason.empty() ? backend.unsupported_reason(p, Direction::backward) : reason;
}

// Every golden case on every backend that runs it (the oracle always does).
TEST(CliRun, GoldenHeadGroupsCasesMatchTheOriginal) {
  const std::vector<std::string> names = golden_case_names();
  ASSERT_FALSE(names.empty());
  int runs = 0;
  for (const Backend* backend : backends()) {
    for (const std::string& name : names) {
      SCOPED_TRACE(name + " on " + backend->name());
      const GoldenCase c = load_golden_case(name);
      if (!declines(*backend, c).empty()) continue;
      ScratchDir out;
      std::vector<std::string> args = {"run",
                                       "--q",
                                       c.dir + "/q.npy",
                                       "--k",
                                       c.dir + "/k.npy",
                                       "--v",
                                       c.dir + "/v.npy",
                                       "--dout",
                                       c.dir + "/dout.npy",
                                       "--segments",
                                       join(c.patterns, true),
                                       "--dilations",
                                       join(c.patterns, false),
                                       "--mode",
                                       "head_groups",
                                       "--backend",
                                       backend->name(),
                                       "--out-dir",
                                       out.path().string()};
      if (c.causal) args.push_back("--causal");
      const CliResult r = run_cli(args);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      ++runs;
      const std::vector<int64_t> bnhd = {c.batch, c.seqlen, c.heads, c.head_dim};
      // Golden: float64 results stored as float32. The oracle accumulates in double, fast
      // backends in float32 over at most 1024 keys: 1e-5 of the largest element.
      for (const auto& [file, want] :
           {std::pair{"out", &c.out}, {"dq", &c.dq}, {"dk", &c.dk}, {"dv", &c.dv}}) {
        SCOPED_TRACE(file);
        std::vector<int64_t> shape;
        const std::vector<float> got = read_floats(out / (std::string(file) + ".npy"), &shape);
        EXPECT_EQ(shape, bnhd);
        EXPECT_LE(max_relative_error(got, *want), 1e-5);
      }
      std::vector<int64_t> lse_shape;
      const std::vector<float> lse = read_floats(out / "lse.npy", &lse_shape);
      EXPECT_EQ(lse_shape, (std::vector<int64_t>{c.batch, c.heads, c.seqlen}));
      // Each row is selected by its group's pattern or not: finite or -inf, never NaN/+inf.
      for (float x : lse) ASSERT_TRUE(std::isfinite(x) || x == -INFINITY) << x;
      // Nothing but the five outputs (no temporary files left behind).
      EXPECT_EQ(entries(out.path()).size(), 5u);
    }
  }
  EXPECT_GE(runs, static_cast<int>(names.size()));  // at least the oracle ran every case
}

TEST(CliRun, ForwardOnlyWritesOutAndLse) {
  const GoldenCase c = load_golden_case(golden_case_names().front());
  ScratchDir out;
  const std::string dir = out / "created/inside";  // missing folders are created
  const CliResult r =
      run_cli({"run", "--q", c.dir + "/q.npy", "--k", c.dir + "/k.npy", "--v", c.dir + "/v.npy",
               "--segments", join(c.patterns, true), "--dilations", join(c.patterns, false),
               "--mode", "head_groups", "--out-dir", dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> files = entries(dir);
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"lse.npy", "out.npy"}));
  if (c.causal) return;
  std::vector<int64_t> shape;
  EXPECT_LE(max_relative_error(read_floats(dir + "/out.npy", &shape), c.out), 1e-5);
}

TEST(CliRun, FailedRenameLeavesNoPartialSet) {
  // dq.npy exists as a folder: staging succeeds, renaming dq fails after out and lse were
  // renamed; the set must be taken back whole.
  const GoldenCase c = load_golden_case(golden_case_names().front());
  ScratchDir out;
  std::filesystem::create_directory(out.path() / "dq.npy");
  const CliResult r =
      run_cli({"run", "--q", c.dir + "/q.npy", "--k", c.dir + "/k.npy", "--v", c.dir + "/v.npy",
               "--dout", c.dir + "/dout.npy", "--segments", join(c.patterns, true), "--dilations",
               join(c.patterns, false), "--mode", "head_groups", "--out-dir", out.path().string()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("dq.npy"), std::string::npos) << r.err;
  EXPECT_EQ(entries(out.path()), std::vector<std::string>{"dq.npy"});
}

}  // namespace
}  // namespace dilated::testing
