# Shared by the scripts in this directory; sourced, not run.

# The project's root, whatever directory the script was started from.
CACHELOCK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# configure DIR OPTIONS...: set up a meson build directory, or reconfigure an
# existing one (which also picks up options added since it was made), so
# scripts can be re-run at will. Output is shown only on failure.
configure() {
  local dir=$1
  shift
  local again=()
  [ -f "$dir/build.ninja" ] && again=(--reconfigure)
  local log
  log=$(mktemp)
  if ! meson setup "${again[@]}" "$dir" "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "failed: meson setup $dir $*" >&2
    return 1
  fi
  rm -f "$log"
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
