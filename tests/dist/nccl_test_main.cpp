// The NCCL communicator's collectives on device buffers, under `mpirun -np 2` (MPI carries the
// NCCL unique id) on a machine with at least 2 GPUs; exits 77 (skipped) elsewhere. Label
// multigpu. Checks all_to_all with uneven sizes, all_gather, barrier, and that a rank that skips
// a collective makes the other fail after the timeout.
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "dilated/dist_mpi.hpp"
#include "dilated/dist_nccl.hpp"

namespace {

constexpr int kSkipped = 77;
int g_failures = 0;

void expect(bool ok, const std::string& what, int rank) {
  if (ok) return;
  ++g_failures;
  std::fprintf(stderr, "[rank %d] FAILED: %s\n", rank, what.c_str());
}

// Byte i of the block rank `from` sends to rank `to`.
unsigned char pattern(int from, int to, int64_t i) {
  return static_cast<unsigned char>(from * 31 + to * 7 + i);
}

}  // namespace

int main() {
  using namespace dilated;
  std::unique_ptr<dist::Communicator> host;
  if (Status s = dist::mpi_world(&host); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.message().c_str());
    return 1;
  }
  const int rank = host->rank(), size = host->size();
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;
  double enough = devices >= size ? 1 : 0;
  dist::all_reduce_sum(*host, &enough, 1);
  if (enough < size) {
    if (rank == 0) std::printf("skipped: needs %d CUDA devices per host\n", size);
    return kSkipped;
  }
  ncclUniqueId id;
  if (rank == 0) ncclGetUniqueId(&id);
  std::vector<ncclUniqueId> ids(static_cast<size_t>(size));
  host->all_gather(&id, sizeof(id), ids.data());
  std::unique_ptr<dist::Communicator> comm;
  if (Status s = dist::nccl_communicator_from_id(ids[0], rank, size, rank, 30.0, &comm); !s.ok()) {
    std::fprintf(stderr, "[rank %d] %s\n", rank, s.message().c_str());
    return 1;
  }

  // all_to_all: rank p sends (p + q + 1) * 1000 bytes to rank q.
  std::vector<int64_t> send_bytes(static_cast<size_t>(size)), recv_bytes(send_bytes);
  int64_t send_total = 0, recv_total = 0;
  for (int q = 0; q < size; ++q) {
    send_bytes[static_cast<size_t>(q)] = (rank + q + 1) * 1000;
    recv_bytes[static_cast<size_t>(q)] = (q + rank + 1) * 1000;
    send_total += send_bytes[static_cast<size_t>(q)];
    recv_total += recv_bytes[static_cast<size_t>(q)];
  }
  std::vector<unsigned char> send(static_cast<size_t>(send_total));
  int64_t at = 0;
  for (int q = 0; q < size; ++q) {
    for (int64_t i = 0; i < send_bytes[static_cast<size_t>(q)]; ++i) {
      send[static_cast<size_t>(at++)] = pattern(rank, q, i);
    }
  }
  void *d_send = nullptr, *d_recv = nullptr;
  cudaMalloc(&d_send, static_cast<size_t>(send_total));
  cudaMalloc(&d_recv, static_cast<size_t>(recv_total));
  cudaMemcpy(d_send, send.data(), send.size(), cudaMemcpyHostToDevice);
  Status s = comm->all_to_all(d_send, send_bytes.data(), d_recv, recv_bytes.data());
  expect(s.ok(), "all_to_all: " + s.message(), rank);
  std::vector<unsigned char> recv(static_cast<size_t>(recv_total));
  cudaMemcpy(recv.data(), d_recv, recv.size(), cudaMemcpyDeviceToHost);
  at = 0;
  for (int q = 0; q < size; ++q) {
    bool same = true;
    for (int64_t i = 0; i < recv_bytes[static_cast<size_t>(q)]; ++i) {
      same = same && recv[static_cast<size_t>(at++)] == pattern(q, rank, i);
    }
    expect(same, "all_to_all block from rank " + std::to_string(q), rank);
  }

  // all_gather of 16 bytes each.
  const std::vector<unsigned char> mine(16, static_cast<unsigned char>(rank + 1));
  cudaMemcpy(d_send, mine.data(), 16, cudaMemcpyHostToDevice);
  s = comm->all_gather(d_send, 16, d_recv);
  expect(s.ok(), "all_gather: " + s.message(), rank);
  std::vector<unsigned char> all(static_cast<size_t>(16 * size));
  cudaMemcpy(all.data(), d_recv, all.size(), cudaMemcpyDeviceToHost);
  for (int q = 0; q < size; ++q) {
    expect(all[static_cast<size_t>(16 * q)] == q + 1, "all_gather block " + std::to_string(q),
           rank);
  }
  s = comm->barrier();
  expect(s.ok(), "barrier: " + s.message(), rank);

  // Rank 1 skips a barrier: rank 0 fails after its 2 s timeout.
  comm->set_timeout(2.0);
  if (rank == 0) {
    const auto start = std::chrono::steady_clock::now();
    s = comm->barrier();
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    expect(!s.ok() && s.message().find("waited more than 2 s") != std::string::npos,
           "a missing rank must time out: " + s.message(), rank);
    expect(waited < 12, "the timeout took " + std::to_string(waited) + " s", rank);
  }
  double failures = g_failures;
  host->set_timeout(60);
  dist::all_reduce_sum(*host, &failures, 1);
  if (rank == 0) std::printf("%s\n", failures == 0 ? "PASSED" : "FAILED");
  // Not destroyed: rank 0's NCCL communicator is aborted, and finalising rank 1's would wait
  // for it. The process ends here.
  (void)comm.release();
  cudaFree(d_send);
  cudaFree(d_recv);
  return failures == 0 ? 0 : 1;
}
