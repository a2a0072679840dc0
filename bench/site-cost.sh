#!/usr/bin/env bash
# Measurement (not a test): what one WordPress site costs wpdr per day, in S3
# requests (counted by Garage's own /metrics, per API call) and bytes, for
# each scheduled job: the nightly backup (first and steady state), a media
# sync with nothing changed and with 1 % of the uploads new, prune, verify,
# and the binary-log archive (followed for a while under a write load, per
# day by extrapolation). docs/SCALE.md turns these into 500 and 5,000 sites.
#
#   bench/site-cost.sh                                  2,000 posts, 1,000 uploads
#   WPDR_BIN=target/debug/wpdr bench/site-cost.sh       without a release build
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_setup rclone
POSTS="${BENCH_POSTS:-2000}"
OBJECTS="${BENCH_OBJECTS:-1000}"
ARCHIVE_SECONDS="${BENCH_ARCHIVE_SECONDS:-120}"
WORK="${BENCH_DIR:-/tmp/wpdr-bench}/site-cost"
rm -rf "$WORK"; mkdir -p "$WORK"
RUN=$(date +%s)
DB="bench_cost_$RUN"
SRC="bench-cost-src-$RUN"; OFF="bench-cost-off-$RUN"; STORE="bench-cost-store-$RUN"
M=(mariadb --no-defaults -h127.0.0.1 -P"$WPDR_TEST_DB_PORT" -u"$WPDR_TEST_DB_USER" -p"$WPDR_TEST_DB_PASSWORD")
rclone_remote s3
RCLONE=(env -u AWS_CA_BUNDLE rclone --transfers 16 -q)
ADMIN="http://127.0.0.1:$(( ${WPDR_TEST_S3_ENDPOINT##*:} + 3 ))"
cleanup() {
  "${M[@]}" -e "DROP DATABASE IF EXISTS $DB" || true
  for b in "$SRC" "$OFF" "$STORE"; do "${RCLONE[@]}" purge "s3:$b" 2>/dev/null || true; $G bucket delete --yes "$b" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

# Garage's request counters, summed per S3 call.
requests() { curl -sf "$ADMIN/metrics" | awk '/^api_s3_request_counter\{/ { split($1, a, "\""); n[a[2]] += $2 } END { for (k in n) print k, n[k] }' | sort; }
measure() { # measure NAME CMD...: runs CMD, prints its requests by call and in all
  local name="$1"; shift
  requests >"$WORK/before"
  local t0; t0=$(date +%s.%N)
  "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || { echo "$name failed:"; tail -5 "$WORK/$name.err"; exit 1; }
  local secs; secs=$(elapsed "$t0")
  requests >"$WORK/after"
  python3 - "$name" "$secs" "$WORK/before" "$WORK/after" <<'PY' | tee -a "$WORK/results.txt"
import sys
name, secs = sys.argv[1], sys.argv[2]
read = lambda p: {l.split()[0]: float(l.split()[1]) for l in open(p) if l.strip()}
b, a = read(sys.argv[3]), read(sys.argv[4])
d = {k: int(a[k] - b.get(k, 0)) for k in a if a[k] - b.get(k, 0) > 0}
print(f"{name:<24} {secs:>6} s  {sum(d.values()):>6} requests  " + ", ".join(f"{k} {v}" for k, v in sorted(d.items())))
PY
}
size_of() { "${RCLONE[@]}" size --json "s3:$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])'; }

echo "== a WordPress-shaped site: $POSTS posts, $OBJECTS uploads"
"${M[@]}" -e "CREATE DATABASE $DB CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
"${M[@]}" "$DB" <<SQL
CREATE TABLE wp_posts (ID BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, post_title TEXT, post_content LONGTEXT, post_date DATETIME);
CREATE TABLE wp_postmeta (meta_id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, post_id BIGINT UNSIGNED, meta_key VARCHAR(255), meta_value LONGTEXT, KEY post_id (post_id));
CREATE TABLE wp_options (option_id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, option_name VARCHAR(191) UNIQUE, option_value LONGTEXT);
INSERT INTO wp_options (option_name, option_value) VALUES ('siteurl', 'http://shop.example'), ('home', 'http://shop.example');
SQL
# Bodies that compress like real ones (bench/post_text.py: about 3x).
python3 bench/post_text.py "$POSTS" "$WORK/bodies.txt"
"${M[@]}" --local-infile=1 "$DB" -e "LOAD DATA LOCAL INFILE '$WORK/bodies.txt' INTO TABLE wp_posts (post_content) SET post_title = 'A post', post_date = NOW()"
"${M[@]}" "$DB" -e "INSERT INTO wp_postmeta (post_id, meta_key, meta_value) SELECT ID, '_edit_lock', CONCAT(ID, ':1') FROM wp_posts"
for b in "$SRC" "$OFF" "$STORE"; do bucket "$b"; done
make_uploads "$WORK/files" "$OBJECTS"
"${RCLONE[@]}" sync "$WORK/files" "s3:$SRC"
( umask 077; printf '%s' "$WPDR_TEST_S3_SECRET_ACCESS_KEY" >"$WORK/s3-secret"; printf '%s' "$WPDR_TEST_DB_PASSWORD" >"$WORK/db-password" )
S3="endpoint: '$WPDR_TEST_S3_ENDPOINT', region: garage, access_key_id: $KEY, secret_access_key_file: $WORK/s3-secret"
cat >"$WORK/wpdr.yaml" <<YAML
site: cost
store: {type: s3, bucket: $STORE, prefix: shop, $S3}
database: {host: 127.0.0.1, port: $WPDR_TEST_DB_PORT, user: $WPDR_TEST_DB_USER, password_file: $WORK/db-password, name: $DB}
media:
  source: {bucket: $SRC, $S3}
  offsite: {bucket: $OFF, $S3}
retention: {keep_last: 3}
YAML
W=("$WPDR" -c "$WORK/wpdr.yaml" -q)
: >"$WORK/results.txt"
echo "== each job's S3 requests (Garage's counters; the store, the uploads bucket and the mirror together)"
measure backup-first "${W[@]}" backup --schedule nightly
measure backup-nightly "${W[@]}" backup --schedule nightly
echo "   store after two sets: $(( $(size_of "$STORE") / 1024 )) KiB; database $("${M[@]}" -N -e "SELECT ROUND(SUM(data_length + index_length) / 1048576) FROM information_schema.TABLES WHERE table_schema = '$DB'") MiB"
measure media-sync-unchanged "${W[@]}" media sync
python3 - "$WORK/new" "$(( OBJECTS / 100 ))" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(f"{root}/wp-content/uploads/2026/11", exist_ok=True)
for i in range(n):
    open(f"{root}/wp-content/uploads/2026/11/new-{i}.jpg", "wb").write(os.urandom(100_000))
PY
"${RCLONE[@]}" copy "$WORK/new" "s3:$SRC"
measure media-sync-1pct-new "${W[@]}" media sync
measure verify-latest "${W[@]}" verify latest
measure prune "${W[@]}" prune
measure status "${W[@]}" status
# The archive under a write load of one small transaction a second.
( for i in $(seq 1 "$ARCHIVE_SECONDS"); do "${M[@]}" "$DB" -e "UPDATE wp_options SET option_value = '$i' WHERE option_name = 'home'"; sleep 1; done ) &
LOAD=$!
measure "binlog-archive-${ARCHIVE_SECONDS}s" "${W[@]}" binlog archive --for "$ARCHIVE_SECONDS"
wait "$LOAD" || true
echo
echo "results in $WORK/results.txt"
