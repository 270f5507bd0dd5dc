# Shared by the scripts in this directory; sourced, not run.

# The project's root, whatever directory the script was started from.
CACHELOCK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# configure DIR OPTIONS...: set up a meson build directory, or update the
# options of an existing one, so scripts can be re-run at will.
configure() {
  local dir=$1
  shift
  if [ -f "$dir/build.ninja" ]; then
    meson configure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
}

step() { printf '\n== %s\n' "$*"; }

# quietly LOG COMMAND...: run COMMAND with its output in LOG, shown only if it fails.
quietly() {
  local log=$1
  shift
  mkdir -p "$(dirname "$log")"
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "failed: $*" >&2
    return 1
  fi
}
