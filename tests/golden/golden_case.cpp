#include "golden/golden_case.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>

#include "io/npy.hpp"

namespace dilated::testing {
namespace {

std::string golden_root() {
  return DILATED_GOLDEN_DIR "/head_groups";
}

std::vector<float> load(const std::string& dir, const std::string& name) {
  io::NpyArray array;
  std::vector<float> values;
  Status s = io::read_npy(dir + "/" + name + ".npy", &array);
  if (s.ok()) s = io::to_float32(array, &values);
  if (!s.ok()) throw std::runtime_error(s.message());
  return values;
}

// The few fields of case.json the tests need; the file is machine-written and flat.
int64_t json_int(const std::string& text, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex("\"" + key + "\"\\s*:\\s*(\\d+)"))) {
    throw std::runtime_error("case.json lacks " + key);
  }
  return std::stoll(m[1]);
}

std::vector<int64_t> json_int_list(const std::string& text, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex("\"" + key + "\"\\s*:\\s*\\[([^\\]]*)\\]"))) {
    throw std::runtime_error("case.json lacks " + key);
  }
  std::vector<int64_t> values;
  std::stringstream list(m[1].str());
  for (std::string item; std::getline(list, item, ',');) values.push_back(std::stoll(item));
  return values;
}

}  // namespace

std::vector<std::string> golden_case_names() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(golden_root())) {
    if (entry.is_directory()) names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

GoldenCase load_golden_case(const std::string& name) {
  GoldenCase c;
  c.name = name;
  c.dir = golden_root() + "/" + name;
  std::ifstream json_file(c.dir + "/case.json");
  const std::string json((std::istreambuf_iterator<char>(json_file)), {});
  c.batch = json_int(json, "b");
  c.seqlen = json_int(json, "n");
  c.heads = json_int(json, "h");
  c.head_dim = json_int(json, "d");
  const std::vector<int64_t> segs = json_int_list(json, "segs");
  const std::vector<int64_t> dils = json_int_list(json, "dils");
  for (size_t i = 0; i < segs.size(); ++i) c.patterns.push_back({segs[i], dils[i]});
  c.causal = json.find("\"causal\": true") != std::string::npos;
  c.q = load(c.dir, "q");
  c.k = load(c.dir, "k");
  c.v = load(c.dir, "v");
  c.dout = load(c.dir, "dout");
  c.out = load(c.dir, "out");
  c.dq = load(c.dir, "dq");
  c.dk = load(c.dir, "dk");
  c.dv = load(c.dir, "dv");
  return c;
}

Params golden_params(GoldenCase& c, std::vector<float>& out, std::vector<float>& lse,
                     std::vector<float>& dq, std::vector<float>& dk, std::vector<float>& dv) {
  Params p;
  p.batch = c.batch;
  p.seqlen = c.seqlen;
  p.heads = p.heads_kv = c.heads;
  p.head_dim = p.head_dim_v = c.head_dim;
  p.dtype = DType::f32;
  p.mode = Mode::head_groups;
  p.causal = c.causal;
  set_patterns(p, c.patterns);
  const size_t n = c.q.size();
  const float nan = std::nanf("");
  for (std::vector<float>* buf : {&out, &dq, &dk, &dv}) buf->assign(n, nan);
  lse.assign(static_cast<size_t>(c.batch * c.heads * c.seqlen), nan);
  p.q = contiguous_tensor(p, c.q.data(), p.heads, p.head_dim);
  p.k = contiguous_tensor(p, c.k.data(), p.heads, p.head_dim);
  p.v = contiguous_tensor(p, c.v.data(), p.heads, p.head_dim);
  p.dout = contiguous_tensor(p, c.dout.data(), p.heads, p.head_dim);
  p.out = contiguous_tensor(p, out.data(), p.heads, p.head_dim);
  p.dq = contiguous_tensor(p, dq.data(), p.heads, p.head_dim);
  p.dk = contiguous_tensor(p, dk.data(), p.heads, p.head_dim);
  p.dv = contiguous_tensor(p, dv.data(), p.heads, p.head_dim);
  p.lse = lse.data();
  return p;
}

double max_relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double diff = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    diff = std::max(diff, std::fabs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  }
  return diff / scale;
}

}  // namespace dilated::testing
