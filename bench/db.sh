#!/usr/bin/env bash
# Benchmark (not a test): wpdr against the tools a user would pick instead, on
# the same WordPress-shaped data, in one run. Prints times, ratios and peak RSS.
#
#   bench/db.sh                 build the data sets once (cached), then time everything
#   BENCH_SCALE=0.1 bench/db.sh a tenth of the data, for a quick look
#   BENCH_DATA=realistic bench/db.sh   one data set only
#   BENCH_ROUNDS=1 bench/db.sh  one round (default 3: every figure a median of 3, each tool first in one round)
#
# Two data sets, the same tables and row counts: `realistic` post bodies are
# varied words (bench/post_text.py; the dump compresses about 3x with zstd -1,
# like real posts), `synthetic` ones repeat hashes (about 11x: flattering to
# anything that compresses). Each run prints the dump's compression ratio.
#
# Backup:  wpdr backup (local store)  vs  mariadb-dump --single-transaction | zstd -1  vs  mydumper -t 2
# Restore: wpdr restore db            vs  zstd -dc | mariadb                          vs  myloader -t 2
set -euo pipefail
DATA_SETS="${BENCH_DATA:-realistic synthetic}"
if [ "$DATA_SETS" != "${DATA_SETS%% *}" ]; then
  for d in $DATA_SETS; do BENCH_DATA=$d bash "$0" "$@"; done
  exit 0
fi
DATA="$DATA_SETS"
case "$DATA" in realistic|synthetic) ;; *) echo "BENCH_DATA: '$DATA' is not realistic or synthetic" >&2; exit 2 ;; esac
source "$(dirname "$0")/lib.sh"
bench_setup mydumper

SCALE="${BENCH_SCALE:-1}"
POSTS=$(python3 -c "print(int(100000*$SCALE))")
META=$(python3 -c "print(int(3000000*$SCALE))")
NARROW=$(python3 -c "print(int(10000000*$SCALE))")
DB="bench_wp_${POSTS}"
[ "$DATA" = realistic ] && DB="bench_wpr_${POSTS}"
WORK="${BENCH_DIR:-/tmp/wpdr-bench}"
rm -rf "$WORK/out"; mkdir -p "$WORK/out"
M=(mariadb --no-defaults -h127.0.0.1 -P"$WPDR_TEST_DB_PORT" -u"$WPDR_TEST_DB_USER" -p"$WPDR_TEST_DB_PASSWORD")
CONN=(-h127.0.0.1 -P"$WPDR_TEST_DB_PORT" -u"$WPDR_TEST_DB_USER" -p"$WPDR_TEST_DB_PASSWORD")

have=$("${M[@]}" -N -e "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='$DB' AND TABLE_NAME='wp_narrow'" 2>/dev/null || echo 0)
if [ "$have" != "1" ]; then
  echo "== building $DB ($DATA posts=$POSTS postmeta=$META narrow=$NARROW); this is cached for later runs"
  "${M[@]}" -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci"
  # The post bodies: repeated hashes (synthetic) or varied words (realistic).
  BODY="CONCAT('<!-- wp:paragraph --><p>', REPEAT(CONCAT(SHA2(seq, 512), ' lorem ipsum dolor sit amet, ', MD5(seq * 7), ' ünïcødé ✓ '), 1 + seq % 40), '</p><!-- /wp:paragraph -->')"
  FROM="seq_1_to_${POSTS}"
  if [ "$DATA" = realistic ]; then
    mkdir -p "$WORK"
    python3 "$(dirname "$0")/post_text.py" "$POSTS" "$WORK/posts-$POSTS.txt"
    "${M[@]}" --local-infile=1 "$DB" -e "CREATE TABLE bench_text (id int unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, body longtext NOT NULL);
      LOAD DATA LOCAL INFILE '$WORK/posts-$POSTS.txt' INTO TABLE bench_text FIELDS ESCAPED BY '' (body)"
    BODY="t.body"
    FROM="seq_1_to_${POSTS} JOIN bench_text t ON t.id = seq"
  fi
  "${M[@]}" "$DB" <<SQL
SET SESSION sql_log_bin = 0;
CREATE TABLE wp_posts (
  ID bigint(20) unsigned NOT NULL AUTO_INCREMENT, post_author bigint(20) unsigned NOT NULL DEFAULT 0,
  post_date datetime NOT NULL DEFAULT '0000-00-00 00:00:00', post_date_gmt datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  post_content longtext NOT NULL, post_title text NOT NULL, post_excerpt text NOT NULL,
  post_status varchar(20) NOT NULL DEFAULT 'publish', comment_status varchar(20) NOT NULL DEFAULT 'open',
  ping_status varchar(20) NOT NULL DEFAULT 'open', post_password varchar(255) NOT NULL DEFAULT '',
  post_name varchar(200) NOT NULL DEFAULT '', to_ping text NOT NULL, pinged text NOT NULL,
  post_modified datetime NOT NULL DEFAULT '0000-00-00 00:00:00', post_modified_gmt datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  post_content_filtered longtext NOT NULL, post_parent bigint(20) unsigned NOT NULL DEFAULT 0,
  guid varchar(255) NOT NULL DEFAULT '', menu_order int(11) NOT NULL DEFAULT 0,
  post_type varchar(20) NOT NULL DEFAULT 'post', post_mime_type varchar(100) NOT NULL DEFAULT '',
  comment_count bigint(20) NOT NULL DEFAULT 0,
  PRIMARY KEY (ID), KEY post_name (post_name(191)), KEY type_status_date (post_type,post_status,post_date,ID),
  KEY post_parent (post_parent), KEY post_author (post_author)
) ENGINE=InnoDB;
INSERT INTO wp_posts (post_author, post_date, post_date_gmt, post_content, post_title, post_excerpt, post_name, to_ping, pinged, post_modified, post_modified_gmt, post_content_filtered, guid, post_type)
SELECT seq % 20 + 1, FROM_UNIXTIME(1600000000 + seq * 600), FROM_UNIXTIME(1600000000 + seq * 600),
  $BODY,
  CONCAT('Post number ', seq, ' ', MD5(seq)), '', CONCAT('post-', seq), '', '',
  FROM_UNIXTIME(1600000000 + seq * 601), FROM_UNIXTIME(1600000000 + seq * 601), '',
  CONCAT('https://example.com/?p=', seq), IF(seq % 10 = 0, 'attachment', 'post')
FROM $FROM;
DROP TABLE IF EXISTS bench_text;
CREATE TABLE wp_postmeta (
  meta_id bigint(20) unsigned NOT NULL AUTO_INCREMENT, post_id bigint(20) unsigned NOT NULL DEFAULT 0,
  meta_key varchar(255) DEFAULT NULL, meta_value longtext,
  PRIMARY KEY (meta_id), KEY post_id (post_id), KEY meta_key (meta_key(191))
) ENGINE=InnoDB;
INSERT INTO wp_postmeta (post_id, meta_key, meta_value)
SELECT seq % ${POSTS} + 1, ELT(1 + seq % 5, '_edit_lock', '_thumbnail_id', '_wp_attached_file', '_wp_attachment_metadata', 'custom_field'),
  IF(seq % 5 = 3, CONCAT('a:3:{s:5:"width";i:', seq % 2000, ';s:6:"height";i:', seq % 1500, ';s:4:"file";s:40:"', MD5(seq), '.jpg', '";}'), CONCAT(seq, ':', MD5(seq)))
FROM seq_1_to_${META};
CREATE TABLE wp_narrow (id int unsigned NOT NULL PRIMARY KEY, a int NOT NULL, b int NOT NULL, KEY a (a)) ENGINE=InnoDB;
INSERT INTO wp_narrow SELECT seq, seq % 1000, seq * 7 % 100003 FROM seq_1_to_${NARROW};
ANALYZE TABLE wp_posts, wp_postmeta, wp_narrow;
SQL
fi
"${M[@]}" -N -e "SELECT CONCAT('data set: ', ROUND(SUM(DATA_LENGTH)/1048576), ' MiB data + ', ROUND(SUM(INDEX_LENGTH)/1048576), ' MiB indexes in ', COUNT(*), ' tables') FROM information_schema.TABLES WHERE TABLE_SCHEMA='$DB'"

# run NAME CMD... : times a command; appends its seconds, client CPU and the
# peak RSS (KiB) of the process tree's largest member to NAME's list (one
# entry per round).
declare -A SECS RSS CPU
run() {
  local name="$1"; shift
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  settle
  local start end secs cpu
  start=$(date +%s.%N)
  /usr/bin/time -f "%M %U %S" -o "$WORK/out/$name.rss" bash -c "$*" >"$WORK/out/$name.log" 2>&1 || { echo "$name failed:"; tail -20 "$WORK/out/$name.log"; exit 1; }
  end=$(date +%s.%N)
  secs=$(python3 -c "print(round($end - $start, 2))")
  read -r rss user sys < <(tail -1 "$WORK/out/$name.rss")
  # Client CPU (user + system of the command's processes): steadier than wall time.
  cpu=$(python3 -c "print(round($user + $sys, 2))")
  SECS[$name]+="$secs "
  CPU[$name]+="$cpu "
  RSS[$name]+="$rss "
  printf '  %-28s %8.2f s   client CPU %7.2f s   peak RSS %6d MiB\n' "$name" "$secs" "$cpu" $(( rss / 1024 ))
}

db_config bench "$WORK/out/store" "$DB" >"$WORK/out/wpdr.yaml"
export WPDR_DB_PASSWORD="$WPDR_TEST_DB_PASSWORD" WPDR_TARGET_PASSWORD="$WPDR_TEST_DB_PASSWORD"

# The same, every artifact sealed to an age recipient (what encryption costs).
rm -f "$WORK/out/age.key"
RECIPIENT=$("$WPDR" -q -c "$WORK/out/wpdr.yaml" --output json keys age --out "$WORK/out/age.key" | python3 -c 'import json,sys; print(json.load(sys.stdin)["public"])')
sed "s|site: bench|site: bench-sealed|" "$WORK/out/wpdr.yaml" >"$WORK/out/sealed.yaml"
printf 'encryption:\n  recipients: [%s]\n' "$RECIPIENT" >>"$WORK/out/sealed.yaml"

ROUNDS="${BENCH_ROUNDS:-3}"
# rotate LIST ROUND: round r starts with the r-th tool. Whichever tool runs
# first in a round was measured slower (up to 2x, client CPU too: the first
# run after the servers idle), so over three rounds each tool goes first once
# and the median is a run from another position.
rotate() {
  local -n list="$1"
  local k=$(( ($2 - 1) % ${#list[@]} ))
  list=("${list[@]:k}" "${list[@]:0:k}")
}
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round of $ROUNDS: backup"
  rm -rf "$WORK/out/mydumper"
  # The last round's restores pushed the source's pages out of the buffer
  # pool: read it once (untimed), so no tool's backup pays for that.
  mariadb-dump --no-defaults "${CONN[@]}" --single-transaction --quick "$DB" >/dev/null
  backups=(wpdr mariadb_dump mydumper)
  rotate backups "$round"
  for b in "${backups[@]}"; do
    case $b in
      wpdr)
        run wpdr_backup "$WPDR -q -c $WORK/out/wpdr.yaml backup"
        run wpdr_backup_sealed "$WPDR -q -c $WORK/out/sealed.yaml backup" ;;
      mariadb_dump)
        run mariadb_dump_zstd "mariadb-dump --no-defaults ${CONN[*]} --single-transaction --quick --routines --triggers --events $DB | zstd -1 -q -f -o $WORK/out/dump.sql.zst" ;;
      mydumper)
        run mydumper_t2 "mydumper -h 127.0.0.1 -P $WPDR_TEST_DB_PORT -u $WPDR_TEST_DB_USER -p $WPDR_TEST_DB_PASSWORD -B $DB -t 2 -o $WORK/out/mydumper" ;;
    esac
  done
  echo "== round $round of $ROUNDS: restore"
  restores=(wpdr client myloader)
  rotate restores "$round"
  for d in r_wpdr r_sealed r_client r_myloader; do "${M[@]}" -e "DROP DATABASE IF EXISTS $d"; done
  for r in "${restores[@]}"; do
    case $r in
      wpdr)
        run wpdr_restore_sealed "$WPDR -q -c $WORK/out/sealed.yaml --identity $WORK/out/age.key restore db latest --target mysql://$WPDR_TEST_DB_USER@127.0.0.1:$WPDR_TEST_DB_PORT --database r_sealed"
        run wpdr_restore "$WPDR -q -c $WORK/out/wpdr.yaml restore db latest --target mysql://$WPDR_TEST_DB_USER@127.0.0.1:$WPDR_TEST_DB_PORT --database r_wpdr" ;;
      client)
        run mariadb_client_restore "${M[*]} -e 'CREATE DATABASE r_client' && zstd -dc $WORK/out/dump.sql.zst | ${M[*]} r_client" ;;
      myloader)
        run myloader_t2 "myloader -h 127.0.0.1 -P $WPDR_TEST_DB_PORT -u $WPDR_TEST_DB_USER -p $WPDR_TEST_DB_PASSWORD -B r_myloader -t 2 -d $WORK/out/mydumper" ;;
    esac
  done
  for d in r_wpdr r_sealed r_client r_myloader; do "${M[@]}" -e "DROP DATABASE IF EXISTS $d"; done
done
newest_set=$(ls -d "$WORK"/out/store/wpdr/bench/sets/*/ 2>/dev/null | tail -1 || true)
du -sh "${newest_set:-$WORK/out/store}" "$WORK/out/dump.sql.zst" "$WORK/out/mydumper" | sed 's/^/  size /'
echo "  data set $DATA: mariadb-dump output compresses $(python3 -c "print(round($(zstd -dc "$WORK/out/dump.sql.zst" | wc -c) / $(stat -c %s "$WORK/out/dump.sql.zst"), 2))")x with zstd -1"

echo "== medians of $ROUNDS rounds (wall s / client CPU s / peak RSS MiB)"
for n in wpdr_backup wpdr_backup_sealed mariadb_dump_zstd mydumper_t2 wpdr_restore wpdr_restore_sealed mariadb_client_restore myloader_t2; do
  printf '  %-28s %8.2f s   client CPU %7.2f s   peak RSS %6d MiB   (rounds: %s)\n' "$n" "$(median $n)" "$(median $n CPU)" "$(python3 -c "print(int($(median $n RSS) / 1024))")" "${SECS[$n]% }"
done
ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
echo "== ratios of the medians (higher = wpdr faster)"
echo "  backup:  vs mariadb-dump|zstd $(ratio "$(median mariadb_dump_zstd)" "$(median wpdr_backup)")   vs mydumper -t2 $(ratio "$(median mydumper_t2)" "$(median wpdr_backup)")"
echo "  restore: vs zstd|mariadb      $(ratio "$(median mariadb_client_restore)" "$(median wpdr_restore)")   vs myloader -t2 $(ratio "$(median myloader_t2)" "$(median wpdr_restore)")"
cost() { python3 -c "print(f'{($1/$2-1)*100:+.1f} %')"; }
echo "  encryption (age, every artifact): backup wall $(cost "$(median wpdr_backup_sealed)" "$(median wpdr_backup)") CPU $(cost "$(median wpdr_backup_sealed CPU)" "$(median wpdr_backup CPU)"), restore wall $(cost "$(median wpdr_restore_sealed)" "$(median wpdr_restore)") CPU $(cost "$(median wpdr_restore_sealed CPU)" "$(median wpdr_restore CPU)")"
