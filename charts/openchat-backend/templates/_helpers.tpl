{{/* Names and labels. */}}
{{- define "openchat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "openchat.fullname" -}}
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

{{- define "openchat.coturnName" -}}
{{- printf "%s-coturn" (include "openchat.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "openchat.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "openchat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "openchat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "openchat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "openchat.coturnSelectorLabels" -}}
app.kubernetes.io/name: {{ include "openchat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: coturn
{{- end -}}

{{- define "openchat.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "openchat.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "openchat.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Postgres when a URL or an existing Secret names it. */}}
{{- define "openchat.postgres" -}}
{{- if or .Values.database.url .Values.database.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* Shared-secret TURN scheme. */}}
{{- define "openchat.turnShared" -}}
{{- if or .Values.coturn.auth.sharedSecret (and .Values.coturn.auth.existingSecret .Values.coturn.auth.useSharedSecret) -}}true{{- end -}}
{{- end -}}

{{- define "openchat.coturnSecretName" -}}
{{- default (include "openchat.coturnName" .) .Values.coturn.auth.existingSecret -}}
{{- end -}}

{{- define "openchat.ticketSecretName" -}}
{{- default (include "openchat.fullname" .) .Values.rtc.ticketSecret.existingSecret -}}
{{- end -}}

{{- define "openchat.ticketSecretKey" -}}
{{- if .Values.rtc.ticketSecret.existingSecret -}}{{ .Values.rtc.ticketSecret.existingSecretKey }}{{- else -}}rtc-ticket-secret{{- end -}}
{{- end -}}

{{/*
A Kubernetes quantity of CPU as a whole number of cores, or "" when it is not one
("2", 2, "2000m" are 2; "1500m", "0.5" are not).
*/}}
{{- define "openchat.integerCPU" -}}
{{- $c := toString . -}}
{{- if regexMatch "^[1-9][0-9]*$" $c -}}
{{- $c -}}
{{- else if regexMatch "^[1-9][0-9]*000m$" $c -}}
{{- trimSuffix "000m" $c -}}
{{- end -}}
{{- end -}}

{{/* Shard count: the CPU count when pinned, else media.shards. */}}
{{- define "openchat.shards" -}}
{{- if .Values.cpuPinning.enabled -}}
{{- include "openchat.integerCPU" .Values.resources.limits.cpu -}}
{{- else -}}
{{- int .Values.media.shards -}}
{{- end -}}
{{- end -}}

{{/*
Every check that a schema cannot state. Included by the Deployment, so `helm template`
stops with the message.
*/}}
{{- define "openchat.validate" -}}
{{- $v := .Values -}}
{{- if and (gt (int $v.replicaCount) 1) (not (include "openchat.postgres" .)) -}}
{{- fail (printf "replicaCount=%d needs Postgres: set database.url or database.existingSecret (embedded SQLite serves a single replica)" (int $v.replicaCount)) -}}
{{- end -}}
{{- if and (gt (int $v.replicaCount) 1) $v.persistence.enabled (not $v.persistence.existingClaim) (has "ReadWriteOnce" $v.persistence.accessModes) -}}
{{- fail "replicaCount > 1 cannot share a ReadWriteOnce claim: set persistence.existingClaim (ReadWriteMany) or persistence.enabled=false" -}}
{{- end -}}
{{- if eq $v.seccomp.type "RuntimeDefault" -}}
{{- fail "seccomp.type=RuntimeDefault blocks io_uring, which openchatd needs: use Localhost (the chart's profile) or Unconfined" -}}
{{- end -}}
{{- if $v.cpuPinning.enabled -}}
{{- $req := $v.resources.requests | default dict -}}
{{- $lim := $v.resources.limits | default dict -}}
{{- if not (and $req.cpu $lim.cpu $req.memory $lim.memory) -}}
{{- fail "cpuPinning.enabled needs resources.requests and resources.limits with both cpu and memory (Guaranteed QoS)" -}}
{{- end -}}
{{- if not (include "openchat.integerCPU" $lim.cpu) -}}
{{- fail (printf "cpuPinning.enabled needs an integer CPU count, got resources.limits.cpu=%v" $lim.cpu) -}}
{{- end -}}
{{- if ne (include "openchat.integerCPU" $req.cpu) (include "openchat.integerCPU" $lim.cpu) -}}
{{- fail (printf "cpuPinning.enabled needs resources.requests.cpu = resources.limits.cpu (integer), got %v and %v" $req.cpu $lim.cpu) -}}
{{- end -}}
{{- if ne (toString $req.memory) (toString $lim.memory) -}}
{{- fail (printf "cpuPinning.enabled needs resources.requests.memory = resources.limits.memory, got %v and %v" $req.memory $lim.memory) -}}
{{- end -}}
{{- end -}}
{{- $shards := int (include "openchat.shards" .) -}}
{{- if or (lt $shards 1) (gt $shards 256) -}}
{{- fail (printf "the shard count must be 1..256, got %d" $shards) -}}
{{- end -}}
{{- if gt (add (int $v.media.udpPort) $shards) 65536 -}}
{{- fail "media.udpPort + shards - 1 exceeds 65535" -}}
{{- end -}}
{{- if $v.coturn.enabled -}}
{{- if not (include "openchat.turnShared" .) -}}
{{- if and (not $v.coturn.auth.existingSecret) (not (and $v.coturn.auth.username $v.coturn.auth.password)) -}}
{{- fail "coturn.enabled needs coturn.auth.username and coturn.auth.password, coturn.auth.sharedSecret, or coturn.auth.existingSecret" -}}
{{- end -}}
{{- end -}}
{{- if $v.coturn.backend.injectEnv -}}
{{- if not $v.coturn.externalIP -}}
{{- fail "coturn.externalIP is required when coturn is enabled with coturn.backend.injectEnv" -}}
{{- end -}}
{{- if not $v.coturn.backend.advertisedTURNURLs -}}
{{- fail "coturn.backend.advertisedTURNURLs is required when coturn is enabled with coturn.backend.injectEnv" -}}
{{- end -}}
{{- if not $v.coturn.backend.advertisedSTUNURLs -}}
{{- fail "coturn.backend.advertisedSTUNURLs is required when coturn is enabled with coturn.backend.injectEnv" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $owned := dict "OPENCHAT_SHARDS" "media.shards (or the CPU count with cpuPinning)" "OPENCHAT_RTC_UDP_PORT" "media.udpPort" "OPENCHAT_HTTP_ADDR" "http.port" "OPENCHAT_SHUTDOWN_TIMEOUT_MS" "shutdown.timeoutSeconds" "OPENCHAT_SHUTDOWN_DRAIN_DELAY_MS" "shutdown.drainDelaySeconds" "OPENCHAT_DATA_DIR" "persistence" "OPENCHAT_DATABASE_URL" "database.url or database.existingSecret" "OPENCHAT_RTC_TICKET_SECRET" "rtc.ticketSecret.existingSecret" -}}
{{- range $k, $_ := $v.env -}}
{{- if hasKey $owned $k -}}
{{- fail (printf "env.%s is set by the chart from %s (it must match the ports, probes and grace period); set that instead" $k (get $owned $k)) -}}
{{- end -}}
{{- if hasKey $v.secretEnv $k -}}
{{- fail (printf "%s is in both env and secretEnv" $k) -}}
{{- end -}}
{{- if not (hasPrefix "OPENCHAT_" $k) -}}
{{- fail (printf "env.%s: only OPENCHAT_* variables belong in env" $k) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The container's env: what the chart derives, then coturn's injection, then `secretEnv`,
then `env` (explicit values win), as a list sorted by name.
*/}}
{{- define "openchat.env" -}}
{{- $v := .Values -}}
{{- $full := include "openchat.fullname" . -}}
{{- $e := dict -}}
{{- $_ := set $e "OPENCHAT_HTTP_ADDR" (dict "value" (printf ":%d" (int $v.http.port))) -}}
{{- $_ := set $e "OPENCHAT_DATA_DIR" (dict "value" "/var/lib/openchat/data") -}}
{{- $_ := set $e "OPENCHAT_SHARDS" (dict "value" (include "openchat.shards" .)) -}}
{{- $_ := set $e "OPENCHAT_RTC_UDP_PORT" (dict "value" (toString (int $v.media.udpPort))) -}}
{{- $_ := set $e "OPENCHAT_SHUTDOWN_TIMEOUT_MS" (dict "value" (toString (mul (int $v.shutdown.timeoutSeconds) 1000))) -}}
{{- $_ := set $e "OPENCHAT_SHUTDOWN_DRAIN_DELAY_MS" (dict "value" (toString (mul (int $v.shutdown.drainDelaySeconds) 1000))) -}}
{{- if $v.media.publicIP -}}
{{- $_ := set $e "OPENCHAT_RTC_PUBLIC_IP" (dict "value" $v.media.publicIP) -}}
{{- else if $v.media.publicIPFromNode -}}
{{- $_ := set $e "OPENCHAT_RTC_PUBLIC_IP" (dict "valueFrom" (dict "fieldRef" (dict "fieldPath" "status.hostIP"))) -}}
{{- end -}}
{{- if gt (int $v.database.maxConnections) 0 -}}
{{- $_ := set $e "OPENCHAT_DB_MAX_CONNECTIONS" (dict "value" (toString (int $v.database.maxConnections))) -}}
{{- end -}}
{{- if $v.database.existingSecret -}}
{{- $_ := set $e "OPENCHAT_DATABASE_URL" (dict "valueFrom" (dict "secretKeyRef" (dict "name" $v.database.existingSecret "key" $v.database.existingSecretKey))) -}}
{{- else if $v.database.url -}}
{{- $_ := set $e "OPENCHAT_DATABASE_URL" (dict "valueFrom" (dict "secretKeyRef" (dict "name" $full "key" "database-url"))) -}}
{{- end -}}
{{- $_ := set $e "OPENCHAT_RTC_TICKET_SECRET" (dict "valueFrom" (dict "secretKeyRef" (dict "name" (include "openchat.ticketSecretName" .) "key" (include "openchat.ticketSecretKey" .)))) -}}
{{- if and $v.coturn.enabled $v.coturn.backend.injectEnv -}}
{{- $cs := include "openchat.coturnSecretName" . -}}
{{- $_ := set $e "OPENCHAT_RTC_TURN_URLS" (dict "value" (join "," $v.coturn.backend.advertisedTURNURLs)) -}}
{{- $stun := $v.coturn.backend.advertisedSTUNURLs -}}
{{- if $v.coturn.backend.appendGoogleStunFallback -}}
{{- $stun = concat $stun (list "stun:stun.l.google.com:19302" "stun:stun1.l.google.com:19302" "stun:stun2.l.google.com:19302" "stun:stun3.l.google.com:19302" "stun:stun4.l.google.com:19302") -}}
{{- end -}}
{{- $_ := set $e "OPENCHAT_RTC_STUN_URLS" (dict "value" (join "," $stun)) -}}
{{- if include "openchat.turnShared" . -}}
{{- $_ := set $e "OPENCHAT_RTC_TURN_SECRET" (dict "valueFrom" (dict "secretKeyRef" (dict "name" $cs "key" "shared-secret"))) -}}
{{- else -}}
{{- $_ := set $e "OPENCHAT_RTC_TURN_USERNAME" (dict "valueFrom" (dict "secretKeyRef" (dict "name" $cs "key" "username"))) -}}
{{- $_ := set $e "OPENCHAT_RTC_TURN_CREDENTIAL" (dict "valueFrom" (dict "secretKeyRef" (dict "name" $cs "key" "password"))) -}}
{{- end -}}
{{- end -}}
{{- range $k, $_ := $v.secretEnv -}}
{{- $_ := set $e $k (dict "valueFrom" (dict "secretKeyRef" (dict "name" $full "key" $k))) -}}
{{- end -}}
{{- range $k, $val := $v.env -}}
{{- $_ := set $e $k (dict "value" (toString $val)) -}}
{{- end -}}
{{- $out := list -}}
{{- range $k := keys $e | sortAlpha -}}
{{- $out = append $out (merge (dict "name" $k) (get $e $k)) -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}
