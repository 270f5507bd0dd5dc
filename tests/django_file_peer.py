"""A Django process for the FileBasedCache tests: one cache command, one result.

    python3 django_file_peer.py LOCATION KEY_PREFIX VERSION COMMAND [ARG...]

The alias is Django's FileBasedCache on the directory LOCATION. VALUE and
TIMEOUT arguments are JSON (1, "text", true, null, 0.5); {"bytes": "..."}
stands for a bytes value. Commands:

    add KEY VALUE [TIMEOUT]   cache.add           -> {"result": true|false}
    set KEY VALUE [TIMEOUT]   cache.set           -> {"result": null}
    get KEY                   cache.get           -> {"result": ..., "type": ...}
    has_key KEY               cache.has_key       -> {"result": true|false}
    delete KEY                cache.delete        -> {"result": true|false}
    incr KEY                  cache.incr          -> {"result": n}
    clear                     cache.clear         -> {"result": null}
    file KEY                  cache._key_to_file  -> {"result": "/dir/md5.djcache"}

The result is printed as one line of JSON (keys sorted). Exit status 2 on
bad usage; any exception propagates (non-zero exit, traceback on stderr).
"""
import json
import sys


def value_of(text):
    value = json.loads(text)
    if isinstance(value, dict) and "bytes" in value:
        return value["bytes"].encode("latin-1")
    return value


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
                "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                "LOCATION": location,
                "KEY_PREFIX": key_prefix,
                "VERSION": int(version),
            }
        }
    )
    django.setup()
    from django.core.cache import cache

    timeout = {"timeout": value_of(args[2])} if len(args) > 2 else {}
    if command == "add":
        out = {"result": cache.add(args[0], value_of(args[1]), **timeout)}
    elif command == "set":
        out = {"result": cache.set(args[0], value_of(args[1]), **timeout)}
    elif command == "get":
        value = cache.get(args[0])
        shown = value.decode("latin-1") if isinstance(value, bytes) else value
        out = {"result": shown, "type": type(value).__name__}
    elif command == "has_key":
        out = {"result": cache.has_key(args[0])}
    elif command == "delete":
        out = {"result": bool(cache.delete(args[0]))}
    elif command == "incr":
        out = {"result": cache.incr(args[0])}
    elif command == "clear":
        out = {"result": cache.clear()}
    elif command == "file":
        out = {"result": cache._key_to_file(args[0])}
    else:
        print("unknown command: " + command, file=sys.stderr)
        return 2
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
