# syntax=docker/dockerfile:1
#
# The images of inferscale's two programs, one static (musl) binary each on an empty base:
#
#   adapter  ENTRYPOINT ["/adapter"]   the metrics API server (deploy/ runs `adapter serve`)
#   scaler   ENTRYPOINT ["/scaler"]    the warm-pool controller and the what-if simulator
#
# FROM scratch: no shell, no package manager, no libc, nothing to patch but our own code. The
# binaries link musl statically, embed their TLS roots (rustls + webpki-roots) and write no
# file, so the pods run as UID/GID 65532 with a read-only root filesystem (deploy/ sets
# readOnlyRootFilesystem: true).
#
# Anywhere a Rust image can be pulled (compiles in the `build` stage):
#   docker build --target adapter --build-arg VERSION=0.1.0 -t ghcr.io/inferscale/adapter:0.1.0 .
# Offline, on a machine that cannot pull any base image (this is what `make image` does):
#   hack/image.sh   compiles on the host, then builds with --build-arg BINARIES=prebuilt
# Both paths end in the same final stages below; only where /out comes from differs.

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
# `build` compiles in a container; `prebuilt` takes target/image/bin/ from the build context.
ARG BINARIES=build

FROM ${RUST_IMAGE} AS build
ARG TARGET=x86_64-unknown-linux-musl
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "${TARGET}"
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target "${TARGET}" -p inferscale-adapter -p inferscale-scaler \
 && mkdir -p /out \
 && cp "target/${TARGET}/release/adapter" "target/${TARGET}/release/scaler" /out/

FROM scratch AS prebuilt
COPY target/image/bin/adapter target/image/bin/scaler /out/

FROM ${BINARIES} AS binaries

FROM scratch AS base
ARG VERSION
LABEL org.opencontainers.image.source="https://github.com/inferscale/inferscale" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY LICENSE /licenses/LICENSE
# Numeric, so Kubernetes' runAsNonRoot can verify it without an /etc/passwd.
USER 65532:65532

FROM base AS adapter
LABEL org.opencontainers.image.title="inferscale adapter" \
      org.opencontainers.image.description="Kubernetes custom/external metrics API server for LLM inference"
COPY --from=binaries /out/adapter /adapter
ENTRYPOINT ["/adapter"]

FROM base AS scaler
LABEL org.opencontainers.image.title="inferscale scaler" \
      org.opencontainers.image.description="Warm-pool controller and what-if simulator for GPU inference fleets"
COPY --from=binaries /out/scaler /scaler
ENTRYPOINT ["/scaler"]
