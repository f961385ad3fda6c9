// The block-sparse and Hilbert-order options that `run` and `bench` share (docs/design.md
// 1.1-1.2): declared once, parsed strictly, each bad value a usage error naming its flag.
#pragma once

#include <string>

#include "args.hpp"
#include "problem.hpp"

namespace dilated::cli {

// Declares --block-size --local --global --dilated-blocks --random --topk --grid and the seed
// of the random pattern under `seed_flag` (run: "seed"; bench, whose --seed seeds the inputs:
// "block-seed").
void declare_block_options(Args& args, const std::string& seed_flag);

// Whether any of them is given.
bool has_block_options(const Args& args, const std::string& seed_flag);

// Fills spec's block size, block patterns (in the order local, global, dilated_blocks,
// random, topk) and grid. The mask and the grid's agreement with N are the command's to check.
void read_block_options(const Args& args, const std::string& seed_flag, ProblemSpec* spec);

}  // namespace dilated::cli
