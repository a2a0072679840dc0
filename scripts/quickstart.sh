#!/usr/bin/env bash
# The main job end to end on local defaults:
#   start MariaDB + Garage, install a real WordPress site into MariaDB,
#   back it up to Garage (S3), verify the set, restore it into a fresh
#   database, serve both sites and show that they answer the same.
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
RESTORED=wpdemo_restored
SITE_URL=http://127.0.0.1:8081
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

echo "== wpdr backup (database snapshot, then the media mirror and the set's media index)"
echo "   (the demo's 'logo' attachment has no file in the bucket: the backup reports it as MISSING MEDIA)"
"$WPDR" -c "$QS/wpdr.yaml" --log-format text -q backup
echo "== wpdr sets list"
"$WPDR" -c "$QS/wpdr.yaml" sets list
echo "== wpdr verify latest"
"$WPDR" -c "$QS/wpdr.yaml" verify latest
echo "== wpdr restore db latest into a fresh database '$RESTORED'"
"${MYSQL[@]}" -e "DROP DATABASE IF EXISTS $RESTORED"   # the quickstart's own throw-away target
WPDR_TARGET_PASSWORD="$WPDR_TEST_DB_PASSWORD" "$WPDR" -c "$QS/wpdr.yaml" --log-format text -q \
  restore db latest --target "mysql://$WPDR_TEST_DB_USER@127.0.0.1:$WPDR_TEST_DB_PORT" --database "$RESTORED"

RESTORED_BUCKET="quickstart-media-$(date +%s)"
echo "== wpdr restore media latest into a fresh bucket '$RESTORED_BUCKET'"
WPDR_MEDIA_TARGET_ACCESS_KEY_ID="$WPDR_TEST_S3_ACCESS_KEY_ID" WPDR_MEDIA_TARGET_SECRET_ACCESS_KEY="$WPDR_TEST_S3_SECRET_ACCESS_KEY" \
  "$WPDR" -c "$QS/wpdr.yaml" --log-format text -q restore media latest --target-bucket "$RESTORED_BUCKET" --deep-verify

echo "== serving the original and the restored site, comparing what they answer"
rm -rf "$QS/restored-site"; cp -r "$QS/site" "$QS/restored-site"
scripts/wp-site.sh config "$QS/restored-site" "127.0.0.1:$WPDR_TEST_DB_PORT" "$RESTORED" "$WPDR_TEST_DB_USER" "$WPDR_TEST_DB_PASSWORD"
PID1=$(scripts/wp-site.sh serve "$QS/site" 127.0.0.1:8081)
PID2=$(scripts/wp-site.sh serve "$QS/restored-site" 127.0.0.1:8082)
trap 'kill $PID1 $PID2 2>/dev/null || true' EXIT
status=0
for path in "/" "/?p=1" "/?rest_route=/wp/v2/posts&per_page=100" "/?rest_route=/wp/v2/comments"; do
  # WordPress picks a random gravatar host (0-2.gravatar.com) per request: normalise it.
  curl -s -H "Host: 127.0.0.1:8081" "http://127.0.0.1:8081$path" | sed -E 's/[0-9]\.gravatar\.com/N.gravatar.com/g' >"$QS/original.out"
  curl -s -H "Host: 127.0.0.1:8081" "http://127.0.0.1:8082$path" | sed -E 's/[0-9]\.gravatar\.com/N.gravatar.com/g' >"$QS/restored.out"
  if [ -s "$QS/original.out" ] && cmp -s "$QS/original.out" "$QS/restored.out"; then
    printf '  same   %-45s %6d bytes\n' "$path" "$(wc -c <"$QS/original.out")"
  else
    printf '  DIFFER %-45s\n' "$path"; status=1
  fi
done
if [ "$status" = 0 ]; then
  echo "== the restored site answers exactly as the original"
else
  echo "== the restored site differs from the original" >&2
fi
exit "$status"
