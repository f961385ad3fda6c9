// Collective checks that make every rank of a sequence-parallel call fail together, with the
// same message, instead of some failing and the others waiting for them.
#pragma once

#include <string>

#include "dilated/dist.hpp"
#include "dist/exchange_plan.hpp"

namespace dilated::dist {

// Byte counts of the collectives a call runs (for Stats).
struct Traffic {
  int64_t sent = 0;
  int64_t received = 0;
};

// Exchanges every rank's description of the call (layer, sizes, dtype, direction, backend,
// global length), its shard and the result of its own argument checks (`local`), then decides
// the same on every rank: the first rank's invalid arguments, a rank whose description differs
// from rank 0's, or shards that do not tile [0, N) in rank order all give one invalid-argument
// error naming the rank. On success fills `shards`.
Status agree_on_configuration(const Params& local, const ShardInfo& shard, Direction dir,
                              const std::string& backend, const Status& checks, Communicator& comm,
                              ShardTable* shards, Traffic* traffic);

// Exchanges every rank's status at the end of a call: the first failing rank's error (its
// code, "rank r: message") on every rank, or ok.
Status agree_on_outcome(const Status& local, Communicator& comm, Traffic* traffic);

}  // namespace dilated::dist
