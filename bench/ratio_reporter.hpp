// A Google Benchmark reporter that, after the usual table, prints each case
// beside its baseline from the same run as a ratio, with its target.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace bench {

struct Comparison {
  enum class Kind {
    time,        // ratio = case time / baseline time; lower is better
    throughput,  // ratio = case items/s / baseline items/s; higher is better
    plain        // ratio = case time / baseline time, a measure without a target
                 // (e.g. a lock cycle in round trips: cycle time / one get's time)
  };
  std::string label;
  std::string subject;   // benchmark name of the case
  std::string baseline;  // benchmark name of the baseline
  Kind kind;
  double target = 0;  // time: at most this ratio; throughput: at least this ratio; plain: unused
};

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  explicit RatioReporter(std::vector<Comparison> comparisons)
      : ConsoleReporter{OO_Tabular}, comparisons_{std::move(comparisons)} {}

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& run : runs) {
      bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
      bool single = run.run_type == Run::RT_Iteration && run.repetitions <= 1;
      if (run.error_occurred || !(median || single)) continue;
      auto name = run.run_name.str();
      nanoseconds_[name] = run.GetAdjustedRealTime() * to_ns(run.time_unit);
      if (auto it = run.counters.find("items_per_second"); it != run.counters.end()) {
        per_second_[name] = it->second.value;
      }
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    std::printf("\n| case | ours | baseline | ratio | target | verdict |\n");
    std::printf("|---|---|---|---|---|---|\n");
    for (const auto& c : comparisons_) {
      bool time = c.kind != Comparison::Kind::throughput;
      auto& table = time ? nanoseconds_ : per_second_;
      auto ours = table.find(c.subject);
      auto base = table.find(c.baseline);
      if (ours == table.end() || base == table.end()) {
        std::printf("| %s | not run | | | | |\n", c.label.c_str());
        continue;
      }
      double ratio = ours->second / base->second;
      std::string unit = time ? " ns" : "/s";
      if (c.kind == Comparison::Kind::plain) {
        std::printf("| %s | %.1f%s | %.1f%s | %.2fx | - | - |\n", c.label.c_str(), ours->second,
                    unit.c_str(), base->second, unit.c_str(), ratio);
        continue;
      }
      bool met = time ? ratio <= c.target : ratio >= c.target;
      std::printf("| %s | %.1f%s | %.1f%s | %.2fx | %s %.2fx | %s |\n", c.label.c_str(),
                  ours->second, unit.c_str(), base->second, unit.c_str(), ratio,
                  time ? "<=" : ">=", c.target, met ? "met" : "missed");
    }
  }

 private:
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
  std::map<std::string, double> nanoseconds_;
  std::map<std::string, double> per_second_;
};

/// Runs the registered benchmarks and prints the comparisons. Returns the
/// process exit code: non-zero only if the benchmarks could not run.
inline int run(int argc, char** argv, std::vector<Comparison> comparisons) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter{std::move(comparisons)};
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}

}  // namespace bench
