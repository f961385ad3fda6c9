// A group of ranks that are threads of one process, for testing the sequence-parallel
// algorithm without mpirun: every collective is a rendezvous of all threads (with the
// communicator timeout), data moves by memcpy.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "dilated/dist.hpp"

namespace dilated::testing {

class ThreadGroup {
 public:
  explicit ThreadGroup(int size, double timeout_seconds = dist::kDefaultTimeoutSeconds);
  ~ThreadGroup();
  // Runs fn(comm) on size() threads, one per rank, and waits for them.
  void run(const std::function<void(dist::Communicator&)>& fn);
  int size() const;

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace dilated::testing
