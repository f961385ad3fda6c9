#include "cpu/fast/parallel.hpp"

#include <algorithm>
#include <atomic>
#include <system_error>
#include <thread>
#include <vector>

namespace dilated::cpu_fast {

void parallel_for(int workers, int64_t count, const std::function<void(int64_t, int)>& body) {
  if (count <= 0) return;
  workers = static_cast<int>(std::clamp<int64_t>(workers, 1, count));
  std::atomic<int64_t> next{0};
  auto work = [&](int worker) {
    for (int64_t task = next.fetch_add(1); task < count; task = next.fetch_add(1)) {
      body(task, worker);
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(workers - 1));
  for (int w = 1; w < workers; ++w) {
    try {
      threads.emplace_back(work, w);
    } catch (const std::system_error&) {
      break;  // the threads started so far (and the caller) finish the tasks
    }
  }
  work(0);
  for (std::thread& t : threads) t.join();
}

int thread_count(int32_t requested) {
  if (requested > 0) return requested;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace dilated::cpu_fast
