#!/usr/bin/env bash
# Builds the wpdr image without Docker or any registry, and checks it.
#
#   scripts/image.sh build [--binary PATH] [--tag TAG] [--out DIR]
#       A Debian root filesystem from Debian's packages (mmdebstrap), wpdr
#       with its completions and manual pages on top, assembled by umoci into
#       an OCI archive: DIR/wpdr-TAG.oci.tar (DIR defaults to target/image).
#       Two layers: Debian (+ the wpdr user), then wpdr. The package list,
#       the binlog tool and the user come from the Dockerfile, so a `docker
#       build` and this script make the same image. Without --binary, wpdr is
#       built here (cargo build --release) and stripped.
#
#   scripts/image.sh check [--tag TAG] [--out DIR]
#       Unpacks the archive and runs the image's wpdr the way the chart does
#       (uid 65532, read-only root, a tmpfs on /tmp, config and secrets
#       mounted read-only): --version, check-config, then a backup of a fresh
#       database on the dev services, an archived binary log and a
#       point-in-time restore with the image's own mariadb-binlog + mariadb.
#       Needs root (mount namespaces, chroot) and scripts/dev-services.sh.
#
# Push the archive with skopeo (or buildah push), e.g.:
#   skopeo copy oci-archive:target/image/wpdr-0.1.0.oci.tar docker://registry.example.com/wpdr:0.1.0
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

cmd="${1:-}"; shift || true
TAG="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
OUT="$ROOT/target/image"
BINARY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BINARY="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "image.sh: unknown option '$1' (see the header of scripts/image.sh)" >&2; exit 2 ;;
  esac
done
ARCHIVE="$OUT/wpdr-$TAG.oci.tar"
CACHE_DIR="${WPDR_CACHE:-$HOME/.cache/wpdr}/image"

log() { echo "[image] $*" >&2; }
die() { echo "[image] error: $*" >&2; exit 1; }

# One value of an `ARG NAME=value` line of the Dockerfile.
dockerfile_arg() {
  local v
  v=$(sed -n "s/^ARG $1=\"\{0,1\}\([^\"]*\)\"\{0,1\}$/\1/p" Dockerfile | head -1)
  [ -n "$v" ] || die "the Dockerfile has no 'ARG $1=…' line"
  echo "$v"
}

need_tools() {
  local missing=()
  for t in "$@"; do command -v "$t" >/dev/null || missing+=("$t"); done
  [ "${#missing[@]}" -eq 0 ] || die "missing tools: ${missing[*]} (Debian: apt-get install mmdebstrap umoci)"
}

build() {
  need_tools mmdebstrap umoci tar sha256sum
  local suite packages binlog_pkg binlog_path uid
  suite=$(dockerfile_arg DEBIAN_SUITE)
  packages=$(dockerfile_arg RUNTIME_PACKAGES)
  binlog_pkg=$(dockerfile_arg BINLOG_TOOL_PACKAGE)
  binlog_path=$(dockerfile_arg BINLOG_TOOL_PATH)
  uid=$(dockerfile_arg WPDR_UID)

  if [ -z "$BINARY" ]; then
    log "building wpdr (cargo build --release)"
    cargo build --release --locked --quiet --bin wpdr
    BINARY="$ROOT/target/release/wpdr"
  fi
  [ -x "$BINARY" ] || die "$BINARY is not an executable wpdr"

  # The Debian layer is cached for a day: rebuilt daily for security updates.
  mkdir -p "$CACHE_DIR" "$OUT"
  local key base
  key=$(printf '%s\n' "$suite" "$packages" "$binlog_pkg" "$binlog_path" "$uid" "$(date -u +%F)" | sha256sum | cut -c1-16)
  base="$CACHE_DIR/base-$suite-$key.tar"
  if [ ! -s "$base" ]; then
    log "Debian $suite root filesystem: $packages + $binlog_path of $binlog_pkg (mmdebstrap, ~1 minute)"
    # dpkg's own patterns (quoted: the host's files must not expand them).
    local exclude=() p
    for p in '/usr/share/man/*' '/usr/share/doc/*' '/usr/share/info/*' '/usr/share/locale/*' \
             '/usr/share/lintian/*' '/usr/lib/x86_64-linux-gnu/gconv/*'; do
      exclude+=(--dpkgopt="path-exclude=$p")
    done
    # Keep the copyright files Debian's licences ask for.
    exclude+=(--dpkgopt='path-include=/usr/share/doc/*/copyright')
    local partial="${base%.tar}.partial.tar" mmlog="$OUT/mmdebstrap.log"
    mmdebstrap --quiet --variant=essential \
      --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      --include="${packages// /,}" "${exclude[@]}" \
      --customize-hook="cd \"\$1/tmp\" && apt-get download -q -o APT::Sandbox::User=root $binlog_pkg >/dev/null && dpkg-deb --fsys-tarfile ${binlog_pkg}_*.deb | tar -x -C \"\$1\" $binlog_path && rm -f ${binlog_pkg}_*.deb" \
      --customize-hook="echo 'wpdr:x:$uid:$uid:wpdr:/tmp:/usr/sbin/nologin' >> \"\$1/etc/passwd\" && echo 'wpdr:x:$uid:' >> \"\$1/etc/group\"" \
      --customize-hook='rm -rf "$1/var/cache/apt"/* "$1/var/lib/apt/lists"/* "$1/var/log"/*' \
      "$suite" "$partial" >"$mmlog" 2>&1 || { tail -30 "$mmlog" >&2; die "mmdebstrap failed (log: $mmlog)"; }
    mv "$partial" "$base"
  fi

  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  log "assembling the OCI image wpdr:$TAG (umoci)"
  umoci init --layout "$work/layout"
  umoci new --image "$work/layout:$TAG"
  umoci unpack --image "$work/layout:$TAG" "$work/bundle" >/dev/null
  # Device nodes are the runtime's to provide, not the image's.
  tar -xpf "$base" -C "$work/bundle/rootfs" --exclude='./dev/*'
  umoci repack --refresh-bundle --history.created_by="mmdebstrap $suite: $packages, $binlog_path" \
    --image "$work/layout:$TAG" "$work/bundle"

  local r="$work/bundle/rootfs"
  install -D -m 0755 "$BINARY" "$r/usr/local/bin/wpdr"
  strip "$r/usr/local/bin/wpdr" 2>/dev/null || true
  mkdir -p "$r/usr/share/bash-completion/completions" "$r/usr/share/zsh/vendor-completions" \
           "$r/usr/share/fish/vendor_completions.d" "$r/usr/share/man/man1"
  "$BINARY" completions bash >"$r/usr/share/bash-completion/completions/wpdr"
  "$BINARY" completions zsh >"$r/usr/share/zsh/vendor-completions/_wpdr"
  "$BINARY" completions fish >"$r/usr/share/fish/vendor_completions.d/wpdr.fish"
  "$BINARY" man --dir "$r/usr/share/man/man1" >/dev/null
  umoci repack --history.created_by="wpdr $TAG: binary, completions, manual pages" \
    --image "$work/layout:$TAG" "$work/bundle"
  umoci config --image "$work/layout:$TAG" \
    --config.entrypoint=/usr/local/bin/wpdr --config.cmd=--help \
    --config.user="$uid:$uid" --config.workingdir=/tmp --config.env=HOME=/tmp \
    --config.env=PATH=/usr/local/bin:/usr/bin:/bin \
    --config.label=org.opencontainers.image.title=wpdr \
    --config.label=org.opencontainers.image.version="$TAG" \
    --config.label=org.opencontainers.image.revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    --config.label=org.opencontainers.image.licenses=Apache-2.0 \
    --history.created_by="wpdr $TAG: entrypoint, user $uid"
  umoci gc --layout "$work/layout"
  tar -C "$work/layout" -cf "$ARCHIVE.partial" .
  mv "$ARCHIVE.partial" "$ARCHIVE"
  local bytes unpacked
  bytes=$(stat -c %s "$ARCHIVE")
  unpacked=$(du -sb "$r" | cut -f1)
  echo "$TAG archive_bytes=$bytes unpacked_bytes=$unpacked" >"$OUT/SIZE"
  log "built $ARCHIVE: $((bytes / 1024 / 1024)) MiB compressed, $((unpacked / 1024 / 1024)) MiB unpacked"
}

# Runs the image's wpdr (or another of its programs) as the chart does.
# Globals: RF (the unpacked root), CONF (mounted at /etc/wpdr), SECRETS
# (mounted at /var/run/secrets/wpdr).
in_image() {
  RF="$RF" CONF="$CONF" SECRETS="$SECRETS" unshare --mount --fork -- sh -c '
    set -e
    mount --make-rprivate /
    mount --bind "$RF" "$RF"
    mount -o remount,bind,ro "$RF"
    mount -t tmpfs -o size=512m,mode=1777 tmpfs "$RF/tmp"
    mount -t tmpfs -o size=1m tmpfs "$RF/dev"
    for n in null zero random urandom; do touch "$RF/dev/$n"; mount --bind "/dev/$n" "$RF/dev/$n"; done
    mount -t proc proc "$RF/proc"
    mount -t tmpfs -o size=1m tmpfs "$RF/run"
    mkdir -p "$RF/run/wpdr-config" "$RF/run/wpdr-secrets"
    mount --bind -o ro "$CONF" "$RF/run/wpdr-config"
    mount --bind -o ro "$SECRETS" "$RF/run/wpdr-secrets"
    exec chroot --userspec=65532:65532 "$RF" /usr/bin/env -i HOME=/tmp PATH=/usr/local/bin:/usr/bin:/bin \
      WPDR_CONFIG=/run/wpdr-config/wpdr.yaml "$@"
  ' sh "$@"
}

check() {
  need_tools umoci unshare chroot python3
  [ "$(id -u)" = 0 ] || die "check needs root (mount namespaces and chroot)"
  [ -s "$ARCHIVE" ] || die "$ARCHIVE does not exist: run scripts/image.sh build first"
  local env_file="${WPDR_DEV_DIR:-/tmp/wpdr-dev}/env"
  [ -f "$env_file" ] || die "the dev services are not running: run scripts/dev-services.sh first"
  set -a; source "$env_file"; set +a

  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  mkdir "$work/layout"
  tar -xf "$ARCHIVE" -C "$work/layout"
  umoci unpack --image "$work/layout:$TAG" "$work/bundle" >/dev/null
  RF="$work/bundle/rootfs"
  python3 - "$work/bundle/config.json" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
p = spec["process"]
assert p["user"]["uid"] == 65532 and p["user"]["gid"] == 65532, f"the image runs as {p['user']}, not 65532"
assert p["args"][0] == "/usr/local/bin/wpdr", f"the entrypoint is {p['args']}"
assert "HOME=/tmp" in p["env"], p["env"]
PY
  for f in usr/share/bash-completion/completions/wpdr usr/share/zsh/vendor-completions/_wpdr \
           usr/share/fish/vendor_completions.d/wpdr.fish usr/share/man/man1/wpdr.1 \
           usr/share/man/man1/wpdr-backup.1 usr/bin/mariadb usr/bin/mariadb-binlog; do
    [ -s "$RF/$f" ] || die "the image lacks /$f"
  done
  # Debian's essential perl-base stays; the full Perl (what mariadb-client
  # would pull in) must not.
  for pkg in perl libperl5.36 mariadb-client; do
    ! grep -qx "Package: $pkg" "$RF/var/lib/dpkg/status" || die "the image carries the package $pkg, which wpdr never runs"
  done

  local stamp db mysql
  stamp="img$(date +%s)"
  db="imagecheck_$stamp"
  mysql=(mariadb --no-defaults -h127.0.0.1 -P"$WPDR_TEST_DB_PORT" -u"$WPDR_TEST_DB_USER" -p"$WPDR_TEST_DB_PASSWORD")
  CONF="$work/config"; SECRETS="$work/secrets"
  mkdir -p "$CONF" "$SECRETS"
  ( umask 077
    printf '%s' "$WPDR_TEST_DB_PASSWORD" >"$SECRETS/db-password"
    printf '%s' "$WPDR_TEST_S3_SECRET_ACCESS_KEY" >"$SECRETS/s3-secret" )
  # The age identity stays outside: the backup side holds only the recipient.
  local recipient
  "$RF/usr/local/bin/wpdr" keys age --out "$work/identity" >/dev/null
  recipient=$(grep -o 'age1[0-9a-z]*' "$work/identity" | head -1)
  [ -n "$recipient" ] || die "wpdr keys age wrote no recipient into $work/identity"
  cp "$work/identity" "$SECRETS/identity"
  chown -R 65532:65532 "$SECRETS"
  cat >"$CONF/wpdr.yaml" <<YAML
site: $stamp
store:
  type: s3
  bucket: $WPDR_TEST_S3_BUCKET
  prefix: image-check/$stamp
  endpoint: $WPDR_TEST_S3_ENDPOINT
  region: $WPDR_TEST_S3_REGION
  access_key_id: $WPDR_TEST_S3_ACCESS_KEY_ID
  secret_access_key_file: /run/wpdr-secrets/s3-secret
database:
  host: 127.0.0.1
  port: $WPDR_TEST_DB_PORT
  user: $WPDR_TEST_DB_USER
  password_file: /run/wpdr-secrets/db-password
  name: $db
encryption:
  recipients: [$recipient]
restore:
  database_password_file: /run/wpdr-secrets/db-password
YAML

  # The mounts hold: the root is read-only to wpdr, /tmp is not.
  ! in_image touch /usr/local/bin/written 2>/dev/null || die "the image's root was writable in the check"
  in_image touch /tmp/written || die "/tmp was not writable in the check"
  log "inside the image: wpdr --version, mariadb-binlog --version"
  in_image wpdr --version
  in_image mariadb-binlog --version >/dev/null
  log "inside the image: wpdr check-config"
  in_image wpdr check-config >/dev/null

  "${mysql[@]}" -e "CREATE DATABASE $db; USE $db; CREATE TABLE posts (id INT PRIMARY KEY, title VARCHAR(64)); INSERT INTO posts SELECT seq, CONCAT('post ', seq) FROM seq_1_to_1000"
  log "inside the image: wpdr backup, then binlog archive"
  in_image wpdr --log-format text -q backup >/dev/null
  "${mysql[@]}" -e "INSERT INTO $db.posts VALUES (1001, 'before the point')"
  in_image wpdr --log-format text -q binlog archive --until-caught-up
  sleep 1.2; local point; point=$(date -u +%Y-%m-%dT%H:%M:%SZ); sleep 1.2
  "${mysql[@]}" -e "INSERT INTO $db.posts VALUES (1002, 'after the point')"
  in_image wpdr --log-format text -q binlog archive --until-caught-up
  log "inside the image: wpdr restore db latest --to-time $point (age identity, mariadb-binlog | mariadb)"
  in_image wpdr --log-format text -q \
    --identity /run/wpdr-secrets/identity restore db latest \
    --target "mysql://$WPDR_TEST_DB_USER@127.0.0.1:$WPDR_TEST_DB_PORT" --database "${db}_restored" --to-time "$point" >/dev/null
  local got
  got=$("${mysql[@]}" -N -e "SELECT COUNT(*), SUM(id = 1001), SUM(id = 1002) FROM ${db}_restored.posts")
  "${mysql[@]}" -e "DROP DATABASE $db; DROP DATABASE ${db}_restored"
  [ "$got" = "$(printf '1001\t1\t0')" ] || die "the restore to $point holds (rows, before, after) = ($got), not (1001, 1, 0)"
  log "the image works: runs as 65532 on a read-only root; backup, archive and point-in-time restore inside it"
}

case "$cmd" in
  build) build ;;
  check) check ;;
  *) echo "usage: scripts/image.sh build|check [--binary PATH] [--tag TAG] [--out DIR]" >&2; exit 2 ;;
esac
