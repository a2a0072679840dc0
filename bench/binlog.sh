#!/usr/bin/env bash
# Benchmark (not a test): the binary log archive and a point-in-time replay,
# against what a user would run instead, on the same log in one run.
#
#   archive: `wpdr binlog archive --until-caught-up` (stream, segment, zstd,
#            SHA-256, upload to Garage) vs `mariadb-binlog
#            --read-from-remote-server --raw` + `zstd -1` + `rclone copy`
#   replay:  `wpdr restore db SET --to-gtid LAST` (load the set, pick the
#            transactions, replay) vs `mariadb-binlog binlog.* | mariadb`
#            of the raw files into an empty copy of the schema (no checks)
#
# A private MariaDB (ROW logging) on a free port gets an orders workload:
# BENCH_TX single-row transactions (a shop's orders and comments) plus
# BENCH_BATCHES transactions of 5,000 rows (imports, cron jobs).
#
#   bench/binlog.sh                             50,000 small + 60 large transactions
#   BENCH_TX=5000 BENCH_BATCHES=5 bench/binlog.sh   a quick look
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_setup rclone
TX="${BENCH_TX:-50000}"
BATCHES="${BENCH_BATCHES:-60}"
WORK="${BENCH_DIR:-/tmp/wpdr-bench}/binlog"
rm -rf "$WORK"; mkdir -p "$WORK"

# A private server: its own port, data dir and binary log.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mariadb-install-db --no-defaults --auth-root-authentication-method=normal --skip-test-db \
  --datadir="$WORK/data" --user="$(id -un)" >/dev/null
/usr/sbin/mariadbd --no-defaults --user="$(id -un)" --datadir="$WORK/data" --port="$PORT" \
  --bind-address=127.0.0.1 --socket="$WORK/s.sock" --log-error="$WORK/error.log" \
  --log-bin="$WORK/data/binlog" --server-id=1 --binlog-format=ROW --innodb-buffer-pool-size=512M \
  --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 --skip-name-resolve &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do mariadb --no-defaults -uroot --socket="$WORK/s.sock" -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
mariadb --no-defaults -uroot --socket="$WORK/s.sock" -e "CREATE USER 'bench'@'%' IDENTIFIED BY 'bench-pw'; GRANT ALL ON *.* TO 'bench'@'%'"
M=(mariadb --no-defaults -h127.0.0.1 -P"$PORT" -ubench -pbench-pw)
"${M[@]}" <<'SQL'
CREATE DATABASE shop;
CREATE TABLE shop.orders (id BIGINT PRIMARY KEY AUTO_INCREMENT, customer INT NOT NULL,
  total DECIMAL(10,2) NOT NULL, status VARCHAR(20) NOT NULL, note TEXT, created DATETIME(6) NOT NULL,
  KEY (customer), KEY (created)) ENGINE=InnoDB;
SQL

BUCKET=wpdr-bench-binlog
bucket "$BUCKET"
rclone_remote s3
RCLONE=(env -u AWS_CA_BUNDLE rclone --transfers 8 -q)
"${RCLONE[@]}" purge "s3:$BUCKET/run" 2>/dev/null || true

cat >"$WORK/wpdr.yaml" <<YAML
site: bench
store:
  type: s3
  bucket: $BUCKET
  prefix: run/wpdr
  endpoint: $WPDR_TEST_S3_ENDPOINT
  region: garage
  access_key_id: $KEY
database:
  host: 127.0.0.1
  port: $PORT
  user: bench
  name: shop
YAML
export WPDR_DB_PASSWORD=bench-pw WPDR_S3_SECRET_ACCESS_KEY="$WPDR_TEST_S3_SECRET_ACCESS_KEY" WPDR_TARGET_PASSWORD=bench-pw
SET=$("$WPDR" -c "$WORK/wpdr.yaml" -q --output json backup | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
START_FILE=$("${M[@]}" -N -e "SHOW MASTER STATUS" | awk '{print $1}')
SET_GTID=$("$WPDR" -c "$WORK/wpdr.yaml" -q --output json sets show "$SET" | python3 -c 'import json,sys; print(json.load(sys.stdin)["database"]["gtid_binlog_pos"])')

echo "== workload: $TX single-row transactions + $BATCHES transactions of 5,000 rows"
t=$(date +%s.%N)
"${M[@]}" shop <<SQL
DELIMITER //
CREATE PROCEDURE orders(n INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  WHILE i < n DO
    INSERT INTO orders (customer, total, status, note, created)
      VALUES (FLOOR(RAND() * 100000), ROUND(RAND() * 500, 2), 'processing', REPEAT(SHA2(i, 256), 3), NOW(6));
    IF i % 7 = 0 THEN UPDATE orders SET status = 'completed' WHERE id = LAST_INSERT_ID(); END IF;
    SET i = i + 1;
  END WHILE;
END//
DELIMITER ;
SET autocommit = 1;
CALL orders($TX);
SQL
for b in $(seq "$BATCHES"); do
  "${M[@]}" shop -e "INSERT INTO orders (customer, total, status, note, created) SELECT seq % 100000, seq % 500, 'imported', REPEAT(SHA2(seq + $b, 256), 3), NOW(6) FROM seq_1_to_5000"
done
echo "   $(elapsed "$t") s"
LAST=$("${M[@]}" -N -e "SELECT @@gtid_binlog_pos")
"${M[@]}" -e "FLUSH BINARY LOGS"
LOG_BYTES=$(ls -l "$WORK"/data/binlog.0* | awk '{s += $5} END {print s}')
echo "   binary log: $((LOG_BYTES / 1048576)) MiB, ends at GTID $LAST"

echo "== archive"
t=$(date +%s.%N)
/usr/bin/time -v -o "$WORK/archive.time" "$WPDR" -c "$WORK/wpdr.yaml" -q --output json binlog archive --until-caught-up >"$WORK/archive.json"
A_WPDR=$(elapsed "$t")
RSS=$(awk -F: '/Maximum resident/ {print int($2/1024)}' "$WORK/archive.time")
STORED=$(python3 -c 'import json; r=json.load(open("'"$WORK/archive.json"'")); print(r["bytes"] // 1048576, r["transactions"], r["segments"])')
echo "   wpdr binlog archive: ${A_WPDR} s (stored MiB, transactions, segments: $STORED; peak RSS ${RSS} MiB)"
mkdir -p "$WORK/raw"
t=$(date +%s.%N)
( cd "$WORK/raw" && mariadb-binlog --no-defaults --read-from-remote-server --raw --to-last-log \
    -h127.0.0.1 -P"$PORT" -ubench -pbench-pw "$START_FILE" )
zstd -1 -q --rm "$WORK"/raw/binlog.*
"${RCLONE[@]}" copy "$WORK/raw" "s3:$BUCKET/run/raw"
A_MANUAL=$(elapsed "$t")
echo "   mariadb-binlog --raw + zstd -1 + rclone copy: ${A_MANUAL} s (whole files, no transaction boundaries, no index)"

echo "== replay into an empty schema"
t=$(date +%s.%N)
"$WPDR" -c "$WORK/wpdr.yaml" -q --output json restore db "$SET" --target "mysql://bench@127.0.0.1:$PORT" \
  --database shop_pitr --to-gtid "$LAST" >"$WORK/replay.json"
R_WPDR=$(elapsed "$t")
echo "   wpdr restore db --to-gtid: ${R_WPDR} s (set loaded and checked, $(python3 -c 'import json; print(json.load(open("'"$WORK/replay.json"'"))["point_in_time"]["replayed"]["transactions"])') transactions replayed)"
"${M[@]}" -e "CREATE DATABASE shop_manual; CREATE TABLE shop_manual.orders LIKE shop.orders"
for f in "$WORK"/raw/*.zst; do zstd -d -q --rm "$f"; done
t=$(date +%s.%N)
# What a careful person types: from the set's GTID to the last one, this database only.
mariadb-binlog --no-defaults --start-position="$SET_GTID" --stop-position="$LAST" \
  --database=shop --rewrite-db='shop->shop_manual' "$WORK"/raw/binlog.[0-9]* \
  | "${M[@]}" --binary-mode shop_manual 2>"$WORK/manual.err" || true
R_MANUAL=$(elapsed "$t")
echo "   mariadb-binlog --start-position --stop-position | mariadb: ${R_MANUAL} s (no set load, no checks)"
W=$("${M[@]}" -N -e "SELECT COUNT(*) FROM shop_pitr.orders")
H=$("${M[@]}" -N -e "SELECT COUNT(*) FROM shop.orders")
MAN=$("${M[@]}" -N -e "SELECT COUNT(*) FROM shop_manual.orders")
echo "   rows: live $H, wpdr $W, by hand $MAN"
[ "$W" = "$H" ] || { echo "wpdr's replay lost rows"; exit 1; }

echo
awk -v a="$A_WPDR" -v b="$A_MANUAL" -v c="$R_WPDR" -v d="$R_MANUAL" 'BEGIN {
  printf "archive: wpdr %.1f s vs raw pull + zstd + rclone %.1f s  -> %.2fx\n", a, b, b / a
  printf "replay:  wpdr %.1f s vs mariadb-binlog | mariadb %.1f s -> %.2fx\n", c, d, d / c }'
