"""Times the cachelock command as users run it: whole processes, one at a time.

    python3 cli_bench.py --cachelock PATH --rows-out FILE [--rounds N]

Cases, each a fresh process started and waited for from here:
  run      cachelock run KEY -- true, on the embedded default (files, no settings)
  version  cachelock --version: the cost of starting cachelock at all
  flock    flock -n FILE true: the same job under a kernel lock, the floor
Each round runs the three once, in random order, so they meet the same
moments of a noisy machine; the rows give medians over the rounds.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time


def spawn_ns(argv, env):
    """Wall time of one whole process, from spawn to reaped, in ns."""
    start = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, env)
    _, status = os.waitpid(pid, 0)
    took = time.perf_counter_ns() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {os.waitstatus_to_exitcode(status)}")
    return took


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cachelock", required=True)
    parser.add_argument("--rows-out", required=True)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv[1:])

    env = {k: v for k, v in os.environ.items() if k != "CACHELOCK_SETTINGS"}
    flock = shutil.which("flock")
    true = shutil.which("true")
    with tempfile.TemporaryDirectory() as scratch:
        lock_file = os.path.join(scratch, "flock")
        open(lock_file, "w").close()
        key = f"bench-cli-{os.getpid()}"
        cases = {
            "run": [args.cachelock, "run", key, "--", true],
            "version": [args.cachelock, "--version"],
            "flock": [flock, "-n", lock_file, true],
        }
        null = os.open(os.devnull, os.O_WRONLY)
        saved = os.dup(1)
        os.dup2(null, 1)  # --version prints; the table must not get it
        try:
            for argv_ in cases.values():  # warm the page cache
                spawn_ns(argv_, env)
            times = {name: [] for name in cases}
            for _ in range(args.rounds):
                for name in random.sample(list(cases), len(cases)):
                    times[name].append(spawn_ns(cases[name], env))
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(null)
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, value in median.items():
        print(f"{name:8} median {value / 1e6:.2f} ms over {args.rounds} rounds")

    ratio = median["run"] / median["version"]
    rows = [
        {
            "case": "cli: run KEY -- true (file default) vs cachelock --version",
            "unit": "ns",
            "ours": median["run"],
            "baseline": median["version"],
            "ratio": ratio,
            "target": "<= 1.5x",
            "verdict": "met" if ratio <= 1.5 else "missed",
        },
        {
            "case": "cli: run KEY -- true (file default) vs flock -n FILE true",
            "unit": "ns",
            "ours": median["run"],
            "baseline": median["flock"],
            "ratio": median["run"] / median["flock"],
            "target": "",
            "verdict": "",
        },
    ]
    with open(args.rows_out, "w") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
