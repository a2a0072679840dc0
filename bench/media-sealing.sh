#!/usr/bin/env bash
# Benchmark (not a test): what a first media mirror costs, plain and sealed
# (media.encrypt), from a source whose objects carry a stored CRC32 (uploaded
# by an AWS SDK, as WordPress offload plugins do) and from one whose objects
# do not (uploaded by Debian's rclone). With a stored checksum the copy skips
# its own MD5 (the costliest pass, see `cargo bench --bench seal`); without,
# it hashes MD5 as before. The same files in both sources: 1,500 incompressible
# uploads of WordPress-like sizes (30 KB – 1.2 MB, ~470 MB). Median of
# BENCH_ROUNDS (default 3) first mirrors into fresh buckets; prints wall time,
# client CPU and the ratios.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_setup rclone
# An SDK that stores a CRC32 with each upload (boto3 does since 1.36).
python3 -c 'import boto3' 2>/dev/null || pip install -q boto3
ROUNDS="${BENCH_ROUNDS:-3}"
WORK="${BENCH_DIR:-/tmp/wpdr-bench}/media-sealing"
mkdir -p "$WORK"
rclone_remote src
printf '%s' "$WPDR_TEST_S3_SECRET_ACCESS_KEY" >"$WORK/s3"
printf '%s' "$WPDR_TEST_DB_PASSWORD" >"$WORK/db"

if [ ! -d "$WORK/files/wp-content" ]; then
  python3 - "$WORK/files" <<'PY'
import os, random, sys
random.seed(7)
root = sys.argv[1]
for i in range(1500):
    size = int(random.choice([30e3, 60e3, 120e3, 250e3, 500e3, 900e3]) * random.uniform(0.7, 1.3))
    d = os.path.join(root, f"wp-content/uploads/2026/{i % 12 + 1:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"img-{i}.jpg"), "wb") as f:
        f.write(os.urandom(size))
PY
fi
bucket bench-seal-src-sdk
bucket bench-seal-src-rclone
python3 - "$WORK/files" <<'PY'
import boto3, os, sys
from botocore.config import Config
from concurrent.futures import ThreadPoolExecutor
root = sys.argv[1]
s3 = boto3.client("s3", endpoint_url=os.environ["WPDR_TEST_S3_ENDPOINT"], region_name="garage",
    aws_access_key_id=os.environ["WPDR_TEST_S3_ACCESS_KEY_ID"],
    aws_secret_access_key=os.environ["WPDR_TEST_S3_SECRET_ACCESS_KEY"],
    config=Config(s3={"addressing_style": "path"}))
files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
def up(p):
    with open(p, "rb") as f:
        s3.put_object(Bucket="bench-seal-src-sdk", Key=os.path.relpath(p, root), Body=f.read(), ContentType="image/jpeg")
with ThreadPoolExecutor(16) as ex:
    list(ex.map(up, files))
head = s3.head_object(Bucket="bench-seal-src-sdk", Key=os.path.relpath(files[0], root), ChecksumMode="ENABLED")
assert "ChecksumCRC32" in head, "boto3 stored no CRC32: the 'with checksum' source would not be one"
PY
env -u AWS_CA_BUNDLE rclone copy --transfers 16 -q "$WORK/files" src:bench-seal-src-rclone

RECIPIENT=$("$WPDR" keys age --out "$WORK/id-$$.key" | grep -o 'age1[0-9a-z]*' | head -1)
one() { # label source sealed -> appends "wall cpu" to $WORK/label
  local off="bench-seal-off-$1-$RANDOM"
  bucket "$off"
  cat >"$WORK/$1.yaml" <<YAML
site: bench-seal-$1-$RANDOM
store: {type: local, path: $WORK/store}
database: {host: 127.0.0.1, port: $WPDR_TEST_DB_PORT, user: $WPDR_TEST_DB_USER, password_file: $WORK/db, name: test}
media:
  source: {bucket: $2, endpoint: '$WPDR_TEST_S3_ENDPOINT', region: garage, access_key_id: $KEY, secret_access_key_file: $WORK/s3}
  offsite: {bucket: $off, endpoint: '$WPDR_TEST_S3_ENDPOINT', region: garage, access_key_id: $KEY, secret_access_key_file: $WORK/s3}
  encrypt: $3
YAML
  [ "$3" = true ] && printf 'encryption:\n  recipients: [%s]\n' "$RECIPIENT" >>"$WORK/$1.yaml"
  /usr/bin/time -f "%e %U %S" -o "$WORK/t" "$WPDR" -q -c "$WORK/$1.yaml" media sync >/dev/null
  awk '{ printf "%s %.2f\n", $1, $2 + $3 }' "$WORK/t" >>"$WORK/$1.runs"
  env -u AWS_CA_BUNDLE rclone purge -q "src:$off" 2>/dev/null || true
}
rm -f "$WORK"/*.runs
for _ in $(seq "$ROUNDS"); do
  one sdk-plain bench-seal-src-sdk false
  one sdk-sealed bench-seal-src-sdk true
  one rclone-plain bench-seal-src-rclone false
  one rclone-sealed bench-seal-src-rclone true
done
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for l in sdk-plain sdk-sealed rclone-plain rclone-sealed; do
  echo "$l $(cut -d' ' -f1 "$WORK/$l.runs" | median) $(cut -d' ' -f2 "$WORK/$l.runs" | median)"
done >"$WORK/medians"
awk '{ w[$1] = $2; c[$1] = $3 } END {
  printf "%-40s %8s %12s\n", "first mirror of 1,500 uploads (470 MB)", "wall", "client CPU"
  split("sdk-plain sdk-sealed rclone-plain rclone-sealed", order, " ")
  for (i = 1; i <= 4; i++) printf "%-40s %7.2fs %11.2fs\n", order[i], w[order[i]], c[order[i]]
  printf "sealed / plain, source with CRC32:      wall %.2fx  CPU %.2fx\n", w["sdk-sealed"] / w["sdk-plain"], c["sdk-sealed"] / c["sdk-plain"]
  printf "sealed / plain, source without:         wall %.2fx  CPU %.2fx\n", w["rclone-sealed"] / w["rclone-plain"], c["rclone-sealed"] / c["rclone-plain"]
  printf "with CRC32 / without (MD5 skipped), plain: CPU %.2fx; sealed: CPU %.2fx\n", c["sdk-plain"] / c["rclone-plain"], c["sdk-sealed"] / c["rclone-sealed"]
}' "$WORK/medians"
