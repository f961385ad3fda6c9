#include "output_files.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "cli_error.hpp"
#include "io/npy.hpp"

namespace dilated::cli {
namespace fs = std::filesystem;

OutputFiles::~OutputFiles() {
  if (committed_) return;
  for (const auto& [temp, final_path] : staged_) std::remove(temp.c_str());
}

std::string OutputFiles::temporary(const std::string& name) const {
  return (fs::path(directory_) / ("." + name + ".tmp" + std::to_string(::getpid()))).string();
}

Status OutputFiles::stage_npy(const std::string& name, const std::vector<float>& data,
                              const std::vector<int64_t>& shape) {
  std::error_code error;
  fs::create_directories(directory_, error);
  if (error) return Status::Runtime(directory_ + ": cannot create (" + error.message() + ")");
  const std::string temp = temporary(name);
  staged_.emplace_back(temp, (fs::path(directory_) / name).string());
  return io::write_npy(temp, data.data(), shape);
}

Status OutputFiles::stage_text(const std::string& name, const std::string& text) {
  std::error_code error;
  const fs::path dir = directory_.empty() ? fs::path(".") : fs::path(directory_);
  fs::create_directories(dir, error);
  if (error) return Status::Runtime(directory_ + ": cannot create (" + error.message() + ")");
  const std::string temp = (dir / ("." + name + ".tmp" + std::to_string(::getpid()))).string();
  staged_.emplace_back(temp, (dir / name).string());
  std::ofstream out(temp, std::ios::binary);
  out << text;
  out.close();
  if (!out) return Status::Runtime(temp + ": write failed (" + std::strerror(errno) + ")");
  return {};
}

Status OutputFiles::commit() {
  for (size_t i = 0; i < staged_.size(); ++i) {
    if (std::rename(staged_[i].first.c_str(), staged_[i].second.c_str()) != 0) {
      const std::string reason = std::strerror(errno);
      // Take back what was already renamed, so that the set stays all-or-nothing.
      for (size_t j = 0; j < i; ++j) std::remove(staged_[j].second.c_str());
      return Status::Runtime(staged_[i].second + ": cannot rename into place (" + reason + ")");
    }
  }
  committed_ = true;
  return {};
}

namespace {

void check_writable_folder(const std::string& flag, const std::string& value, const fs::path& dir) {
  std::error_code error;
  fs::path probe = dir.empty() ? fs::path(".") : dir;
  // The nearest existing ancestor must be a writable folder (the rest is created later).
  while (!fs::exists(probe, error)) {
    if (!probe.has_parent_path() || probe.parent_path() == probe) {
      probe = fs::path(".");  // a relative name without folders: the working directory
      break;
    }
    probe = probe.parent_path();
  }
  if (!fs::is_directory(probe, error)) {
    throw UsageError("--" + flag + " = " + value + ": " + probe.string() +
                     " is not a directory: expected a writable folder");
  }
  if (::access(probe.c_str(), W_OK | X_OK) != 0) {
    throw UsageError("--" + flag + " = " + value + ": " + probe.string() +
                     " is not writable: expected a writable folder");
  }
}

}  // namespace

void check_output_directory(const std::string& flag, const std::string& directory) {
  check_writable_folder(flag, directory, fs::path(directory));
}

void check_output_file(const std::string& flag, const std::string& path) {
  std::error_code error;
  if (fs::is_directory(path, error)) {
    throw UsageError("--" + flag + " = " + path + ": is a directory: expected a file name");
  }
  check_writable_folder(flag, path, fs::path(path).parent_path());
}

}  // namespace dilated::cli
