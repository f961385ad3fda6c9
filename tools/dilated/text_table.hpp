// Left-aligned text tables for terminal output.
#pragma once

#include <string>
#include <vector>

namespace dilated::cli {

class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header) : header_(std::move(header)) {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  // Columns padded to their widest cell; the last column is never padded.
  std::string str() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// printf-style formatting of one number into a cell.
std::string cell(const char* format, double value);

}  // namespace dilated::cli
