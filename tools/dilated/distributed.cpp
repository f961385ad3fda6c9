#include "distributed.hpp"

#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

#include "cli_error.hpp"
#include "core/dtype_convert.hpp"
#include "dilated/dist.hpp"
#include "dist_shard.hpp"
#include "output_files.hpp"
#include "timing.hpp"
#if DILATED_WITH_MPI
#include "dilated/dist_mpi.hpp"
#endif

namespace dilated::cli {
namespace {

std::unique_ptr<dist::Communicator>& session() {
  static std::unique_ptr<dist::Communicator> comm;
  return comm;
}
std::string& session_error() {
  static std::string error;
  return error;
}

// What rank 0 tells the others after reading the inputs: the problem, or the error.
struct RunHeader {
  int32_t code = 0;  // StatusCode
  int32_t dtype = 0;
  int64_t batch = 0, seqlen = 0, heads = 0, heads_kv = 0, head_dim = 0;
  char message[512] = {};
};

// Every rank gets rank 0's header.
RunHeader from_rank0(dist::Communicator& comm, const RunHeader& mine) {
  std::vector<RunHeader> all(static_cast<size_t>(comm.size()));
  if (const Status s = comm.all_gather(&mine, sizeof(RunHeader), all.data()); !s.ok()) {
    comm.abort("dilated run --distributed: " + s.message());
  }
  return all[0];
}

RunHeader header_of(const Status& s) {
  RunHeader h;
  h.code = static_cast<int32_t>(s.code());
  std::strncpy(h.message, s.message().c_str(), sizeof(h.message) - 1);
  return h;
}

// The same status on every rank, as rank 0 had it.
void agree_and_throw(dist::Communicator& comm, const Status& rank0) {
  const RunHeader h = from_rank0(comm, header_of(rank0));
  throw_if_failed(Status(static_cast<StatusCode>(h.code), h.message));
}

// A failure of dist::forward/backward: invalid or unsupported problems reach every rank alike
// (exit 2 through rank 0's message); runtime failures may leave ranks waiting, so this rank
// reports and ends the job.
void throw_or_end_job(dist::Communicator& comm, const Status& s, const char* what) {
  if (s.ok()) return;
  if (s.code() == StatusCode::runtime_error) {
    std::fprintf(stderr, "dilated %s: failed on rank %d: %s\n", what, comm.rank(),
                 s.message().c_str());
    comm.abort(s.message());
  }
  throw_if_failed(s);
}

}  // namespace

void start_distributed_session(const std::vector<std::string>& words) {
  if (std::find(words.begin(), words.end(), "--distributed") == words.end()) return;
#if DILATED_WITH_MPI
  const Status s = dist::mpi_world(&session());
  if (!s.ok()) session_error() = s.message();
#else
  session_error() =
      "this dilated was built without MPI (install libopenmpi-dev and rebuild), so it cannot "
      "run distributed";
#endif
}

void end_distributed_session() {
  session().reset();
}

bool this_rank_reports() {
  return !session() || session()->rank() == 0;
}

dist::Communicator& distributed_communicator() {
  if (!session()) throw UsageError("--distributed: " + session_error());
  return *session();
}

void declare_distributed_options(Args& args) {
  args.flag("distributed",
            "sequence parallelism across MPI ranks: start with mpirun -np P; each rank "
            "computes a contiguous 1/P of the sequence");
  args.option("timeout", "S",
              "with --distributed: seconds a rank waits for the others before the job fails "
              "(default 300)");
  args.option("exchange-budget", "BYTES",
              "with --distributed: the most k/v bytes a rank may receive in one exchange; "
              "beyond it the exchange runs as a ring of P - 1 one-peer steps (default 0: no "
              "limit)");
}

int64_t distributed_exchange_budget(const Args& args) {
  if (!args.has("exchange-budget")) return 0;
  const std::string text = args.required("exchange-budget");
  const int64_t bytes = parse_integer("exchange-budget", text);
  if (bytes < 0) {
    throw UsageError("--exchange-budget = " + text + ": expected bytes >= 0 (0: no limit)");
  }
  return bytes;
}

double distributed_timeout(const Args& args) {
  if (!args.has("timeout")) return dist::kDefaultTimeoutSeconds;
  const double t = parse_number("timeout", args.required("timeout"));
  if (!(t > 0 && t <= 86400)) {
    throw UsageError("--timeout = " + args.required("timeout") +
                     ": expected seconds in (0, 86400]");
  }
  return t;
}

int32_t default_rank_threads(int local_ranks) {
  const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  cpu_set_t set;
  const int allowed = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : hardware;
  const int share = allowed >= hardware ? allowed / std::max(1, local_ranks) : allowed;
  return std::max(1, share);
}

int local_rank_count(const dist::Communicator& comm) {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"}) {
    if (const char* value = std::getenv(name)) {
      const int n = std::atoi(value);
      if (n > 0) return n;
    }
  }
  return comm.size();
}

int run_distributed(const Args& args, const ProblemSpec& layer, const std::string& backend,
                    const std::string& out_dir, const std::function<RunInputs()>& load) {
  dist::Communicator& comm = distributed_communicator();
  comm.set_timeout(distributed_timeout(args));
  const int rank = comm.rank(), ranks = comm.size();
  const bool backward = args.has("dout");
  const Stopwatch clock;

  // Rank 0 reads and checks; the others learn the problem or the error from it.
  RunInputs inputs;
  RunHeader header;
  if (rank == 0) {
    try {
      inputs = load();
      const ProblemSpec& s = inputs.spec;
      Status valid = validate_spec(s, backward ? Direction::backward : Direction::forward);
      if (valid.ok() && s.seqlen < ranks) {
        valid = Status::Invalid("--q: N = " + std::to_string(s.seqlen) + ": expected at least " +
                                std::to_string(ranks) + " tokens, one per rank");
      }
      header = header_of(valid);
      header.dtype = static_cast<int32_t>(s.dtype);
      header.batch = s.batch;
      header.seqlen = s.seqlen;
      header.heads = s.heads;
      header.heads_kv = s.heads_kv;
      header.head_dim = s.head_dim;
    } catch (const UsageError& e) {
      header = header_of(Status::Invalid(e.what()));
    } catch (const RuntimeFailure& e) {
      header = header_of(Status::Runtime(e.what()));
    }
  }
  header = from_rank0(comm, header);
  throw_if_failed(Status(static_cast<StatusCode>(header.code), header.message));
  ProblemSpec spec = layer;
  if (!args.has("threads")) spec.threads = default_rank_threads(local_rank_count(comm));
  spec.dtype = static_cast<DType>(header.dtype);
  spec.batch = header.batch;
  spec.seqlen = header.seqlen;
  spec.heads = header.heads;
  spec.heads_kv = header.heads_kv;
  spec.head_dim = header.head_dim;

  const std::vector<int64_t> cuts = even_cuts(spec.seqlen, ranks);
  HostShard shard(spec, cuts[static_cast<size_t>(rank)], cuts[static_cast<size_t>(rank) + 1],
                  backward);
  throw_or_end_job(comm, scatter_rows(comm, spec, cuts, inputs.values, backward, &shard), "run");
  inputs = RunInputs();  // rank 0's copy of the whole problem is no longer needed

  dist::Options options;
  options.backend = backend;
  options.exchange_budget_bytes = distributed_exchange_budget(args);
  dist::Stats forward_stats, backward_stats;
  options.stats = &forward_stats;
  throw_or_end_job(comm, dist::forward(shard.params(), shard.info(), comm, options), "run");
  if (backward) {
    options.stats = &backward_stats;
    throw_or_end_job(comm, dist::backward(shard.params(), shard.info(), comm, options), "run");
  }

  HostOutputs result;
  throw_or_end_job(comm, gather_rows(comm, spec, cuts, shard, backward, &result), "run");
  Status written;
  if (rank == 0) {
    OutputFiles files(out_dir);
    const std::vector<int64_t> qs = {spec.batch, spec.seqlen, spec.heads, spec.head_dim};
    const std::vector<int64_t> kvs = {spec.batch, spec.seqlen, spec.heads_kv, spec.head_dim};
    written = files.stage_npy("out.npy", result.out, qs);
    if (written.ok()) written = files.stage_npy("lse.npy", result.lse, {qs[0], qs[2], qs[1]});
    if (written.ok() && backward) written = files.stage_npy("dq.npy", result.dq, qs);
    if (written.ok() && backward) written = files.stage_npy("dk.npy", result.dk, kvs);
    if (written.ok() && backward) written = files.stage_npy("dv.npy", result.dv, kvs);
    if (written.ok()) written = files.commit();
  }
  agree_and_throw(comm, written);
  if (rank == 0) {
    const int64_t sent = forward_stats.bytes_sent + backward_stats.bytes_sent;
    std::printf(
        "%s on %d ranks (MPI): %s; wrote out.npy lse.npy%s to %s (%.1f ms; rank 0 sent %lld "
        "bytes of k/v rows and checks)\n",
        forward_stats.backend, ranks, spec.describe().c_str(),
        backward ? " dq.npy dk.npy dv.npy" : "", out_dir.c_str(), clock.milliseconds(),
        static_cast<long long>(sent));
    if (options.exchange_budget_bytes > 0) {
      std::printf(
          "exchange budget %lld bytes: rank 0 received at most %lld in one exchange (%lld "
          "exchanges)\n",
          static_cast<long long>(options.exchange_budget_bytes),
          static_cast<long long>(
              std::max(forward_stats.largest_receive_bytes, backward_stats.largest_receive_bytes)),
          static_cast<long long>(forward_stats.exchanges + backward_stats.exchanges));
    }
  }
  return kExitOk;
}

}  // namespace dilated::cli
