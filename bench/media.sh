#!/usr/bin/env bash
# Benchmark (not a test): the media mirror against `rclone sync` on the same
# bucket, in one run: a full first mirror, a no-change rerun, and a rerun
# after 1% of the objects changed. Prints times, ratios and peak RSS.
#
#   bench/media.sh                    20,000 objects (cached in the source bucket)
#   BENCH_OBJECTS=2000 bench/media.sh a quick look
#
# Both tools stream source -> offsite through the client (two rclone remotes,
# so rclone cannot use a server-side copy; MinIO -> offsite S3 never can)
# with the same concurrency (32 transfers). rclone compares size + modtime,
# its default; wpdr compares the listings with its recorded state.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_setup rclone
OBJECTS="${BENCH_OBJECTS:-20000}"
WORK="${BENCH_DIR:-/tmp/wpdr-bench}/media"
mkdir -p "$WORK"

# rclone reads its remotes from the environment; AWS_CA_BUNDLE makes it refuse to start here.
rclone_remote src
rclone_remote dst
RCLONE=(env -u AWS_CA_BUNDLE rclone --transfers 32 --checkers 32 -q)

drop_bucket() { # empty and delete
  "${RCLONE[@]}" purge "dst:$1" 2>/dev/null || true
  $G bucket delete --yes "$1" >/dev/null 2>&1 || true
}

SRC="bench-media-src-$OBJECTS"
bucket "$SRC"
have=$("${RCLONE[@]}" size --json "src:$SRC" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
if [ "$have" != "$OBJECTS" ]; then
  echo "== building $OBJECTS WordPress-shaped uploads in $SRC (cached for later runs)"
  rm -rf "$WORK/files"
  python3 - "$WORK/files" "$OBJECTS" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
random.seed(42)
for i in range(n):
    year, month = 2015 + i % 10, 1 + (i // 10) % 12
    d = f"{root}/wp-content/uploads/{year}/{month:02d}"
    os.makedirs(d, exist_ok=True)
    # ~1 in 100 is a camera original of a few MB; the rest are 5-200 KB sizes.
    size = random.randint(2 << 20, 6 << 20) if i % 100 == 0 else random.randint(5_000, 200_000)
    ext = "jpg" if i % 7 else "png"
    with open(f"{d}/img-{i:06d}-{random.randint(100,999)}x{random.randint(100,999)}.{ext}", "wb") as f:
        f.write(os.urandom(size))
PY
  "${RCLONE[@]}" sync "$WORK/files" "src:$SRC"
fi
BYTES=$("${RCLONE[@]}" size --json "src:$SRC" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
echo "== source: $OBJECTS objects, $((BYTES / 1048576)) MiB"

# Fresh offsite buckets each run; the old ones are dropped only after the
# measurements (emptying a bucket keeps Garage busy in the background for a while,
# which would slow whichever tool runs next).
RUN=$(date +%s)
OFF_W="bench-media-wpdr-$RUN"; OFF_R="bench-media-rclone-$RUN"; OFF_S="bench-media-sealed-$RUN"
bucket "$OFF_W"; bucket "$OFF_R"; bucket "$OFF_S"
trap 'for b in "$OFF_W" "$OFF_R" "$OFF_S"; do drop_bucket "$b"; done' EXIT
cat > "$WORK/wpdr.yaml" <<YAML
site: bench-media
store: {type: local, path: $WORK/store}
media:
  source: {bucket: $SRC, endpoint: '$WPDR_TEST_S3_ENDPOINT', region: garage, access_key_id: $KEY}
  offsite: {bucket: $OFF_W, endpoint: '$WPDR_TEST_S3_ENDPOINT', region: garage, access_key_id: $KEY}
  concurrency: 32
YAML
rm -rf "$WORK/store" "$WORK/age.key"
# The same mirror with every offsite copy sealed to an age recipient (what media.encrypt costs).
RECIPIENT=$("$WPDR" -q -c "$WORK/wpdr.yaml" --output json keys age --out "$WORK/age.key" | python3 -c 'import json,sys; print(json.load(sys.stdin)["public"])')
sed -e "s|site: bench-media|site: bench-media-sealed|" -e "s|bucket: $OFF_W|bucket: $OFF_S|" "$WORK/wpdr.yaml" >"$WORK/sealed.yaml"
printf 'encryption:\n  recipients: [%s]\n' "$RECIPIENT" >>"$WORK/sealed.yaml"
export WPDR_MEDIA_SOURCE_SECRET_ACCESS_KEY="$WPDR_TEST_S3_SECRET_ACCESS_KEY"
export WPDR_MEDIA_OFFSITE_SECRET_ACCESS_KEY="$WPDR_TEST_S3_SECRET_ACCESS_KEY"

# time_it NAME CMD...: wall seconds and peak RSS (KiB) into $WORK/NAME.{s,rss}
time_it() {
  local name=$1; shift
  local start end
  sleep 5   # let the server settle between runs
  start=$(date +%s.%N)
  /usr/bin/time -f "%M %U %S" -o "$WORK/$name.time" "$@" >/dev/null
  end=$(date +%s.%N)
  python3 -c "print(round($end - $start, 2))" > "$WORK/$name.s"
  read -r rss user sys < <(tail -1 "$WORK/$name.time")
  echo "$rss" > "$WORK/$name.rss"
  # The client's CPU (user + system): what the tool itself costs, apart from the server.
  python3 -c "print(round($user + $sys, 2))" > "$WORK/$name.cpu"
}
wpdr_sync() { time_it "$1" "$WPDR" -q -c "$WORK/wpdr.yaml" media sync; }
rclone_sync() { time_it "$1" "${RCLONE[@]}" sync "src:$SRC" "dst:$OFF_R"; }

# BENCH_ORDER=rclone-first runs rclone before wpdr in every phase (to see the order's effect).
both() { if [ "${BENCH_ORDER:-}" = rclone-first ]; then rclone_sync "$2"; wpdr_sync "$1"; else wpdr_sync "$1"; rclone_sync "$2"; fi; }
echo "== first mirror";       both w1 r1
time_it s1 "$WPDR" -q -c "$WORK/sealed.yaml" media sync
echo "== no-change rerun";    both w2 r2
time_it s2 "$WPDR" -q -c "$WORK/sealed.yaml" media sync
echo "== 1% changed";
"${RCLONE[@]}" lsf -R --files-only "src:$SRC" | awk 'NR % 100 == 1' > "$WORK/changed-keys.txt"
head -c 50000 /dev/urandom > "$WORK/new-content"
while read -r k; do
  "${RCLONE[@]}" copyto "$WORK/new-content" "src:$SRC/$k"
done < "$WORK/changed-keys.txt"
both w3 r3

# Both offsite copies must equal the source before any number counts.
"${RCLONE[@]}" check "src:$SRC" "dst:$OFF_W" --size-only --exclude ".wpdr-retained/**" >/dev/null 2>&1 || { echo "wpdr's mirror differs from the source"; exit 1; }
"${RCLONE[@]}" check "src:$SRC" "dst:$OFF_R" --size-only >/dev/null 2>&1 || { echo "rclone's copy differs from the source"; exit 1; }

row() { # label wpdr rclone
  local w r
  w=$(cat "$WORK/$2.s"); r=$(cat "$WORK/$3.s")
  printf "%-22s wpdr %7.2fs (%4d MiB)   rclone %7.2fs (%4d MiB)   rclone/wpdr %5.2fx\n" "$1" "$w" \
    $(( $(cat "$WORK/$2.rss") / 1024 )) "$r" $(( $(cat "$WORK/$3.rss") / 1024 )) \
    "$(python3 -c "print($r / max($w, 0.01))")"
}
echo
echo "media mirror, $OBJECTS objects, $((BYTES / 1048576)) MiB, $(date -u +%Y-%m-%d), $(nproc) CPUs, order: ${BENCH_ORDER:-wpdr-first}"
row "first mirror" w1 r1
row "no-change rerun" w2 r2
row "rerun after 1% change" w3 r3
sealed=$("${RCLONE[@]}" size --json "dst:$OFF_S" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
[ "$sealed" = "$OBJECTS" ] || { echo "the sealed mirror holds $sealed objects, not $OBJECTS"; exit 1; }
cost() { python3 -c "print(f'{($(cat "$WORK/$1.s")/$(cat "$WORK/$2.s")-1)*100:+.1f} %')"; }
cpu_cost() { python3 -c "print(f'{($(cat "$WORK/$1.cpu")/$(cat "$WORK/$2.cpu")-1)*100:+.1f} %')"; }
echo "client CPU: first mirror wpdr $(cat "$WORK/w1.cpu")s rclone $(cat "$WORK/r1.cpu")s; no-change wpdr $(cat "$WORK/w2.cpu")s rclone $(cat "$WORK/r2.cpu")s"
echo "media.encrypt (age): first mirror wall $(cost s1 w1) CPU $(cpu_cost s1 w1) ($(cat "$WORK/s1.s")s, $(cat "$WORK/s1.cpu")s CPU, $(( $(cat "$WORK/s1.rss") / 1024 )) MiB), no-change rerun $(cost s2 w2)"
