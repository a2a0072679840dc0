#!/usr/bin/env bash
# Benchmark (not a test): two wpdr builds restoring the same database, in
# pairs, to tell a change to the load from this VM's drift (the same restore
# varied 10-17 s within an hour here: only pairs compare).
#
#   bench/ab-restore.sh BIN_A BIN_B [ROUNDS] [DATABASE]
#
# Each build backs DATABASE (default: bench/db.sh's 0.3-scale realistic set,
# `bench_wpr_30000`; build it with `BENCH_SCALE=0.3 BENCH_DATA=realistic
# bench/db.sh`) up to its own local store (its own chunking), then the two
# restore in turns, alternating which goes first, after the servers settle.
# Prints each run's wall, client CPU and the server's CPU (from /proc), the
# medians, and the last run's per-table seconds (`table_times`).
# A base build: `git worktree add /tmp/base REV && (cd /tmp/base &&
# CARGO_TARGET_DIR=$PWD/target cargo build --release)` from the repository.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BIN_A BIN_B [ROUNDS] [DATABASE]" >&2; exit 2; }
A="$(realpath "$1")"; B="$(realpath "$2")"; ROUNDS="${3:-8}"; DB="${4:-bench_wpr_30000}"
cd "$(dirname "$0")/.."
source bench/lib.sh
scripts/dev-services.sh
source "${WPDR_DEV_DIR:-/tmp/wpdr-dev}/env"
dpkg -s time >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
export WPDR_DB_PASSWORD="$WPDR_TEST_DB_PASSWORD" WPDR_TARGET_PASSWORD="$WPDR_TEST_DB_PASSWORD"
M=(mariadb --no-defaults -h127.0.0.1 -P"$WPDR_TEST_DB_PORT" -u"$WPDR_TEST_DB_USER" -p"$WPDR_TEST_DB_PASSWORD")
have=$("${M[@]}" -N -e "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='$DB'")
[ "$have" -gt 0 ] || { echo "database '$DB' has no tables: build it with bench/db.sh first" >&2; exit 2; }
SERVER_PID=$(cat "${WPDR_DEV_DIR:-/tmp/wpdr-dev}/mariadb/mariadb.pid")
WORK="${BENCH_DIR:-/tmp/wpdr-bench}/ab"
rm -rf "$WORK"; mkdir -p "$WORK"
for side in a b; do db_config "ab-$side" "$WORK/store-$side" "$DB" >"$WORK/$side.yaml"; done
"$A" -q -c "$WORK/a.yaml" backup
"$B" -q -c "$WORK/b.yaml" backup

server_ticks() { awk '{print $14+$15}' "/proc/$SERVER_PID/stat"; }
declare -A WALL SERVER
# restore SIDE BIN: one timed restore into r_ab_SIDE.
restore() {
  local side="$1" bin="$2" t0 t1 s0 s1 user sys line wall client server
  "${M[@]}" -e "DROP DATABASE IF EXISTS r_ab_$side"
  sync; settle
  s0=$(server_ticks); t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o "$WORK/$side.time" "$bin" -q -c "$WORK/$side.yaml" --output json \
    restore db latest --target "mysql://$WPDR_TEST_DB_USER@127.0.0.1:$WPDR_TEST_DB_PORT" --database "r_ab_$side" >"$WORK/$side.json"
  t1=$(date +%s.%N); s1=$(server_ticks)
  read -r user sys <"$WORK/$side.time"
  line=$(python3 -c "print('%.2f %.2f %.2f' % ($t1 - $t0, $user + $sys, ($s1 - $s0) / $(getconf CLK_TCK)))")
  read -r wall client server <<<"$line"
  WALL[$side]+="$wall "; SERVER[$side]+="$server "
  printf '  %s  wall %6.2f s   client CPU %5.2f s   server CPU %6.2f s\n' "$side" "$wall" "$client" "$server"
}
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round of $ROUNDS"
  if [ $((round % 2)) = 1 ]; then restore a "$A"; restore b "$B"; else restore b "$B"; restore a "$A"; fi
done
echo "== medians of $ROUNDS rounds"
for side in a b; do
  echo "  $side  wall $(median $side WALL) s   server CPU $(median $side SERVER) s"
done
echo "  b/a wall: $(python3 -c "print(round($(median b WALL) / $(median a WALL), 3))")"
echo "== the last run's tables (seconds of one connection)"
for side in a b; do
  python3 - "$WORK/$side.json" "$side" <<'PY'
import json, sys
for t in json.load(open(sys.argv[1]))["table_times"]:
    print("  %s  %-14s load %6.2f  index %5.2f  check %5.2f  done at %6.2f" % (
        sys.argv[2], t["table"], t["load_seconds"], t["index_seconds"], t["check_seconds"], t["checked_at"]))
PY
done
for side in a b; do "${M[@]}" -e "DROP DATABASE IF EXISTS r_ab_$side"; done
