#include "args.hpp"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <utility>

#include "cli_error.hpp"

namespace dilated::cli {

Args::Args(std::string command, std::string usage, std::string about)
    : command_(std::move(command)), usage_(std::move(usage)), about_(std::move(about)) {
  flag("help", "show this help and exit");
}

void Args::option(const std::string& name, const std::string& metavar, const std::string& help) {
  order_.push_back(name);
  specs_[name] = {metavar, help};
}

void Args::flag(const std::string& name, const std::string& help) {
  order_.push_back(name);
  specs_[name] = {"", help};
}

void Args::note(const std::string& text) {
  notes_.push_back(text);
}

void Args::parse(const std::vector<std::string>& words) {
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& word = words[i];
    if (word.rfind("--", 0) != 0 || word.size() == 2) {
      throw UsageError("unexpected argument '" + word + "' for 'dilated " + command_ +
                       "': expected --options (see dilated " + command_ + " --help)");
    }
    std::string name = word.substr(2);
    std::string value;
    bool inline_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      inline_value = true;
    }
    const auto spec = specs_.find(name);
    if (spec == specs_.end()) {
      throw UsageError("unknown option --" + name + " for 'dilated " + command_ +
                       "' (see dilated " + command_ + " --help)");
    }
    if (values_.count(name)) throw UsageError("--" + name + " is given twice: expected once");
    if (spec->second.metavar.empty()) {
      if (inline_value) throw UsageError("--" + name + " = " + value + ": expected no value");
      values_[name] = "";
    } else {
      if (!inline_value) {
        if (i + 1 >= words.size() || words[i + 1].rfind("--", 0) == 0) {
          throw UsageError("--" + name + ": expected a value (" + spec->second.metavar + ")");
        }
        value = words[++i];
      }
      if (value.empty()) {
        throw UsageError("--" + name + " = '': expected a value (" + spec->second.metavar + ")");
      }
      values_[name] = value;
    }
    if (name == "help") help_ = true;
  }
}

std::string Args::help_text() const {
  std::ostringstream s;
  s << "usage: " << usage_ << "\n\n" << about_ << "\n\noptions:\n";
  for (const std::string& name : order_) {
    const Spec& spec = specs_.at(name);
    std::string left = "  --" + name + (spec.metavar.empty() ? "" : " " + spec.metavar);
    if (left.size() < 28)
      left.resize(28, ' ');
    else
      left += "\n" + std::string(28, ' ');
    s << left << spec.help << "\n";
  }
  for (const std::string& text : notes_) s << "\n" << text << "\n";
  return s.str();
}

bool Args::has(const std::string& name) const {
  return values_.count(name) > 0;
}

std::string Args::required(const std::string& name) const {
  const auto it = values_.find(name);
  if (it == values_.end()) {
    throw UsageError("--" + name + " is missing: expected " + specs_.at(name).metavar +
                     " (see dilated " + command_ + " --help)");
  }
  return it->second;
}

std::string Args::value_or(const std::string& name, const std::string& fallback) const {
  const auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

int64_t parse_integer(const std::string& flag, const std::string& text) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if (error == std::errc::result_out_of_range) {
    throw UsageError("--" + flag + " = " + text + ": expected an integer that fits 64 bits");
  }
  if (error != std::errc() || stop != end) {
    throw UsageError("--" + flag + " = " + text + ": expected an integer");
  }
  return value;
}

std::vector<int64_t> parse_integer_list(const std::string& flag, const std::string& text) {
  std::vector<int64_t> values;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    const std::string item = text.substr(start, comma - start);
    int64_t value = 0;
    const char* end = item.data() + item.size();
    const auto [stop, error] = std::from_chars(item.data(), end, value);
    if (item.empty() || error != std::errc() || stop != end) {
      throw UsageError("--" + flag + " = " + text +
                       ": expected a comma-separated list of integers (e.g. 2048,4096)");
    }
    values.push_back(value);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return values;
}

double parse_number(const std::string& flag, const std::string& text) {
  char* stop = nullptr;
  const double value = std::strtod(text.c_str(), &stop);
  if (text.empty() || stop != text.c_str() + text.size() || std::isspace(text[0])) {
    throw UsageError("--" + flag + " = " + text + ": expected a number");
  }
  return value;
}

std::vector<std::string> parse_word_list(const std::string& flag, const std::string& text,
                                         const std::vector<std::string>& allowed) {
  std::vector<std::string> words;
  std::stringstream list(text);
  for (std::string item; std::getline(list, item, ',');) {
    bool known = false;
    for (const std::string& a : allowed) known = known || a == item;
    if (!known) {
      throw UsageError("--" + flag + " = " + text + ": '" + item + "' is not one of " +
                       join_choices(allowed));
    }
    words.push_back(item);
  }
  if (words.empty() || text.back() == ',') {
    throw UsageError("--" + flag + " = " + text + ": expected a comma-separated list of " +
                     join_choices(allowed));
  }
  return words;
}

std::string join_choices(const std::vector<std::string>& choices) {
  std::string s;
  for (size_t i = 0; i < choices.size(); ++i) {
    s += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + choices[i];
  }
  return s;
}

}  // namespace dilated::cli
