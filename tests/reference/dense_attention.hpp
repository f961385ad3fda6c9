// Dense masked attention built straight from DESIGN 2.2-2.4 and docs/design.md 1.1-1.2 (block
// patterns, token order), sharing no code with the library but hilbert_order (whose
// properties tests/core checks): an N x N multiplicity matrix per head, then an ordinary
// softmax over it.
#pragma once

#include <vector>

#include "support/problem.hpp"

namespace dilated::testing {

struct DenseResult {
  std::vector<double> out;  // [token][head][dv]
  std::vector<double> lse;  // [b][head][t] (varlen: [head][token])
};

DenseResult dense_attention(const HostProblem& problem);

}  // namespace dilated::testing
