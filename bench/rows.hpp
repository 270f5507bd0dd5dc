// The rows the benchmark programs hand to scripts/bench: one JSON object a
// line, merged into one Markdown table by bench/report.py.
//
//   {"case": "...", "unit": "ns", "ours": 1.5, "baseline": 1.0, "ratio": 1.5,
//    "target": "<= 2x", "verdict": "missed"}
//   {"case": "...", "error": "why it could not be measured"}
//
// unit: "ns" (a median time), "/s" (a median rate) or "B" (bytes); an empty
// target or verdict means none (the ratio is reported only).
#pragma once

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bench {

/// One line of the merged table: raw numbers, formatted by bench/report.py.
struct Row {
  std::string label{};
  std::string unit{};  // "ns", "/s" or "B"
  double ours = 0;
  double baseline = 0;
  double ratio = 0;
  std::string target{};   // "<= 2x", "0 errors", or empty: none
  std::string verdict{};  // "met", "missed (3 errors)", ...; empty: none
  std::string error{};    // non-empty: the case could not be measured
};

inline std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned char>(c));
      out += escaped;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

inline std::string json_number(double value) {
  if (!std::isfinite(value)) return "null";
  char text[64];
  std::snprintf(text, sizeof text, "%.6g", value);
  return text;
}

inline std::string to_json(const Row& row) {
  if (!row.error.empty()) {
    return "{\"case\": " + json_string(row.label) + ", \"error\": " + json_string(row.error) + "}";
  }
  return "{\"case\": " + json_string(row.label) + ", \"unit\": " + json_string(row.unit) +
         ", \"ours\": " + json_number(row.ours) + ", \"baseline\": " + json_number(row.baseline) +
         ", \"ratio\": " + json_number(row.ratio) + ", \"target\": " + json_string(row.target) +
         ", \"verdict\": " + json_string(row.verdict) + "}";
}

/// The value of `--NAME=VALUE` in argv, removed from it; nullopt if absent.
inline std::optional<std::string> take_flag(int& argc, char** argv, std::string_view name) {
  std::string prefix = "--" + std::string{name} + "=";
  std::optional<std::string> value;
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) {
      value = argv[i] + prefix.size();
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
  argv[argc] = nullptr;
  return value;
}

/// Writes `lines` to `path` (nothing if empty); false if it cannot.
inline bool write_lines(const std::string& path, const std::vector<std::string>& lines) {
  if (path.empty()) return true;
  std::ofstream out{path, std::ios::trunc};
  for (const auto& line : lines) out << line << '\n';
  out.flush();
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    return false;
  }
  return true;
}

}  // namespace bench
