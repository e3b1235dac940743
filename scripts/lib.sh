# Shared shell helpers for scripts/: finding and installing PostgreSQL, and
# throwaway clusters on 127.0.0.1. Source it; every function is prefixed pgs_.
# shellcheck shell=bash

pgs_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

pgs_say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
pgs_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

pgs_is_root() { [ "$(id -u)" = 0 ]; }

# Installs Debian packages that are missing, when root; otherwise says what to install.
pgs_apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if pgs_is_root && command -v apt-get >/dev/null; then
    pgs_say "installing Debian packages: ${missing[*]}"
    if [ -z "${pgs_apt_updated:-}" ]; then
      apt-get update -q >/dev/null || pgs_die "apt-get update failed"
      pgs_apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
      || pgs_die "apt-get install ${missing[*]} failed"
  else
    pgs_die "missing packages: ${missing[*]}. Install them (e.g. sudo apt-get install ${missing[*]}) and run again."
  fi
}

# The directory of the PostgreSQL server binaries: PG_BIN, pg_config, or Debian's newest.
pgs_pg_bin() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return 0; fi
  local d
  if command -v pg_config >/dev/null && d=$(pg_config --bindir 2>/dev/null) && [ -x "$d/initdb" ]; then
    echo "$d"; return 0
  fi
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  return 1
}

# A psql client (the npm server packages ship none; Debian's talks to 13–18).
pgs_psql_bin() {
  if [ -x "$(pgs_pg_bin 2>/dev/null)/psql" ]; then echo "$(pgs_pg_bin)/psql"; return 0; fi
  command -v psql || return 1
}

# How many tests cargo runs at once: the cores, but at least four. The
# integration tests spend most of their time waiting for 1 s collection
# intervals, so on a two-core machine four at a time keep the cores busy.
# A RUST_TEST_THREADS of the caller's wins.
pgs_test_threads() {
  local n
  n=$(nproc 2>/dev/null || echo 1)
  echo "${RUST_TEST_THREADS:-$(( n > 4 ? n : 4 ))}"
}

pgs_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# pgs_proc_kib PID FIELD: a /proc/PID/status field in KiB (VmRSS, VmHWM).
pgs_proc_kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
# pgs_cpu_ticks PID: the process's user plus system CPU, in clock ticks.
pgs_cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# Runs a command as the postgres system user when root (initdb refuses root).
pgs_as_pg() {
  if pgs_is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pgs_cluster_start DIR PORT: initdb (if needed) and start a cluster on 127.0.0.1:PORT,
# trusting the postgres superuser on loopback, pg_stat_statements preloaded.
pgs_cluster_start() {
  local dir=$1 port=$2 bin
  bin=$(pgs_pg_bin) || pgs_die "no PostgreSQL server binaries (set PG_BIN or install postgresql)"
  mkdir -p "$dir"
  pgs_is_root && chown postgres: "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    pgs_as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null \
      || pgs_die "initdb failed in $dir"
    cat >>"$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
shared_preload_libraries = 'pg_stat_statements'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
track_io_timing = on
CONF
  fi
  pgs_as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
    || { cat "$dir/server.log" >&2; pgs_die "PostgreSQL did not start (log above)"; }
}

pgs_cluster_stop() {
  local dir=$1 bin
  bin=$(pgs_pg_bin) || return 0
  [ -f "$dir/data/postmaster.pid" ] && pgs_as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1
  return 0
}
