// Every malformed problem is refused before any work, with a message naming the argument.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "support/problem.hpp"

namespace dilated::testing {
namespace {

struct BadCase {
  const char* what;
  std::function<void(Params&)> spoil;
  const char* named;  // text the message must contain
};

TEST(Validate, RefusesEachBadInputNamingIt) {
  ProblemConfig config;
  config.heads = 4;
  config.heads_kv = 2;
  config.patterns = {{16, 2}, {32, 4}};
  HostProblem problem(config, test_seed());
  ASSERT_TRUE(validate(problem.params(), Direction::backward).ok());
  const std::vector<BadCase> cases = {
      {"zero batch", [](Params& p) { p.batch = 0; }, "batch = 0"},
      {"negative seqlen", [](Params& p) { p.seqlen = -3; }, "seqlen = -3"},
      {"heads not a multiple of heads_kv", [](Params& p) { p.heads_kv = 3; }, "heads_kv = 3"},
      {"zero head_dim", [](Params& p) { p.head_dim = 0; }, "head_dim = 0"},
      {"no patterns", [](Params& p) { p.num_patterns = 0; }, "number of patterns = 0"},
      {"too many patterns", [](Params& p) { p.num_patterns = 17; }, "number of patterns = 17"},
      {"segment < 1", [](Params& p) { p.patterns[1].segment = 0; }, "segments[1] = 0"},
      {"dilation > segment", [](Params& p) { p.patterns[0].dilation = 17; }, "dilations[0] = 17"},
      {"dilation < 1", [](Params& p) { p.patterns[1].dilation = 0; }, "dilations[1] = 0"},
      {"unknown mode", [](Params& p) { p.mode = static_cast<Mode>(7); }, "mode = 7"},
      {"unknown dtype", [](Params& p) { p.dtype = static_cast<DType>(9); }, "dtype = 9"},
      {"grouped offsets in head_groups",
       [](Params& p) {
         p.mode = Mode::head_groups;
         p.head_offsets = HeadOffsets::grouped;
       },
       "head_offsets = grouped"},
      {"fewer heads than groups",
       [](Params& p) {
         p.mode = Mode::head_groups;
         p.heads = 1;
         p.heads_kv = 1;
       },
       "heads = 1"},
      {"infinite scale", [](Params& p) { p.scale = INFINITY; }, "scale = inf"},
      {"null q", [](Params& p) { p.q.data = nullptr; }, "q: null"},
      {"null out", [](Params& p) { p.out.data = nullptr; }, "out: null"},
      {"negative stride", [](Params& p) { p.k.row_stride = -1; }, "k strides"},
      {"null lse in backward", [](Params& p) { p.lse = nullptr; }, "lse"},
      {"null dk in backward", [](Params& p) { p.dk.data = nullptr; }, "dk: null"},
      {"overflowing sizes", [](Params& p) { p.seqlen = int64_t{1} << 60; }, "overflows"},
  };
  for (const BadCase& c : cases) {
    Params p = problem.params();
    c.spoil(p);
    const Status s = validate(p, Direction::backward);
    EXPECT_EQ(s.code(), StatusCode::invalid_argument) << c.what;
    EXPECT_NE(s.message().find(c.named), std::string::npos)
        << c.what << ": message was: " << s.message();
    // forward() and backward() refuse it before touching any memory.
    problem.poison_outputs();
    EXPECT_FALSE(backward(p, {}, "reference").ok()) << c.what;
    for (double x : problem.read("dq")) ASSERT_TRUE(std::isnan(x)) << c.what;
  }
}

TEST(Validate, VarlenOffsetsAreChecked) {
  ProblemConfig config;
  config.seq_lengths = {5, 7};
  HostProblem problem(config, test_seed());
  Params p = problem.params();
  ASSERT_TRUE(validate(p, Direction::forward).ok());
  std::vector<int32_t> cu = {0, 9, 12};  // first sequence longer than seqlen = 7
  p.cu_seqlens = cu.data();
  EXPECT_NE(validate(p, Direction::forward).message().find("cu_seqlens[1] = 9"), std::string::npos);
  cu = {1, 5, 12};
  EXPECT_NE(validate(p, Direction::forward).message().find("cu_seqlens[0] = 1"), std::string::npos);
  cu = {0, 5, 11};
  EXPECT_NE(validate(p, Direction::forward).message().find("total_tokens = 12"), std::string::npos);
}

TEST(Validate, UnknownBackendIsNamed) {
  HostProblem problem(ProblemConfig{}, test_seed());
  const Status s = forward(problem.params(), {}, "tpu");
  EXPECT_EQ(s.code(), StatusCode::invalid_argument);
  EXPECT_NE(s.message().find("backend = tpu"), std::string::npos) << s.message();
}

TEST(Validate, WrongDeviceIsExplained) {
  HostProblem problem(ProblemConfig{}, test_seed());
  Params p = problem.params();
  p.device = Device::cuda;
  const Status s = forward(p, {}, "reference");
  EXPECT_EQ(s.code(), StatusCode::unsupported);
  EXPECT_NE(s.message().find("CUDA memory"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace dilated::testing
