"""A Django process for the interoperability tests: one cache command, one result.

    python3 django_peer.py BACKEND LOCATIONS KEY_PREFIX VERSION OPTIONS COMMAND [ARG...]

BACKEND is PyMemcacheCache or PyLibMCCache (django.core.cache.backends.memcached),
LOCATIONS a comma-separated list (Django's LOCATION syntax), or LOCATION
itself as JSON (a list or a string, given to Django as it is) if it starts
with [ or ". OPTIONS the alias's OPTIONS as JSON ("{}" for none). Commands:

    add KEY VALUE        cache.add(KEY, int(VALUE))    -> {"result": true|false}
    get KEY              cache.get(KEY)                -> {"result": ..., "type": ..., "truthy": ...}
    delete KEY           cache.delete(KEY)             -> {"result": true|false}
    set KEY...           cache.set(KEY, "django") for each key -> {"result": null}
    make_key KEY         cache.make_key(KEY)           -> {"result": "prefix:version:key"}
    add_each KEY...      cache.add(KEY, 1) for each key -> {"result": [true|false, ...]}
    nodes KEY...         PyMemcacheCache only: the node pymemcache's HashClient
                         picks for each key               -> {"result": ["host:port", ...]}

Keys are taken as the bytes given, read as UTF-8 (whatever the locale).

The result is printed as one line of JSON (keys sorted). Exit status 2 on
bad usage; any exception propagates (non-zero exit, traceback on stderr).
"""
import json
import os
import sys


def main(argv):
    if len(argv) < 7:
        print(__doc__, file=sys.stderr)
        return 2
    backend, locations, key_prefix, version, options, command, *args = argv[1:]
    args = [os.fsencode(arg).decode("utf-8") for arg in args]
    location = json.loads(locations) if locations[:1] in ("[", '"') else locations.split(",")

    import django
    from django.conf import settings

    settings.configure(
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.memcached." + backend,
                "LOCATION": location,
                "KEY_PREFIX": key_prefix,
                "VERSION": int(version),
                "OPTIONS": json.loads(options),
            }
        }
    )
    django.setup()
    from django.core.cache import cache

    if command == "add":
        out = {"result": cache.add(args[0], int(args[1]))}
    elif command == "get":
        value = cache.get(args[0])
        shown = value.decode("latin-1") if isinstance(value, bytes) else value
        out = {"result": shown, "type": type(value).__name__, "truthy": bool(value)}
    elif command == "delete":
        out = {"result": bool(cache.delete(args[0]))}
    elif command == "set":
        for key in args:
            cache.set(key, "django")
        out = {"result": None}
    elif command == "make_key":
        out = {"result": cache.make_key(args[0])}
    elif command == "add_each":
        out = {"result": [cache.add(key, 1) for key in args]}
    elif command == "nodes":
        # The client Django made from LOCATION and OPTIONS, asked without
        # connecting: the hasher is what HashClient consults for every key.
        client = cache._cache
        out = {"result": [client.hasher.get_node(cache.make_key(key)) for key in args]}
    else:
        print("unknown command: " + command, file=sys.stderr)
        return 2
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
