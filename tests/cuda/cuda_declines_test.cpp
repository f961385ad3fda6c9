// Block-sparse patterns and token grids are not implemented in the CUDA backend yet: it must
// decline them with a clear reason, so that `auto` picks a host backend for host tensors and
// device tensors get that reason instead of a wrong result.
#include <gtest/gtest.h>

#include <string>

#include "cuda/device_problem.hpp"

namespace dilated::testing {
namespace {

ProblemConfig config_with(bool blocks, bool grid) {
  ProblemConfig c;
  c.seqlen = 64;
  c.patterns = {{16, 1}};
  c.block_size = 16;
  if (blocks) c.block_patterns = {{BlockKind::local, 1, 0, 0}};
  if (grid) {
    c.grid_height = 8;
    c.grid_width = 8;
  }
  return c;
}

TEST(CudaDeclines, BlockPatternsAndGridsWithTheirReason) {
  const Backend& cuda = *find_backend("cuda");
  const HostProblem blocks(config_with(true, false), 1), grid(config_with(false, true), 1),
      plain(config_with(false, false), 1);
  for (Direction dir : {Direction::forward, Direction::backward}) {
    for (const auto& [problem, named] :
         {std::pair{&blocks, "block-sparse"}, {&grid, "Hilbert"}, {&plain, ""}}) {
      Params p = problem->params();
      p.device = Device::cuda;  // the reason only: nothing runs
      const std::string reason = cuda.unsupported_reason(p, dir);
      if (*named) {
        EXPECT_NE(reason.find(named), std::string::npos) << reason;
      } else {
        EXPECT_EQ(reason, "");
      }
    }
  }
}

TEST(CudaDeclines, AutoRunsHostTensorsOnTheHostAndNamesTheReasonForDeviceTensors) {
  const HostProblem problem(config_with(true, true), 1);
  Params p = problem.params();
  const Backend* chosen = nullptr;
  ASSERT_TRUE(select_backend(p, Direction::backward, "auto", &chosen).ok());
  EXPECT_EQ(chosen->device(), Device::host);
  DILATED_REQUIRE_BACKEND(*find_backend("cuda"));  // else the reason is that no GPU is here
  p.device = Device::cuda;  // validation and selection only: nothing runs
  const Status s = select_backend(p, Direction::forward, "auto", &chosen);
  EXPECT_EQ(s.code(), StatusCode::unsupported);
  EXPECT_NE(s.message().find("block-sparse"), std::string::npos) << s.message();
}

TEST(CudaDeclines, DeviceRunReportsTheReason) {
  DILATED_REQUIRE_BACKEND(*find_backend("cuda"));
  ProblemConfig c;
  c.seqlen = 64;
  c.patterns = {{16, 1}};
  c.block_size = 16;
  c.block_patterns = {{BlockKind::global, 1, 0, 0}};
  HostProblem host(c, test_seed());
  DeviceProblem d(*find_backend("cuda"), host);
  const Status s = d.run(Direction::forward);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("block-sparse"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace dilated::testing
