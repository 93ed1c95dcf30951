{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "buildkit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. Pod names (<fullname>-<ordinal>) and the
headless Service (<fullname>-headless) must stay DNS labels, hence 50.
*/}}
{{- define "buildkit.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The headless Service that gives each pod a stable DNS name. */}}
{{- define "buildkit.headlessName" -}}
{{- printf "%s-headless" (include "buildkit.fullname" .) }}
{{- end }}

{{- define "buildkit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "buildkit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "buildkit.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "buildkit.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: buildkitd
{{- end }}

{{/* A registry ca entry: a file of config.registryCASecret, or an absolute path. */}}
{{- define "buildkit.caPath" -}}
{{- if hasPrefix "/" . }}{{ . }}{{ else }}{{ printf "/etc/buildkit/registry-ca/%s" . }}{{ end }}
{{- end }}
