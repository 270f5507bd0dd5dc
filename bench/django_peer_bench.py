"""Times Django's own cache API doing a lock cycle, for scripts/bench.

    /usr/bin/python3 django_peer_bench.py --location HOST:PORT --bench-memcached PROGRAM
        --rows-out FILE [--min-time SECONDS] [--repetitions N]

Through Django's PyMemcacheCache and PyLibMCCache (Debian's python3-django,
python3-pymemcache, python3-pylibmc), against the memcached at LOCATION:

    python-cachelock   cache.get(key), cache.set(key, 1), cache.delete(key):
                       the Python package's acquire and release (not safe:
                       two callers can both see the key free)
    safe               cache.add(key, 1), cache.delete(key)

Our side is bench_memcached's `lock_cycle/0/real_time` (a Lock cycle through
MemcachedCache, text protocol as these clients speak), run as PROGRAM against
the same memcached. Each repetition runs the four Django cases and ours in
random order, each for at least --min-time seconds, so that they all meet the
same moments of a noisy machine; the median time per cycle is kept. The rows
written (see bench/rows.hpp) say how many times faster our cycle is:
Django's time / ours.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

CASES = [
    ("PyMemcacheCache", "python-cachelock"),
    ("PyLibMCCache", "python-cachelock"),
    ("PyMemcacheCache", "safe"),
    ("PyLibMCCache", "safe"),
]
OURS = "lock_cycle/0/real_time"


def python_cachelock(cache, key):
    if not cache.get(key):
        cache.set(key, 1)
    cache.delete(key)


def safe(cache, key):
    if cache.add(key, 1):
        cache.delete(key)


SEQUENCES = {"python-cachelock": python_cachelock, "safe": safe}
LABELS = {
    "python-cachelock": "get+set(key, 1)+delete (python-cachelock)",
    "safe": "add+delete (safe)",
}
# Our least speed-up: an owner-safe cycle in 2 round trips (the meta
# protocol) is at least as fast as Django's unsafe add+delete, and 1.4x its
# 3-round-trip get+set+delete.
TARGETS = {"python-cachelock": 1.4, "safe": 1.0}


def time_cycles(cache, sequence, min_time):
    """Nanoseconds per cycle, over at least min_time seconds."""
    key = "bench-peer-lock"
    cycles = 0
    batch = 50
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            sequence(cache, key)
        cycles += batch
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed * 1e9 / cycles


def our_cycle_ns(program, location, min_time, flag="--memcached=", benchmark=OURS):
    """Nanoseconds per Lock cycle: one run of PROGRAM's `benchmark` against
    the server at `location` (given as flag + location)."""
    with tempfile.TemporaryDirectory() as scratch:
        rows = os.path.join(scratch, "rows.jsonl")
        command = [
            program,
            flag + location,
            "--benchmark_filter=^" + benchmark + "$",
            f"--benchmark_min_time={min_time}",
            "--rows_out=" + rows,
        ]
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stdout)
            raise SystemExit(f"{os.path.basename(program)}: {' '.join(command)} exited {done.returncode}")
        with open(rows) as lines:
            for line in lines:
                row = json.loads(line)
                if row.get("median") == benchmark:
                    return row["ns"]
    raise SystemExit(f"{os.path.basename(program)} reported no {benchmark}")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--location", required=True)
    parser.add_argument("--bench-memcached", required=True)
    parser.add_argument("--rows-out", required=True)
    parser.add_argument("--min-time", type=float, default=0.5)
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args(argv[1:])

    import django
    from django.conf import settings

    settings.configure(
        CACHES={
            backend: {
                "BACKEND": "django.core.cache.backends.memcached." + backend,
                "LOCATION": args.location,
            }
            for backend in ("PyMemcacheCache", "PyLibMCCache")
        }
    )
    django.setup()
    from django.core.cache import caches

    # Connect and warm up before timing.
    for backend, name in CASES:
        time_cycles(caches[backend], SEQUENCES[name], 0.05)
    times = {case: [] for case in CASES}
    ours_times = []
    for repetition in range(args.repetitions):
        # In random order, as bench_memcached runs its repetitions.
        for case in random.sample(CASES + [None], len(CASES) + 1):
            if case is None:
                ns = our_cycle_ns(args.bench_memcached, args.location, args.min_time)
                ours_times.append(ns)
                backend, name = "cachelock", "Lock cycle"
            else:
                backend, name = case
                ns = time_cycles(caches[backend], SEQUENCES[name], args.min_time)
                times[case].append(ns)
            print(f"{backend:16} {name:17} repetition {repetition + 1}: {ns / 1000:.1f} us per cycle")
    ours = statistics.median(ours_times)

    with open(args.rows_out, "w") as out:
        for backend, name in CASES:
            theirs = statistics.median(times[(backend, name)])
            speed_up = theirs / ours
            row = {
                "case": f"peer: Django {backend} {LABELS[name]} vs our Lock cycle: our speed-up",
                "unit": "ns",
                "ours": ours,
                "baseline": theirs,
                "ratio": speed_up,
                "target": f">= {TARGETS[name]:g}x",
                "verdict": "met" if speed_up >= TARGETS[name] else "missed",
            }
            out.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
