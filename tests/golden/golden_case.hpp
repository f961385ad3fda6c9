// The golden vectors of the original dilated-attention-pytorch DilatedAttention
// (tests/data/golden/head_groups, a copy of ../shared/golden): loading and comparing.
#pragma once

#include <string>
#include <vector>

#include "dilated/dilated.hpp"

namespace dilated::testing {

struct GoldenCase {
  std::string name;
  std::string dir;
  int64_t batch = 0, seqlen = 0, heads = 0, head_dim = 0;
  std::vector<Pattern> patterns;
  bool causal = false;
  // float32 [B, N, H, D]
  std::vector<float> q, k, v, dout, out, dq, dk, dv;
};

std::vector<std::string> golden_case_names();
GoldenCase load_golden_case(const std::string& name);

// Params over the case's float32 arrays (inputs) and the given output buffers.
Params golden_params(GoldenCase& c, std::vector<float>& out, std::vector<float>& lse,
                     std::vector<float>& dq, std::vector<float>& dk, std::vector<float>& dv);

// max |got - want| / max |want|
double max_relative_error(const std::vector<float>& got, const std::vector<float>& want);

}  // namespace dilated::testing
