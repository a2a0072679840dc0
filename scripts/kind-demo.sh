#!/usr/bin/env bash
# See wpdr work in a Kubernetes cluster, end to end (README "Try it in a
# cluster"): a kind cluster (or the current kubectl context with
# --use-current-context), the wpdr image built here and loaded into the
# cluster, a small WordPress site (MariaDB, MinIO uploads, WordPress) from
# docs/kind/demo-site.yaml, wpdr installed by its chart with
# docs/kind/values.yaml, then a backup and a drill as Kubernetes Jobs: the
# drill restores the whole site into a fresh namespace, checks that it answers
# as the live one did, prints RTO and RPO, and deletes that namespace
# (--keep-restored leaves it for a look).
#
#   scripts/kind-demo.sh                        # create the kind cluster wpdr-demo
#   scripts/kind-demo.sh --use-current-context  # any cluster kubectl reaches
#   scripts/kind-demo.sh --keep-restored        # leave the drill's namespace
#   scripts/kind-demo.sh --fleet                # the fleet controller backs up the site as a Site
#   scripts/kind-demo.sh --delete [--use-current-context]   # remove what it made
#
# Needs kubectl, and kind plus docker or podman when it creates the cluster.
# The image: `docker build` when docker is there, otherwise scripts/image.sh
# build (mmdebstrap, umoci) and skopeo to hand it to kind. Helm: on PATH or
# the copy scripts/chart-check.sh caches. The last line printed is the drill
# report (JSON); tests/e2e_cluster.rs reads it.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${KIND_CLUSTER:-wpdr-demo}"
IMAGE="localhost/wpdr:0.1.0"
USE_CURRENT=false
KEEP_RESTORED=false
DELETE=false
FLEET=false
for arg in "$@"; do
  case "$arg" in
    --use-current-context) USE_CURRENT=true ;;
    --keep-restored) KEEP_RESTORED=true ;;
    --delete) DELETE=true ;;
    --fleet) FLEET=true ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "kind-demo: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

say() { echo "[kind-demo] $*" >&2; }
need() {
  command -v "$1" >/dev/null || { echo "kind-demo: $1 is missing: $2" >&2; exit 3; }
}
need kubectl "install it (https://kubernetes.io/docs/tasks/tools/)"
HELM="$(command -v helm || echo "${WPDR_CACHE:-$HOME/.cache/wpdr}/bin/helm")"
[ -x "$HELM" ] || { echo "kind-demo: helm is missing: install it, or run scripts/chart-check.sh once to cache it" >&2; exit 3; }

if ! $USE_CURRENT; then
  need kind "install it (https://kind.sigs.k8s.io), or pass --use-current-context"
  if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    say "creating kind cluster $CLUSTER"
    kind create cluster --name "$CLUSTER" --wait 120s
  fi
  kubectl config use-context "kind-$CLUSTER" >/dev/null
fi

# Only namespaces this script made (labelled wpdr.io/demo) are touched: a
# cluster's own `wp` namespace is never written to or deleted.
for ns in wp wpdr-offsite; do
  if kubectl get namespace "$ns" >/dev/null 2>&1 \
    && [ "$(kubectl get namespace "$ns" -o jsonpath='{.metadata.labels.wpdr\.io/demo}')" != "true" ]; then
    echo "kind-demo: namespace $ns exists and was not made by this script (no label wpdr.io/demo=true): use another cluster" >&2
    exit 4
  fi
done
if $DELETE; then
  say "removing the demo: the wpdr release, namespaces wp and wpdr-offsite, kept drill namespaces"
  "$HELM" uninstall wpdr -n wp --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete namespace wp wpdr-offsite --ignore-not-found --wait=false >/dev/null
  kubectl delete namespace -l wpdr.io/demo-drill=true --ignore-not-found --wait=false >/dev/null
  $USE_CURRENT || say "the kind cluster stays: kind delete cluster --name $CLUSTER"
  exit 0
fi

# The image: built here, loaded into the nodes (the chart's pullPolicy is Never).
if ! $USE_CURRENT || [ -n "${WPDR_LOAD_IMAGE:-}" ]; then
  if command -v docker >/dev/null; then
    say "building $IMAGE with docker"
    docker build -q -t "$IMAGE" . >/dev/null
    kind load docker-image "$IMAGE" --name "$CLUSTER"
  else
    need skopeo "needed to hand the OCI archive to kind without docker (apt-get install skopeo)"
    say "building $IMAGE with scripts/image.sh"
    scripts/image.sh build
    archive=$(ls -t target/image/wpdr-*.oci.tar | head -1)
    skopeo copy -q "oci-archive:$archive" "docker-archive:target/image/wpdr-kind.tar:$IMAGE"
    kind load image-archive target/image/wpdr-kind.tar --name "$CLUSTER"
  fi
else
  say "using the current context: $IMAGE must already be on its nodes (WPDR_LOAD_IMAGE=1 loads it with kind)"
fi

# (cut, not head: a reader that quits early could fail the pipe under pipefail)
random() { head -c 24 /dev/urandom | base64 | tr -d '/+=\n' | cut -c1-24; }
secret() { # namespace name key=value...
  local ns=$1 name=$2; shift 2
  local args=()
  for kv in "$@"; do args+=("--from-literal=$kv"); done
  kubectl -n "$ns" create secret generic "$name" "${args[@]}" --dry-run=client -o yaml \
    | kubectl apply -f - >/dev/null
}

say "deploying the demo site (namespace wp) and the offsite S3 (namespace wpdr-offsite)"
for ns in wp wpdr-offsite; do
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl label namespace "$ns" wpdr.io/demo=true --overwrite >/dev/null
done
# Random credentials once; a rerun keeps them (the data was written with them).
if ! kubectl -n wp get secret site-credentials >/dev/null 2>&1; then
  ROOT_PW=$(random) MINIO_USER="wp$(random | cut -c1-8)" MINIO_PW=$(random)
  OFF_USER="off$(random | cut -c1-8)" OFF_PW=$(random)
  secret wp site-credentials "mariadb-root-password=$ROOT_PW" "wordpress-db-password=$(random)" \
    "minio-root-user=$MINIO_USER" "minio-root-password=$MINIO_PW"
  secret wpdr-offsite offsite-credentials "root-user=$OFF_USER" "root-password=$OFF_PW"
  # wpdr's own keys, labelled so no set records them (they are not the site's).
  secret wp wpdr-credentials "db-password=$ROOT_PW" "s3-access-key-id=$OFF_USER" \
    "s3-secret-access-key=$OFF_PW" "minio-access-key-id=$MINIO_USER" \
    "minio-secret-access-key=$MINIO_PW" "secrets-key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  kubectl -n wp label secret wpdr-credentials wpdr.io/exclude-from-backup=true --overwrite >/dev/null
fi
kubectl apply -f docs/kind/demo-site.yaml >/dev/null
kubectl -n wp rollout status statefulset/mariadb --timeout=300s >&2
kubectl -n wp rollout status deployment/minio --timeout=300s >&2
kubectl -n wpdr-offsite rollout status deployment/minio --timeout=300s >&2
kubectl -n wp rollout status deployment/wordpress --timeout=300s >&2
for job in wp/wp-install wp/seed-uploads wpdr-offsite/offsite-buckets; do
  kubectl -n "${job%/*}" wait --for=condition=complete "job/${job#*/}" --timeout=600s >/dev/null
done

say "installing wpdr (chart charts/wpdr, values docs/kind/values.yaml)"
fleet_args=()
$FLEET && fleet_args=(--set controller.enabled=true --set-json 'controller.namespaces=["wp"]')
"$HELM" upgrade --install wpdr charts/wpdr -n wp -f docs/kind/values.yaml "${fleet_args[@]}" --wait >/dev/null

if $FLEET; then
  say "fleet: the site as a Site object; the controller runs its backup as a Job"
  kubectl apply -f charts/wpdr/crds/sites.wpdr.io.yaml >/dev/null
  kubectl apply -f docs/kind/site.yaml >/dev/null
  deadline=$((SECONDS + 600))
  until [ -n "$(kubectl -n wp get site demo -o jsonpath='{.status.runs.nightly.lastResult}' 2>/dev/null)" ]; do
    [ $SECONDS -lt $deadline ] || { kubectl -n wp get jobs,pods -l wpdr.io/site=demo >&2; echo "kind-demo: the Site's first run did not finish in 10 minutes" >&2; exit 1; }
    sleep 5
  done
  kubectl -n wp get sites -o wide >&2
  kubectl -n wp get site demo -o jsonpath='{.status}'
  echo
  exit 0
fi

# A one-off Job from a CronJob's template, with extra arguments; waits for it
# and prints its log. Fails (with the log) when the Job fails.
run_job() { # cronjob job-name extra-args-json
  kubectl -n wp delete job "$2" --ignore-not-found >/dev/null
  kubectl -n wp get cronjob "$1" -o json | python3 -c '
import json, sys
cron = json.load(sys.stdin)
name, extra = sys.argv[1], json.loads(sys.argv[2])
job = {"apiVersion": "batch/v1", "kind": "Job",
       "metadata": {"name": name, "labels": {"wpdr.io/exclude-from-backup": "true"}},
       "spec": cron["spec"]["jobTemplate"]["spec"]}
job["spec"]["template"]["spec"]["containers"][0]["args"] += extra
json.dump(job, sys.stdout)' "$2" "$3" | kubectl -n wp create -f - >/dev/null
  local deadline=$((SECONDS + 1800))
  while :; do
    if kubectl -n wp wait --for=condition=complete "job/$2" --timeout=10s >/dev/null 2>&1; then break; fi
    if kubectl -n wp wait --for=condition=failed "job/$2" --timeout=1s >/dev/null 2>&1; then
      kubectl -n wp logs "job/$2" >&2 || true
      echo "kind-demo: job $2 failed (its log is above)" >&2; exit 1
    fi
    [ $SECONDS -lt $deadline ] || { echo "kind-demo: job $2 did not finish in 30 minutes" >&2; exit 1; }
  done
  kubectl -n wp logs "job/$2"
}

say "backup: database snapshot, media mirror, namespace objects and image digests"
run_job wpdr-nightly-backup demo-backup '["--output", "json"]' >/tmp/wpdr-kind-backup.log
grep -v '^{"timestamp"' /tmp/wpdr-kind-backup.log | tail -20 >&2 || true

say "drill: restore the whole site into a fresh namespace, check it, report, tear down"
extra='["--output", "json"]'
$KEEP_RESTORED && extra='["--output", "json", "--keep"]'
run_job wpdr-weekly-drill demo-drill "$extra" >/tmp/wpdr-kind-drill.log
report=$(python3 - /tmp/wpdr-kind-drill.log <<'PY'
import json, sys
# The log holds one-line JSON log records and the report, pretty-printed:
# from a line "{" to the next line "}".
lines = open(sys.argv[1]).read().splitlines()
start = max(i for i, l in enumerate(lines) if l == "{")
end = next(i for i in range(start, len(lines)) if lines[i] == "}")
print(json.dumps(json.loads("\n".join(lines[start:end + 1]))))
PY
)
python3 - "$report" >&2 <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"drill of set {r['set_id']} into namespace {r['namespace']}: {'PASSED' if r['ok'] else 'FAILED'}")
print(f"  RTO {r['rto_seconds']:.0f} s, RPO {r['rpo_seconds']:.0f} s")
for s in r["steps"]:
    print(f"  {s.get('id', '?'):<16} {s.get('seconds', 0):7.1f} s")
print("  restored namespace " + ("kept: kubectl -n " + r["namespace"] + " get all" if r["kept"] else "deleted"))
PY
# A kept drill namespace is labelled so --delete finds it.
if $KEEP_RESTORED; then
  ns=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["namespace"])' "$report")
  kubectl label namespace "$ns" wpdr.io/demo-drill=true --overwrite >/dev/null
fi
echo "$report"
