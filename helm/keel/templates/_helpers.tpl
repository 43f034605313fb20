{{/*
Names, labels and the values derived from several others, in one place.
*/}}

{{/* The chart name (nameOverride). */}}
{{- define "keel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The resource name prefix: `<release>-<chart>`, or the release name alone when
it already contains the chart name. Pod names add `-<ordinal>` and the
headless Service `-headless`, so it is kept to 40 characters: a member's DNS
label `<fullname>-<i>` and the Service names then stay within 63.
*/}}
{{- define "keel.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "keel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every resource carries. */}}
{{- define "keel.labels" -}}
helm.sh/chart: {{ include "keel.chart" . }}
{{ include "keel.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: keel
{{- end -}}

{{/* Labels that select the members (never change them after install). */}}
{{- define "keel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "keel.headlessName" -}}
{{- printf "%s-headless" (include "keel.fullname" .) -}}
{{- end -}}

{{/* `<fullname>-headless.<namespace>.svc.<clusterDomain>`: members are `<fullname>-<i>.` under it. */}}
{{- define "keel.headlessDomain" -}}
{{- printf "%s.%s.svc.%s" (include "keel.headlessName" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/* The DNS name of member `index` (0-based). Call with (list $ index). */}}
{{- define "keel.memberHost" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%d.%s" (include "keel.fullname" $root) (index . 1 | int) (include "keel.headlessDomain" $root) -}}
{{- end -}}

{{/* The client Service's DNS name. */}}
{{- define "keel.clientServiceHost" -}}
{{- printf "%s.%s.svc.%s" (include "keel.fullname" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{- define "keel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "keel.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "keel.tlsSecret" -}}
{{- default (printf "%s-tls" (include "keel.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{- define "keel.trustSecret" -}}
{{- default (printf "%s-trust" (include "keel.fullname" .)) .Values.trust.existingSecret -}}
{{- end -}}

{{- define "keel.testTokenSecret" -}}
{{- default (printf "%s-test-token" (include "keel.fullname" .)) .Values.tests.token.existingSecret -}}
{{- end -}}

{{/* `cluster.min_voters`: the value, else a majority of the replicas. */}}
{{- define "keel.minVoters" -}}
{{- if kindIs "invalid" .Values.cluster.minVoters -}}
{{- add (div (int .Values.replicas) 2) 1 -}}
{{- else -}}
{{- .Values.cluster.minVoters | int -}}
{{- end -}}
{{- end -}}

{{/* `ops.expose`: `all` whenever Prometheus scrapes from another pod. */}}
{{- define "keel.opsExpose" -}}
{{- if .Values.metrics.serviceMonitor.enabled -}}all{{- else -}}{{ .Values.ops.expose }}{{- end -}}
{{- end -}}

{{/*
Every DNS name the member certificate must carry: each member (peers refuse a
certificate that names no member, and clients verify the member they dial),
the client Service in its short and full forms, and tls.extraDnsNames. No
wildcards: keeld never matches a wildcard against a member's address.
*/}}
{{- define "keel.certificateDnsNames" -}}
{{- $fullname := include "keel.fullname" . -}}
{{- range $i := until (int .Values.replicas) }}
- {{ include "keel.memberHost" (list $ $i) }}
{{- end }}
- {{ $fullname }}
- {{ printf "%s.%s" $fullname .Release.Namespace }}
- {{ printf "%s.%s.svc" $fullname .Release.Namespace }}
- {{ include "keel.clientServiceHost" . }}
{{- range .Values.tls.extraDnsNames }}
- {{ . }}
{{- end }}
{{- end -}}

{{- define "keel.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | toString) -}}
{{- end -}}
