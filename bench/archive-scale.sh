#!/usr/bin/env bash
# Benchmark (not a test): reading a binlog archive of many segments. Real
# segment indexes and data objects (as the archiver writes them, 300 a
# day) are put into Garage, the finished days rolled up, then timed in one
# run: the recoverable window (what `wpdr sets recoverable` and the
# daemon's status compute) before and after the roll-up, a PITR plan, and
# a daemon's resident memory over repeated scans. No other tool keeps a
# GTID-chained archive to compare with: the comparison is wpdr before and
# after roll-ups (one GET per segment vs one per day).
#
#   bench/archive-scale.sh                              100,000 segments
#   WPDR_SCALE_SEGMENTS=10000 bench/archive-scale.sh    a quick look
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_setup
export WPDR_DEV_DIR="${WPDR_DEV_DIR:-/tmp/wpdr-dev}"
export WPDR_SCALE_SEGMENTS="${WPDR_SCALE_SEGMENTS:-100000}"
cargo test --release --quiet --test binlog_rollup scale_an_archive_of_many_segments \
  -- --ignored --nocapture 2>&1 | grep -v '^$'
