{{/*
A CronJob running one segflow subcommand.
Call with (dict "root" $ "component" "backfill" "schedule" "..." "suspend" false
  "args" (list "backfill" ...) "env" {SEGFLOW_...: value} "extraEnv" [...] "resources" {...}
  "activeDeadlineSeconds" N "backoffLimit" N "volumes" [...] "volumeMounts" [...]
  "warehouse" true "kafka" true "envList" [EnvVar...]).
*/}}
{{- define "segflow.cronJob" -}}
{{- $root := .root -}}
{{- $cj := $root.Values.cronJobs -}}
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ include "segflow.componentName" . }}
  labels:
    {{- include "segflow.componentLabels" . | nindent 4 }}
spec:
  schedule: {{ required (printf "a schedule is required for %s" .component) .schedule | quote }}
  suspend: {{ .suspend | default false }}
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: {{ $cj.startingDeadlineSeconds }}
  successfulJobsHistoryLimit: {{ $cj.successfulJobsHistoryLimit }}
  failedJobsHistoryLimit: {{ $cj.failedJobsHistoryLimit }}
  jobTemplate:
    metadata:
      labels:
        {{- include "segflow.selectorLabels" . | nindent 8 }}
    spec:
      backoffLimit: {{ .backoffLimit }}
      activeDeadlineSeconds: {{ .activeDeadlineSeconds }}
      template:
        metadata:
          labels:
            {{- include "segflow.selectorLabels" . | nindent 12 }}
            {{- with $root.Values.podLabels }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          annotations:
            {{- include "segflow.checksums" $root | nindent 12 }}
            {{- with $root.Values.podAnnotations }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
        spec:
          restartPolicy: Never
          {{- include "segflow.podCommon" $root | nindent 10 }}
          containers:
            - name: {{ .component }}
              image: {{ include "segflow.image" $root }}
              imagePullPolicy: {{ $root.Values.image.pullPolicy }}
              args:
                {{- toYaml .args | nindent 16 }}
              {{- with .workingDir }}
              workingDir: {{ . }}
              {{- end }}
              env:
                {{- if .kafka }}
                {{- include "segflow.env.common" $root | nindent 16 }}
                {{- else }}
                {{- include "segflow.env.base" $root | nindent 16 }}
                {{- end }}
                {{- if .warehouse }}
                {{- include "segflow.env.snowflake" $root | nindent 16 }}
                {{- end }}
                {{- with .envList }}
                {{- toYaml . | nindent 16 }}
                {{- end }}
                {{- with .env }}
                {{- include "segflow.env.map" . | nindent 16 }}
                {{- end }}
                {{- with .extraEnv }}
                {{- toYaml . | nindent 16 }}
                {{- end }}
              resources:
                {{- toYaml .resources | nindent 16 }}
              securityContext:
                {{- toYaml $root.Values.containerSecurityContext | nindent 16 }}
              volumeMounts:
                {{- include "segflow.volumeMounts.common" $root | nindent 16 }}
                {{- if .warehouse }}
                {{- include "segflow.volumeMounts.snowflake" $root | nindent 16 }}
                {{- end }}
                {{- with .volumeMounts }}
                {{- toYaml . | nindent 16 }}
                {{- end }}
          volumes:
            {{- include "segflow.volumes.common" $root | nindent 12 }}
            {{- if .warehouse }}
            {{- include "segflow.volumes.snowflake" $root | nindent 12 }}
            {{- end }}
            {{- with .volumes }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
{{- end -}}
