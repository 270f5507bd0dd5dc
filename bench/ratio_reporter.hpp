// A Google Benchmark reporter that, after the usual table, prints each case
// beside its baseline from the same run as a ratio, with its target; and
// writes the rows scripts/bench merges into one table (bench/rows.hpp).
//
//   return bench::run(argc, argv, {{.label = "memory: Lock cycle vs mutex+map",
//                                   .subject = "lock_cycle", .baseline = "baseline_cycle",
//                                   .target = 2.0}});
//
// Flags of our own, taken out before Google Benchmark sees the rest:
//   --rows_out=FILE   also write the rows, and every benchmark's median, to
//                     FILE as JSON lines (the format bench/report.py reads)
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "rows.hpp"

namespace bench {

struct Comparison {
  enum class Kind {
    time,        // ratio = case time / baseline time; lower is better
    throughput,  // ratio = case rate / baseline rate; higher is better
  };
  std::string label;
  std::string subject;   // benchmark name of the case
  std::string baseline;  // benchmark name of the baseline (may be the same one)
  Kind kind = Kind::time;
  /// time: at most this ratio; throughput: at least this ratio; 0: none, the
  /// ratio is reported only (e.g. a lock cycle in round trips).
  double target = 0;
  /// The counters compared. time: a counter in nanoseconds (bench::interleave
  /// makes them), empty for the benchmark's real time; throughput: a counter
  /// per second, empty for items_per_second.
  std::string subject_counter{};
  std::string baseline_counter{};
  /// If set: the verdict is whether this counter of the case (summed over all
  /// its repetitions) is zero, e.g. "errors".
  std::string zero_counter{};
};

inline std::string format_target(const Comparison& c) {
  if (!c.zero_counter.empty()) return "0 " + c.zero_counter;
  if (c.target == 0) return "";
  char text[32];
  std::snprintf(text, sizeof text, "%s %gx", c.kind == Comparison::Kind::time ? "<=" : ">=", c.target);
  return text;
}

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  /// `filtered`: only some benchmarks run (--benchmark_filter), so a
  /// comparison left out is not a failure.
  explicit RatioReporter(std::vector<Comparison> comparisons, bool filtered = false)
      : ConsoleReporter{OO_Tabular}, comparisons_{std::move(comparisons)}, filtered_{filtered} {}

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& run : runs) {
      auto name = run.run_name.str();
      if (run.error_occurred) {
        errors_[name] = run.error_message;
        continue;
      }
      bool iteration = run.run_type == Run::RT_Iteration;
      if (iteration) {
        for (const auto& [counter, value] : run.counters) totals_[name][counter] += value.value;
      } else if (run.aggregate_name == "mean") {
        // Only aggregates are reported (--benchmark_report_aggregates_only):
        // the total is the mean times the repetitions.
        for (const auto& [counter, value] : run.counters) {
          auto& total = mean_totals_[name][counter];
          total = std::max(total, value.value * static_cast<double>(run.repetitions));
        }
      }
      bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
      bool single = iteration && run.repetitions <= 1;
      if (!(median || single)) continue;
      nanoseconds_[name] = run.GetAdjustedRealTime() * to_ns(run.time_unit);
      for (const auto& [counter, value] : run.counters) counters_[name][counter] = value.value;
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    std::printf("\n| case | ours | baseline | ratio | target | verdict |\n");
    std::printf("|---|---|---|---|---|---|\n");
    for (const auto& c : comparisons_) {
      Row row = compare(c);
      rows_.push_back(row);
      if (!row.error.empty()) {
        if (!filtered_ || row.error.find("did not run") == std::string::npos) failed_ = true;
        std::printf("| %s | not run: %s | | | | |\n", row.label.c_str(), row.error.c_str());
        continue;
      }
      std::printf("| %s | %.1f %s | %.1f %s | %.2fx | %s | %s |\n", row.label.c_str(), row.ours,
                  row.unit.c_str(), row.baseline, row.unit.c_str(), row.ratio,
                  row.target.empty() ? "-" : row.target.c_str(),
                  row.verdict.empty() ? "-" : row.verdict.c_str());
    }
    std::fflush(stdout);
  }

  /// The rows, then each benchmark's median, as JSON lines.
  std::vector<std::string> json_lines() const {
    std::vector<std::string> lines;
    for (const auto& row : rows_) lines.push_back(to_json(row));
    for (const auto& [name, ns] : nanoseconds_) {
      std::string line = "{\"median\": " + json_string(name) + ", \"ns\": " + json_number(ns);
      if (auto it = counters_.find(name); it != counters_.end()) {
        for (const auto& [counter, value] : it->second) {
          line += ", " + json_string(counter) + ": " + json_number(value);
        }
      }
      lines.push_back(line + "}");
    }
    return lines;
  }

  /// True if a benchmark failed or a comparison could not be made.
  bool failed() const noexcept { return failed_ || !errors_.empty(); }

 private:
  Row compare(const Comparison& c) const {
    Row row{.label = c.label};
    for (const auto* name : {&c.subject, &c.baseline}) {
      if (auto it = errors_.find(*name); it != errors_.end()) {
        row.error = *name + ": " + it->second;
        return row;
      }
    }
    bool time = c.kind == Comparison::Kind::time;
    auto value = [&](const std::string& name, const std::string& counter) {
      if (!counter.empty()) return find_counter(name, counter);
      return time ? find(nanoseconds_, name) : find_counter(name, "items_per_second");
    };
    auto ours = value(c.subject, c.subject_counter);
    auto base = value(c.baseline, c.baseline_counter);
    if (!ours || !base) {
      row.error = (ours ? c.baseline : c.subject) + " did not run";
      return row;
    }
    row.unit = time ? "ns" : "/s";
    row.ours = *ours;
    row.baseline = *base;
    row.ratio = *ours / *base;
    row.target = format_target(c);
    if (!c.zero_counter.empty()) {
      double count = total(c.subject, c.zero_counter);
      char verdict[64];
      std::snprintf(verdict, sizeof verdict, "%s (%.0f %s)", count == 0 ? "met" : "missed", count,
                    c.zero_counter.c_str());
      row.verdict = verdict;
    } else if (c.target != 0) {
      bool met = time ? row.ratio <= c.target : row.ratio >= c.target;
      row.verdict = met ? "met" : "missed";
    }
    return row;
  }

  static std::optional<double> find(const std::map<std::string, double>& table, const std::string& name) {
    auto it = table.find(name);
    if (it == table.end()) return std::nullopt;
    return it->second;
  }

  std::optional<double> find_counter(const std::string& name, const std::string& counter) const {
    auto it = counters_.find(name);
    if (it == counters_.end()) return std::nullopt;
    return find(it->second, counter);
  }

  double total(const std::string& name, const std::string& counter) const {
    double sum = 0;
    if (auto it = totals_.find(name); it != totals_.end()) sum = find(it->second, counter).value_or(0);
    if (auto it = mean_totals_.find(name); it != mean_totals_.end()) {
      sum = std::max(sum, find(it->second, counter).value_or(0));
    }
    return sum;
  }

  static double to_ns(benchmark::TimeUnit unit) {
    switch (unit) {
      case benchmark::kNanosecond: return 1;
      case benchmark::kMicrosecond: return 1e3;
      case benchmark::kMillisecond: return 1e6;
      case benchmark::kSecond: return 1e9;
    }
    return 1;
  }

  std::vector<Comparison> comparisons_;
  std::vector<Row> rows_;
  std::map<std::string, double> nanoseconds_;                         // medians
  std::map<std::string, std::map<std::string, double>> counters_;     // medians of counters
  std::map<std::string, std::map<std::string, double>> totals_;       // counters summed over repetitions
  std::map<std::string, std::map<std::string, double>> mean_totals_;  // the same, from means
  std::map<std::string, std::string> errors_;
  bool filtered_ = false;
  bool failed_ = false;
};

/// Runs the registered benchmarks and prints the comparisons (and writes them
/// to --rows_out=FILE, if given). Returns the process exit code: non-zero only
/// if a benchmark could not run, never because a target was missed.
inline int run(int argc, char** argv, std::vector<Comparison> comparisons) {
  auto rows_out = take_flag(argc, argv, "rows_out");
  bool filtered = false;
  for (int i = 1; i < argc; ++i) filtered |= std::string_view{argv[i]}.starts_with("--benchmark_filter=");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter{std::move(comparisons), filtered};
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  bool written = write_lines(rows_out.value_or(""), reporter.json_lines());
  return reporter.failed() || !written ? 1 : 0;
}

}  // namespace bench
