// What the machine is: named in every bench report and used to skip what cannot fit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dilated::cli {

struct Machine {
  std::string cpu;  // the host backends' device name
  int hardware_threads = 0;
  std::string simd;               // Highway's target on this CPU
  std::vector<std::string> gpus;  // device names of available non-host backends
  int64_t memory_available = -1;  // bytes (MemAvailable), -1 when unknown
};

Machine describe_machine();

// Bytes the host can still give (MemAvailable from /proc/meminfo), -1 when unknown.
int64_t host_memory_available();

}  // namespace dilated::cli
