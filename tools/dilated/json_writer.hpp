// A small JSON emitter for bench results: objects, arrays, strings, numbers (NaN and
// infinities become null, as JSON has no such numbers).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dilated::cli {

class JsonWriter {
 public:
  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  JsonWriter& end_array();
  JsonWriter& key(const std::string& k);
  JsonWriter& value(const std::string& s);
  JsonWriter& value(const char* s) { return value(std::string(s)); }
  JsonWriter& value(double x);
  JsonWriter& value(int64_t x);
  JsonWriter& value(int x) { return value(static_cast<int64_t>(x)); }
  JsonWriter& value(bool b);
  JsonWriter& null();
  JsonWriter& value(const std::vector<int64_t>& list);

  const std::string& str() const { return out_; }

 private:
  void separate();
  void newline();
  std::string out_;
  std::vector<bool> first_;  // per open container: nothing written in it yet
  bool after_key_ = false;
};

std::string json_quote(const std::string& s);

}  // namespace dilated::cli
