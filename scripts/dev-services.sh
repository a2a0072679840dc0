#!/usr/bin/env bash
# Starts, idempotently, the real servers wpdr's tests and quickstart use:
#   - MariaDB with binary logs and GTIDs on its own port and data dir
#   - Garage (S3) with a key and buckets (standing in for MinIO and the offsite store)
# Installs what is missing first (Debian packages; Garage from crates.io, cached).
# Writes $WPDR_DEV_DIR/env, which the tests and scripts source.
#
#   scripts/dev-services.sh          start (or confirm) everything
#   scripts/dev-services.sh stop     stop both servers (data dirs stay)
#   scripts/dev-services.sh reset    stop and delete the data dirs
set -euo pipefail

DEV_DIR="${WPDR_DEV_DIR:-/tmp/wpdr-dev}"
CACHE_DIR="${WPDR_CACHE:-$HOME/.cache/wpdr}"
DB_PORT="${WPDR_DEV_DB_PORT:-3307}"
S3_PORT="${WPDR_DEV_S3_PORT:-3900}"
RPC_PORT=$((S3_PORT + 1))
ADMIN_PORT=$((S3_PORT + 3))
MOTO_PORT="${WPDR_DEV_MOTO_PORT:-$((S3_PORT + 10))}"
DB_USER=wpdr
DB_PASSWORD=wpdr-dev-password
# Fixed, test-only credentials so reruns and CI agree (garage key import).
S3_KEY_ID=GK1d2c3b4a5e6f708192a3b4c5
S3_SECRET=5f0e1d2c3b4a59687766554433221100ffeeddccbbaa99887766554433221100
BUCKETS=(wpdr-backups wpdr-media-source wpdr-media-offsite)

log() { echo "[dev-services] $*" >&2; }

need_apt=()
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
command -v mariadb >/dev/null || need_apt+=(mariadb-client)
command -v mariadb-install-db >/dev/null || need_apt+=(mariadb-server)
command -v zstd >/dev/null || need_apt+=(zstd)
command -v php >/dev/null || need_apt+=(php-cli)
grep -qi mysqli <<<"$(php -m 2>/dev/null || true)" || need_apt+=(php-mysql)
[ -f /usr/share/wordpress/wp-load.php ] || need_apt+=(wordpress)
# The default theme (a Recommends of wordpress, which --no-install-recommends skips):
# without it the site answers every page with an empty body.
dpkg -s wordpress-theme-twentytwentythree >/dev/null 2>&1 || need_apt+=(wordpress-theme-twentytwentythree)
command -v curl >/dev/null || need_apt+=(curl)
# The object cache a restore flushes cold (tests start their own servers).
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
command -v memcached >/dev/null || need_apt+=(memcached)
# The way back from an encrypted set without wpdr (tests/trust.rs runs it).
command -v age >/dev/null || need_apt+=(age)
# promtool: the chart's alert rules are unit-tested (scripts/chart-check.sh).
command -v promtool >/dev/null || need_apt+=(prometheus)
# The image (scripts/image.sh): a Debian root filesystem and the OCI assembly.
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
command -v umoci >/dev/null || need_apt+=(umoci)

install_apt() {
  if [ "${#need_apt[@]}" -gt 0 ]; then
    log "installing Debian packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  fi
}

garage_bin() {
  local bin="$CACHE_DIR/bin/garage"
  if [ ! -x "$bin" ]; then
    if command -v garage >/dev/null; then
      mkdir -p "$CACHE_DIR/bin"; cp "$(command -v garage)" "$bin"
    else
      log "building Garage (cargo install garage --locked, ~7 minutes, cached in $CACHE_DIR)"
      cargo install garage --locked --root "$CACHE_DIR" >&2
    fi
  fi
  echo "$bin"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_all() {
  for p in "$DEV_DIR/mariadb/mariadb.pid" "$DEV_DIR/garage/garage.pid" "$DEV_DIR/moto/moto.pid"; do
    if alive "$p"; then kill "$(cat "$p")" || true; fi
  done
  for _ in $(seq 50); do
    alive "$DEV_DIR/mariadb/mariadb.pid" || alive "$DEV_DIR/garage/garage.pid" || break
    sleep 0.2
  done
}

case "${1:-start}" in
  stop) stop_all; exit 0 ;;
  reset) stop_all; rm -rf "$DEV_DIR"; exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|stop|reset]" >&2; exit 2 ;;
esac

install_apt
GARAGE="$(garage_bin)"
mkdir -p "$DEV_DIR"

# ---- MariaDB ---------------------------------------------------------------
DB_DIR="$DEV_DIR/mariadb"
SOCK="$DB_DIR/mariadb.sock"
if ! alive "$DB_DIR/mariadb.pid"; then
  mkdir -p "$DB_DIR"
  if [ ! -d "$DB_DIR/data/mysql" ]; then
    log "initialising MariaDB data dir $DB_DIR/data"
    mariadb-install-db --no-defaults --datadir="$DB_DIR/data" --user="$(id -un)" \
      --auth-root-authentication-method=normal --skip-test-db >"$DB_DIR/install.log" 2>&1
  fi
  log "starting MariaDB on 127.0.0.1:$DB_PORT"
  /usr/sbin/mariadbd --no-defaults --user="$(id -un)" --datadir="$DB_DIR/data" \
    --port="$DB_PORT" --bind-address=127.0.0.1 --socket="$SOCK" --pid-file="$DB_DIR/mariadb.pid" \
    --log-error="$DB_DIR/error.log" --log-bin="$DB_DIR/data/binlog" --server-id=1 --binlog-format=ROW \
    --max-allowed-packet=1G --innodb-buffer-pool-size=512M --innodb-log-file-size=256M \
    --skip-name-resolve --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
    >/dev/null 2>&1 &
  for _ in $(seq 120); do
    mariadb --no-defaults -S "$SOCK" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.25
  done
  mariadb --no-defaults -S "$SOCK" -uroot -e 'SELECT 1' >/dev/null || { cat "$DB_DIR/error.log" >&2; exit 1; }
fi
mariadb --no-defaults -S "$SOCK" -uroot <<SQL
CREATE USER IF NOT EXISTS '$DB_USER'@'%' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'%' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL

# ---- Garage ----------------------------------------------------------------
G_DIR="$DEV_DIR/garage"
G_CONF="$G_DIR/garage.toml"
mkdir -p "$G_DIR/meta" "$G_DIR/data"
if [ ! -f "$G_CONF" ]; then
  cat >"$G_CONF" <<TOML
metadata_dir = "$G_DIR/meta"
data_dir = "$G_DIR/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
admin_token = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
TOML
fi
G="$GARAGE -c $G_CONF"
if ! alive "$G_DIR/garage.pid"; then
  log "starting Garage S3 on 127.0.0.1:$S3_PORT"
  RUST_LOG=warn $G server >"$G_DIR/garage.log" 2>&1 &
  echo $! >"$G_DIR/garage.pid"
fi
for _ in $(seq 120); do $G status >/dev/null 2>&1 && break; sleep 0.25; done
$G status >/dev/null || { cat "$G_DIR/garage.log" >&2; exit 1; }
# Capture first: `grep -q` would close the pipe early and garage aborts on EPIPE.
LAYOUT="$($G layout show 2>/dev/null || true)"
if ! grep -q "Current cluster layout version: [1-9]" <<<"$LAYOUT"; then
  NODE="$($G node id -q | cut -d@ -f1)"
  $G layout assign -z dc1 -c 10G "$NODE" >/dev/null
  $G layout apply --version 1 >/dev/null
fi
$G key info "$S3_KEY_ID" >/dev/null 2>&1 || $G key import --yes -n wpdr-dev "$S3_KEY_ID" "$S3_SECRET" >/dev/null
# Restores create their target buckets (as they would in a fresh MinIO).
$G key allow --create-bucket "$S3_KEY_ID" >/dev/null
for b in "${BUCKETS[@]}"; do
  $G bucket info "$b" >/dev/null 2>&1 || $G bucket create "$b" >/dev/null
  $G bucket allow --read --write --owner "$b" --key "$S3_KEY_ID" >/dev/null
done
# Wait until S3 answers (the layout takes a moment to settle).
for _ in $(seq 120); do
  curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" && break
  sleep 0.25
done

# ---- moto (S3 with Object Lock and IAM policies, for tests/object_lock.rs) ----
M_DIR="$DEV_DIR/moto"
mkdir -p "$M_DIR"
python3 -c 'import moto.server, boto3' 2>/dev/null || pip install -q 'moto[server]' >&2
if ! alive "$M_DIR/moto.pid" || [ ! -s "$M_DIR/env" ]; then
  if alive "$M_DIR/moto.pid"; then kill "$(cat "$M_DIR/moto.pid")"; sleep 0.5; fi
  log "starting moto S3 on 127.0.0.1:$MOTO_PORT"
  INITIAL_NO_AUTH_ACTION_COUNT=3 python3 "$(dirname "$0")/moto-server.py" -H 127.0.0.1 -p "$MOTO_PORT" \
    >"$M_DIR/moto.log" 2>&1 &
  echo $! >"$M_DIR/moto.pid"
  # Wait for the port without a request: moto counts requests toward the
  # three that may come without a key (the setup's first three).
  for _ in $(seq 120); do (exec 3<>"/dev/tcp/127.0.0.1/$MOTO_PORT") 2>/dev/null && break; sleep 0.25; done
  python3 "$(dirname "$0")/moto-setup.py" "http://127.0.0.1:$MOTO_PORT" >"$M_DIR/env" \
    || { cat "$M_DIR/moto.log" >&2; exit 1; }
fi

cat >"$DEV_DIR/env" <<ENV
# written by scripts/dev-services.sh; test-only credentials
export WPDR_DEV_DIR=$DEV_DIR
export WPDR_TEST_DB_HOST=127.0.0.1
export WPDR_TEST_DB_PORT=$DB_PORT
export WPDR_TEST_DB_USER=$DB_USER
export WPDR_TEST_DB_PASSWORD=$DB_PASSWORD
export WPDR_TEST_DB_SOCKET=$SOCK
export WPDR_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export WPDR_TEST_S3_REGION=garage
export WPDR_TEST_S3_ACCESS_KEY_ID=$S3_KEY_ID
export WPDR_TEST_S3_SECRET_ACCESS_KEY=$S3_SECRET
export WPDR_TEST_S3_BUCKET=wpdr-backups
export WPDR_TEST_MEDIA_SOURCE_BUCKET=wpdr-media-source
export WPDR_TEST_MEDIA_OFFSITE_BUCKET=wpdr-media-offsite
export WPDR_TEST_GARAGE="$GARAGE -c $G_CONF"
$(cat "$M_DIR/env")
ENV
log "ready: MariaDB 127.0.0.1:$DB_PORT, Garage S3 http://127.0.0.1:$S3_PORT; env in $DEV_DIR/env"
