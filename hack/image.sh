#!/usr/bin/env bash
# Builds the container images ghcr.io/inferscale/{adapter,scaler}:<crate version> from the
# Dockerfile, on a machine that cannot pull a base image: the static musl binaries are
# compiled here (cargo, target x86_64-unknown-linux-musl) and the Dockerfile's final stages
# are built FROM scratch with --build-arg BINARIES=prebuilt. No registry is contacted.
#
# Usage: hack/image.sh            (what `make image` runs)
#
# Output (all under target/image/, gitignored):
#   bin/adapter, bin/scaler                  the static binaries the images contain
#   adapter-<version>.oci.tar                OCI image archives: `podman load -i …`,
#   scaler-<version>.oci.tar                   `skopeo copy oci-archive:… docker://…`
#   storage/                                 buildah's own image store (never the host's)
#
# Installs what it needs from Debian (buildah, musl-tools; podman and runc for tests/image) and
# the musl target with rustup.
# Env: INFERSCALE_IMAGE_REPO (default ghcr.io/inferscale) names the images.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
REPO_PREFIX="${INFERSCALE_IMAGE_REPO:-ghcr.io/inferscale}"
OUT=target/image
log() { printf '[image %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# The crate version, the one tag every image, chart and /version carries.
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' adapter/Cargo.toml | head -n1)
[[ -n "$VERSION" ]] || die "no version in adapter/Cargo.toml"
scaler_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' scaler/Cargo.toml | head -n1)
[[ "$scaler_version" == "$VERSION" ]] ||
  die "adapter ($VERSION) and scaler ($scaler_version) versions differ; the images share one tag"

apt_install() { # package...
  command -v apt-get >/dev/null || die "need $*; install them (Debian/Ubuntu: apt-get install $*)"
  log "installing $* (Debian)"
  apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends "$@" >/dev/null; }
}
command -v buildah >/dev/null || apt_install buildah
# tests/image runs the images: podman, with runc as the OCI runtime (see tests/image).
command -v podman >/dev/null || apt_install podman
command -v runc >/dev/null || apt_install runc
# ring compiles C for the musl target with musl-gcc.
command -v musl-gcc >/dev/null || apt_install musl-tools
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  log "adding the Rust target $TARGET"
  rustup target add "$TARGET"
fi

log "cargo build --release --target $TARGET (adapter, scaler)"
# The release profile keeps line tables for profiling (Cargo.toml); the image strips them
# below, so they are not built here at all (less to compile, link and store).
CARGO_PROFILE_RELEASE_DEBUG=false nice -n 10 cargo build --quiet --release --locked \
  --target "$TARGET" -p inferscale-adapter -p inferscale-scaler
mkdir -p "$OUT/bin"
for bin in adapter scaler; do
  install -m 0755 -s "target/$TARGET/release/$bin" "$OUT/bin/$bin"
done

# A private image store: nothing here touches the host's /var/lib/containers.
BUILDAH=(buildah --root "$PWD/$OUT/storage" --runroot "$PWD/$OUT/run" --storage-driver vfs)
for name in adapter scaler; do
  ref="$REPO_PREFIX/$name:$VERSION"
  log "buildah build --target $name -> $ref"
  "${BUILDAH[@]}" build --quiet --layers=false --pull=never \
    --build-arg BINARIES=prebuilt --build-arg VERSION="$VERSION" \
    --target "$name" --tag "$ref" -f Dockerfile . >/dev/null
  archive="$OUT/$name-$VERSION.oci.tar"
  rm -f "$archive"
  "${BUILDAH[@]}" push --quiet "$ref" "oci-archive:$archive:$ref"
  log "wrote $archive ($(du -h "$archive" | cut -f1))"
done
