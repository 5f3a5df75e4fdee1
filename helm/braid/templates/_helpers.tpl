{{/* The release's full name, at most 63 characters. */}}
{{- define "braid.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "braid.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Labels that select the agents' pods. */}}
{{- define "braid.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "braid.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "braid.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The health probe: gRPC health on the port, or braidctl over the Unix socket when TLS is on. */}}
{{- /* A probe of the agent's gRPC health: (list $ "liveness") asks only whether its data plane
turns, (list $ "") whether it takes new work (proto/braid/v1/health_services.h). A node whose
links are down or devices drained is alive but not ready: restarting it would destroy its VQPs. */}}
{{- define "braid.probe" -}}
{{- $root := index . 0 -}}
{{- $service := index . 1 -}}
{{- if $root.Values.tls.enabled -}}
exec:
  command: ["braidctl", "--agent", "unix:/run/braid/braidd.sock", "health"{{ if $service }}, "--{{ $service }}"{{ end }}]
{{- else -}}
grpc:
  port: {{ $root.Values.agent.grpcPort }}
  {{- if $service }}
  service: {{ $service }}
  {{- end }}
{{- end -}}
{{- end }}
