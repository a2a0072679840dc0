#!/usr/bin/env bash
# Benchmark (not a test): the site-URL rewrite of a restore on a WordPress-
# shaped database — BENCH_POSTS posts (default 60,000; ~3.9 KB bodies, each
# linking the site, and the site in each guid), one serialised postmeta value
# per post holding the URL, a JSON one (`\/`-escaped URL) for every third —
# timed for `wpdr rewrite-url` against the lower bound a user might reach
# for by hand: one server-side `UPDATE … SET c = REPLACE(c, old, new)` per
# text column, which is fast and corrupts every serialised value it touches
# (string lengths) — wpdr must not. Each run starts from the same dump.
#
#   bench/rewrite.sh                        target/release/wpdr
#   bench/rewrite.sh /tmp/wpdr-old target/release/wpdr   compare builds
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_setup
POSTS="${BENCH_POSTS:-60000}"
WORK="${BENCH_DIR:-/tmp/wpdr-bench}/rewrite"
mkdir -p "$WORK"
M=(mariadb --no-defaults -h127.0.0.1 -P"$WPDR_TEST_DB_PORT" -u"$WPDR_TEST_DB_USER" -p"$WPDR_TEST_DB_PASSWORD")
OLD=http://127.0.0.1:8091
NEW=https://restored.example.org
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("$WPDR")

DUMP="$WORK/base-$POSTS.sql"
if [ ! -s "$DUMP" ]; then
  echo "== building the data ($POSTS posts; cached in $DUMP)"
  "${M[@]}" -e "DROP DATABASE IF EXISTS bench_rw_base; CREATE DATABASE bench_rw_base CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
  "${M[@]}" bench_rw_base <<SQL
SET SESSION sql_log_bin = 0;
CREATE TABLE wp_posts (ID bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, post_content longtext NOT NULL,
  post_title text NOT NULL, post_status varchar(20) NOT NULL DEFAULT 'publish', post_name varchar(200) NOT NULL DEFAULT '',
  guid varchar(255) NOT NULL DEFAULT '', post_type varchar(20) NOT NULL DEFAULT 'post', KEY type_status (post_type, post_status, ID));
CREATE TABLE wp_postmeta (meta_id bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, post_id bigint unsigned NOT NULL DEFAULT 0,
  meta_key varchar(255) DEFAULT NULL, meta_value longtext, KEY post_id (post_id));
INSERT INTO wp_posts (post_content, post_title, post_name, guid)
SELECT CONCAT('<!-- wp:paragraph --><p>', REPEAT(CONCAT(SHA2(seq, 256), ' lorem ipsum dolor sit amet, '), 38),
  '<a href="$OLD/?p=', seq, '">more</a></p><!-- /wp:paragraph -->'),
  CONCAT('Archive post ', seq), CONCAT('archive-post-', seq), CONCAT('$OLD/?p=', seq) FROM seq_1_to_$POSTS;
INSERT INTO wp_postmeta (post_id, meta_key, meta_value)
SELECT ID, '_wpdr_bench', CONCAT('a:2:{s:3:"url";s:', LENGTH('$OLD') + 5, ':"$OLD/?p=', ID % 10, '";s:4:"hash";s:64:"', SHA2(ID, 256), '";}') FROM wp_posts;
INSERT INTO wp_postmeta (post_id, meta_key, meta_value)
SELECT ID, '_links', CONCAT('{"link":"', REPLACE('$OLD', '/', '\\\\/'), '\\\\/x"}') FROM wp_posts WHERE ID % 3 = 0;
SQL
  mariadb-dump --no-defaults -h127.0.0.1 -P"$WPDR_TEST_DB_PORT" -u"$WPDR_TEST_DB_USER" -p"$WPDR_TEST_DB_PASSWORD" bench_rw_base >"$DUMP"
  "${M[@]}" -e "DROP DATABASE bench_rw_base"
fi
echo "== data: $(du -m "$DUMP" | cut -f1) MiB of SQL, $POSTS posts, $((POSTS + POSTS / 3)) postmeta rows"

fresh() {
  "${M[@]}" -e "DROP DATABASE IF EXISTS bench_rw; CREATE DATABASE bench_rw CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
  "${M[@]}" bench_rw <"$DUMP"
}
export WPDR_TARGET_PASSWORD="$WPDR_TEST_DB_PASSWORD"
declare -A WALL
for bin in "${BINS[@]}"; do
  fresh
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/t" "$bin" -q -o json rewrite-url \
    --target "mysql://$WPDR_TEST_DB_USER@127.0.0.1:$WPDR_TEST_DB_PORT/bench_rw" --from "$OLD" --to "$NEW" >"$WORK/report.json"
  read -r wall user sys rss <"$WORK/t"
  WALL[$bin]=$wall
  changed=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rows_changed"])' "$WORK/report.json")
  left=$("${M[@]}" -N bench_rw -e "SELECT (SELECT COUNT(*) FROM wp_posts WHERE post_content LIKE '%127.0.0.1:8091%' OR guid LIKE '%127.0.0.1:8091%') + (SELECT COUNT(*) FROM wp_postmeta WHERE meta_value LIKE '%127.0.0.1:8091%' OR meta_value LIKE '%127.0.0.1:8091%')")
  printf '%-40s %7.2f s wall  %6.2f s client CPU  %6d MiB RSS  %d values changed, %d rows still hold the old URL\n' \
    "$bin" "$wall" "$(echo "$user + $sys" | bc)" "$((rss / 1024))" "$changed" "$left"
done
fresh
start=$(date +%s.%N)
"${M[@]}" bench_rw -e "UPDATE wp_posts SET post_content = REPLACE(post_content, '$OLD', '$NEW'), guid = REPLACE(guid, '$OLD', '$NEW');
  UPDATE wp_postmeta SET meta_value = REPLACE(REPLACE(meta_value, '$OLD', '$NEW'), REPLACE('$OLD', '/', '\\\\/'), REPLACE('$NEW', '/', '\\\\/'))"
plain=$(echo "$(date +%s.%N) - $start" | bc)
broken=$("${M[@]}" -N bench_rw -e "SELECT COUNT(*) FROM wp_postmeta WHERE meta_key = '_wpdr_bench' AND meta_value NOT LIKE CONCAT('%s:', LENGTH('$NEW') + 5, ':%')")
printf '%-40s %7.2f s wall  (%d serialised values left with a wrong length)\n' "plain SQL REPLACE by hand" "$plain" "$broken"
for bin in "${BINS[@]}"; do
  printf 'ratio %s / plain REPLACE: %.2fx\n' "$bin" "$(echo "${WALL[$bin]} / $plain" | bc -l)"
done
"${M[@]}" -e "DROP DATABASE bench_rw"
