{{/*
Checks that relate several values (values.schema.json checks each value on
its own). Each failure names the value, as keeld's config errors name the key.
*/}}
{{- define "keel.validate" -}}
{{- $v := .Values -}}
{{- $replicas := int $v.replicas -}}
{{- $ports := list (int $v.ports.client) (int $v.ports.peer) (int $v.ports.ops) -}}
{{- if ne (len ($ports | uniq)) 3 -}}
{{- fail (printf "ports: client (%d), peer (%d) and ops (%d) must differ" (int $v.ports.client) (int $v.ports.peer) (int $v.ports.ops)) -}}
{{- end -}}
{{- $minVoters := int (include "keel.minVoters" .) -}}
{{- if gt $minVoters $replicas -}}
{{- fail (printf "cluster.minVoters: %d is more than replicas (%d)" $minVoters $replicas) -}}
{{- end -}}
{{- if and (ge $replicas 3) (lt $minVoters 2) -}}
{{- fail (printf "cluster.minVoters: %d would let the leader remove voters down to itself; at least 2 with %d replicas" $minVoters $replicas) -}}
{{- end -}}
{{- $removeAfter := int64 $v.cluster.removeUnreachableAfterMs -}}
{{- if and (gt $replicas 1) (ne $removeAfter 0) (or (lt $removeAfter 3000) (lt $removeAfter (mul 3 (int64 $v.raft.electionTimeoutMaxMs)))) -}}
{{- fail (printf "cluster.removeUnreachableAfterMs: %d is too eager: at least 3000 and 3 x raft.electionTimeoutMaxMs (0 turns the rule off)" $removeAfter) -}}
{{- end -}}
{{- if lt (int64 $v.raft.electionTimeoutMinMs) (mul 3 (int64 $v.raft.heartbeatIntervalMs)) -}}
{{- fail "raft.electionTimeoutMinMs: must be at least 3 x raft.heartbeatIntervalMs" -}}
{{- end -}}
{{- if le (int64 $v.raft.electionTimeoutMaxMs) (int64 $v.raft.electionTimeoutMinMs) -}}
{{- fail "raft.electionTimeoutMaxMs: must be greater than raft.electionTimeoutMinMs" -}}
{{- end -}}
{{- if and $v.podDisruptionBudget.enabled (gt (int $v.replicas) 1) (ge (mul 2 (int $v.podDisruptionBudget.maxUnavailable)) $replicas) -}}
{{- fail (printf "podDisruptionBudget.maxUnavailable: %d of %d members down loses the quorum" (int $v.podDisruptionBudget.maxUnavailable) $replicas) -}}
{{- end -}}
{{- if and (hasPrefix "http://" $v.telemetry.otlpEndpoint) (not $v.telemetry.plaintextOffLoopback) -}}
{{- fail "telemetry.plaintextOffLoopback: an http:// collector off loopback needs telemetry.plaintextOffLoopback = true (or https://)" -}}
{{- end -}}
{{- if and $v.redis.tls.existingSecret (not (or (hasPrefix "rediss://" $v.redis.url) $v.redis.existingSecret $v.redis.clusterUrls)) -}}
{{- fail "redis.tls.existingSecret: set only with a rediss:// redis.url, redis.existingSecret or redis.clusterUrls" -}}
{{- end -}}
{{- /* On an upgrade (not in `helm template`, where lookup finds nothing): the size is fixed at install. */ -}}
{{- $live := lookup "apps/v1" "StatefulSet" .Release.Namespace (include "keel.fullname" .) -}}
{{- if and $live $live.spec (ne (int $live.spec.replicas) $replicas) -}}
{{- fail (printf "replicas: the release runs %d members; changing it to %d would not change the Raft membership (see the chart README, Scaling)" (int $live.spec.replicas) $replicas) -}}
{{- end -}}
{{- if gt (len (include "keel.memberHost" (list . (sub $replicas 1)))) 253 -}}
{{- fail "clusterDomain: member DNS names would be longer than 253 characters; shorten the release name, fullnameOverride or clusterDomain" -}}
{{- end -}}
{{- end -}}
