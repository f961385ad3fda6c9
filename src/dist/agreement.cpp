#include "dist/agreement.hpp"
#include "core/text.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

namespace dilated::dist {
namespace {

constexpr char kMagic[8] = {'d', 'i', 'l', 'd', 'i', 's', 't', '1'};
constexpr size_t kTextBytes = 480;

// What each rank contributes: fixed size, so that one all_gather carries it even when the
// ranks disagree about everything else.
struct Record {
  char magic[8];
  uint64_t hash;  // of the whole description (the text may be cut short)
  int64_t offset;
  int64_t rows;
  int32_t code;  // StatusCode of the rank's own checks
  int32_t reserved;
  char text[kTextBytes];  // the description, or the error message
};

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string describe(const Params& p, const ShardInfo& shard, Direction dir,
                     const std::string& backend) {
  std::string s =
      concat(dir == Direction::forward ? "forward" : "backward", " N=", shard.global_seqlen,
             " B=", p.batch, " H=", p.heads, " Hkv=", p.heads_kv, " D=", p.head_dim,
             " Dv=", p.head_dim_v, " dtype=", dtype_name(p.dtype), " mode=", mode_name(p.mode),
             " offsets=", head_offsets_name(p.head_offsets), " causal=", p.causal, " scale=");
  if (std::isnan(p.scale)) {
    s += "default";
  } else {
    char exact[32];  // every float's digits: ranks must agree on the bits
    std::snprintf(exact, sizeof exact, "%.9g", static_cast<double>(p.scale));
    s += exact;
  }
  s += " patterns=";
  for (int i = 0; i < p.num_patterns && i < kMaxPatterns; ++i) {
    s += concat("(", p.patterns[i].segment, ",", p.patterns[i].dilation, ")");
  }
  return s + " backend=" + backend;
}

Record make_record(uint64_t hash, int64_t offset, int64_t rows, StatusCode code,
                   const std::string& text) {
  Record r;
  std::memset(&r, 0, sizeof(r));
  std::memcpy(r.magic, kMagic, sizeof(kMagic));
  r.hash = hash;
  r.offset = offset;
  r.rows = rows;
  r.code = static_cast<int32_t>(code);
  std::memcpy(r.text, text.data(), std::min(text.size(), kTextBytes - 1));
  return r;
}

std::string text_of(const Record& r) {
  return std::string(r.text, strnlen(r.text, kTextBytes));
}

Status gather(const Record& mine, Communicator& comm, std::vector<Record>* all, Traffic* traffic) {
  all->resize(static_cast<size_t>(comm.size()));
  const Status s = comm.all_gather(&mine, sizeof(Record), all->data());
  if (!s.ok()) return s;
  traffic->sent += static_cast<int64_t>(sizeof(Record)) * (comm.size() - 1);
  traffic->received += static_cast<int64_t>(sizeof(Record)) * (comm.size() - 1);
  for (int q = 0; q < comm.size(); ++q) {
    if (std::memcmp((*all)[static_cast<size_t>(q)].magic, kMagic, sizeof(kMagic)) != 0) {
      return Status::Runtime("dist: rank " + std::to_string(q) +
                             " sent something else than a dilated::dist check (the ranks are " +
                             "running different programs or calls)");
    }
  }
  return {};
}

}  // namespace

Status agree_on_configuration(const Params& local, const ShardInfo& shard, Direction dir,
                              const std::string& backend, const Status& checks, Communicator& comm,
                              ShardTable* shards, Traffic* traffic) {
  const std::string description = describe(local, shard, dir, backend);
  const Record mine =
      checks.ok()
          ? make_record(fnv1a(description), shard.offset, local.seqlen, StatusCode::ok, description)
          : make_record(0, shard.offset, local.seqlen, checks.code(), checks.message());
  std::vector<Record> all;
  if (Status s = gather(mine, comm, &all, traffic); !s.ok()) return s;

  for (int q = 0; q < comm.size(); ++q) {
    const Record& r = all[static_cast<size_t>(q)];
    if (r.code != static_cast<int32_t>(StatusCode::ok)) {
      return {static_cast<StatusCode>(r.code),
              "dist: rank " + std::to_string(q) + ": " + text_of(r)};
    }
  }
  for (int q = 1; q < comm.size(); ++q) {
    if (all[static_cast<size_t>(q)].hash != all[0].hash) {
      return Status::Invalid("dist: the ranks disagree on the call: rank 0 has {" +
                             text_of(all[0]) + "}, rank " + std::to_string(q) + " has {" +
                             text_of(all[static_cast<size_t>(q)]) + "}");
    }
  }
  shards->first.assign(1, 0);
  for (int q = 0; q < comm.size(); ++q) {
    const Record& r = all[static_cast<size_t>(q)];
    if (r.offset != shards->first.back()) {
      return Status::Invalid(
          "dist: shard of rank " + std::to_string(q) + " starts at position " +
          std::to_string(r.offset) + ": expected " + std::to_string(shards->first.back()) +
          " (shards tile [0, N) in rank order, each rank's rows right after the previous one's)");
    }
    shards->first.push_back(r.offset + r.rows);
  }
  if (shards->first.back() != shard.global_seqlen) {
    return Status::Invalid(
        "dist: the shards cover positions [0, " + std::to_string(shards->first.back()) +
        "): expected the global sequence length " + std::to_string(shard.global_seqlen));
  }
  return {};
}

Status agree_on_outcome(const Status& local, Communicator& comm, Traffic* traffic) {
  const Record mine = make_record(0, 0, 0, local.code(), local.message());
  std::vector<Record> all;
  if (Status s = gather(mine, comm, &all, traffic); !s.ok()) return s;
  for (int q = 0; q < comm.size(); ++q) {
    const Record& r = all[static_cast<size_t>(q)];
    if (r.code != static_cast<int32_t>(StatusCode::ok)) {
      return {static_cast<StatusCode>(r.code),
              "dist: rank " + std::to_string(q) + ": " + text_of(r)};
    }
  }
  return {};
}

}  // namespace dilated::dist
