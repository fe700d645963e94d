# syntax=docker/dockerfile:1
# The gitops-status-server image: a release build on Debian 12, run from distroless (no shell, no
# package manager, no libc) as the unprivileged `nonroot` user (65532), with the SQLite database on
# the /data volume.
#
#   docker build -t gitops-status-server .
#   docker run -p 8080:8080 -v gitops-status-data:/data gitops-status-server

FROM rust:1.95-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# .cargo/config.toml and vendor/ keep the Swagger UI files /docs never loads out of the binary.
COPY .cargo ./.cargo
COPY vendor ./vendor
COPY src ./src
COPY migrations ./migrations
# glibc is linked statically (+crt-static), so the binary runs on distroless/static, which has no
# shared libraries: the image is about 16 MiB, where distroless/cc with its libc, libstdc++ and
# OpenSSL (the server uses rustls) would add some 20 MB. SQLite is compiled in (sqlx bundles it).
# A static binary cannot look up glibc's getrandom, so it reads /dev/urandom, which every container
# runtime provides. An explicit --target keeps build scripts and proc-macros dynamic. Symbols are
# stripped. Cache mounts keep the crates.io download and the build directory between builds; the
# binary is copied out because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(rustc -vV | sed -n 's/^host: //p')" \
    && RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
       cargo build --release --locked --target "$target" \
    && cp "target/$target/release/gitops-status-server" /usr/local/bin/gitops-status-server \
    && mkdir /data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /usr/local/bin/gitops-status-server /usr/local/bin/gitops-status-server
# distroless has no shell to create the volume directory, so it comes from the builder, owned by
# nonroot so that the server can create its database and WAL files there.
COPY --from=build --chown=65532:65532 /data /data
ENV GITOPS_STATUS_LISTEN=0.0.0.0:8080 \
    DATABASE_URL=sqlite:///data/gitops-status.db
VOLUME /data
# The distroless `nonroot` user by number: Kubernetes can verify runAsNonRoot only for a numeric
# user (with a name the kubelet refuses to start the pod).
USER 65532:65532
EXPOSE 8080
# No HEALTHCHECK: the image has no shell or HTTP client to run one. Orchestrators probe GET /healthz
# (liveness) and GET /readyz (readiness) over HTTP instead; see deploy/k8s/base/deployment.yaml.
ENTRYPOINT ["/usr/local/bin/gitops-status-server"]
CMD ["serve"]
