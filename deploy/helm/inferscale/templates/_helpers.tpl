{{/*
Names. With the release named "inferscale" every object has the name the kustomize base gives
it (inferscale-adapter, inferscale-metrics-reader, ...).
*/}}
{{- define "inferscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "inferscale.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "inferscale.adapter.fullname" -}}
{{- printf "%s-adapter" (include "inferscale.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "inferscale.controller.fullname" -}}
{{- printf "%s-scaler" (include "inferscale.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "inferscale.adapter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "inferscale.adapter.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "inferscale.tls.secretName" -}}
{{- default (printf "%s-serving-cert" (include "inferscale.adapter.fullname" .)) .Values.tls.secretName -}}
{{- end -}}

{{/* The adapter's Service DNS name, the name its serving certificate is for. */}}
{{- define "inferscale.adapter.serviceDNS" -}}
{{- printf "%s.%s.svc" (include "inferscale.adapter.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "inferscale.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/part-of: inferscale
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "inferscale.adapter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inferscale.adapter.fullname" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "inferscale.adapter.labels" -}}
{{ include "inferscale.labels" . }}
app.kubernetes.io/name: {{ include "inferscale.adapter.fullname" . }}
app.kubernetes.io/component: adapter
{{- end -}}

{{/* On the adapter's Service and pods: the ServiceMonitor/PodMonitor's jobLabel, so its
metrics have job="inferscale-adapter" (what alerts and dashboards select) whatever the
release is called. */}}
{{- define "inferscale.adapter.jobLabel" -}}
inferscale.dev/metrics-job: inferscale-adapter
{{- end -}}

{{- define "inferscale.controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inferscale.controller.fullname" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "inferscale.controller.labels" -}}
{{ include "inferscale.labels" . }}
app.kubernetes.io/name: {{ include "inferscale.controller.fullname" . }}
app.kubernetes.io/component: warm-pool-controller
{{- end -}}

{{/* repository:tag or repository@digest; the tag defaults to the chart's appVersion. */}}
{{- define "inferscale.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- $tag := default .appVersion .image.tag -}}
{{- if eq $tag "latest" -}}
{{- fail "image tag \"latest\" is refused: pin a version or a digest" -}}
{{- end -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
The CA bundle (PEM) every APIService carries, per TLS mode. In helm mode it is set by
serving-cert.yaml (which generates or reuses the certificate) through the shared
`$.Values.__generated` map, so the Secret and the APIServices agree.
*/}}
{{- define "inferscale.caBundle" -}}
{{- if eq .Values.tls.mode "helm" -}}
{{- (include "inferscale.generatedCerts" . | fromYaml).ca -}}
{{- else if eq .Values.tls.mode "existing-secret" -}}
{{- if .Values.tls.existingSecret.caBundle -}}
{{- .Values.tls.existingSecret.caBundle -}}
{{- else -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "inferscale.tls.secretName" .) -}}
{{- if and $secret (index ($secret.data | default dict) "ca.crt") -}}
{{- index $secret.data "ca.crt" | b64dec -}}
{{- else -}}
{{- fail (printf "tls.mode=existing-secret needs tls.existingSecret.caBundle, or a ca.crt in Secret %s/%s at install time" .Release.Namespace (include "inferscale.tls.secretName" .)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Helm-mode certificates as YAML {ca, crt, key} (PEM). Reuses the Secret already in the cluster
when it holds all three (so an upgrade changes neither the certificate nor caBundle), else
makes a new CA and a certificate it signs. Memoised per render: both the Secret and the
APIServices call this and must see the same certificate.
*/}}
{{- define "inferscale.generatedCerts" -}}
{{- $cache := .Values.__generatedCerts | default dict -}}
{{- if not (hasKey $cache "ca") -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "inferscale.tls.secretName" .) -}}
{{- $data := dict -}}
{{- if $secret -}}{{- $data = $secret.data | default dict -}}{{- end -}}
{{- if and (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") -}}
{{- $_ := set $cache "ca" (index $data "ca.crt" | b64dec) -}}
{{- $_ := set $cache "crt" (index $data "tls.crt" | b64dec) -}}
{{- $_ := set $cache "key" (index $data "tls.key" | b64dec) -}}
{{- else -}}
{{- $days := int .Values.tls.helm.validityDays -}}
{{- $ca := genCA (printf "%s-ca" (include "inferscale.adapter.fullname" .)) $days -}}
{{- $svc := include "inferscale.adapter.serviceDNS" . -}}
{{- $cert := genSignedCert $svc nil (list $svc (printf "%s.cluster.local" $svc)) $days $ca -}}
{{- $_ := set $cache "ca" $ca.Cert -}}
{{- $_ := set $cache "crt" $cert.Cert -}}
{{- $_ := set $cache "key" $cert.Key -}}
{{- end -}}
{{- $_ := set .Values "__generatedCerts" $cache -}}
{{- end -}}
{{- toYaml $cache -}}
{{- end -}}

{{/*
Relabelings of the fleet PodMonitor (operator syntax). tests/e2e/test_observability.py runs
these same rules in a real Prometheus.
*/}}
{{- define "inferscale.fleetRelabelings" -}}
# The pod's own path, if it annotates one (inferscale.dev/path, as the adapter reads it).
- sourceLabels: [__meta_kubernetes_pod_annotation_inferscale_dev_path]
  regex: (.+)
  targetLabel: __metrics_path__
# workload: the pod's controller (StatefulSet, a LeaderWorkerSet's StatefulSet, a CRD) ...
- sourceLabels: [__meta_kubernetes_pod_controller_name]
  regex: (.+)
  targetLabel: workload
# ... and for a Deployment's pods, whose controller is the ReplicaSet
# "<deployment>-<pod-template-hash>", the Deployment.
- sourceLabels: [__meta_kubernetes_pod_controller_kind, __meta_kubernetes_pod_controller_name]
  regex: ReplicaSet;(.+)-[a-z0-9]+
  targetLabel: workload
{{- end -}}

{{/*
Path of KEDA's client CA in the adapter's pod, empty without one; fails on values the adapter
would refuse at start (a client CA without the scaler, the scaler on the API's port).
*/}}
{{- define "inferscale.kedaScaler.clientCAFile" -}}
{{- $k := .Values.kedaScaler -}}
{{- $ca := $k.clientCA -}}
{{- if and $ca.secretName $ca.configMapName -}}
{{- fail "kedaScaler.clientCA: set secretName or configMapName, not both" -}}
{{- end -}}
{{- if and (or $ca.secretName $ca.configMapName) (not $k.enabled) -}}
{{- fail "kedaScaler.clientCA needs kedaScaler.enabled=true" -}}
{{- end -}}
{{- if and $k.enabled (eq (int $k.port) (int .Values.adapter.port)) -}}
{{- fail "kedaScaler.port must differ from adapter.port" -}}
{{- end -}}
{{- if and $k.enabled (or $ca.secretName $ca.configMapName) -}}
{{- required "kedaScaler.clientCA.key is required" $ca.key | printf "/var/run/keda-client-ca/%s" -}}
{{- end -}}
{{- end -}}
