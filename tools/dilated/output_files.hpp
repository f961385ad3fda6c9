// A set of output files that appears whole or not at all: each file is staged under a hidden
// temporary name in the destination folder; commit() renames them all, and a set destroyed
// without commit() (an error on the way) removes what it staged.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "dilated/status.hpp"

namespace dilated::cli {

class OutputFiles {
 public:
  explicit OutputFiles(std::string directory) : directory_(std::move(directory)) {}
  OutputFiles(const OutputFiles&) = delete;
  OutputFiles& operator=(const OutputFiles&) = delete;
  ~OutputFiles();

  // Writes float32 .npy `name` (e.g. "out.npy") under its temporary name.
  Status stage_npy(const std::string& name, const std::vector<float>& data,
                   const std::vector<int64_t>& shape);
  // Writes a text file under its temporary name.
  Status stage_text(const std::string& name, const std::string& text);
  // Creates the directory if needed and renames every staged file into place.
  Status commit();

 private:
  std::string temporary(const std::string& name) const;
  std::string directory_;
  std::vector<std::pair<std::string, std::string>> staged_;  // temporary path, final path
  bool committed_ = false;
};

// Checks before any work that `directory` exists as a writable folder or can be created in
// an existing writable parent. Throws UsageError naming `flag`.
void check_output_directory(const std::string& flag, const std::string& directory);
// The same for a file's folder (`--out FILE`).
void check_output_file(const std::string& flag, const std::string& path);

}  // namespace dilated::cli
