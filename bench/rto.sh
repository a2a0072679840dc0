#!/usr/bin/env bash
# Benchmark (not a test): the RTO of a whole WordPress site — a real WordPress
# grown to ~1 GB of database and 5,000 uploads — restored by
# `wpdr restore latest --plan site` (database load and table check, media into
# a fresh bucket, URL rewrite, the restored site served by php -S and compared
# with what the live site answered at backup), against what a user would run
# by hand in the same outage: `zstd -dc dump.sql.zst | mariadb` and
# `rclone copy` of the offsite media, in parallel, with no checks at all.
# Prints wall times, the ratio, wpdr's time per step and its peak RSS.
#
#   bench/rto.sh                          ~1 GB database, 5,000 uploads (both cached), 4 rounds
#   BENCH_ROUNDS=1 bench/rto.sh           one round (default 4: medians; each side goes first in half the rounds)
#   BENCH_POSTS=20000 BENCH_OBJECTS=500 bench/rto.sh   a quick look
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_setup rclone
POSTS="${BENCH_POSTS:-240000}"
OBJECTS="${BENCH_OBJECTS:-5000}"
WORK="${BENCH_DIR:-/tmp/wpdr-bench}/rto"
mkdir -p "$WORK"
DB="bench_rto_$POSTS"
M=(mariadb --no-defaults -h127.0.0.1 -P"$WPDR_TEST_DB_PORT" -u"$WPDR_TEST_DB_USER" -p"$WPDR_TEST_DB_PASSWORD")
rclone_remote s3
RCLONE=(env -u AWS_CA_BUNDLE rclone --transfers 32 --checkers 32 -q)
drop_bucket() {
  "${RCLONE[@]}" purge "s3:$1" 2>/dev/null || true
  $G bucket delete --yes "$1" >/dev/null 2>&1 || true
}
LIVE=http://127.0.0.1:8091
RESTORED=http://127.0.0.1:8092

# The site: a real WordPress install, grown server-side to ~1 GB of posts and meta (cached).
have=$("${M[@]}" -N -e "SELECT COUNT(*) FROM $DB.wp_posts WHERE post_type = 'post'" 2>/dev/null || echo 0)
if [ "$have" -lt "$POSTS" ]; then
  echo "== building a WordPress site with $POSTS posts in database $DB (cached for later runs)"
  "${M[@]}" -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
  scripts/wp-site.sh install "$WORK/site" "127.0.0.1:$WPDR_TEST_DB_PORT" "$DB" "$WPDR_TEST_DB_USER" "$WPDR_TEST_DB_PASSWORD" "$LIVE" | tail -1
  "${M[@]}" "$DB" <<SQL
SET SESSION sql_log_bin = 0;
INSERT INTO wp_posts (post_author, post_date, post_date_gmt, post_content, post_title, post_excerpt, post_status, post_name, to_ping, pinged, post_modified, post_modified_gmt, post_content_filtered, guid, post_type)
SELECT 1, '2025-01-01' - INTERVAL seq MINUTE, '2025-01-01' - INTERVAL seq MINUTE,
  CONCAT('<!-- wp:paragraph --><p>', REPEAT(CONCAT(SHA2(seq, 256), ' lorem ipsum dolor sit amet, '), 38), '<a href="$LIVE/?p=', seq, '">more</a></p><!-- /wp:paragraph -->'),
  CONCAT('Archive post ', seq), '', 'publish', CONCAT('archive-post-', seq), '', '',
  '2025-01-01', '2025-01-01', '', CONCAT('$LIVE/?p=', seq), 'post'
FROM seq_1_to_${POSTS};
INSERT INTO wp_postmeta (post_id, meta_key, meta_value)
SELECT ID, '_wpdr_bench', CONCAT('a:2:{s:3:"url";s:', LENGTH('$LIVE') + 5, ':"$LIVE/?p=', ID % 10, '";s:4:"hash";s:64:"', SHA2(ID, 256), '";}')
FROM wp_posts WHERE post_type = 'post';
SQL
fi
"${M[@]}" "$DB" -e "ANALYZE TABLE wp_posts, wp_postmeta" >/dev/null
SIZE=$("${M[@]}" -N -e "SELECT ROUND(SUM(data_length + index_length) / 1048576) FROM information_schema.TABLES WHERE table_schema = '$DB'")
echo "== database $DB: $SIZE MiB (data + indexes)"

SRC="bench-rto-src-$OBJECTS"
bucket "$SRC"
have=$("${RCLONE[@]}" size --json "s3:$SRC" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
if [ "$have" != "$OBJECTS" ]; then
  echo "== building $OBJECTS WordPress-shaped uploads in $SRC (cached for later runs)"
  rm -rf "$WORK/files"
  make_uploads "$WORK/files" "$OBJECTS"
  "${RCLONE[@]}" sync "$WORK/files" "s3:$SRC"
fi
BYTES=$("${RCLONE[@]}" size --json "s3:$SRC" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
echo "== uploads: $OBJECTS objects, $((BYTES / 1048576)) MiB"

RUN=$(date +%s)
ROUNDS="${BENCH_ROUNDS:-4}"
OFF="bench-rto-off-$RUN"
bucket "$OFF"
PIDS=()
# One round's targets: a fresh database and bucket for each side.
drop_round() {
  "${M[@]}" -e "DROP DATABASE IF EXISTS rto_rto${RUN}r$1; DROP DATABASE IF EXISTS alt_${RUN}r$1" || true
  for b in "bench-rto-rto${RUN}r$1" "bench-rto-alt-${RUN}r$1"; do drop_bucket "$b"; done
}
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for r in $(seq 1 "$ROUNDS"); do drop_round "$r"; done
  drop_bucket "$OFF"
}
trap cleanup EXIT
( umask 077; printf '%s' "$WPDR_TEST_S3_SECRET_ACCESS_KEY" >"$WORK/s3-secret"; printf '%s' "$WPDR_TEST_DB_PASSWORD" >"$WORK/db-password" )
S3="endpoint: '$WPDR_TEST_S3_ENDPOINT', region: garage, access_key_id: $KEY, secret_access_key_file: $WORK/s3-secret"
cat >"$WORK/wpdr.yaml" <<YAML
site: bench-rto
store: {type: local, path: $WORK/store}
database: {host: 127.0.0.1, port: $WPDR_TEST_DB_PORT, user: $WPDR_TEST_DB_USER, password_file: $WORK/db-password, name: $DB, connections: 4}
media:
  source: {bucket: $SRC, $S3}
  offsite: {bucket: $OFF, $S3}
wordpress: {url: $LIVE}
restore:
  database: mysql://$WPDR_TEST_DB_USER@127.0.0.1:$WPDR_TEST_DB_PORT/rto_{namespace}
  database_password_file: $WORK/db-password
  media: {bucket: 'bench-rto-{namespace}', $S3}
YAML

[ -d "$WORK/site" ] || scripts/wp-site.sh install "$WORK/site" "127.0.0.1:$WPDR_TEST_DB_PORT" "$DB" "$WPDR_TEST_DB_USER" "$WPDR_TEST_DB_PASSWORD" "$LIVE" >/dev/null
scripts/wp-site.sh config "$WORK/site" "127.0.0.1:$WPDR_TEST_DB_PORT" "$DB" "$WPDR_TEST_DB_USER" "$WPDR_TEST_DB_PASSWORD"
PIDS+=("$(scripts/wp-site.sh serve "$WORK/site" 127.0.0.1:8091)")
echo "== wpdr backup (database, the site's answers, media mirror into $OFF)"
t0=$(date +%s.%N)
"$WPDR" -c "$WORK/wpdr.yaml" -q backup >"$WORK/backup.out"
echo "   backup: $(elapsed "$t0") s"

echo "== the alternative's backup (not timed): mariadb-dump | zstd"
mariadb-dump --no-defaults -h127.0.0.1 -P"$WPDR_TEST_DB_PORT" -u"$WPDR_TEST_DB_USER" -p"$WPDR_TEST_DB_PASSWORD" \
  --single-transaction --quick "$DB" | zstd -1 -q -f -o "$WORK/dump.sql.zst"

rm -rf "$WORK/restored-site"; cp -r "$WORK/site" "$WORK/restored-site"
PIDS+=("$(scripts/wp-site.sh serve "$WORK/restored-site" 127.0.0.1:8092)")

# wpdr restore NS: the RTO of `wpdr restore --plan site` into namespace NS.
wpdr_restore() {
  local ns="$1" t0
  scripts/wp-site.sh config "$WORK/restored-site" "127.0.0.1:$WPDR_TEST_DB_PORT" "rto_$ns" "$WPDR_TEST_DB_USER" "$WPDR_TEST_DB_PASSWORD"
  echo "== wpdr restore latest --namespace $ns --plan site (RTO)"
  settle
  t0=$(date +%s.%N)
  /usr/bin/time -v -o "$WORK/wpdr.time" "$WPDR" -c "$WORK/wpdr.yaml" -q --output json \
    restore latest --namespace "$ns" --plan site --site-url "$RESTORED" >"$WORK/restore-$ns.json"
  WPDR_S+="$(elapsed "$t0") "
  RSS=$(awk -F: '/Maximum resident/ {print int($2/1024)}' "$WORK/wpdr.time")
  python3 - "$WORK/restore-$ns.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
j = r["journal"]
print(f"   ok={r['ok']}  steps:")
for s in j["plan"]["steps"]:
    rec = j["steps"][s["id"]]
    print(f"     {s['id']:<16} {rec['seconds']:8.1f} s")
c = j["steps"]["checks"]["summary"]
print(f"   checked: {c.get('tables', {}).get('verified_at_load')} tables at load, "
      f"{c.get('media', {}).get('present')}/{c.get('media', {}).get('objects')} media objects, "
      f"{len(c.get('site', {}).get('compared', []))} site answers ({len(c.get('site', {}).get('differences', []))} differ)")
PY
}
# alternative R: the hand-run restore of round R.
alternative() {
  local db="alt_${RUN}r$1" b="bench-rto-alt-${RUN}r$1" t0 dbp
  echo "== the alternative: zstd -dc | mariadb, and rclone copy of the offsite media, in parallel"
  "${M[@]}" -e "CREATE DATABASE $db"
  bucket "$b"
  settle
  t0=$(date +%s.%N)
  ( zstd -dc "$WORK/dump.sql.zst" | "${M[@]}" "$db" ) &
  dbp=$!
  "${RCLONE[@]}" copy "s3:$OFF" "s3:$b" --exclude ".wpdr-retained/**"
  wait "$dbp"
  ALT_S+="$(elapsed "$t0") "
}
WPDR_S="" ALT_S=""
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round of $ROUNDS"
  # Alternating which goes first: the first run of a round was measured
  # slower whichever it was, so with an even number of rounds (the default)
  # each side goes first equally often.
  if [ $((round % 2)) = 1 ]; then
    wpdr_restore "rto${RUN}r$round"; alternative "$round"
  else
    alternative "$round"; wpdr_restore "rto${RUN}r$round"
  fi
  echo "   wpdr $(echo "$WPDR_S" | awk '{print $NF}') s, alternative $(echo "$ALT_S" | awk '{print $NF}') s"
  drop_round "$round"
done
med() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" $1; }

echo
printf 'RTO, %s MiB database + %s uploads (%s MiB), median of %s rounds:\n' "$SIZE" "$OBJECTS" "$((BYTES / 1048576))" "$ROUNDS"
printf '  wpdr restore --plan site       %8.1f s  (rounds: %s; peak RSS %s MiB; includes table checks, URL rewrite, site answers)\n' "$(med "$WPDR_S")" "${WPDR_S% }" "$RSS"
printf '  mariadb client + rclone copy   %8.1f s  (rounds: %s; no checks, no URL rewrite)\n' "$(med "$ALT_S")" "${ALT_S% }"
printf '  ratio (alternative / wpdr)     %8.2fx\n' "$(awk -v a="$(med "$ALT_S")" -v b="$(med "$WPDR_S")" 'BEGIN { print a / b }')"
