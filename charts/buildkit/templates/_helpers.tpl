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

{{/*
securityMode decides how buildkitd runs (README: "Security modes"). Every
mode but privileged runs the rootless image (uid 1000 inside rootlesskit),
hence its socket and cache paths below.
The image: image.tag, or the chart's BuildKit, -rootless unless privileged.
*/}}
{{- define "buildkit.image" -}}
{{- $tag := .Values.image.tag }}
{{- if not $tag }}
{{- $tag = ternary (printf "%s-rootless" .Chart.AppVersion) .Chart.AppVersion (ne .Values.securityMode "privileged") }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* buildkitd's unix socket; the probes' buildctl dials it. */}}
{{- define "buildkit.socket" -}}
{{- ternary "unix:///run/user/1000/buildkit/buildkitd.sock" "unix:///run/buildkit/buildkitd.sock" (ne .Values.securityMode "privileged") }}
{{- end }}

{{/* Where buildkitd keeps its cache (its --root default in each image). */}}
{{- define "buildkit.cacheDir" -}}
{{- ternary "/home/user/.local/share/buildkit" "/var/lib/buildkit" (ne .Values.securityMode "privileged") }}
{{- end }}
