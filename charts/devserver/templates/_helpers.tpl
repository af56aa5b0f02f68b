{{/*
Names are fixed, not derived from the release: the operator and the code refer to them
(the ClusterRoles users are bound to, the bastion's ServiceAccount, the leader-election Lease),
and the CRDs make devserver one release per cluster anyway.
*/}}

{{- define "devserver.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/part-of: devserver
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{- define "devserver.operatorSelector" -}}
app.kubernetes.io/name: devserver-operator
{{- end }}

{{- define "devserver.bastionSelector" -}}
app.kubernetes.io/name: devserver-bastion
{{- end }}

{{/* An image reference: registry/repository, then @digest when given, else :tag (or the app version). */}}
{{- define "devserver.image" -}}
{{- $registry := .image.registry | default .root.Values.imageRegistry -}}
{{- $ref := .image.repository -}}
{{- if $registry }}{{ $ref = printf "%s/%s" $registry .image.repository }}{{ end -}}
{{- if .image.digest -}}
{{ $ref }}@{{ .image.digest }}
{{- else -}}
{{ $ref }}:{{ .image.tag | default .root.Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* The restricted securityContext of a container (Pod Security "restricted"). */}}
{{- define "devserver.restrictedContainer" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* --user-quota: name=value pairs in a fixed order. */}}
{{- define "devserver.userQuota" -}}
{{- $parts := list -}}
{{- range $key := list "gpus" "cpu" "memory" "storage" "devServers" -}}
{{- if hasKey $ $key -}}{{- $parts = append $parts (printf "%s=%v" $key (index $ $key)) -}}{{- end -}}
{{- end -}}
{{ join "," $parts }}
{{- end }}
