"""Times redis-py's Lock through django-redis, for scripts/bench.

    /usr/bin/python3 redis_peer_bench.py --bench-redis PROGRAM --rows-out FILE
        [--min-time SECONDS] [--repetitions N]

Starts a redis-server of its own (no persistence) on a free loopback port.
Django's side is django-redis's `cache.lock(key)` (redis-py's Lock):
acquire(blocking=False), then release, as Debian's python3-django-redis
and python3-redis run them. Our side is bench_redis's `lock_cycle/real_time`
(a Lock cycle through RedisCache), run as PROGRAM against the same server.
Each repetition runs both in random order, each for at least --min-time
seconds; the median time per cycle is kept. The row written (see
bench/rows.hpp) says how many times faster our cycle is: theirs / ours.
"""
import argparse
import json
import random
import socket
import statistics
import subprocess
import sys
import time

from django_peer_bench import our_cycle_ns

OURS = "lock_cycle/real_time"


def start_redis():
    """A redis-server on a free loopback port: (process, port)."""
    for _ in range(5):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            if server.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                return server, port
            except OSError:
                time.sleep(0.05)
        server.kill()
        server.wait()
    raise SystemExit("redis_peer_bench: cannot start redis-server on a free loopback port")


def time_cycles(cache, min_time):
    """Nanoseconds per redis-py Lock acquire+release, over at least min_time seconds."""
    key = "bench-peer-lock"
    cycles = 0
    start = time.perf_counter()
    while True:
        for _ in range(50):
            lock = cache.lock(key, timeout=300)
            if not lock.acquire(blocking=False):
                raise SystemExit("redis_peer_bench: redis-py's Lock was refused")
            lock.release()
        cycles += 50
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed * 1e9 / cycles


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench-redis", required=True)
    parser.add_argument("--rows-out", required=True)
    parser.add_argument("--min-time", type=float, default=0.5)
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args(argv[1:])

    server, port = start_redis()
    try:
        location = f"redis://127.0.0.1:{port}"
        import django
        from django.conf import settings

        settings.configure(CACHES={"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": location}})
        django.setup()
        from django.core.cache import cache

        time_cycles(cache, 0.05)  # connect and warm up
        theirs_times, ours_times = [], []
        for repetition in range(args.repetitions):
            for ours in random.sample([False, True], 2):
                if ours:
                    ns = our_cycle_ns(args.bench_redis, location, args.min_time, "--redis=", OURS)
                    ours_times.append(ns)
                else:
                    ns = time_cycles(cache, args.min_time)
                    theirs_times.append(ns)
                name = "cachelock Lock cycle" if ours else "redis-py Lock (django-redis)"
                print(f"{name:30} repetition {repetition + 1}: {ns / 1000:.1f} us per cycle")
    finally:
        server.terminate()
        server.wait()
    ours, theirs = statistics.median(ours_times), statistics.median(theirs_times)
    with open(args.rows_out, "w") as out:
        row = {
            "case": "peer: redis-py Lock acquire+release (django-redis) vs our Lock cycle: our speed-up",
            "unit": "ns", "ours": ours, "baseline": theirs, "ratio": theirs / ours, "target": "", "verdict": "",
        }
        out.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
