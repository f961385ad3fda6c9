// dilated::dist::Communicator over MPI. Every collective is a set of non-blocking point-to-point
// transfers polled with MPI_Test until it completes or the timeout passes: MPI's own
// collectives cannot time out, and a rank that died or took another path would leave them
// waiting forever.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "dilated/dist_mpi.hpp"

namespace dilated::dist {
namespace {

// One tag per kind of collective: messages of one kind between two ranks match in order.
constexpr int kTagAllToAll = 7101;
constexpr int kTagAllGather = 7102;
constexpr int kTagBarrier = 7103;
// MPI counts are int: larger blocks travel in pieces of at most 1 GiB.
constexpr int64_t kPiece = int64_t{1} << 30;

std::string mpi_error(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return std::string(text, static_cast<size_t>(length));
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, bool finalize) : comm_(comm), finalize_(finalize) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    // Errors come back as codes (our Status) instead of ending the job.
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalize_ && !finalized) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device::host; }
  void set_timeout(double seconds) override { timeout_ = seconds; }
  double timeout() const override { return timeout_; }

  // Ends this process with status 1 without MPI_Finalize, which makes the launcher end every
  // rank. (MPI_Abort is the textbook call, but when several ranks time out together and all
  // call it, OpenMPI 4.1's mpirun was seen to hang with every rank gone.)
  [[noreturn]] void abort(const std::string& reason) override {
    std::fprintf(stderr, "dilated dist (MPI): rank %d ends the job: %s\n", rank_, reason.c_str());
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(1);
  }

  Status all_to_all(const void* send, const int64_t* send_bytes, void* recv,
                    const int64_t* recv_bytes) override {
    if (broken_) return unusable();
    Transfers t(this, "all_to_all");
    int64_t send_at = 0, recv_at = 0;
    for (int q = 0; q < size_; ++q) {
      const auto* from = static_cast<const unsigned char*>(send) + send_at;
      auto* to = static_cast<unsigned char*>(recv) + recv_at;
      if (q == rank_) {
        if (send_bytes[q] != recv_bytes[q]) {
          return Status::Invalid("dist (MPI): all_to_all sends itself " +
                                 std::to_string(send_bytes[q]) + " bytes but expects " +
                                 std::to_string(recv_bytes[q]));
        }
        if (send_bytes[q] > 0) std::memcpy(to, from, static_cast<size_t>(send_bytes[q]));
      } else {
        if (Status s = t.receive(to, recv_bytes[q], q, kTagAllToAll); !s.ok()) return s;
        if (Status s = t.send(from, send_bytes[q], q, kTagAllToAll); !s.ok()) return s;
      }
      send_at += send_bytes[q];
      recv_at += recv_bytes[q];
    }
    return t.wait();
  }

  Status all_gather(const void* send, int64_t bytes, void* recv) override {
    if (broken_) return unusable();
    Transfers t(this, "all_gather");
    for (int q = 0; q < size_; ++q) {
      auto* to = static_cast<unsigned char*>(recv) + q * bytes;
      if (q == rank_) {
        std::memcpy(to, send, static_cast<size_t>(bytes));
        continue;
      }
      if (Status s = t.receive(to, bytes, q, kTagAllGather); !s.ok()) return s;
      if (Status s = t.send(send, bytes, q, kTagAllGather); !s.ok()) return s;
    }
    return t.wait();
  }

  Status barrier() override {
    const unsigned char token = 1;
    std::vector<unsigned char> tokens(static_cast<size_t>(size_));
    if (broken_) return unusable();
    Transfers t(this, "barrier");
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) continue;
      if (Status s = t.receive(&tokens[static_cast<size_t>(q)], 1, q, kTagBarrier); !s.ok()) {
        return s;
      }
      if (Status s = t.send(&token, 1, q, kTagBarrier); !s.ok()) return s;
    }
    return t.wait();
  }

 private:
  Status unusable() const {
    return Status::Runtime("dist (MPI): rank " + std::to_string(rank_) +
                           ": the communicator failed earlier (timeout or error); abort the group");
  }

  // The transfers of one collective: posted, then polled together.
  class Transfers {
   public:
    Transfers(MpiCommunicator* comm, const char* what) : comm_(comm), what_(what) {}
    // Whatever did not complete is left to MPI_Abort: the group is unusable after a failure.
    ~Transfers() = default;

    Status receive(void* data, int64_t bytes, int peer, int tag) {
      for (int64_t at = 0; at < bytes; at += kPiece) {
        requests_.emplace_back();
        peers_.push_back(peer);
        const int count = static_cast<int>(std::min(kPiece, bytes - at));
        const int rc = MPI_Irecv(static_cast<unsigned char*>(data) + at, count, MPI_BYTE, peer, tag,
                                 comm_->comm_, &requests_.back());
        if (rc != MPI_SUCCESS) return failed(rc);
      }
      return {};
    }
    Status send(const void* data, int64_t bytes, int peer, int tag) {
      for (int64_t at = 0; at < bytes; at += kPiece) {
        requests_.emplace_back();
        peers_.push_back(peer);
        const int count = static_cast<int>(std::min(kPiece, bytes - at));
        const int rc = MPI_Isend(static_cast<const unsigned char*>(data) + at, count, MPI_BYTE,
                                 peer, tag, comm_->comm_, &requests_.back());
        if (rc != MPI_SUCCESS) return failed(rc);
      }
      return {};
    }

    // Polls until every transfer completed, or the timeout passed. Sleeps a little between
    // polls once the first ones found nothing, so that waiting ranks leave the cores to
    // computing ones (oversubscribed runs).
    Status wait() {
      const auto start = std::chrono::steady_clock::now();
      const auto limit = std::chrono::duration<double>(comm_->timeout_);
      std::vector<bool> done(requests_.size(), false);
      size_t remaining = requests_.size();
      int idle_polls = 0;
      while (remaining > 0) {
        bool progress = false;
        for (size_t i = 0; i < requests_.size(); ++i) {
          if (done[i]) continue;
          int flag = 0;
          const int rc = MPI_Test(&requests_[i], &flag, MPI_STATUS_IGNORE);
          if (rc != MPI_SUCCESS) return failed(rc);
          if (flag) {
            done[i] = true;
            --remaining;
            progress = true;
          }
        }
        if (remaining == 0) break;
        if (std::chrono::steady_clock::now() - start > limit) return timed_out(done);
        idle_polls = progress ? 0 : idle_polls + 1;
        if (idle_polls > 64) {
          std::this_thread::sleep_for(
              std::chrono::microseconds(std::min(1000, 20 * (idle_polls - 64))));
        }
      }
      return {};
    }

   private:
    Status failed(int rc) {
      comm_->broken_ = true;
      return Status::Runtime("dist (MPI): rank " + std::to_string(comm_->rank_) + " in " + what_ +
                             ": " + mpi_error(rc));
    }
    Status timed_out(const std::vector<bool>& done) {
      comm_->broken_ = true;
      std::vector<int> waiting;
      for (size_t i = 0; i < done.size(); ++i) {
        if (!done[i] && std::find(waiting.begin(), waiting.end(), peers_[i]) == waiting.end()) {
          waiting.push_back(peers_[i]);
        }
      }
      std::sort(waiting.begin(), waiting.end());
      std::string ranks;
      for (int q : waiting) ranks += (ranks.empty() ? "" : ", ") + std::to_string(q);
      char seconds[32];
      std::snprintf(seconds, sizeof(seconds), "%g", comm_->timeout_);
      return Status::Runtime("dist (MPI): rank " + std::to_string(comm_->rank_) +
                             " waited more than " + seconds + " s in " + what_ + " for rank" +
                             (waiting.size() > 1 ? "s " : " ") + ranks +
                             " (a rank failed, exited or took another path)");
    }

    MpiCommunicator* comm_;
    const char* what_;
    std::vector<MPI_Request> requests_;
    std::vector<int> peers_;
  };

  MPI_Comm comm_;
  bool finalize_;
  int rank_ = 0;
  int size_ = 1;
  double timeout_ = kDefaultTimeoutSeconds;
  bool broken_ = false;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm) {
  return std::make_unique<MpiCommunicator>(comm, false);
}

Status mpi_world(std::unique_ptr<Communicator>* out) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  bool ours = false;
  if (!initialized) {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      return Status::Runtime("dist (MPI): MPI_Init_thread failed");
    }
    ours = true;
  }
  *out = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, ours);
  return {};
}

}  // namespace dilated::dist
