// `dilated`: list, run, check and bench dilated attention through the library's registry.
#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include "cli_error.hpp"
#include "commands.hpp"
#include "distributed.hpp"

namespace {

constexpr const char* kUsage =
    "usage: dilated <command> [options]   (dilated <command> --help for its options)\n"
    "\n"
    "commands:\n"
    "  list    backends, their devices, and why one is unavailable here\n"
    "  run     dilated attention on .npy files: out, lse and, with --dout, the gradients\n"
    "  check   random small problems, every available backend against the oracle\n"
    "  bench   verify against the oracle, then time: ms, TFLOP/s, tokens/s, peak memory\n";

// One line on stderr whatever the message holds (a backend's reason may span lines).
void report(const std::string& prefix, const char* message) {
  if (!dilated::cli::this_rank_reports()) return;  // rank 0 speaks for a distributed job
  std::string line = message;
  for (char& c : line) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  std::fprintf(stderr, "%s%s\n", prefix.c_str(), line.c_str());
}

bool known(const std::string& command) {
  return command == "list" || command == "run" || command == "check" || command == "bench";
}

int run_command(const std::string& command, const dilated::cli::Words& words) {
  using namespace dilated::cli;
  try {
    if (command == "list") return command_list(words);
    if (command == "run") return command_run(words);
    if (command == "check") return command_check(words);
    if (command == "bench") return command_bench(words);
    if (command == "--help" || command == "-h" || command == "help") {
      std::fputs(kUsage, stdout);
      return kExitOk;
    }
    if (command.empty()) throw UsageError("missing command: expected list, run, check or bench");
    throw UsageError("unknown command '" + command + "': expected list, run, check or bench");
  } catch (const UsageError& e) {
    report(known(command) ? "dilated " + command + ": error: " : "dilated: error: ", e.what());
    return kExitBadInput;
  } catch (const RuntimeFailure& e) {
    report("dilated " + command + ": failed: ", e.what());
    return kExitFailure;
  } catch (const std::bad_alloc&) {
    report("dilated " + command + ": failed: ", "out of host memory");
    return kExitFailure;
  } catch (const std::exception& e) {
    report("dilated " + command + ": failed: ", e.what());
    return kExitFailure;
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace dilated::cli;
  const std::string command = argc > 1 ? argv[1] : "";
  const Words words(argv + (argc > 1 ? 2 : 1), argv + argc);
  start_distributed_session(words);
  const int code = run_command(command, words);
  end_distributed_session();
  return code;
}
