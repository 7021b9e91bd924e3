{{/* Names ------------------------------------------------------------------------------- */}}

{{- define "segflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "segflow.fullname" -}}
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

{{/* "<fullname>-<component>", 63 characters at most. Call with (dict "root" $ "component" "x"). */}}
{{- define "segflow.componentName" -}}
{{- printf "%s-%s" (include "segflow.fullname" .root | trunc (sub 62 (len .component) | int)) .component | trimSuffix "-" -}}
{{- end -}}

{{- define "segflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "segflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "segflow.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Labels ------------------------------------------------------------------------------ */}}

{{- define "segflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "segflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ default .Chart.AppVersion .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: segflow
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Call with (dict "root" $ "component" "x"). */}}
{{- define "segflow.componentLabels" -}}
{{ include "segflow.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "segflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "segflow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Secrets and files ------------------------------------------------------------------- */}}

{{- define "segflow.secretName" -}}
{{- include "segflow.fullname" . -}}
{{- end -}}

{{/* True when the chart renders its own Secret (some secret value is given inline). */}}
{{- define "segflow.chartSecretNeeded" -}}
{{- $v := .Values -}}
{{- if or (and $v.kafka.sasl.password (not $v.kafka.sasl.existingSecret)) (and (include "segflow.snowflakeSecret" .) (not $v.snowflake.auth.existingSecret)) (and $v.process.enabled (not $v.process.piiExistingSecret)) (and $v.ingest.webhookSecret (not $v.ingest.webhookExistingSecret)) (and $v.reverseEtl.writeKey (not $v.reverseEtl.existingSecret)) -}}
true
{{- end -}}
{{- end -}}

{{/* The Secret holding the Snowflake credentials, or "" when there are none. */}}
{{- define "segflow.snowflakeSecret" -}}
{{- $a := .Values.snowflake.auth -}}
{{- if $a.existingSecret -}}
{{- $a.existingSecret -}}
{{- else if or (and (eq $a.method "keypair") $a.privateKey) (and (eq $a.method "password") $a.password) -}}
{{- include "segflow.secretName" . -}}
{{- end -}}
{{- end -}}

{{/* Key-pair auth is configured: a private key is given inline or in the existing Secret. */}}
{{- define "segflow.snowflakeKeyPair" -}}
{{- $a := .Values.snowflake.auth -}}
{{- if not (has $a.method (list "keypair" "password")) -}}
{{- fail "snowflake.auth.method must be keypair or password" -}}
{{- end -}}
{{- if and (eq $a.method "keypair") (or $a.privateKey $a.existingSecret) -}}
true
{{- end -}}
{{- end -}}

{{/* The source of the rules file: "secret", "configmap" or "" (embedded defaults). */}}
{{- define "segflow.rulesKind" -}}
{{- $r := .Values.rules -}}
{{- if $r.existingSecret -}}secret
{{- else if $r.existingConfigMap -}}configmap
{{- else if and $r.content $r.storeInSecret -}}secret
{{- else if $r.content -}}configmap
{{- end -}}
{{- end -}}

{{- define "segflow.rulesObjectName" -}}
{{- $r := .Values.rules -}}
{{- if $r.existingSecret -}}{{ $r.existingSecret }}
{{- else if $r.existingConfigMap -}}{{ $r.existingConfigMap }}
{{- else -}}{{ include "segflow.componentName" (dict "root" . "component" "rules") }}
{{- end -}}
{{- end -}}

{{/* Pod annotations that roll the pods when the chart's ConfigMap or Secret change. */}}
{{- define "segflow.checksums" -}}
checksum/rules: {{ .Values.rules.content | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end -}}

{{/* Environment ----------------------------------------------------------------------- */}}

{{/* Kafka settings. Call with (dict "root" $ "secret" "<Secret of an inline SASL password>"). */}}
{{- define "segflow.env.kafka" -}}
{{- $k := .root.Values.kafka -}}
- name: SEGFLOW_KAFKA_BOOTSTRAP
  value: {{ required "kafka.bootstrap is required" $k.bootstrap | quote }}
- name: SEGFLOW_KAFKA_SECURITY_PROTOCOL
  value: {{ $k.securityProtocol | quote }}
{{- with $k.topicPrefix }}
- name: SEGFLOW_KAFKA_TOPIC_PREFIX
  value: {{ . | quote }}
{{- end }}
{{- with $k.clientId }}
- name: SEGFLOW_KAFKA_CLIENT_ID
  value: {{ . | quote }}
{{- end }}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
- name: SEGFLOW_KAFKA_SASL_MECHANISM
  value: {{ required "kafka.sasl.mechanism is required with a SASL_* securityProtocol" $k.sasl.mechanism | quote }}
- name: SEGFLOW_KAFKA_SASL_USERNAME
  value: {{ required "kafka.sasl.username is required with a SASL_* securityProtocol" $k.sasl.username | quote }}
- name: SEGFLOW_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      {{- if $k.sasl.existingSecret }}
      name: {{ $k.sasl.existingSecret }}
      key: {{ $k.sasl.existingSecretKey }}
      {{- else if $k.sasl.password }}
      name: {{ .secret }}
      key: kafka_sasl_password
      {{- else }}
      {{- fail "kafka.sasl.password or kafka.sasl.existingSecret is required with a SASL_* securityProtocol" }}
      {{- end }}
{{- end }}
{{- if $k.tls.caSecret }}
- name: SEGFLOW_KAFKA_SSL_CA_LOCATION
  value: {{ printf "/etc/segflow/kafka-ca/%s" $k.tls.caKey | quote }}
{{- end }}
{{- end -}}

{{/* Log settings. */}}
{{- define "segflow.env.logging" -}}
- name: SEGFLOW_LOG_LEVEL
  value: {{ .Values.logging.level | quote }}
- name: SEGFLOW_LOG_FORMAT
  value: {{ .Values.logging.format | quote }}
{{- end -}}

{{/* Kafka, logging, the rules file and extraEnv: every segflow container that uses Kafka. */}}
{{- define "segflow.env.common" -}}
{{ include "segflow.env.kafka" (dict "root" . "secret" (include "segflow.secretName" .)) }}
{{ include "segflow.env.base" . }}
{{- end -}}

{{/* Logging, the rules file and extraEnv. */}}
{{- define "segflow.env.base" -}}
{{ include "segflow.env.logging" . }}
{{- if .Values.developmentDefaults }}
- name: SEGFLOW_ALLOW_DEV_DEFAULTS
  value: "true"
{{- end }}
{{- if include "segflow.rulesKind" . }}
- name: SEGFLOW_RULES_FILE
  value: {{ printf "/etc/segflow/rules/%s" .Values.rules.key | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The Snowflake connection: the sink and the warehouse jobs. */}}
{{- define "segflow.env.snowflake" -}}
{{- $s := .Values.snowflake -}}
{{- $emulator := eq $s.account "fakesnow" -}}
- name: SEGFLOW_SNOWFLAKE_ACCOUNT
  value: {{ required "snowflake.account is required" $s.account | quote }}
- name: SEGFLOW_SNOWFLAKE_USER
  value: {{ $s.user | quote }}
- name: SEGFLOW_SNOWFLAKE_DATABASE
  value: {{ $s.database | quote }}
{{- with $s.warehouse }}
- name: SEGFLOW_SNOWFLAKE_WAREHOUSE
  value: {{ . | quote }}
{{- end }}
{{- with $s.role }}
- name: SEGFLOW_SNOWFLAKE_ROLE
  value: {{ . | quote }}
{{- end }}
{{- /* The endpoint is always named explicitly (the settings would derive the same one), so
      the rendered manifest says where each pod connects. */}}
- name: SEGFLOW_SNOWFLAKE_HOST
  value: {{ default (ternary (include "segflow.componentName" (dict "root" . "component" "emulator")) (printf "%s.snowflakecomputing.com" $s.account) $emulator) $s.host | quote }}
- name: SEGFLOW_SNOWFLAKE_PORT
  value: {{ default (ternary (int .Values.emulator.port) 443 $emulator) (int $s.port) | quote }}
- name: SEGFLOW_SNOWFLAKE_PROTOCOL
  value: {{ ternary "http" "https" $emulator | quote }}
{{- if $s.loginTimeoutSeconds }}
- name: SEGFLOW_SNOWFLAKE_LOGIN_TIMEOUT_S
  value: {{ $s.loginTimeoutSeconds | quote }}
{{- end }}
{{- if $s.networkTimeoutSeconds }}
- name: SEGFLOW_SNOWFLAKE_NETWORK_TIMEOUT_S
  value: {{ $s.networkTimeoutSeconds | quote }}
{{- end }}
{{- $secret := include "segflow.snowflakeSecret" . }}
{{- if include "segflow.snowflakeKeyPair" . }}
- name: SEGFLOW_SNOWFLAKE_PRIVATE_KEY_PATH
  value: {{ printf "/etc/segflow/snowflake/%s" $s.auth.privateKeySecretKey | quote }}
{{- if or $s.auth.privateKeyPassphrase $s.auth.existingSecret }}
- name: SEGFLOW_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $s.auth.passphraseSecretKey }}
      optional: {{ not $s.auth.privateKeyPassphrase }}
{{- end }}
{{- else if $secret }}
- name: SEGFLOW_SNOWFLAKE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $s.auth.passwordSecretKey }}
{{- else if not $emulator }}
{{- fail "snowflake.auth: set privateKey, password or existingSecret for a Snowflake account" }}
{{- end }}
{{- end -}}

{{/* Pod pieces ------------------------------------------------------------------------- */}}

{{/* Volumes every pod has: scratch space, the rules file and the Kafka CA. Call with the root. */}}
{{- define "segflow.volumes.common" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.scratch.tmpSizeLimit }}
- name: data
  emptyDir:
    sizeLimit: {{ .Values.scratch.dataSizeLimit }}
{{- $kind := include "segflow.rulesKind" . }}
{{- if eq $kind "secret" }}
- name: rules
  secret:
    secretName: {{ include "segflow.rulesObjectName" . }}
    items:
      - key: {{ .Values.rules.key }}
        path: {{ .Values.rules.key }}
{{- else if eq $kind "configmap" }}
- name: rules
  configMap:
    name: {{ include "segflow.rulesObjectName" . }}
    items:
      - key: {{ .Values.rules.key }}
        path: {{ .Values.rules.key }}
{{- end }}
{{- with .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $.Values.kafka.tls.caKey }}
        path: {{ $.Values.kafka.tls.caKey }}
{{- end }}
{{- end -}}

{{- define "segflow.volumeMounts.common" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/segflow
{{- if include "segflow.rulesKind" . }}
- name: rules
  mountPath: /etc/segflow/rules
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/segflow/kafka-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* The Snowflake private key, for pods that reach the warehouse. */}}
{{- define "segflow.volumes.snowflake" -}}
{{- if include "segflow.snowflakeKeyPair" . }}
- name: snowflake-key
  secret:
    secretName: {{ include "segflow.snowflakeSecret" . }}
    defaultMode: 0400
    items:
      - key: {{ .Values.snowflake.auth.privateKeySecretKey }}
        path: {{ .Values.snowflake.auth.privateKeySecretKey }}
{{- end }}
{{- end -}}

{{- define "segflow.volumeMounts.snowflake" -}}
{{- if include "segflow.snowflakeKeyPair" . }}
- name: snowflake-key
  mountPath: /etc/segflow/snowflake
  readOnly: true
{{- end }}
{{- end -}}

{{/* `name: value` env entries from a map, sorted by name. */}}
{{- define "segflow.env.map" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* Scheduling of a component's pods. Call with (dict "root" $ "component" "x" "values" .Values.x). */}}
{{- define "segflow.scheduling" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.topologySpreadConstraints }}
topologySpreadConstraints:
{{- range .values.topologySpreadConstraints }}
  - {{ toYaml (merge (dict) . (dict "labelSelector" (dict "matchLabels" (include "segflow.selectorLabels" $ | fromYaml)))) | nindent 4 | trim }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The pod-level fields every segflow pod shares. */}}
{{- define "segflow.podCommon" -}}
serviceAccountName: {{ include "segflow.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The processors' consumer group (the Faust app id). */}}
{{- define "segflow.processGroup" -}}
{{- index .Values.process.env "SEGFLOW_PROCESS_APP_ID" | default "segflow-processors" -}}
{{- end -}}

{{/* The PII HMAC key held in the chart's Secret: the given one (32 bytes at least), or the
public development key of a developmentDefaults install (processors/settings.py refuses it
otherwise). */}}
{{- define "segflow.piiHmacKey" -}}
{{- if .Values.process.piiHmacKey -}}
{{- if lt (len .Values.process.piiHmacKey) 32 -}}
{{- fail "process.piiHmacKey must be at least 32 bytes (e.g. openssl rand -hex 32)" -}}
{{- end -}}
{{- .Values.process.piiHmacKey -}}
{{- else if .Values.developmentDefaults -}}
segflow-development-only-pii-hmac-key
{{- else -}}
{{- fail "process.piiHmacKey or process.piiExistingSecret is required (the HMAC key of PII hashing; developmentDefaults=true uses a public one, for development installs only)" -}}
{{- end -}}
{{- end -}}
