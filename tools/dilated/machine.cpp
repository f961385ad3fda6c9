#include "machine.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include "cpu/fma_peak.hpp"
#include "dilated/dilated.hpp"

namespace dilated::cli {

int64_t host_memory_available() {
  std::ifstream meminfo("/proc/meminfo");
  for (std::string line; std::getline(meminfo, line);) {
    if (line.rfind("MemAvailable:", 0) == 0) {
      std::istringstream fields(line.substr(13));
      int64_t kib = -1;
      fields >> kib;
      return kib < 0 ? -1 : kib * 1024;
    }
  }
  return -1;
}

Machine describe_machine() {
  Machine m;
  for (const Backend* b : backends()) {
    if (b->device() == Device::host) {
      if (m.cpu.empty()) m.cpu = b->device_name();
    } else if (b->unavailable_reason().empty()) {
      const std::string name = b->device_name();
      if (std::find(m.gpus.begin(), m.gpus.end(), name) == m.gpus.end()) m.gpus.push_back(name);
    }
  }
  m.hardware_threads = static_cast<int>(std::thread::hardware_concurrency());
  m.simd = cpu::simd_target_name();
  m.memory_available = host_memory_available();
  return m;
}

}  // namespace dilated::cli
