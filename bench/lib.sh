# Shared set-up of the benchmarks (sourced by bench/*.sh, not run).

# bench_setup PKG...: from the repository root, start the dev services (MariaDB,
# Garage), install PKG and `time`, build wpdr in release mode. Sets ROOT,
# WPDR, G (the garage CLI) and KEY (the test S3 key id).
bench_setup() {
  cd "$(dirname "${BASH_SOURCE[1]}")/.."
  ROOT="$PWD"
  scripts/dev-services.sh
  source "${WPDR_DEV_DIR:-/tmp/wpdr-dev}/env"
  for pkg in "$@" time; do
    dpkg -s "$pkg" >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null; }
  done
  # WPDR_BIN: a wpdr already built (counting requests needs no release build).
  if [ -n "${WPDR_BIN:-}" ]; then
    WPDR="$(realpath "$WPDR_BIN")"
  else
    cargo build --release --quiet
    WPDR="$ROOT/target/release/wpdr"
  fi
  G="$WPDR_TEST_GARAGE"
  KEY="$WPDR_TEST_S3_ACCESS_KEY_ID"
}

# rclone_remote NAME: an rclone remote NAME (lower case) on the dev Garage,
# configured through the environment. rclone refuses to start while
# AWS_CA_BUNDLE is set here, so run it as "${RCLONE[@]}".
rclone_remote() {
  local n="${1^^}"
  export "RCLONE_CONFIG_${n}_TYPE=s3" "RCLONE_CONFIG_${n}_PROVIDER=Other" \
    "RCLONE_CONFIG_${n}_ENDPOINT=$WPDR_TEST_S3_ENDPOINT" "RCLONE_CONFIG_${n}_REGION=garage" \
    "RCLONE_CONFIG_${n}_ACCESS_KEY_ID=$KEY" \
    "RCLONE_CONFIG_${n}_SECRET_ACCESS_KEY=$WPDR_TEST_S3_SECRET_ACCESS_KEY" \
    "RCLONE_CONFIG_${n}_FORCE_PATH_STYLE=true"
}

# bucket NAME: create (or reuse) a bucket the test key owns.
bucket() {
  $G bucket info "$1" >/dev/null 2>&1 || $G bucket create "$1" >/dev/null
  $G bucket allow --read --write --owner "$1" --key "$KEY" >/dev/null
}

# elapsed START: seconds since START (a `date +%s.%N`), one decimal.
elapsed() { awk -v a="$(date +%s.%N)" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }

# make_uploads DIR N: N WordPress-shaped uploads under DIR/wp-content/uploads/
# (random bytes: images do not compress; 5-200 KB, every hundredth 2-6 MB),
# the same files for the same N.
make_uploads() {
  python3 - "$1" "$2" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
random.seed(7)
for i in range(n):
    d = f"{root}/wp-content/uploads/{2016 + i % 10}/{1 + (i // 10) % 12:02d}"
    os.makedirs(d, exist_ok=True)
    size = random.randint(2 << 20, 6 << 20) if i % 100 == 0 else random.randint(5_000, 200_000)
    with open(f"{d}/img-{i:06d}.jpg", "wb") as f:
        f.write(os.urandom(size))
PY
}

# settle: waits (at most 60 s) until the dev MariaDB and Garage are idle
# (under 10 % of a core over a second), so no run pays for the previous one's
# background work (InnoDB purging a dropped database, flushing dirty pages).
# Without it the tool run first in a round was measured up to 2x slower.
settle() {
  local dev="${WPDR_DEV_DIR:-/tmp/wpdr-dev}" tick pids p before after i
  tick=$(getconf CLK_TCK)
  pids=$(cat "$dev/mariadb/mariadb.pid" 2>/dev/null; pgrep -f "garage -c $dev" || true)
  [ -n "$pids" ] || return 0
  cpu() { local s=0 p; for p in $pids; do s=$((s + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$s"; }
  for i in $(seq 1 60); do
    before=$(cpu); sleep 1; after=$(cpu)
    [ $(( (after - before) * 10 )) -lt "$tick" ] && return 0
  done
  echo "  (the servers were still busy after 60 s)"
}

# db_config SITE STORE_DIR DATABASE: a wpdr config backing DATABASE on the dev
# MariaDB up to a local store (two connections, the default), on stdout.
db_config() {
  cat <<YAML
site: $1
store:
  type: local
  path: $2
database:
  host: 127.0.0.1
  port: $WPDR_TEST_DB_PORT
  user: $WPDR_TEST_DB_USER
  name: $3
  connections: 2
YAML
}

# median KEY [ARRAY]: the median of the space-separated figures at KEY of the
# associative array ARRAY (default SECS: one figure per round).
median() {
  local -n list="${2:-SECS}"
  python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" ${list[$1]}
}
