// `dilated list`: every registered backend, its device, whether it runs here (and why not),
// and what it accepts, asked of the backend itself on a typical problem.
#include <cstdio>
#include <string>

#include "args.hpp"
#include "backend_choice.hpp"
#include "cli_error.hpp"
#include "commands.hpp"
#include "text_table.hpp"

namespace dilated::cli {
namespace {

// The dtypes and head dims the backend accepts on a small longnet problem, forward and
// backward: "fp32 fp16 bf16; head dims 16 32 64 128".
std::string capabilities(const Backend& backend) {
  ProblemSpec spec;
  spec.seqlen = 256;
  spec.heads = spec.heads_kv = 4;
  spec.patterns = {{64, 1}, {128, 2}};
  std::string dtypes, dims;
  for (DType dtype : {DType::f32, DType::f16, DType::bf16}) {
    spec.dtype = dtype;
    spec.head_dim = 64;
    if (cannot_run(backend, spec, true).empty()) dtypes += std::string(" ") + dtype_name(dtype);
  }
  spec.dtype = DType::f32;
  for (int64_t d : {16, 32, 48, 64, 96, 128, 256}) {
    spec.head_dim = d;
    if (cannot_run(backend, spec, true).empty()) dims += " " + std::to_string(d);
  }
  if (dtypes.empty() && dims.empty())
    return "declines the probe problem: " + cannot_run(backend, spec, true);
  return "dtypes" + (dtypes.empty() ? std::string(" none at D=64") : dtypes) + "; head dims" +
         (dims.empty() ? std::string(" none in fp32") : dims) + " (fp32)";
}

}  // namespace

int command_list(const Words& words) {
  Args args("list", "dilated list",
            "Lists every backend compiled into this build: its description, the device it\n"
            "runs on, and whether it can run on this machine (if not, why). For available\n"
            "backends, the dtypes and head dims it accepts (forward and backward).");
  args.parse(words);
  if (args.help_requested()) {
    std::fputs(args.help_text().c_str(), stdout);
    return kExitOk;
  }
  TextTable table({"backend", "device", "available", "description"});
  std::string details;
  for (const Backend* b : backends()) {
    const std::string reason = b->unavailable_reason();
    table.add(
        {b->name(), b->device_name(), reason.empty() ? "yes" : "no: " + reason, b->description()});
    if (reason.empty()) details += std::string("  ") + b->name() + ": " + capabilities(*b) + "\n";
  }
  std::fputs(table.str().c_str(), stdout);
  if (!details.empty()) std::printf("\naccepts:\n%s", details.c_str());
  return kExitOk;
}

}  // namespace dilated::cli
