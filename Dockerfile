# The wpdr image: a release build on Debian's Rust image, run on Debian
# bookworm with exactly what wpdr calls (mariadb-binlog and mariadb for
# point-in-time replay, CA certificates for TLS) and nothing else.
#
#   docker build -t registry.example.com/wpdr:0.1.0 .
#
# Without Docker or a registry, scripts/image.sh builds the same image from
# Debian's packages (mmdebstrap + umoci) into an OCI archive; it reads the
# package list and the user from this file, so the two cannot drift.
#
# Runs as uid 65532 (the chart's runAsUser) with a read-only root filesystem:
# the only writable place wpdr needs is /tmp (the chart mounts an emptyDir).

ARG DEBIAN_SUITE=bookworm

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin wpdr \
 && install -D -m 0755 -s target/release/wpdr /out/usr/local/bin/wpdr \
 && mkdir -p /out/usr/share/bash-completion/completions /out/usr/share/zsh/vendor-completions \
             /out/usr/share/fish/vendor_completions.d \
 && /out/usr/local/bin/wpdr completions bash > /out/usr/share/bash-completion/completions/wpdr \
 && /out/usr/local/bin/wpdr completions zsh > /out/usr/share/zsh/vendor-completions/_wpdr \
 && /out/usr/local/bin/wpdr completions fish > /out/usr/share/fish/vendor_completions.d/wpdr.fish \
 && /out/usr/local/bin/wpdr man --dir /out/usr/share/man/man1 > /dev/null

FROM docker.io/library/debian:${DEBIAN_SUITE}-slim
# mariadb-client-core has `mariadb`; `mariadb-binlog` comes alone from
# mariadb-client's package (the rest of it is Perl scripts wpdr never runs,
# and Perl would double the image).
ARG RUNTIME_PACKAGES="mariadb-client-core ca-certificates"
ARG BINLOG_TOOL_PACKAGE="mariadb-client"
ARG BINLOG_TOOL_PATH="./usr/bin/mariadb-binlog"
ARG WPDR_UID=65532
RUN apt-get update \
 && apt-get install -y --no-install-recommends ${RUNTIME_PACKAGES} \
 && cd /tmp && apt-get download ${BINLOG_TOOL_PACKAGE} \
 && dpkg-deb --fsys-tarfile ${BINLOG_TOOL_PACKAGE}_*.deb | tar -x -C / ${BINLOG_TOOL_PATH} \
 && rm -f ${BINLOG_TOOL_PACKAGE}_*.deb \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
 && echo "wpdr:x:${WPDR_UID}:${WPDR_UID}:wpdr:/tmp:/usr/sbin/nologin" >> /etc/passwd \
 && echo "wpdr:x:${WPDR_UID}:" >> /etc/group
COPY --from=build /out/ /
USER 65532:65532
WORKDIR /tmp
ENV HOME=/tmp
ENTRYPOINT ["/usr/local/bin/wpdr"]
CMD ["--help"]
LABEL org.opencontainers.image.title="wpdr" \
      org.opencontainers.image.description="Backup and disaster recovery for WordPress on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
