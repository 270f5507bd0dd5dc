"""A Django process on django-redis for the Redis interoperability tests:
one cache command, one result.

    python3 redis_peer.py LOCATION KEY_PREFIX VERSION COMMAND [ARG...]

The alias is django_redis.cache.RedisCache on LOCATION with its default
client, serializer and compressor. Commands:

    make_key KEY           cache.make_key(KEY)                 -> {"result": "prefix:version:key"}
    add KEY VALUE          cache.add(KEY, int(VALUE))          -> {"result": true|false}
    set KEY VALUE          cache.set(KEY, VALUE), a str        -> {"result": true}
    get KEY                cache.get(KEY)                      -> {"result": ..., "type": ...}
    delete KEY             cache.delete(KEY)                   -> {"result": true|false}
    lock KEY               cache.lock(KEY, timeout=60).acquire(blocking=False), left held
                                                               -> {"result": true|false, "token": "..."}
    try_lock KEY           the same, released at once if taken -> {"result": true|false}
    unlock KEY TOKEN       releases the redis-py Lock holding TOKEN -> {"result": null}

Django 3.2 (Debian 12's) has no built-in RedisCache; Django 4's keys and
values are django-redis's for these commands (KEY_PREFIX:VERSION:key, ints
as digits, the rest pickled).

The result is printed as one line of JSON (keys sorted). Exit status 2 on
bad usage; any exception propagates (non-zero exit, traceback on stderr).
"""
import json
import sys


def main(argv):
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    location, key_prefix, version, command, *args = argv[1:]

    import django
    from django.conf import settings

    settings.configure(
        CACHES={
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": location,
                "KEY_PREFIX": key_prefix,
                "VERSION": int(version),
            }
        }
    )
    django.setup()
    from django.core.cache import cache

    if command == "make_key":
        out = {"result": str(cache.client.make_key(args[0]))}
    elif command == "add":
        out = {"result": cache.add(args[0], int(args[1]))}
    elif command == "set":
        cache.set(args[0], args[1])
        out = {"result": True}
    elif command == "get":
        value = cache.get(args[0])
        shown = value.decode("latin-1") if isinstance(value, bytes) else value
        out = {"result": shown, "type": type(value).__name__}
    elif command == "delete":
        out = {"result": bool(cache.delete(args[0]))}
    elif command in ("lock", "try_lock"):
        lock = cache.lock(args[0], timeout=60)
        taken = lock.acquire(blocking=False)
        out = {"result": taken}
        if taken and command == "lock":
            out["token"] = lock.local.token.decode()
        elif taken:
            lock.release()
    elif command == "unlock":
        lock = cache.lock(args[0], timeout=60)
        lock.local.token = args[1].encode()
        lock.release()
        out = {"result": None}
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
