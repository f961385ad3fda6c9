// Names of the enums as the CLI, JSON output and Python spell them.
#include <string>

#include "dilated/dilated.hpp"

namespace dilated {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "fp32";
    case DType::f16:
      return "fp16";
    case DType::bf16:
      return "bf16";
    case DType::f64:
      return "fp64";
  }
  return "unknown";
}

int64_t dtype_size(DType t) {
  return t == DType::f64 ? 8 : t == DType::f32 ? 4 : 2;
}

const char* mode_name(Mode m) {
  return m == Mode::head_groups ? "head_groups" : "longnet";
}

const char* head_offsets_name(HeadOffsets h) {
  return h == HeadOffsets::grouped ? "grouped" : "paper";
}

const char* block_kind_name(BlockKind k) {
  switch (k) {
    case BlockKind::local:
      return "local";
    case BlockKind::global:
      return "global";
    case BlockKind::dilated:
      return "dilated_blocks";
    case BlockKind::random:
      return "random";
    case BlockKind::topk:
      return "topk";
    case BlockKind::mask:
      return "mask";
  }
  return "unknown";
}

bool parse_dtype(const std::string& s, DType* out) {
  if (s == "fp32" || s == "float32")
    *out = DType::f32;
  else if (s == "fp16" || s == "float16")
    *out = DType::f16;
  else if (s == "bf16" || s == "bfloat16")
    *out = DType::bf16;
  else if (s == "fp64" || s == "float64")
    *out = DType::f64;
  else
    return false;
  return true;
}

bool parse_mode(const std::string& s, Mode* out) {
  if (s == "longnet")
    *out = Mode::longnet;
  else if (s == "head_groups")
    *out = Mode::head_groups;
  else
    return false;
  return true;
}

bool parse_head_offsets(const std::string& s, HeadOffsets* out) {
  if (s == "paper")
    *out = HeadOffsets::paper;
  else if (s == "grouped")
    *out = HeadOffsets::grouped;
  else
    return false;
  return true;
}

}  // namespace dilated
