#!/usr/bin/env bash
# Build, pin and cache the real binaries the integration tests run:
#   kube-apiserver, kube-controller-manager,
#   kube-scheduler, kubectl               (k8s.io/kubernetes/cmd/...)
#   etcd                                  (go.etcd.io/etcd/server/v3)
#   kwok (+ upstream Stage configs)       (sigs.k8s.io/kwok/cmd/kwok)
#   llm-d-inference-sim (vLLM simulator)  (github.com/llm-d/llm-d-inference-sim)
#   prometheus, promtool                  (github.com/prometheus/prometheus/cmd/...)
#   helm                                  (helm.sh/helm/v3/cmd/helm)
#   keda, keda-adapter (+ upstream CRDs)  (github.com/kedacore/keda/v2/cmd/{operator,adapter})
#
# Usage: hack/build-binaries.sh [component ...]     (default: all of the above)
#
# Versions come from hack/versions.env. Each binary lands in
#   ${INFERSCALE_CACHE:-$HOME/.cache/inferscale}/bin/<component>-<version>/<component>
# next to a BUILDINFO file (version, module, go version, build seconds, the
# binary's own --version output) and the generated wrapper go.mod/go.sum. kwok's
# dir also gets stages/ (upstream Stage YAMLs; kwok needs them via --config).
# A warm run only stats those files and exits without invoking go (~20 ms).
# hack/bin-path.sh <component> prints the cached path; hack/versions.env also
# defines *_BIN variables with the same paths.
#
# Everything is built from source fetched through the Go module proxy (the only
# source of Go code reachable here; no GitHub release downloads):
#   * Each component is built inside a generated throw-away "wrapper" module
#     that requires the upstream module at the pinned version. That is needed
#     because upstream go.mod files carry replace directives (k8s' ./staging
#     paths, etcd's ../api etc.) which `go install pkg@version` refuses.
#   * k8s.io/kubernetes replaces every k8s.io/<staging> module with a local
#     ./staging path that is not part of its module zip. The wrapper therefore
#     replaces each staging module with the published k8s.io/<staging>
#     v0.<minor>.<patch>; the list is generated from Kubernetes' own go.mod (as
#     fetched by `go mod download -json`), never hand-copied.
#   * The wrapper copies the upstream `go` and `godebug` lines so the binaries
#     get the same GODEBUG defaults as upstream builds.
#   * Binaries are static (CGO_ENABLED=0, as upstream releases are), built with
#     -trimpath -ldflags "-s -w" plus upstream's version -X flags, under
#     `nice -n 19`, one component at a time (2-core machines; go build already
#     uses both cores). Progress lines are printed every
#     INFERSCALE_PROGRESS_INTERVAL seconds (default 30) so CI logs show life.
#   * llm-d-inference-sim: see build_tokenizers_lib below. The module proxy reachable from
#     this workplace answers 403 "not available" for it (and for its dependency
#     github.com/llm-d/llm-d-kv-cache), so it is probed, recorded as UNAVAILABLE
#     in its cache dir and skipped (re-probed after 24h or with
#     INFERSCALE_RETRY_UNAVAILABLE=1). The run still exits 0 unless
#     INFERSCALE_REQUIRE_ALL=1.
#
# Environment knobs:
#   INFERSCALE_CACHE              cache root (default ~/.cache/inferscale)
#   INFERSCALE_FORCE_REBUILD=1    rebuild even if cached
#   INFERSCALE_REQUIRE_ALL=1      exit non-zero if any component was skipped
#   INFERSCALE_RETRY_UNAVAILABLE=1  re-probe components marked unavailable
#   INFERSCALE_PROGRESS_INTERVAL  seconds between progress lines (default 30)
#   INFERSCALE_KEEP_WORK=1        keep the wrapper module dirs (for debugging)
#   GOMODCACHE / GOCACHE          shared Go caches (default: go env defaults)
#   GOTOOLCHAIN                   e.g. go1.27.3 if a module needs a newer Go;
#                                 the proxy serves toolchains (default: auto)
set -euo pipefail
{ # Parse the whole script before running it: safe if it is edited mid-run.

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.env
source "$HACK_DIR/versions.env"

CACHE_DIR="${INFERSCALE_CACHE:-$HOME/.cache/inferscale}"
BIN_ROOT="$CACHE_DIR/bin"
ALL_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok llm-d-inference-sim
  promtool prometheus helm keda keda-adapter)
PROGRESS_INTERVAL="${INFERSCALE_PROGRESS_INTERVAL:-30}"

log() { printf '[build-binaries %(%H:%M:%S)T] %s\n' -1 "$*"; }
warn() { log "WARNING: $*" >&2; }
die() { log "ERROR: $*" >&2; exit 1; }

component_version() {
  case "$1" in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl) echo "$KUBERNETES_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    kwok) echo "$KWOK_VERSION" ;;
    llm-d-inference-sim) echo "$LLMD_SIM_VERSION" ;;
    promtool | prometheus) echo "$PROMETHEUS_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    keda | keda-adapter) echo "$KEDA_VERSION" ;;
    *) return 1 ;;
  esac
}

component_module() {
  case "$1" in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl) echo k8s.io/kubernetes ;;
    etcd) echo go.etcd.io/etcd/server/v3 ;;
    kwok) echo sigs.k8s.io/kwok ;;
    llm-d-inference-sim) echo github.com/llm-d/llm-d-inference-sim ;;
    promtool | prometheus) echo github.com/prometheus/prometheus ;;
    helm) echo helm.sh/helm/v3 ;;
    keda | keda-adapter) echo github.com/kedacore/keda/v2 ;;
  esac
}

component_package() {
  case "$1" in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl) echo "k8s.io/kubernetes/cmd/$1" ;;
    # etcd 3.6: the server module's root package is `package main` (main.go
    # calling etcdmain.Main); there is no separate cmd/ module on the proxy.
    etcd) echo go.etcd.io/etcd/server/v3 ;;
    kwok) echo sigs.k8s.io/kwok/cmd/kwok ;;
    llm-d-inference-sim) echo github.com/llm-d/llm-d-inference-sim/cmd/llm-d-inference-sim ;;
    promtool | prometheus) echo "github.com/prometheus/prometheus/cmd/$1" ;;
    helm) echo helm.sh/helm/v3/cmd/helm ;;
    # Upstream's Makefile builds cmd/operator as bin/keda and cmd/adapter as bin/keda-adapter.
    keda) echo github.com/kedacore/keda/v2/cmd/operator ;;
    keda-adapter) echo github.com/kedacore/keda/v2/cmd/adapter ;;
  esac
}

# Prints the args that make the binary print its version.
version_args() {
  case "$1" in
    kubectl) echo "version --client" ;;
    llm-d-inference-sim) echo "--help" ;;
    helm) echo "version" ;;
    # Neither KEDA binary has a version flag; pflag's --help exits 0.
    keda | keda-adapter) echo "--help" ;;
    *) echo "--version" ;;
  esac
}

is_cached() { # component version
  [[ -x "$BIN_ROOT/$1-$2/$1" && -f "$BIN_ROOT/$1-$2/BUILDINFO" ]]
}

# A component recorded as unavailable (module not served) within the last 24h.
is_marked_unavailable() { # component version
  local marker="$BIN_ROOT/$1-$2/UNAVAILABLE"
  [[ "${INFERSCALE_RETRY_UNAVAILABLE:-0}" != 1 && -f "$marker" ]] || return 1
  local now mtime
  printf -v now '%(%s)T' -1
  mtime=$(stat -c %Y "$marker")
  ((now - mtime < 86400))
}

# ---------------------------------------------------------------------------
# Fast path: decide what needs building without touching go or the network.
# ---------------------------------------------------------------------------
if (($# == 0)); then set -- "${ALL_COMPONENTS[@]}"; fi
REQUESTED=("$@")
TODO=()
SKIPPED=()
for comp in "${REQUESTED[@]}"; do
  ver=$(component_version "$comp") || die "unknown component '$comp' (known: ${ALL_COMPONENTS[*]})"
  if [[ "${INFERSCALE_FORCE_REBUILD:-0}" != 1 ]] && is_cached "$comp" "$ver"; then
    log "cached   $comp $ver -> $BIN_ROOT/$comp-$ver/$comp"
  elif is_marked_unavailable "$comp" "$ver"; then
    warn "skipped  $comp $ver: $(head -n1 "$BIN_ROOT/$comp-$ver/UNAVAILABLE") (INFERSCALE_RETRY_UNAVAILABLE=1 to re-probe)"
    SKIPPED+=("$comp")
  else
    TODO+=("$comp")
  fi
done

finish() {
  if ((${#SKIPPED[@]})); then
    warn "not available: ${SKIPPED[*]}"
    if [[ "${INFERSCALE_REQUIRE_ALL:-0}" == 1 ]]; then exit 1; fi
  fi
  exit 0
}
if ((${#TODO[@]} == 0)); then finish; fi

# ---------------------------------------------------------------------------
# Slow path: build.
# ---------------------------------------------------------------------------
command -v go >/dev/null || die "go is not installed (need Go >= 1.26)"
mkdir -p "$BIN_ROOT" "$CACHE_DIR/tmp"

# Serialise concurrent runs (e.g. two CI steps sharing a cache).
if command -v flock >/dev/null; then
  exec 9>"$CACHE_DIR/.build.lock"
  if ! flock -n 9; then
    log "another build-binaries run holds $CACHE_DIR/.build.lock; waiting"
    flock 9
    # The other run may have built what we wanted.
    still=()
    for comp in "${TODO[@]}"; do
      if [[ "${INFERSCALE_FORCE_REBUILD:-0}" != 1 ]] && is_cached "$comp" "$(component_version "$comp")"; then
        log "cached   $comp (built by the other run)"
      else
        still+=("$comp")
      fi
    done
    TODO=("${still[@]}")
    if ((${#TODO[@]} == 0)); then finish; fi
  fi
fi

GOMODCACHE="${GOMODCACHE:-$(go env GOMODCACHE)}"
export GOMODCACHE
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod"
export CGO_ENABLED="${CGO_ENABLED:-0}"
GO_VERSION="$(go env GOVERSION)"
log "go: $GO_VERSION ($(command -v go)), GOMODCACHE=$GOMODCACHE, GOCACHE=$(go env GOCACHE)"
log "to build: ${TODO[*]}"

WORK_DIRS=()
BG_PID=""
cleanup() {
  if [[ -n "$BG_PID" ]]; then kill "$BG_PID" 2>/dev/null || true; fi
  if [[ "${INFERSCALE_KEEP_WORK:-0}" != 1 ]]; then
    local d
    for d in "${WORK_DIRS[@]}"; do rm -rf "$d"; done
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs "$@" with output to $logf, printing a progress line every
# $PROGRESS_INTERVAL seconds (packages compiled = `go build -v` lines).
run_with_progress() { # label logfile cmd...
  local label=$1 logf=$2
  shift 2
  local start=$SECONDS next=$((SECONDS + PROGRESS_INTERVAL)) rc=0 pkgs dls
  "$@" >"$logf" 2>&1 &
  BG_PID=$!
  while kill -0 "$BG_PID" 2>/dev/null; do
    sleep 1
    if ((SECONDS >= next)); then
      pkgs=$(grep -vc '^go: ' "$logf" || true)
      dls=$(grep -c '^go: downloading ' "$logf" || true)
      log "  ... still building $label: $pkgs packages compiled, $dls modules downloaded, $((SECONDS - start))s elapsed"
      next=$((SECONDS + PROGRESS_INTERVAL))
    fi
  done
  wait "$BG_PID" || rc=$?
  BG_PID=""
  return "$rc"
}

# `go mod download -json module@version`; sets MOD_GOMOD / MOD_INFO / MOD_DIR.
# Returns 1 (with the proxy's error in MOD_ERROR) if the module is not served.
fetch_module() { # module version
  local json
  json=$(go mod download -json "$1@$2" 2>&1) || true
  MOD_ERROR=$(sed -n 's/^[[:space:]]*"Error": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
  MOD_GOMOD=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' <<<"$json")
  MOD_INFO=$(sed -n 's/^[[:space:]]*"Info": "\(.*\)",$/\1/p' <<<"$json")
  MOD_DIR=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")
  if [[ -n "$MOD_ERROR" || -z "$MOD_GOMOD" ]]; then
    [[ -n "$MOD_ERROR" ]] || MOD_ERROR=$json
    return 1
  fi
}

# Writes $work/go.mod requiring module@version, with the upstream go/godebug lines.
write_wrapper_gomod() { # work component module version upstream_gomod
  local work=$1 comp=$2 module=$3 version=$4 upstream=$5
  {
    echo "// Generated by hack/build-binaries.sh to build $comp from $module@$version."
    echo "module inferscale.invalid/build/$comp"
    echo
    grep -E '^go [0-9]' "$upstream" || echo "go 1.26"
    grep -E '^godebug ' "$upstream" || true
    echo
    echo "require $module $version"
  } >"$work/go.mod"
}

# k8s.io/kubernetes: replace each ./staging module with its published version.
add_kube_staging_replaces() { # work upstream_gomod
  local work=$1 upstream=$2 staging_version mods
  staging_version="v0.${KUBERNETES_VERSION#v1.}"
  # Lines look like "\tk8s.io/api => ./staging/src/k8s.io/api" (inside a
  # replace block) or "replace k8s.io/api => ./staging/..." (single line).
  mods=$(awk '{ for (i = 1; i < NF; i++) if ($(i+1) == "=>" && $(i+2) ~ /^\.\/staging\//) print $i }' "$upstream" | sort -u)
  [[ -n "$mods" ]] || die "found no ./staging replaces in $upstream"
  {
    echo
    echo "// k8s.io/kubernetes' ./staging replaces, mapped to the published modules."
    echo "replace ("
    local m
    for m in $mods; do printf '\t%s => %s %s\n' "$m" "$m" "$staging_version"; done
    echo ")"
  } >>"$work/go.mod"
  log "  $(wc -w <<<"$mods") staging modules replaced with $staging_version"
}

# Repeats the upstream go.mod's `replace` directives whose target is another module version
# (not a local ./ or ../ path, which is not in the module zip).
add_upstream_module_replaces() { # work upstream_gomod
  local work=$1 upstream=$2 lines
  lines=$(awk '
    /^replace \($/ { block = 1; next }
    block && /^\)/ { block = 0; next }
    { line = $0; sub(/^replace[[:space:]]+/, "", line) }
    (block || $1 == "replace") && line ~ /=>/ {
      split(line, side, "=>"); target = side[2]; gsub(/^[[:space:]]+|[[:space:]]+$/, "", target)
      if (target !~ /^\.\.?\//) { gsub(/^[[:space:]]+/, "", line); print line }
    }' "$upstream")
  [[ -n "$lines" ]] || return 0
  {
    echo
    echo "// The upstream module's own replaces (a dependency's go.mod replaces are ignored)."
    while IFS= read -r line; do echo "replace $line"; done <<<"$lines"
  } >>"$work/go.mod"
  log "  $(wc -l <<<"$lines") upstream replace(s) repeated"
}

kube_ldflags() { # info_file
  local minor build_date
  minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  build_date=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$1")
  local flags="" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=${build_date:-1970-01-01T00:00:00Z}"
  done
  echo "$flags"
}

# llm-d-inference-sim. Its main package is cmd/llm-d-inference-sim.
# Tokenizer: older releases link the HuggingFace tokenizers Rust library
# through the cgo binding github.com/daulet/tokenizers, whose Makefile
# downloads a prebuilt libtokenizers.a from GitHub releases (impossible here).
# If that binding is in the build graph, we build libtokenizers.a ourselves
# from the Rust sources shipped inside the daulet/tokenizers Go module zip
# (Cargo.toml + src/lib.rs), with cargo pulling the `tokenizers` crate from
# crates.io, and point CGO_LDFLAGS at it. daulet/tokenizers >= ~1.23 depends on
# a git fork of tiktoken-rs (GitHub, unreachable); we swap it for the crates.io
# release below (verified: daulet/tokenizers v1.24.0 builds with tiktoken-rs
# 0.9.1 in ~3 min on 2 cores, and a cgo test program links and encodes text).
# Newer simulator releases tokenize through an external vLLM "render" service
# instead and build with CGO_ENABLED=0. Either way, started without
# --render-url and with a --model that is not a real hub model, the simulator
# uses its built-in regex/FNV "simulated" tokenizer and downloads nothing.
TIKTOKEN_RS_CRATES_IO_VERSION="${TIKTOKEN_RS_CRATES_IO_VERSION:-=0.9.1}"
build_tokenizers_lib() { # work -> sets SIM_CGO_LDFLAGS
  local work=$1 tok_ver src
  tok_ver=$(cd "$work" && go list -m -f '{{.Version}}' github.com/daulet/tokenizers)
  fetch_module github.com/daulet/tokenizers "$tok_ver" || die "cannot fetch daulet/tokenizers $tok_ver: $MOD_ERROR"
  local libdir="$CACHE_DIR/lib/tokenizers-$tok_ver"
  if [[ ! -f "$libdir/libtokenizers.a" ]]; then
    command -v cargo >/dev/null || die "cargo is needed to build libtokenizers.a for daulet/tokenizers"
    src="$work/tokenizers-src"
    cp -r "$MOD_DIR" "$src"
    chmod -R u+w "$src"
    if grep -qE '^tiktoken-rs *=.*git *=' "$src/Cargo.toml"; then
      sed -i -E "s|^tiktoken-rs *=.*|tiktoken-rs = \"$TIKTOKEN_RS_CRATES_IO_VERSION\"|" "$src/Cargo.toml"
      rm -f "$src/Cargo.lock" # pins the git source
      log "  daulet/tokenizers: tiktoken-rs git fork -> crates.io $TIKTOKEN_RS_CRATES_IO_VERSION"
    fi
    if grep -qE 'git *= *"' "$src/Cargo.toml"; then
      die "daulet/tokenizers $tok_ver Cargo.toml still has git dependencies (unreachable): $(grep -E 'git *=' "$src/Cargo.toml")"
    fi
    log "  building libtokenizers.a (daulet/tokenizers $tok_ver) with cargo"
    if ! run_with_progress "libtokenizers.a" "$work/cargo.log" \
      nice -n 19 cargo build --release --manifest-path "$src/Cargo.toml" --target-dir "$CACHE_DIR/cargo-target"; then
      tail -n 40 "$work/cargo.log" >&2
      die "cargo build of libtokenizers.a failed"
    fi
    mkdir -p "$libdir"
    cp "$CACHE_DIR/cargo-target/release/libtokenizers.a" "$libdir/"
  fi
  SIM_CGO_LDFLAGS="-L$libdir"
}

# Builds one component; returns 0 built, 3 unavailable (skipped), 1 failed.
build_component() { # component
  local comp=$1 ver module pkg work start ldflags="-s -w"
  ver=$(component_version "$comp")
  module=$(component_module "$comp")
  pkg=$(component_package "$comp")
  start=$SECONDS
  log "=== $comp $ver ($pkg)"

  if ! fetch_module "$module" "$ver"; then
    if [[ "$MOD_ERROR" == *"403"* || "$MOD_ERROR" == *"404"* || "$MOD_ERROR" == *"410"* || "$MOD_ERROR" == *"not available"* || "$MOD_ERROR" == *"not found"* || "$MOD_ERROR" == *"unknown revision"* ]]; then
      mkdir -p "$BIN_ROOT/$comp-$ver"
      printf 'module %s@%s is not served by the Go module proxy: %s\n' "$module" "$ver" "$MOD_ERROR" >"$BIN_ROOT/$comp-$ver/UNAVAILABLE"
      warn "skipped  $comp $ver: $module@$ver is not served by the Go module proxy ($MOD_ERROR)"
      return 3
    fi
    log "ERROR: go mod download $module@$ver failed: $MOD_ERROR" >&2
    return 1
  fi
  rm -f "$BIN_ROOT/$comp-$ver/UNAVAILABLE"

  work=$(mktemp -d "$CACHE_DIR/tmp/$comp-$ver.XXXXXX")
  WORK_DIRS+=("$work")
  write_wrapper_gomod "$work" "$comp" "$module" "$ver" "$MOD_GOMOD"

  local cgo="$CGO_ENABLED" cgo_ldflags="${CGO_LDFLAGS:-}"
  case "$comp" in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl)
      add_kube_staging_replaces "$work" "$MOD_GOMOD"
      ldflags+=" $(kube_ldflags "$MOD_INFO")"
      ;;
    etcd)
      # Version is a constant in go.etcd.io/etcd/api/v3/version; no git SHA here.
      ldflags+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$ver"
      ;;
    kwok)
      ldflags+=" -X sigs.k8s.io/kwok/pkg/consts.Version=$ver"
      ;;
    promtool | prometheus)
      # Upstream's .promu.yml flags. The module v0.3XX.Y is Prometheus 3.XX.Y; without these
      # `--version` prints no version at all. (No `builtinassets` tag: the module zip has no
      # compiled web UI; the HTTP API, which is all the tests use, does not need it.)
      local promver=${ver#v0.}
      promver="${promver%%.*}"
      promver="${promver:0:1}.${promver:1}.${ver##*.}"
      promver=$(sed -E 's/\.0+([0-9])/.\1/g' <<<"$promver")
      local pv=github.com/prometheus/common/version
      ldflags+=" -X $pv.Version=$promver -X $pv.Revision=module-$ver -X $pv.Branch=module"
      ldflags+=" -X $pv.BuildUser=inferscale -X $pv.BuildDate=$(sed -n 's/.*"Time":"\([0-9-]*\)T.*/\1/p' "$MOD_INFO" | tr -d -)"
      ;;
    helm)
      # Upstream's Makefile: the version, and the Kubernetes version `helm template` and
      # `helm lint` assume, taken from the k8s.io/client-go it is built with.
      local k8s_minor
      k8s_minor=$(sed -nE 's/^[[:space:]]*k8s.io\/client-go v0\.([0-9]+)\..*/\1/p' "$MOD_GOMOD")
      ldflags+=" -X helm.sh/helm/v3/internal/version.version=$ver -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
      local pkg_
      for pkg_ in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        ldflags+=" -X $pkg_.k8sVersionMajor=1 -X $pkg_.k8sVersionMinor=${k8s_minor:-20}"
      done
      ;;
    keda | keda-adapter)
      # KEDA's go.mod carries module-to-module replaces (nexus-proto-annotations) that only a
      # main module's go.mod applies: repeat them in the wrapper. Version flags as its Makefile.
      add_upstream_module_replaces "$work" "$MOD_GOMOD"
      ldflags+=" -X github.com/kedacore/keda/v2/version.Version=${ver#v}"
      ldflags+=" -X github.com/kedacore/keda/v2/version.GitCommit=module-$ver"
      ;;
    llm-d-inference-sim)
      # Resolve the graph first to see whether the cgo tokenizers binding is in it.
      (cd "$work" && go mod download "$module" >/dev/null 2>&1 && go list -deps "$pkg" 2>/dev/null) >"$work/deps.txt" || true
      if grep -q '^github.com/daulet/tokenizers$' "$work/deps.txt"; then
        build_tokenizers_lib "$work"
        cgo=1
        cgo_ldflags="$SIM_CGO_LDFLAGS${cgo_ldflags:+ $cgo_ldflags}"
      fi
      ;;
  esac

  local out="$work/out/$comp"
  log "  go build (nice -n 19, CGO_ENABLED=$cgo) in wrapper module $work"
  if ! (cd "$work" && export CGO_ENABLED="$cgo" CGO_LDFLAGS="$cgo_ldflags" &&
    run_with_progress "$comp" "$work/build.log" \
      nice -n 19 go build -v -trimpath -ldflags "$ldflags" -o "$out" "$pkg"); then
    log "ERROR: go build of $comp failed after $((SECONDS - start))s; last lines of $work/build.log:" >&2
    tail -n 40 "$work/build.log" >&2
    INFERSCALE_KEEP_WORK=1 # keep the wrapper module for inspection
    return 1
  fi
  local secs=$((SECONDS - start))

  local version_out
  # shellcheck disable=SC2046
  if ! version_out=$("$out" $(version_args "$comp") 2>&1); then
    log "ERROR: built $comp does not run: $version_out" >&2
    return 1
  fi
  version_out=$(head -n 3 <<<"$version_out")

  local dest="$BIN_ROOT/$comp-$ver" tmp="$BIN_ROOT/.$comp-$ver.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  mv "$out" "$tmp/$comp"
  {
    echo "component=$comp"
    echo "version=$ver"
    echo "module=$module@$ver"
    echo "package=$pkg"
    echo "go_version=$GO_VERSION"
    echo "cgo_enabled=$cgo"
    echo "ldflags=$ldflags"
    echo "build_seconds=$secs"
    printf 'built_at=%(%Y-%m-%dT%H:%M:%SZ)T\n' -1
    echo "host_cpus=$(nproc 2>/dev/null || echo '?')"
    echo "size_bytes=$(stat -c %s "$tmp/$comp")"
    echo "version_output=$(tr '\n' ' ' <<<"$version_out")"
  } >"$tmp/BUILDINFO"
  if [[ "$comp" == kwok && -d "$MOD_DIR/kustomize/stage" ]]; then
    # kwok does nothing without Stage configs; ship upstream's (node/fast,
    # node/heartbeat*, pod/fast, pod/general, ...) for `kwok --config <file>`.
    mkdir -p "$tmp/stages"
    (cd "$MOD_DIR/kustomize/stage" &&
      find . -name '*.yaml' ! -name kustomization.yaml ! -path '*/testdata/*' -exec cp --parents {} "$tmp/stages/" \;)
  fi
  if [[ "$comp" == keda && -d "$MOD_DIR/config/crd/bases" ]]; then
    # The operator watches ScaledObjects etc.: ship upstream's CRDs to apply to a test cluster.
    mkdir -p "$tmp/crds"
    cp "$MOD_DIR"/config/crd/bases/*.yaml "$tmp/crds/"
  fi
  cp "$work/go.mod" "$tmp/wrapper.go.mod"
  [[ -f "$work/go.sum" ]] && cp "$work/go.sum" "$tmp/wrapper.go.sum"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  log "built    $comp $ver in ${secs}s -> $dest/$comp ($(head -n1 <<<"$version_out"))"
}

FAILED=()
TOTAL_START=$SECONDS
for comp in "${TODO[@]}"; do
  rc=0
  build_component "$comp" || rc=$?
  case $rc in
    0) ;;
    3) SKIPPED+=("$comp") ;;
    *) FAILED+=("$comp") ;;
  esac
done
log "done in $((SECONDS - TOTAL_START))s"
if ((${#FAILED[@]})); then die "failed: ${FAILED[*]}"; fi
finish
exit
}
