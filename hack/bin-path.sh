#!/usr/bin/env bash
# Usage: hack/bin-path.sh <component>
# Prints the cached path of a binary built by hack/build-binaries.sh, e.g.
#   "$(hack/bin-path.sh kube-apiserver)" --version
# Exits 1 (with a hint on stderr) if it has not been built, 2 on bad usage.
# Components: etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok llm-d-inference-sim
#             prometheus promtool helm keda keda-adapter
set -euo pipefail
HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.env
source "$HACK_DIR/versions.env"

if (($# != 1)); then
  echo "usage: $0 <component>" >&2
  exit 2
fi
case "$1" in
  kube-apiserver | kube-controller-manager | kube-scheduler | kubectl) version=$KUBERNETES_VERSION ;;
  etcd) version=$ETCD_VERSION ;;
  kwok) version=$KWOK_VERSION ;;
  llm-d-inference-sim) version=$LLMD_SIM_VERSION ;;
  prometheus | promtool) version=$PROMETHEUS_VERSION ;;
  helm) version=$HELM_VERSION ;;
  keda | keda-adapter) version=$KEDA_VERSION ;;
  *)
    echo "$0: unknown component '$1'" >&2
    exit 2
    ;;
esac
path="$INFERSCALE_BIN_DIR/$1-$version/$1"
if [[ ! -x "$path" || ! -f "$INFERSCALE_BIN_DIR/$1-$version/BUILDINFO" ]]; then
  if [[ -f "$INFERSCALE_BIN_DIR/$1-$version/UNAVAILABLE" ]]; then
    echo "$0: $1 $version is unavailable: $(head -n1 "$INFERSCALE_BIN_DIR/$1-$version/UNAVAILABLE")" >&2
  else
    echo "$0: $1 $version is not built; run hack/build-binaries.sh $1" >&2
  fi
  exit 1
fi
echo "$path"
