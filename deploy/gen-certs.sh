#!/usr/bin/env bash
# Usage: deploy/gen-certs.sh [--namespace NS] [--service NAME] [--out DIR] [--days N]
#                            [--cluster-domain DOMAIN] [--external-metrics]
#
# For clusters without cert-manager: makes a private CA and a serving certificate for the
# adapter's Service, and writes a kustomize overlay that deploys the adapter with them:
#
#   DIR/kustomization.yaml        the overlay to apply (kubectl apply -k DIR)
#   DIR/secret.yaml               Secret inferscale-adapter-serving-cert: tls.crt, tls.key, ca.crt
#   DIR/apiservice-cabundle.yaml  JSON patch setting spec.caBundle (the CA) on every APIService
#   DIR/adapter/kustomization.yaml  the base (+ components), moved to NS / renamed to NAME
#   DIR/ca.crt, DIR/tls.crt       the certificates, to inspect; the CA key is never written
#
# The CA key is thrown away once it has signed, so nothing can sign another certificate the
# APIServices would trust. To renew, run this again and apply: it makes a new CA and a new
# certificate, and the apply replaces caBundle and the Secret together.
#
# Options (defaults in brackets):
#   --namespace NS          namespace of the adapter [inferscale-system]
#   --service NAME          name of its Service, the certificate's DNS names [inferscale-adapter]
#   --out DIR               where to write [deploy/overlays/generated, gitignored]
#   --days N                validity of the CA and the certificate [365]
#   --cluster-domain D      for the <svc>.<ns>.svc.<D> name [cluster.local]
#   --external-metrics      also register external.metrics.k8s.io (components/external-metrics;
#                           read its kustomization.yaml first: KEDA may own that APIService)
#
# Needs openssl (Debian/Ubuntu: apt-get install openssl) and base64. No network access.
set -euo pipefail

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# The names the base uses; anything else is rewritten by the generated overlay.
BASE_NAMESPACE=inferscale-system
BASE_SERVICE=inferscale-adapter
SECRET_NAME=inferscale-adapter-serving-cert

namespace=$BASE_NAMESPACE
service=$BASE_SERVICE
out="$DEPLOY_DIR/overlays/generated"
days=365
cluster_domain=cluster.local
external_metrics=false

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}
die() {
  echo "gen-certs.sh: $*" >&2
  exit 2
}

while (($# > 0)); do
  case "$1" in
    --namespace=* | --service=* | --out=* | --days=* | --cluster-domain=*)
      set -- "${1%%=*}" "${1#*=}" "${@:2}"
      continue
      ;;
    --namespace | --service | --out | --days | --cluster-domain)
      (($# >= 2)) || die "$1 needs a value"
      case "$1" in
        --namespace) namespace=$2 ;;
        --service) service=$2 ;;
        --out) out=$2 ;;
        --days) days=$2 ;;
        --cluster-domain) cluster_domain=$2 ;;
      esac
      shift 2
      ;;
    --external-metrics)
      external_metrics=true
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die "unknown argument '$1' (--help lists the options)" ;;
  esac
done

# Report every bad input at once.
problems=()
dns_label='^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'
if [[ ! $namespace =~ $dns_label || ${#namespace} -gt 63 ]]; then
  problems+=("--namespace '$namespace' is not a DNS label (lower case, digits, '-', at most 63)")
fi
if [[ ! $service =~ $dns_label || ${#service} -gt 63 ]]; then
  problems+=("--service '$service' is not a DNS label (lower case, digits, '-', at most 63)")
fi
if [[ ! $days =~ ^[1-9][0-9]*$ ]]; then
  problems+=("--days '$days' is not a positive whole number")
fi
if [[ ! $cluster_domain =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ ]]; then
  problems+=("--cluster-domain '$cluster_domain' is not a DNS name")
fi
if ! command -v openssl >/dev/null; then
  problems+=("openssl not found (Debian/Ubuntu: apt-get install openssl)")
fi
if ! command -v base64 >/dev/null; then
  problems+=("base64 not found (coreutils)")
fi
if ((${#problems[@]} > 0)); then
  printf 'gen-certs.sh: %s\n' "${problems[@]}" >&2
  exit 2
fi

# Relative path from directory $1 to directory $2 (both absolute and physical): kustomize
# resolves resources relative to the kustomization, and a relative path survives moving the
# checkout.
relpath() {
  local from=$1 to=$2 up=""
  while [[ $from != / && $to != "$from" && $to != "$from"/* ]]; do
    from=$(dirname "$from")
    up="../$up"
  done
  local rest
  if [[ $from == / ]]; then rest=${to#/}; else rest=${to#"$from"}; rest=${rest#/}; fi
  rest="${up}${rest}"
  printf '%s\n' "${rest%/}"
}

b64() { base64 | tr -d '\n'; }
# Runs a chatty command, showing its stderr only if it fails.
quiet() { "$@" 2>"$work/stderr" || { cat "$work/stderr" >&2; return 1; }; }

umask 077
mkdir -p "$out/adapter"
out_abs="$(cd "$out" && pwd -P)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

svc_host="$service.$namespace.svc"
dns_names=("$svc_host" "$svc_host.$cluster_domain")

# ECDSA P-256 keys, the private key in PKCS#8 PEM ("BEGIN PRIVATE KEY"), the encoding the
# cert-manager overlay asks for too. ecparam + pkcs8 rather than genpkey: works with LibreSSL.
openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca.key"
openssl ecparam -name prime256v1 -genkey -noout |
  openssl pkcs8 -topk8 -nocrypt -out "$work/tls.key"

san=$(printf 'DNS:%s,' "${dns_names[@]}")
cat >"$work/openssl.cnf" <<EOF
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[serving]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = ${san%,}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF

openssl req -x509 -new -sha256 -days "$days" -key "$work/ca.key" \
  -subj "/CN=$service-ca" -config "$work/openssl.cnf" -extensions ca -out "$work/ca.crt"
openssl req -new -sha256 -key "$work/tls.key" -subj "/CN=$svc_host" \
  -config "$work/openssl.cnf" -out "$work/tls.csr"
quiet openssl x509 -req -sha256 -days "$days" -in "$work/tls.csr" \
  -CA "$work/ca.crt" -CAkey "$work/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
  -extfile "$work/openssl.cnf" -extensions serving -out "$work/tls.crt"
openssl verify -CAfile "$work/ca.crt" "$work/tls.crt" >/dev/null

cp "$work/ca.crt" "$work/tls.crt" "$out_abs/"
chmod 644 "$out_abs/ca.crt" "$out_abs/tls.crt"

cat >"$out_abs/secret.yaml" <<EOF
# Generated by deploy/gen-certs.sh: holds the serving certificate's private key. Do not commit.
apiVersion: v1
kind: Secret
metadata:
  name: $SECRET_NAME
  namespace: $namespace
  labels:
    app.kubernetes.io/name: inferscale-adapter
    app.kubernetes.io/part-of: inferscale
type: kubernetes.io/tls
data:
  tls.crt: $(b64 <"$work/tls.crt")
  tls.key: $(b64 <"$work/tls.key")
  ca.crt: $(b64 <"$work/ca.crt")
EOF

cat >"$out_abs/apiservice-cabundle.yaml" <<EOF
# Generated by deploy/gen-certs.sh: the CA that signed the adapter's serving certificate.
- op: add
  path: /spec/caBundle
  value: $(b64 <"$work/ca.crt")
EOF

# The inner layer moves the base to the chosen namespace. It is a layer of its own because
# kustomize's namespace transformer runs after a kustomization's own patches, and it also moves
# the RoleBinding that must stay in kube-system (without updating its subject, which names
# another namespace than its own): the outer layer puts both right.
{
  echo "# Generated by deploy/gen-certs.sh."
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources:"
  echo "  - $(relpath "$out_abs/adapter" "$DEPLOY_DIR/base")"
  if [[ $external_metrics == true ]]; then
    echo "components:"
    echo "  - $(relpath "$out_abs/adapter" "$DEPLOY_DIR/components/external-metrics")"
  fi
  if [[ $namespace != "$BASE_NAMESPACE" ]]; then
    echo "namespace: $namespace"
  fi
  if [[ $service != "$BASE_SERVICE" ]]; then
    # kustomize follows the rename into the APIServices' spec.service.name.
    cat <<EOF
patches:
  - target:
      version: v1
      kind: Service
      name: $BASE_SERVICE
    patch: |-
      - op: replace
        path: /metadata/name
        value: $service
EOF
  fi
} >"$out_abs/adapter/kustomization.yaml"

cat >"$out_abs/kustomization.yaml" <<EOF
# Generated by deploy/gen-certs.sh for Service $svc_host, valid $days days from
# $(date -u +%Y-%m-%d). Apply with: kubectl apply -k <this directory>
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - adapter
  - secret.yaml
patches:
  - target:
      group: apiregistration.k8s.io
      kind: APIService
      labelSelector: app.kubernetes.io/name=inferscale-adapter
    path: apiservice-cabundle.yaml
  - target:
      group: rbac.authorization.k8s.io
      kind: RoleBinding
      name: inferscale-adapter-auth-reader
    patch: |-
      - op: replace
        path: /metadata/namespace
        value: kube-system
      - op: test
        path: /subjects/0/name
        value: inferscale-adapter
      - op: replace
        path: /subjects/0/namespace
        value: $namespace
EOF

echo "Wrote $out: CA and serving certificate for ${dns_names[*]}, valid $days days."
echo "Deploy (or, after a re-run, rotate) with:"
echo
echo "  kubectl apply -k $out"
