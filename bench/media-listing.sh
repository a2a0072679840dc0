#!/usr/bin/env bash
# Benchmark (not a test): media mirror reruns, where the time is the
# listings, against rclone tuned for exactly that — `rclone sync --fast-list
# --checksum --checkers 16` (one recursive listing per side, no per-object
# request) — on the same bucket, in one run, three rounds each, medians.
#
#   bench/media-listing.sh                        20,000 objects
#   BENCH_OBJECTS=100000 bench/media-listing.sh   (memory as the bucket grows)
#   WPDR_OLD=/path/to/older/wpdr bench/media-listing.sh   also times an older build
#   BENCH_LATENCY_MS=15 bench/media-listing.sh    S3 across a network: both tools
#       reach it through bench/latency_proxy.py, which delays every chunk this long each way
#
# Objects are small (1 KiB): the bytes are not what is measured here
# (bench/media.sh measures copying); the keys follow WordPress's uploads tree,
# ten years of months. Both tools mirror into fresh buckets first (untimed).
# Rounds: no-change rerun; then, three times, 1% of the objects rewritten
# and each tool's rerun.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_setup rclone
OBJECTS="${BENCH_OBJECTS:-20000}"
WORK="${BENCH_DIR:-/tmp/wpdr-bench}/media-listing"
mkdir -p "$WORK"
rclone_remote src
rclone_remote dst
RCLONE=(env -u AWS_CA_BUNDLE rclone -q)
TUNED=(sync --fast-list --checksum --checkers 16 --transfers 32)

SRC="bench-listing-src-$OBJECTS"
bucket "$SRC"
have=$("${RCLONE[@]}" size --fast-list --json "src:$SRC" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
if [ "$have" != "$OBJECTS" ]; then
  echo "== building $OBJECTS small uploads in $SRC (cached for later runs)"
  rm -rf "$WORK/files"
  python3 - "$WORK/files" "$OBJECTS" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = f"{root}/wp-content/uploads/{2016 + i % 10}/{1 + (i // 10) % 12:02d}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/img-{i:07d}-{i % 997}x{i % 991}.jpg", "wb") as f:
        f.write(os.urandom(1024))
PY
  "${RCLONE[@]}" copy --transfers 64 --checkers 64 "$WORK/files" "src:$SRC"
fi

if [ -n "${BENCH_LATENCY_MS:-}" ]; then
  # Both tools reach Garage through a proxy delaying every chunk each way.
  PORT="${WPDR_TEST_S3_ENDPOINT##*:}"; PORT="${PORT%%/*}"
  PROXY_PORT=$((PORT + 17))
  python3 "$ROOT/bench/latency_proxy.py" "$PROXY_PORT" "$PORT" "$BENCH_LATENCY_MS" &
  PROXY_PID=$!
  sleep 1
  WPDR_TEST_S3_ENDPOINT="http://127.0.0.1:$PROXY_PORT"
  rclone_remote src
  rclone_remote dst
  echo "== S3 through a proxy adding ${BENCH_LATENCY_MS} ms each way (port $PROXY_PORT)"
fi
unlatency() { [ -z "${PROXY_PID:-}" ] || kill "$PROXY_PID" 2>/dev/null || true; }

RUN=$(date +%s)
OFF_W="bench-listing-wpdr-$RUN"; OFF_O="bench-listing-old-$RUN"; OFF_R="bench-listing-rclone-$RUN"
bucket "$OFF_W"; bucket "$OFF_O"; bucket "$OFF_R"
drop_bucket() { "${RCLONE[@]}" purge "dst:$1" 2>/dev/null || true; $G bucket delete --yes "$1" >/dev/null 2>&1 || true; }
trap 'unlatency; for b in "$OFF_W" "$OFF_O" "$OFF_R"; do drop_bucket "$b"; done' EXIT
config() { # NAME OFFSITE
  cat > "$WORK/$1.yaml" <<YAML
site: bench-listing-$1
store: {type: local, path: $WORK/store-$1}
media:
  source: {bucket: $SRC, endpoint: '$WPDR_TEST_S3_ENDPOINT', region: garage, access_key_id: $KEY}
  offsite: {bucket: $2, endpoint: '$WPDR_TEST_S3_ENDPOINT', region: garage, access_key_id: $KEY}
  concurrency: 32
YAML
  rm -rf "$WORK/store-$1"
}
config new "$OFF_W"
config old "$OFF_O"
export WPDR_MEDIA_SOURCE_SECRET_ACCESS_KEY="$WPDR_TEST_S3_SECRET_ACCESS_KEY"
export WPDR_MEDIA_OFFSITE_SECRET_ACCESS_KEY="$WPDR_TEST_S3_SECRET_ACCESS_KEY"

# time_it NAME CMD...: appends wall seconds, client CPU and peak RSS to $WORK/NAME.runs
time_it() {
  local name=$1; shift
  sleep 2
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -f "%M %U %S" -o "$WORK/time.tmp" "$@" >/dev/null
  end=$(date +%s.%N)
  read -r rss user sys < <(tail -1 "$WORK/time.tmp")
  python3 -c "print(round($end - $start, 3), round($user + $sys, 2), $rss // 1024)" >> "$WORK/$name.runs"
}
wpdr_new() { time_it "$1-new" "$WPDR" -q -c "$WORK/new.yaml" media sync; }
wpdr_old() { [ -z "${WPDR_OLD:-}" ] || time_it "$1-old" "$WPDR_OLD" -q -c "$WORK/old.yaml" media sync; }
rclone_tuned() { time_it "$1-rclone" "${RCLONE[@]}" "${TUNED[@]}" "src:$SRC" "dst:$OFF_R"; }
rm -f "$WORK"/*.runs

echo "== first mirror of $OBJECTS objects (one each, in turn)"
wpdr_new first; wpdr_old first; rclone_tuned first
echo "== no-change reruns, 3 rounds"
for _ in 1 2 3; do wpdr_new same; wpdr_old same; rclone_tuned same; done
echo "== 1% rewritten, 3 rounds"
for r in 1 2 3; do
  "${RCLONE[@]}" lsf -R --fast-list --files-only "src:$SRC" | awk -v r="$r" 'NR % 100 == r' > "$WORK/changed.txt"
  # New bytes in the local originals, then only those copied up.
  while read -r k; do mkdir -p "$(dirname "$WORK/files/$k")"; head -c 1024 /dev/urandom > "$WORK/files/$k"; done < "$WORK/changed.txt"
  "${RCLONE[@]}" copy --transfers 64 --no-traverse --files-from "$WORK/changed.txt" "$WORK/files" "src:$SRC"
  wpdr_new changed; wpdr_old changed; rclone_tuned changed
done

"${RCLONE[@]}" check --fast-list "src:$SRC" "dst:$OFF_W" --size-only --exclude ".wpdr-retained/**" >/dev/null 2>&1 || { echo "wpdr's mirror differs from the source"; exit 1; }
"${RCLONE[@]}" check --fast-list "src:$SRC" "dst:$OFF_R" --size-only >/dev/null 2>&1 || { echo "rclone's copy differs from the source"; exit 1; }

median() { # FILE COLUMN
  [ -f "$1" ] || { echo "-"; return; }
  awk -v c="$2" '{print $c}' "$1" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
echo
echo "media reruns, $OBJECTS objects, latency ${BENCH_LATENCY_MS:-0} ms each way, $(date -u +%Y-%m-%d), $(nproc) CPUs; medians of 3 (wall s / client CPU s / peak RSS MiB)"
for phase in first same changed; do
  w=$(median "$WORK/$phase-new.runs" 1); r=$(median "$WORK/$phase-rclone.runs" 1); o=$(median "$WORK/$phase-old.runs" 1)
  printf "%-8s wpdr %7s s %6s CPU %5s MiB | older wpdr %7s s | rclone tuned %7s s %6s CPU %5s MiB | rclone/wpdr %sx\n" "$phase" \
    "$w" "$(median "$WORK/$phase-new.runs" 2)" "$(median "$WORK/$phase-new.runs" 3)" "$o" \
    "$r" "$(median "$WORK/$phase-rclone.runs" 2)" "$(median "$WORK/$phase-rclone.runs" 3)" \
    "$(python3 -c "print(round($r / max($w, 0.001), 2))")"
done
echo "every run (wall, CPU, RSS):"; for f in "$WORK"/*.runs; do echo "  $(basename "$f" .runs): $(tr '\n' ';' < "$f")"; done
