// Runs the `dilated` binary as a subprocess and captures its exit code and output, so that the
// CLI is tested exactly as a user runs it.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace dilated::testing {

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

CliResult run_cli(const std::vector<std::string>& args);

// A fresh scratch folder, removed at the end of the test.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Names of the entries in a folder (empty if it does not exist).
std::vector<std::string> entries(const std::filesystem::path& dir);

// Writes a .npy with any descr and raw data (for files the library would never write).
void write_raw_npy(const std::string& path, const std::string& descr, const std::string& shape,
                   const std::vector<unsigned char>& data);

}  // namespace dilated::testing
