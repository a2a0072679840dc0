#!/usr/bin/env bash
# The main job end to end on local defaults:
#   start MariaDB + Garage, install a real WordPress site into MariaDB,
#   back it up to Garage (S3), verify the set, restore it into a fresh
#   site with `wpdr restore latest --plan site` (database, media, URL rewrite,
#   checks against what the live site answered at backup) and print the report.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

scripts/dev-services.sh
source "${WPDR_DEV_DIR:-/tmp/wpdr-dev}/env"
echo "== building wpdr (release)"
cargo build --release --quiet
WPDR="$ROOT/target/release/wpdr"

QS="$WPDR_DEV_DIR/quickstart"
mkdir -p "$QS"
DB=wpdemo
NS="r$(date +%s)"                 # the "namespace" the restore fills: database wpdemo_$NS, bucket quickstart-$NS
SITE_URL=http://127.0.0.1:8081
RESTORED_URL=http://127.0.0.1:8082
MYSQL=(mariadb --no-defaults -h127.0.0.1 -P"$WPDR_TEST_DB_PORT" -u"$WPDR_TEST_DB_USER" -p"$WPDR_TEST_DB_PASSWORD")

echo "== installing a WordPress site into database '$DB'"
"${MYSQL[@]}" -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
scripts/wp-site.sh install "$QS/site" "127.0.0.1:$WPDR_TEST_DB_PORT" "$DB" "$WPDR_TEST_DB_USER" "$WPDR_TEST_DB_PASSWORD" "$SITE_URL" | tail -1

cat >"$QS/wpdr.yaml" <<YAML
site: demo
store:
  type: s3
  bucket: $WPDR_TEST_S3_BUCKET
  prefix: quickstart
  endpoint: $WPDR_TEST_S3_ENDPOINT
  region: $WPDR_TEST_S3_REGION
  access_key_id: $WPDR_TEST_S3_ACCESS_KEY_ID
  secret_access_key_file: $QS/s3-secret
database:
  host: 127.0.0.1
  port: $WPDR_TEST_DB_PORT
  user: $WPDR_TEST_DB_USER
  password_file: $QS/db-password
  name: $DB
  connections: 2
media:
  source: {bucket: $WPDR_TEST_MEDIA_SOURCE_BUCKET, endpoint: '$WPDR_TEST_S3_ENDPOINT', region: $WPDR_TEST_S3_REGION, access_key_id: $WPDR_TEST_S3_ACCESS_KEY_ID, secret_access_key_file: $QS/s3-secret}
  offsite: {bucket: $WPDR_TEST_MEDIA_OFFSITE_BUCKET, endpoint: '$WPDR_TEST_S3_ENDPOINT', region: $WPDR_TEST_S3_REGION, access_key_id: $WPDR_TEST_S3_ACCESS_KEY_ID, secret_access_key_file: $QS/s3-secret}
wordpress:
  url: $SITE_URL
restore:
  database: mysql://$WPDR_TEST_DB_USER@127.0.0.1:$WPDR_TEST_DB_PORT/wpdemo_{namespace}
  database_password_file: $QS/db-password
  media: {bucket: 'quickstart-{namespace}', endpoint: '$WPDR_TEST_S3_ENDPOINT', region: $WPDR_TEST_S3_REGION, access_key_id: $WPDR_TEST_S3_ACCESS_KEY_ID, secret_access_key_file: $QS/s3-secret}
YAML
( umask 077; printf '%s' "$WPDR_TEST_S3_SECRET_ACCESS_KEY" >"$QS/s3-secret"; printf '%s' "$WPDR_TEST_DB_PASSWORD" >"$QS/db-password" )

echo "== uploading the demo site's media into the uploads bucket (Garage standing in for MinIO)"
s3put() { # bucket key file: a signed PUT with curl (SigV4), no extra tools
  curl -sf --aws-sigv4 "aws:amz:$WPDR_TEST_S3_REGION:s3" --user "$WPDR_TEST_S3_ACCESS_KEY_ID:$WPDR_TEST_S3_SECRET_ACCESS_KEY" \
    -H "Content-Type: image/png" -H "x-amz-content-sha256: $(sha256sum "$3" | cut -d' ' -f1)" \
    -T "$3" "$WPDR_TEST_S3_ENDPOINT/$1/$2" >/dev/null
}
for i in 1 2 3; do
  head -c $((40000 * i)) /dev/urandom >"$QS/upload-$i.png"
  s3put "$WPDR_TEST_MEDIA_SOURCE_BUCKET" "wp-content/uploads/2026/11/demo-$i.png" "$QS/upload-$i.png"
  "${MYSQL[@]}" "$DB" -e "INSERT INTO wp_posts (post_author, post_date, post_date_gmt, post_content, post_title, post_excerpt, post_status, post_name, to_ping, pinged, post_modified, post_modified_gmt, post_content_filtered, post_type, post_mime_type, guid) VALUES (1, NOW(), UTC_TIMESTAMP(), '', 'demo-$i', '', 'inherit', 'demo-$i', '', '', NOW(), UTC_TIMESTAMP(), '', 'attachment', 'image/png', '$SITE_URL/wp-content/uploads/2026/11/demo-$i.png'); INSERT INTO wp_postmeta (post_id, meta_key, meta_value) VALUES (LAST_INSERT_ID(), '_wp_attached_file', '2026/11/demo-$i.png')"
done

echo "== serving the live site at $SITE_URL"
PID1=$(scripts/wp-site.sh serve "$QS/site" 127.0.0.1:8081)
trap 'kill $PID1 ${PID2:-} 2>/dev/null || true' EXIT

echo "== wpdr backup (database snapshot, the site's answers, then the media mirror and the set's media index)"
echo "   (the demo's 'logo' attachment has no file in the bucket: the backup reports it as MISSING MEDIA)"
"$WPDR" -c "$QS/wpdr.yaml" --log-format text -q backup
echo "== wpdr sets list"
"$WPDR" -c "$QS/wpdr.yaml" sets list
echo "== wpdr verify latest"
"$WPDR" -c "$QS/wpdr.yaml" verify latest

echo "== the restored site's code, pointed at the database the restore fills (wpdemo_$NS), served at $RESTORED_URL"
rm -rf "$QS/restored-site"; cp -r "$QS/site" "$QS/restored-site"
scripts/wp-site.sh config "$QS/restored-site" "127.0.0.1:$WPDR_TEST_DB_PORT" "wpdemo_$NS" "$WPDR_TEST_DB_USER" "$WPDR_TEST_DB_PASSWORD"
PID2=$(scripts/wp-site.sh serve "$QS/restored-site" 127.0.0.1:8082)

echo "== wpdr restore latest --namespace $NS --plan site --dry-run"
"$WPDR" -c "$QS/wpdr.yaml" --log-format text -q restore latest --namespace "$NS" --plan site --site-url "$RESTORED_URL" --dry-run
echo "== wpdr restore latest --namespace $NS --plan site --site-url $RESTORED_URL"
status=0
"$WPDR" -c "$QS/wpdr.yaml" --log-format text -q restore latest --namespace "$NS" --plan site --site-url "$RESTORED_URL" || status=$?
if [ "$status" = 0 ]; then
  echo "== restored: every table verified, every media object present, the site answers as at backup"
else
  echo "== the restore FAILED (exit $status): see the step above" >&2
  exit "$status"
fi

echo "== point in time: wpdr binlog archive (catches up from the set and exits; the daemon follows continuously)"
"$WPDR" -c "$QS/wpdr.yaml" --log-format text -q binlog archive --until-caught-up
sleep 1.2; POINT=$(date -u +%Y-%m-%dT%H:%M:%SZ); sleep 1.2
echo "   a post published after $POINT, then archived"
"${MYSQL[@]}" "$DB" -e "INSERT INTO wp_posts (post_author, post_date, post_date_gmt, post_content, post_title, post_excerpt, post_status, post_name, to_ping, pinged, post_modified, post_modified_gmt, post_content_filtered, post_type, guid) VALUES (1, NOW(), UTC_TIMESTAMP(), 'oops', 'Published after the point', '', 'publish', 'after-the-point', '', '', NOW(), UTC_TIMESTAMP(), '', 'post', '')"
"$WPDR" -c "$QS/wpdr.yaml" --log-format text -q binlog archive --until-caught-up
echo "== wpdr sets recoverable"
"$WPDR" -c "$QS/wpdr.yaml" --log-format text -q sets recoverable
echo "== wpdr restore db latest --to-time $POINT (the newest set, then the archive replayed up to the point)"
WPDR_TARGET_PASSWORD="$WPDR_TEST_DB_PASSWORD" "$WPDR" -c "$QS/wpdr.yaml" --log-format text -q restore db latest \
  --target "mysql://$WPDR_TEST_DB_USER@127.0.0.1:$WPDR_TEST_DB_PORT" --database "wpdemo_pitr_$NS" --to-time "$POINT" || status=$?
after=$("${MYSQL[@]}" -N -e "SELECT COUNT(*) FROM wpdemo_pitr_$NS.wp_posts WHERE post_name = 'after-the-point'" 2>/dev/null || echo "?")
live=$("${MYSQL[@]}" -N -e "SELECT COUNT(*) FROM $DB.wp_posts WHERE post_name = 'after-the-point'")
if [ "$status" = 0 ] && [ "$after" = 0 ] && [ "$live" = 1 ]; then
  echo "== restored to $POINT: the live site has the later post, the restored database does not"
else
  echo "== the point-in-time restore FAILED (exit $status; later post in the restore: $after)" >&2
  [ "$status" = 0 ] && status=1
fi
exit "$status"
