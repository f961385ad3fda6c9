#include "block_options.hpp"

#include <charconv>
#include <limits>

#include "cli_error.hpp"

namespace dilated::cli {
namespace {

const char* const kBlockFlags[] = {"block-size", "local", "global", "dilated-blocks",
                                   "random",     "topk",  "grid"};

int64_t integer_at_least(const Args& args, const std::string& flag, int64_t lo) {
  const std::string text = args.required(flag);
  const int64_t value = parse_integer(flag, text);
  if (value < lo) {
    throw UsageError("--" + flag + " = " + text + ": expected an integer >= " + std::to_string(lo));
  }
  return value;
}

// "HxW" with positive H and W.
void read_grid(const std::string& text, ProblemSpec* spec) {
  const size_t x = text.find('x');
  auto positive = [&](const std::string& part, int64_t* out) {
    const char* end = part.data() + part.size();
    const auto [stop, error] = std::from_chars(part.data(), end, *out);
    return !part.empty() && error == std::errc() && stop == end && *out >= 1;
  };
  if (x == std::string::npos || !positive(text.substr(0, x), &spec->grid_height) ||
      !positive(text.substr(x + 1), &spec->grid_width)) {
    throw UsageError("--grid = " + text + ": expected HxW with positive integers (e.g. 256x256)");
  }
  if (spec->grid_height > std::numeric_limits<int64_t>::max() / spec->grid_width) {
    throw UsageError("--grid = " + text + ": H x W overflows 64 bits");
  }
}

}  // namespace

void declare_block_options(Args& args, const std::string& seed_flag) {
  args.option("block-size", "B", "block size of the block patterns (default 64)");
  args.option("local", "W", "block pattern local(W): key blocks J with |I - J| <= W");
  args.option("global", "G", "block pattern global(G): the first G blocks see and are seen by all");
  args.option("dilated-blocks", "S,C", "block pattern dilated_blocks(S, C): J = I + k*S, |k| <= C");
  args.option("random", "K", "block pattern random(K): K seeded random key blocks per query block");
  args.option(seed_flag, "S", "seed of the random block pattern (default 0)");
  args.option("topk", "K",
              "block pattern topk(K): the diagonal and the K key blocks of largest "
              "<mean q, mean k>");
  args.option("grid", "HxW",
              "tokens form an H x W grid (row-major): segments and blocks follow a "
              "generalised Hilbert curve; N must be H*W");
}

bool has_block_options(const Args& args, const std::string& seed_flag) {
  for (const char* flag : kBlockFlags) {
    if (args.has(flag)) return true;
  }
  return args.has(seed_flag);
}

void read_block_options(const Args& args, const std::string& seed_flag, ProblemSpec* spec) {
  if (args.has("block-size")) spec->block_size = integer_at_least(args, "block-size", 1);
  std::vector<BlockPattern>& patterns = spec->block_patterns;
  if (args.has("local")) patterns.push_back({BlockKind::local, integer_at_least(args, "local", 0)});
  if (args.has("global")) {
    patterns.push_back({BlockKind::global, integer_at_least(args, "global", 1)});
  }
  if (args.has("dilated-blocks")) {
    const std::string text = args.required("dilated-blocks");
    const std::vector<int64_t> sc = parse_integer_list("dilated-blocks", text);
    if (sc.size() != 2 || sc[0] < 1 || sc[1] < 0) {
      throw UsageError("--dilated-blocks = " + text +
                       ": expected S,C with stride S >= 1 and count C >= 0 (e.g. 4,2)");
    }
    patterns.push_back({BlockKind::dilated, sc[0], sc[1]});
  }
  if (args.has(seed_flag) && !args.has("random")) {
    throw UsageError("--" + seed_flag + " = " + args.required(seed_flag) +
                     ": expected together with --random (it seeds that pattern)");
  }
  if (args.has("random")) {
    BlockPattern bp{BlockKind::random, integer_at_least(args, "random", 1)};
    if (args.has(seed_flag)) bp.seed = static_cast<uint64_t>(integer_at_least(args, seed_flag, 0));
    patterns.push_back(bp);
  }
  if (args.has("topk")) patterns.push_back({BlockKind::topk, integer_at_least(args, "topk", 0)});
  if (args.has("grid")) read_grid(args.required("grid"), spec);
}

}  // namespace dilated::cli
