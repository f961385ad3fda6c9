// A rank that leaves a sequence-parallel call: run under mpirun with 2 or more ranks.
//   dist_mpi_fault leave SECONDS   rank 1 skips the call and does something else for long
//   dist_mpi_fault exit SECONDS    rank 1 exits the process before the call
// The other ranks must fail with the communicator's timeout error within SECONDS (plus a
// margin) and end the job, never hang; ctest matches what they print.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "dilated/dist_mpi.hpp"
#include "dist/shard_problem.hpp"

int main(int argc, char** argv) {
  using namespace dilated;
  const std::string mode = argc > 1 ? argv[1] : "";
  const double timeout = argc > 2 ? std::atof(argv[2]) : 0;
  if ((mode != "leave" && mode != "exit") || timeout <= 0) {
    std::fprintf(stderr, "usage: dist_mpi_fault leave|exit SECONDS\n");
    return 2;
  }
  std::unique_ptr<dist::Communicator> comm;
  if (Status s = dist::mpi_world(&comm); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.message().c_str());
    return 1;
  }
  comm->set_timeout(timeout);
  const int r = comm->rank(), ranks = comm->size();
  testing::ProblemConfig config;
  config.seqlen = 8 * ranks;
  config.patterns = {{config.seqlen, 2}};
  testing::HostProblem whole(config, 1);
  testing::Shard shard(whole, 8 * r, 8 * (r + 1));

  if (r == 1) {
    if (mode == "exit") std::_Exit(3);
    // Leaves the call (it would finalise MPI when it returns; OpenMPI 4.1's mpirun was seen to
    // hang when one rank finalises while the others exit with an error).
    std::this_thread::sleep_for(std::chrono::duration<double>(10 * timeout));
    return 1;
  }
  const auto start = std::chrono::steady_clock::now();
  const Status s = dist::forward(shard.params(), shard.info(), *comm, {});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (s.ok()) {
    std::printf("rank %d: forward succeeded without rank 1\n", r);
    return 1;
  }
  const bool in_time = seconds < timeout + 10;
  std::printf("rank %d failed %s (%.1f s, timeout %g s): %s\n", r, in_time ? "in time" : "late",
              seconds, timeout, s.message().c_str());
  std::fflush(stdout);
  comm->abort(s.message());
}
