// `dilated run`: dilated attention on .npy inputs, through the public API on one backend.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "args.hpp"
#include "backend_choice.hpp"
#include "block_options.hpp"
#include "cli_error.hpp"
#include "commands.hpp"
#include "core/pattern_math.hpp"
#include "distributed.hpp"
#include "io/npy.hpp"
#include "output_files.hpp"
#include "problem.hpp"
#include "timing.hpp"

namespace dilated::cli {
namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

const char* npy_type_name(io::NpyType t) {
  switch (t) {
    case io::NpyType::f32:
      return "float32";
    case io::NpyType::f16:
      return "float16";
    case io::NpyType::f64:
      return "float64";
    case io::NpyType::boolean:
      return "bool";
  }
  return "unknown";
}

// One input file: read, checked to be a 4-d float32/float16 array, converted to float.
struct Input {
  std::string flag, path;
  io::NpyArray array;
  std::vector<float> values;

  std::string named() const { return "--" + flag + " = " + path; }
};

Input read_input(const std::string& flag, const std::string& path) {
  Input in{flag, path, {}, {}};
  if (Status s = io::read_npy(path, &in.array); !s.ok()) {
    std::string message = s.message();
    if (message.rfind(path + ": ", 0) == 0) message.erase(0, path.size() + 2);
    throw UsageError(in.named() + ": " + message);
  }
  if (in.array.type != io::NpyType::f32 && in.array.type != io::NpyType::f16) {
    throw UsageError(in.named() + ": dtype " + npy_type_name(in.array.type) +
                     ": expected float32 or float16");
  }
  if (in.array.shape.size() != 4) {
    throw UsageError(in.named() + ": shape " + shape_text(in.array.shape) +
                     ": expected 4 dimensions [B, N, H, D]");
  }
  throw_if_failed(io::to_float32(in.array, &in.values), in.named());
  in.array.data.clear();
  in.array.data.shrink_to_fit();
  return in;
}

void expect_shape(const Input& in, const std::vector<int64_t>& want, const std::string& why) {
  if (in.array.shape != want) {
    throw UsageError(in.named() + ": shape " + shape_text(in.array.shape) + ": expected " +
                     shape_text(want) + " " + why);
  }
}

std::vector<Pattern> read_patterns(const Args& args, bool blocks) {
  // Block patterns alone make a layer: then --segments and --dilations may both be absent.
  if (blocks && !args.has("segments") && !args.has("dilations")) return {};
  const std::vector<int64_t> segments = parse_integer_list("segments", args.required("segments"));
  const std::vector<int64_t> dilations =
      parse_integer_list("dilations", args.required("dilations"));
  if (dilations.size() != segments.size()) {
    throw UsageError("--dilations = " + args.required("dilations") + ": expected " +
                     std::to_string(segments.size()) +
                     " values, one per segment length in --segments");
  }
  std::vector<Pattern> patterns;
  for (size_t i = 0; i < segments.size(); ++i) patterns.push_back({segments[i], dilations[i]});
  return patterns;
}

// --block-mask: a boolean .npy [1 or H, NB, NB], NB = ceil(N / block size).
void read_block_mask(const std::string& path, ProblemSpec* spec) {
  Input in{"block-mask", path, {}, {}};
  if (Status s = io::read_npy(path, &in.array); !s.ok()) {
    std::string message = s.message();
    if (message.rfind(path + ": ", 0) == 0) message.erase(0, path.size() + 2);
    throw UsageError(in.named() + ": " + message);
  }
  if (in.array.type != io::NpyType::boolean) {
    throw UsageError(in.named() + ": dtype " + npy_type_name(in.array.type) + ": expected bool");
  }
  const int64_t nb = ceil_div(spec->seqlen, spec->block_size);
  const std::vector<int64_t>& shape = in.array.shape;
  if (shape.size() != 3 || (shape[0] != 1 && shape[0] != spec->heads) || shape[1] != nb ||
      shape[2] != nb) {
    throw UsageError(
        in.named() + ": shape " + shape_text(shape) + ": expected [1 or " +
        std::to_string(spec->heads) + ", " + std::to_string(nb) + ", " + std::to_string(nb) +
        "] (heads, and ceil(N / block size) blocks for N = " + std::to_string(spec->seqlen) + ")");
  }
  spec->mask_heads = shape[0];
  auto bytes = std::make_shared<std::vector<uint8_t>>(in.array.data.begin(), in.array.data.end());
  for (uint8_t& bit : *bytes) bit = bit != 0;
  spec->block_mask = std::move(bytes);
  spec->block_patterns.push_back({BlockKind::mask, 0, 0, 0});
}

// A raw .npy image (header and little-endian data) for stage_text.
template <class T>
std::string npy_image(const char* descr, const std::vector<T>& data,
                      const std::vector<int64_t>& shape) {
  std::string tuple = "(";
  for (int64_t d : shape) tuple += std::to_string(d) + ", ";
  if (shape.size() > 1) tuple.resize(tuple.size() - 2);
  tuple += ")";
  std::string image = io::npy_file_header(descr, tuple);
  image.append(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(T));
  return image;
}

// --dump-mask: the realised union of the block patterns, [H, NB, NB] (with B > 1,
// [B, H, NB, NB]: topk differs between sequences), from the host inputs.
std::string mask_image(const ProblemSpec& spec, const HostTensors& inputs) {
  Params p = spec_params(spec);
  p.dtype = DType::f32;  // the inputs as float: the values the backend reads
  p.q = contiguous_tensor(p, const_cast<float*>(inputs.q.data()), spec.heads, spec.head_dim);
  p.k = contiguous_tensor(p, const_cast<float*>(inputs.k.data()), spec.heads_kv, spec.head_dim);
  std::vector<uint8_t> all, one;
  int64_t nb = 0;
  for (int64_t b = 0; b < spec.batch; ++b) {
    throw_if_failed(realised_block_mask(p, b, &one, &nb), "--dump-mask");
    all.insert(all.end(), one.begin(), one.end());
  }
  std::vector<int64_t> shape = {spec.heads, nb, nb};
  if (spec.batch > 1) shape.insert(shape.begin(), spec.batch);
  return npy_image("|b1", all, shape);
}

// Stages `image` as `path` in a file set of its folder.
void stage_file(std::vector<std::unique_ptr<OutputFiles>>& sets, const std::string& path,
                const std::string& image) {
  const std::filesystem::path file(path);
  sets.push_back(std::make_unique<OutputFiles>(file.parent_path().string()));
  throw_if_failed(sets.back()->stage_text(file.filename().string(), image));
}

}  // namespace

RunInputs load_run_inputs(const Args& args, const ProblemSpec& layer, bool backward) {
  Input q = read_input("q", args.required("q"));
  Input k = read_input("k", args.required("k"));
  Input v = read_input("v", args.required("v"));
  const std::vector<int64_t>& qs = q.array.shape;
  expect_shape(k, {qs[0], qs[1], k.array.shape[2], qs[3]}, "([B, N, Hkv, D] with --q's B, N, D)");
  expect_shape(v, k.array.shape, "(--k's shape)");
  Input dout;
  if (backward) {
    dout = read_input("dout", args.required("dout"));
    expect_shape(dout, qs, "(--q's shape)");
  }
  for (const Input* in : {&k, &v, &dout}) {
    if (!in->path.empty() && in->array.type != q.array.type) {
      throw UsageError(in->named() + ": dtype " + npy_type_name(in->array.type) + ": expected " +
                       npy_type_name(q.array.type) + " like --q (one dtype for all inputs)");
    }
  }
  RunInputs in;
  in.spec = layer;
  in.spec.batch = qs[0];
  in.spec.seqlen = qs[1];
  in.spec.heads = qs[2];
  in.spec.head_dim = qs[3];
  in.spec.heads_kv = k.array.shape[2];
  in.spec.dtype = q.array.type == io::NpyType::f16 ? DType::f16 : DType::f32;
  if (args.has("heads-kv")) {
    const int64_t heads_kv = parse_integer("heads-kv", args.required("heads-kv"));
    if (heads_kv != in.spec.heads_kv) {
      throw UsageError("--heads-kv = " + args.required("heads-kv") + ": expected " +
                       std::to_string(in.spec.heads_kv) + ", the head count of --k " +
                       shape_text(k.array.shape));
    }
  }
  in.values = {std::move(q.values), std::move(k.values), std::move(v.values),
               std::move(dout.values)};
  return in;
}

int command_run(const Words& words) {
  Args args("run",
            "dilated run --q Q.npy --k K.npy --v V.npy [--dout DO.npy] --segments W1,W2,.. "
            "--dilations R1,R2,.. --out-dir DIR [options]",
            "Computes dilated attention (DESIGN 2) on [B, N, H, D] float32 or float16 .npy\n"
            "inputs (k and v: [B, N, Hkv, D]) and writes out.npy [B, N, H, D] and lse.npy\n"
            "[B, H, N]; with --dout also dq.npy, dk.npy, dv.npy (the gradients of\n"
            "sum(out * dout)). Every output is float32. The files appear together or not\n"
            "at all: on any error nothing is written.");
  args.option("q", "Q.npy", "queries [B, N, H, D]");
  args.option("k", "K.npy", "keys [B, N, Hkv, D]");
  args.option("v", "V.npy", "values [B, N, Hkv, D]");
  args.option("dout", "DO.npy", "gradient of the output [B, N, H, D]: also write dq dk dv");
  args.option("segments", "W1,W2,..", "segment lengths, one per pattern");
  args.option("dilations", "R1,R2,..", "dilation rates, one per segment length");
  args.option("mode", "MODE",
              "longnet (default: one softmax over every pattern's keys) or "
              "head_groups (dilated-attention-pytorch's head groups)");
  args.option("head-offsets", "RULE",
              "longnet offsets: paper (head j uses j % r, default) or "
              "grouped (torchscale's rule)");
  args.flag("causal", "each query sees only keys at or before its position");
  args.option("scale", "S", "softmax scale (default 1/sqrt(D))");
  args.option("heads-kv", "N", "kv heads; when given, must equal k's head count");
  args.option("backend", "NAME",
              "auto (default: the first that runs the problem), " + backend_choices(false));
  args.option("threads", "N", "host threads for CPU backends (default: all)");
  args.option("out-dir", "DIR", "folder for the outputs (created if missing)");
  declare_distributed_options(args);
  declare_block_options(args, "seed");
  args.option("block-mask", "FILE",
              "block pattern mask: a bool .npy [1 or H, NB, NB], NB = ceil(N / block size)");
  args.option("dump-mask", "FILE",
              "also write the realised union of the block patterns as a bool .npy [H, NB, NB] "
              "([B, H, NB, NB] when B > 1)");
  args.option("dump-order", "FILE",
              "also write the token order as an int64 .npy [N]: element i is the row-major "
              "token at curve position i (the identity without --grid)");
  args.note(
      "Block patterns (--local, --global, --dilated-blocks, --random, --topk, --block-mask)\n"
      "join the dilated patterns' union softmax, each counted once; with them --segments and\n"
      "--dilations may be left out (longnet mode).");
  args.note(
      "example:\n  dilated run --q q.npy --k k.npy --v v.npy --segments 2048,4096 "
      "--dilations 1,2 --out-dir result");
  args.parse(words);
  if (args.help_requested()) {
    std::fputs(args.help_text().c_str(), stdout);
    return kExitOk;
  }

  // Everything that can be checked without reading the inputs comes first.
  ProblemSpec spec;
  read_block_options(args, "seed", &spec);
  const bool blocks = !spec.block_patterns.empty() || args.has("block-mask");
  spec.patterns = read_patterns(args, blocks);
  if (args.has("mode") && !parse_mode(args.required("mode"), &spec.mode)) {
    throw UsageError("--mode = " + args.required("mode") + ": expected longnet or head_groups");
  }
  if (args.has("head-offsets") &&
      !parse_head_offsets(args.required("head-offsets"), &spec.head_offsets)) {
    throw UsageError("--head-offsets = " + args.required("head-offsets") +
                     ": expected paper or grouped");
  }
  spec.causal = args.is_set("causal");
  if (args.has("scale")) {
    const double scale = parse_number("scale", args.required("scale"));
    // NaN would silently mean the default scale; out-of-range values become infinities,
    // which validate() names.
    if (std::isnan(scale)) throw UsageError("--scale = nan: expected a finite number");
    spec.scale = std::fabs(scale) > std::numeric_limits<float>::max()
                     ? (scale > 0 ? std::numeric_limits<float>::infinity()
                                  : -std::numeric_limits<float>::infinity())
                     : static_cast<float>(scale);
  }
  if (args.has("threads")) {
    const int64_t threads = parse_integer("threads", args.required("threads"));
    if (threads < 0 || threads > 4096) {
      throw UsageError("--threads = " + args.required("threads") + ": expected 0..4096");
    }
    spec.threads = static_cast<int32_t>(threads);
  }
  const std::string backend_name = args.value_or("backend", "auto");
  if (backend_name != "auto" && !find_backend(backend_name)) {
    throw UsageError("--backend = " + backend_name + ": expected " + backend_choices(true));
  }
  const std::string out_dir = args.required("out-dir");
  check_output_directory("out-dir", out_dir);
  for (const char* flag : {"dump-mask", "dump-order"}) {
    if (args.has(flag)) check_output_file(flag, args.required(flag));
  }
  if (args.has("dump-mask") && !blocks) {
    throw UsageError("--dump-mask = " + args.required("dump-mask") +
                     ": expected block patterns to dump (--local, --global, --dilated-blocks, "
                     "--random, --topk or --block-mask)");
  }
  const bool backward = args.has("dout");

  if (args.is_set("distributed")) {
    if (blocks || spec.grid_height > 0 || args.has("dump-order")) {
      throw UsageError(
          "--distributed: block patterns, --grid and --dump-order are not sequence-parallel; "
          "expected dilated patterns only");
    }
    return run_distributed(args, spec, backend_name, out_dir,
                           [&] { return load_run_inputs(args, spec, backward); });
  }
  RunInputs inputs = load_run_inputs(args, spec, backward);
  spec = inputs.spec;
  const std::vector<int64_t> qs = {spec.batch, spec.seqlen, spec.heads, spec.head_dim};
  const std::vector<int64_t> kv_shape = {spec.batch, spec.seqlen, spec.heads_kv, spec.head_dim};
  if (spec.grid_height > 0 && spec.grid_height * spec.grid_width != spec.seqlen) {
    throw UsageError("--grid = " + args.required("grid") +
                     ": expected H * W = N = " + std::to_string(spec.seqlen) + " tokens (--q's N)");
  }
  if (args.has("block-mask")) read_block_mask(args.required("block-mask"), &spec);
  const Direction dir = backward ? Direction::backward : Direction::forward;
  throw_if_failed(validate_spec(spec, dir));
  const Backend& backend = choose_backend(spec, backend_name, backward);

  const Stopwatch clock;
  DeviceProblem problem;
  throw_if_failed(problem.create(backend, spec, backward), backend.name());
  throw_if_failed(problem.upload(inputs.values), backend.name());
  throw_if_failed(problem.poison_outputs(), backend.name());
  throw_if_failed(forward(problem.params(), {}, backend.name()), "forward");
  if (backward)
    throw_if_failed(dilated::backward(problem.params(), {}, backend.name()), "backward");
  throw_if_failed(backend.synchronize({}), backend.name());
  HostOutputs result;
  throw_if_failed(problem.download(&result), backend.name());
  const double elapsed_ms = clock.milliseconds();

  std::vector<std::unique_ptr<OutputFiles>> dumps;
  if (args.has("dump-mask")) {
    stage_file(dumps, args.required("dump-mask"), mask_image(spec, inputs.values));
  }
  if (args.has("dump-order")) {
    std::vector<int64_t> order = hilbert_order(spec.grid_height, spec.grid_width);
    if (order.empty()) {
      for (int64_t t = 0; t < spec.seqlen; ++t) order.push_back(t);
    }
    stage_file(dumps, args.required("dump-order"), npy_image("<i8", order, {spec.seqlen}));
  }
  OutputFiles files(out_dir);
  throw_if_failed(files.stage_npy("out.npy", result.out, qs));
  throw_if_failed(files.stage_npy("lse.npy", result.lse, {qs[0], qs[2], qs[1]}));
  if (backward) {
    throw_if_failed(files.stage_npy("dq.npy", result.dq, qs));
    throw_if_failed(files.stage_npy("dk.npy", result.dk, kv_shape));
    throw_if_failed(files.stage_npy("dv.npy", result.dv, kv_shape));
  }
  throw_if_failed(files.commit());
  for (auto& dump : dumps) throw_if_failed(dump->commit());
  std::string also;
  for (const char* flag : {"dump-mask", "dump-order"}) {
    if (args.has(flag))
      also += std::string(also.empty() ? "; also " : " and ") + args.required(flag);
  }
  std::printf("%s on %s: %s; wrote out.npy lse.npy%s to %s%s (%.1f ms)\n", backend.name(),
              backend.device_name().c_str(), spec.describe().c_str(),
              backward ? " dq.npy dk.npy dv.npy" : "", out_dir.c_str(), also.c_str(), elapsed_ms);
  return kExitOk;
}

}  // namespace dilated::cli
