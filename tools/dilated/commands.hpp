// The subcommands of `dilated`. Each takes the words after its name and returns the exit
// code; bad input is thrown as UsageError (exit 2) and caught in main.
#pragma once

#include <string>
#include <vector>

namespace dilated::cli {

using Words = std::vector<std::string>;

int command_list(const Words& words);
int command_run(const Words& words);
int command_check(const Words& words);
int command_bench(const Words& words);

}  // namespace dilated::cli
