#include "dist/thread_group.hpp"

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

namespace dilated::testing {

// What a rank has posted for the collective in progress.
struct Posted {
  const unsigned char* send = nullptr;
  const int64_t* send_bytes = nullptr;  // null: all_gather (the same block to everyone)
  int64_t block = 0;
};

struct ThreadGroup::State {
  int size = 0;
  double timeout = 0;
  std::mutex mutex;
  std::condition_variable changed;
  int arrived = 0;
  int64_t generation = 0;
  bool broken = false;
  std::vector<Posted> posted;

  // Waits until every rank arrives; false after the timeout (the group is broken then).
  bool rendezvous() {
    std::unique_lock<std::mutex> lock(mutex);
    if (broken) return false;
    const int64_t mine = generation;
    if (++arrived == size) {
      arrived = 0;
      ++generation;
      changed.notify_all();
      return true;
    }
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(timeout));
    if (!changed.wait_until(lock, deadline, [&] { return generation != mine || broken; }) ||
        broken) {
      broken = true;
      changed.notify_all();
      return false;
    }
    return true;
  }
};

namespace {

class ThreadCommunicator final : public dist::Communicator {
 public:
  ThreadCommunicator(ThreadGroup::State* state, int rank) : state_(state), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return state_->size; }
  Device device() const override { return Device::host; }

  Status all_to_all(const void* send, const int64_t* send_bytes, void* recv,
                    const int64_t* recv_bytes) override {
    state_->posted[static_cast<size_t>(rank_)] = {static_cast<const unsigned char*>(send),
                                                  send_bytes, 0};
    if (!state_->rendezvous()) return timed_out("all_to_all");
    Status result;
    int64_t recv_at = 0;
    for (int q = 0; q < size(); ++q) {
      const Posted& from = state_->posted[static_cast<size_t>(q)];
      int64_t send_at = 0;
      for (int x = 0; x < rank_; ++x) send_at += from.send_bytes[x];
      if (from.send_bytes[rank_] != recv_bytes[q]) {
        result =
            Status::Runtime("thread group: rank " + std::to_string(q) + " sends " +
                            std::to_string(from.send_bytes[rank_]) + " bytes, rank " +
                            std::to_string(rank_) + " expects " + std::to_string(recv_bytes[q]));
      } else if (recv_bytes[q] > 0) {
        std::memcpy(static_cast<unsigned char*>(recv) + recv_at, from.send + send_at,
                    static_cast<size_t>(recv_bytes[q]));
      }
      recv_at += recv_bytes[q];
    }
    if (!state_->rendezvous()) return timed_out("all_to_all");
    return result;
  }

  Status all_gather(const void* send, int64_t bytes, void* recv) override {
    state_->posted[static_cast<size_t>(rank_)] = {static_cast<const unsigned char*>(send), nullptr,
                                                  bytes};
    if (!state_->rendezvous()) return timed_out("all_gather");
    for (int q = 0; q < size(); ++q) {
      std::memcpy(static_cast<unsigned char*>(recv) + q * bytes,
                  state_->posted[static_cast<size_t>(q)].send, static_cast<size_t>(bytes));
    }
    if (!state_->rendezvous()) return timed_out("all_gather");
    return {};
  }

  Status barrier() override { return state_->rendezvous() ? Status() : timed_out("barrier"); }

  void set_timeout(double seconds) override { state_->timeout = seconds; }
  double timeout() const override { return state_->timeout; }
  [[noreturn]] void abort(const std::string& reason) override {
    std::fprintf(stderr, "thread group aborted: %s\n", reason.c_str());
    std::abort();
  }

 private:
  Status timed_out(const char* what) const {
    return Status::Runtime("thread group: rank " + std::to_string(rank_) + " waited more than " +
                           std::to_string(state_->timeout) + " s in " + what +
                           " for the other ranks");
  }

  ThreadGroup::State* state_;
  int rank_;
};

}  // namespace

ThreadGroup::ThreadGroup(int size, double timeout_seconds) : state_(new State) {
  state_->size = size;
  state_->timeout = timeout_seconds;
  state_->posted.resize(static_cast<size_t>(size));
}

ThreadGroup::~ThreadGroup() = default;

int ThreadGroup::size() const {
  return state_->size;
}

void ThreadGroup::run(const std::function<void(dist::Communicator&)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < state_->size; ++r) {
    threads.emplace_back([this, r, &fn] {
      ThreadCommunicator comm(state_.get(), r);
      fn(comm);
    });
  }
  for (std::thread& t : threads) t.join();
}

}  // namespace dilated::testing
