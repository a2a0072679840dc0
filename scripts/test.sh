#!/usr/bin/env bash
# The whole test suite: unit, property and integration tests against the real
# services from scripts/dev-services.sh (which must have run; a missing service fails).
set -euo pipefail
cd "$(dirname "$0")/.."
export WPDR_DEV_DIR="${WPDR_DEV_DIR:-/tmp/wpdr-dev}"
if [ ! -f "$WPDR_DEV_DIR/env" ]; then
  echo "test services are not running: run scripts/dev-services.sh first" >&2
  exit 1
fi
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
# Integration tests start their own MariaDB servers; two at a time fit 2 cores.
cargo test --all-targets -- --test-threads="${WPDR_TEST_THREADS:-2}"
# The Helm chart: lint, render, schema-validate, security posture, and the
# rendered configuration accepted by wpdr itself.
WPDR=target/debug/wpdr scripts/chart-check.sh
# The image: built from the debug binary just tested (a release build is the
# same code, only slower to compile) and run as the chart runs it.
if command -v mmdebstrap >/dev/null && command -v umoci >/dev/null && [ "$(id -u)" = 0 ]; then
  scripts/image.sh build --binary target/debug/wpdr --out target/image-test
  scripts/image.sh check --out target/image-test
elif [ "${CI:-}" = true ]; then
  echo "the image check needs mmdebstrap, umoci (scripts/dev-services.sh installs them) and root" >&2
  exit 1
else
  echo "image: mmdebstrap, umoci or root missing: the image check did not run"
fi
# The real-cluster suite runs only with a cluster; otherwise cargo reports it as ignored.
if [ -n "${KUBECONFIG:-}" ]; then
  cargo test --test e2e_cluster -- --ignored
else
  echo "e2e_cluster: KUBECONFIG not set, the real-cluster suite did not run (reported as ignored, not passed)"
fi
