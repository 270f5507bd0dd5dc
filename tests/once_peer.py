"""A Python `once` for the interoperability tests, shaped as python-cachelock's.

    python3 once_peer.py LOCATION TEMPLATE PARAMS ARGS COMMAND
    python3 once_peer.py format FILE

The key is TEMPLATE.format(**arguments), the arguments bound to a function
whose parameters are PARAMS (a JSON list of names) from ARGS (a JSON list:
true, 1.0, null come in as True, 1.0, None), as python-cachelock's `once`
makes it. The lock is Django's: `cache.add(key)` on a PyMemcacheCache alias
at LOCATION (one host:port), with Django's default KEY_PREFIX and VERSION.
Commands:

    hold    takes the key and keeps it (exits without releasing) -> {"key": ..., "ran": true|false}
    try     takes the key, runs, releases it                      -> {"key": ..., "ran": true|false}

`format FILE` needs no server: FILE holds Python tuples
(template, names, args), one a line; for each, one line is printed:
"ok KEY", or "error EXCEPTION" where str.format raises.
"""
import inspect
import json
import sys


def key_for(template, names, args):
    parameters = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    bound = inspect.Signature(parameters).bind(*args)
    return template.format(**bound.arguments)


def format_cases(path):
    with open(path, encoding="utf-8") as script:
        lines = script.read().splitlines()
    for line in lines:
        if not line.strip():
            continue
        template, names, args = eval(line)  # the test's own table, not outside input
        try:
            print("ok", key_for(template, names, args))
        except Exception as e:
            print("error", type(e).__name__)
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "format":
        return format_cases(argv[2])
    if len(argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    location, template, params, args, command = argv[1:]
    if command not in ("hold", "try"):
        print("unknown command: " + command, file=sys.stderr)
        return 2

    import django
    from django.conf import settings

    settings.configure(
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
                "LOCATION": location,
            }
        }
    )
    django.setup()
    from django.core.cache import cache

    key = key_for(template, json.loads(params), json.loads(args))
    ran = cache.add(key, 1, 60)
    if ran and command == "try":
        cache.delete(key)
    print(json.dumps({"key": key, "ran": ran}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
