{{/*
A long-running segflow component: Deployment with probes on /healthz and /readyz.
Call with (dict "root" $ "component" "ingest" "values" .Values.ingest "args" (list "ingest")
  "port" 8088 "portName" "http" "env" "<yaml list>" "warehouse" false "autoscaled" true);
  "adminPort" 9101 adds a port named "metrics" that the probes use instead.
*/}}
{{- define "segflow.deployment" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $probePort := ternary "metrics" .portName (not (empty .adminPort)) -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "segflow.componentName" . }}
  labels:
    {{- include "segflow.componentLabels" . | nindent 4 }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "segflow.selectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {{- include "segflow.selectorLabels" . | nindent 8 }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- include "segflow.checksums" $root | nindent 8 }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- include "segflow.podCommon" $root | nindent 6 }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      {{- include "segflow.scheduling" . | nindent 6 }}
      containers:
        - name: {{ .component }}
          image: {{ include "segflow.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            {{- toYaml .args | nindent 12 }}
          ports:
            - name: {{ .portName }}
              containerPort: {{ .port }}
              protocol: TCP
            {{- with .adminPort }}
            - name: metrics
              containerPort: {{ . }}
              protocol: TCP
            {{- end }}
          env:
            {{- include "segflow.env.common" $root | nindent 12 }}
            {{- if .warehouse }}
            {{- include "segflow.env.snowflake" $root | nindent 12 }}
            {{- end }}
            {{- with .env }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- include "segflow.env.map" $v.env | nindent 12 }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: {{ $probePort }}
            periodSeconds: 5
            failureThreshold: 60
          livenessProbe:
            httpGet:
              path: /healthz
              port: {{ $probePort }}
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 6
          readinessProbe:
            httpGet:
              path: /readyz
              port: {{ $probePort }}
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 3
          {{- with .preStopSleepSeconds }}
          lifecycle:
            preStop:
              exec:
                command: ["sleep", "{{ . }}"]
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            {{- include "segflow.volumeMounts.common" $root | nindent 12 }}
            {{- if .warehouse }}
            {{- include "segflow.volumeMounts.snowflake" $root | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "segflow.volumes.common" $root | nindent 8 }}
        {{- if .warehouse }}
        {{- include "segflow.volumes.snowflake" $root | nindent 8 }}
        {{- end }}
{{- end -}}

{{/* A PodDisruptionBudget for a component. Same arguments as segflow.deployment. */}}
{{- define "segflow.pdb" -}}
{{- if .values.pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "segflow.componentName" . }}
  labels:
    {{- include "segflow.componentLabels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .values.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "segflow.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* A ClusterIP Service for a component's metrics (what the ServiceMonitor scrapes). */}}
{{- define "segflow.metricsService" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "segflow.componentName" . }}
  labels:
    {{- include "segflow.componentLabels" . | nindent 4 }}
    segflow.io/metrics: "true"
spec:
  type: ClusterIP
  selector:
    {{- include "segflow.selectorLabels" . | nindent 4 }}
  ports:
    - name: metrics
      port: {{ .port }}
      targetPort: {{ .portName }}
      protocol: TCP
{{- end -}}

{{/*
A KEDA ScaledObject on the consumer lag of a component's group; replicas never exceed the
partition count (more consumers than partitions sit idle). Arguments of segflow.deployment plus
"group" (the consumer group) and "topic" (empty = every topic of the group).
*/}}
{{- define "segflow.scaledObject" -}}
{{- $k := .values.keda -}}
{{- $max := default .root.Values.topics.partitions $k.maxReplicas | int -}}
{{- if gt $max (int .root.Values.topics.partitions) -}}
{{- fail (printf "%s.keda.maxReplicas (%d) exceeds topics.partitions (%d): the extra consumers would sit idle" .component $max (int .root.Values.topics.partitions)) -}}
{{- end -}}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "segflow.componentName" . }}
  labels:
    {{- include "segflow.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    name: {{ include "segflow.componentName" . }}
  minReplicaCount: {{ $k.minReplicas }}
  maxReplicaCount: {{ $max }}
  pollingInterval: {{ $k.pollingInterval }}
  cooldownPeriod: {{ $k.cooldownPeriod }}
  triggers:
    - type: kafka
      metadata:
        bootstrapServers: {{ .root.Values.kafka.bootstrap | quote }}
        consumerGroup: {{ .group | quote }}
        {{- with .topic }}
        topic: {{ . | quote }}
        {{- end }}
        lagThreshold: {{ $k.lagThreshold | quote }}
        offsetResetPolicy: earliest
        allowIdleConsumers: "false"
        {{- if ne .root.Values.kafka.securityProtocol "PLAINTEXT" }}
        {{- if hasPrefix "SASL_" .root.Values.kafka.securityProtocol }}
        {{- $m := .root.Values.kafka.sasl.mechanism }}
        sasl: {{ ternary "plaintext" ($m | lower | replace "-" "_" | replace "scram_sha_" "scram_sha") (eq $m "PLAIN") | quote }}
        {{- end }}
        tls: {{ ternary "enable" "disable" (hasSuffix "SSL" .root.Values.kafka.securityProtocol) | quote }}
        {{- end }}
      {{- with $k.authenticationRef }}
      authenticationRef:
        name: {{ . }}
      {{- end }}
{{- end -}}
