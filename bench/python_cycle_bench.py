"""python-cachelock's memory lock cycle in CPython, beside our memory Lock cycle.

    python3 python_cycle_bench.py --memory-rows FILE --rows-out FILE

python-cachelock (0.0.1, the package cachelock descends from) keeps its
MemoryCache in a dict behind get, set and delete; its Lock is a context
manager that gets the key, raises if it is set, sets it, logs at info level,
and on exit deletes it and logs again. Both cycles are timed here on classes
of that shape (the package is not packaged for Debian): the whole Lock cycle,
the equivalent of ours, and the bare dict calls under it. Our Lock cycle
(default alias) comes from the medians bench_memory wrote in the same run
(--memory-rows), so all come from one machine at one time. Rows give our
speed-up: their cycle / ours.
"""
import argparse
import json
import logging
import statistics
import sys
import time

TARGET = 5.0
KEY = "nightly-report"
logger = logging.getLogger("python-cachelock-shape")


class DictCache:
    """The shape of python-cachelock's MemoryCache: a dict, no expiry."""

    def __init__(self):
        self._data = {}

    def get(self, key, default=None):
        return self._data.get(key, default)

    def set(self, key, value):
        self._data[key] = value

    def delete(self, key):
        if key in self._data:
            del self._data[key]


class Held(Exception):
    pass


class DictLock:
    """The shape of python-cachelock's Lock: get, refuse if set, set, delete, log."""

    def __init__(self, key, cache):
        self.key = key
        self.cache = cache

    def __enter__(self):
        if self.cache.get(self.key):
            raise Held()
        self.cache.set(self.key, 1)
        logger.info(f"Created lock for {self.key}.")

    def __exit__(self, *exc):
        self.cache.delete(self.key)
        logger.info(f"Released lock for {self.key}.")


def dict_cycle_ns(cache, rounds):
    start = time.perf_counter_ns()
    for _ in range(rounds):
        if cache.get(KEY) is None:
            cache.set(KEY, 1)
        cache.delete(KEY)
    return (time.perf_counter_ns() - start) / rounds


def lock_cycle_ns(cache, rounds):
    start = time.perf_counter_ns()
    for _ in range(rounds):
        with DictLock(KEY, cache):
            pass
    return (time.perf_counter_ns() - start) / rounds


def our_lock_ns(path):
    with open(path, encoding="utf-8") as rows:
        for line in rows:
            row = json.loads(line)
            if row.get("median") == "cycles" and "lock_ns" in row:
                return row["lock_ns"]
    raise RuntimeError(f"no median of the cycles benchmark's lock_ns in {path}")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-rows", required=True)
    parser.add_argument("--rows-out", required=True)
    parser.add_argument("--repetitions", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=200_000)
    args = parser.parse_args(argv[1:])

    ours = our_lock_ns(args.memory_rows)
    cache = DictCache()
    cases = [
        ("python-cachelock Lock cycle on its MemoryCache (CPython)", lock_cycle_ns, TARGET),
        ("python-cachelock MemoryCache get+set+delete alone (CPython)", dict_cycle_ns, None),
    ]
    with open(args.rows_out, "w", encoding="utf-8") as out:
        for label, cycle, target in cases:
            cycle(cache, args.rounds // 10)  # warm up
            theirs = statistics.median(cycle(cache, args.rounds) for _ in range(args.repetitions))
            speed_up = theirs / ours
            row = {
                "case": f"memory: {label} vs our Lock cycle (default alias): our speed-up",
                "unit": "ns",
                "ours": ours,
                "baseline": theirs,
                "ratio": speed_up,
                "target": f">= {target:g}x" if target else "",
                "verdict": ("met" if speed_up >= target else "missed") if target else "",
            }
            out.write(json.dumps(row) + "\n")
            print(f"{label}: {theirs:.0f} ns; our Lock cycle {ours:.0f} ns: {speed_up:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
