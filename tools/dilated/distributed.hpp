// `--distributed`: `dilated run` and `dilated bench` across MPI ranks (mpirun -np P dilated ...)
// through dilated::dist. Rank 0 reads, checks, reports and writes; every rank computes its
// contiguous shard of the sequence.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "args.hpp"
#include "dilated/dist.hpp"
#include "problem.hpp"

namespace dilated::cli {

// A run's inputs as read from its files: the problem (sizes from the files) and the values.
struct RunInputs {
  ProblemSpec spec;
  HostTensors values;
};

// Process-wide: starts MPI when the words ask for --distributed, before any parsing, so that
// only rank 0 reports errors (every rank parses the same words and fails the same way); ends
// it before exit.
void start_distributed_session(const std::vector<std::string>& words);
void end_distributed_session();
// False on the ranks other than 0 of a distributed session: they stay quiet.
bool this_rank_reports();

// --distributed and --timeout.
void declare_distributed_options(Args& args);
// The communicator of the session (UsageError naming --distributed when there is none), and
// --timeout (or the library's default).
dist::Communicator& distributed_communicator();
double distributed_timeout(const Args& args);
// --exchange-budget (bytes, >= 0; 0 when not given: no limit).
int64_t distributed_exchange_budget(const Args& args);
// Host threads per rank when --threads is not given: the CPUs this process may run on, shared
// with the other ranks of this host when they all may run everywhere (mpirun without binding),
// so that P ranks do not start P times as many threads as there are cores.
int32_t default_rank_threads(int local_ranks);
// Ranks of the job on this host (OpenMPI's or MPICH's environment; else all of them).
int local_rank_count(const dist::Communicator& comm);

// `dilated run --distributed`: rank 0 calls `load` (reads and checks the files) and scatters
// the rows; every rank computes its shard with dilated::dist; rank 0 gathers the results and
// writes the same files as a single-process run, all or none. Errors reach every rank.
int run_distributed(const Args& args, const ProblemSpec& layer, const std::string& backend,
                    const std::string& out_dir, const std::function<RunInputs()>& load);

// `dilated bench --distributed`: weak scaling. --seq-len is tokens per rank; every case is
// verified against the oracle at a small size first, then timed: per-rank forward (and
// backward) time, communication bytes, the same layer on one process with one rank's tokens,
// and the weak-scaling efficiency.
int bench_distributed(const Args& args);

}  // namespace dilated::cli
