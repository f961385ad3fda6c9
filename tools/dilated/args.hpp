// Command-line options of one command: declared with their help, parsed strictly (unknown
// flags, missing values, repeats and stray words are usage errors naming the argument).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dilated::cli {

class Args {
 public:
  // `usage` is the synopsis line; `about` a paragraph printed under it by --help.
  Args(std::string command, std::string usage, std::string about);

  // An option taking a value (`--name VALUE` or `--name=VALUE`).
  void option(const std::string& name, const std::string& metavar, const std::string& help);
  // A switch without a value.
  void flag(const std::string& name, const std::string& help);
  // Free text appended to --help (notes, examples).
  void note(const std::string& text);

  // Parses the words after the command. Throws UsageError.
  void parse(const std::vector<std::string>& words);

  bool help_requested() const { return help_; }
  std::string help_text() const;

  bool has(const std::string& name) const;
  // The value of an option; UsageError naming it when it is required and absent.
  std::string required(const std::string& name) const;
  std::string value_or(const std::string& name, const std::string& fallback) const;
  bool is_set(const std::string& flag_name) const { return has(flag_name); }

 private:
  struct Spec {
    std::string metavar;  // empty for switches
    std::string help;
  };
  std::string command_, usage_, about_;
  std::vector<std::string> order_;
  std::map<std::string, Spec> specs_;
  std::vector<std::string> notes_;
  std::map<std::string, std::string> values_;
  bool help_ = false;
};

// Value parsers: each throws UsageError "--flag = text: expected ...".
int64_t parse_integer(const std::string& flag, const std::string& text);
std::vector<int64_t> parse_integer_list(const std::string& flag, const std::string& text);
double parse_number(const std::string& flag, const std::string& text);
std::vector<std::string> parse_word_list(const std::string& flag, const std::string& text,
                                         const std::vector<std::string>& allowed);

// "a, b or c"
std::string join_choices(const std::vector<std::string>& choices);

}  // namespace dilated::cli
