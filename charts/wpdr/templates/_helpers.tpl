{{- define "wpdr.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "wpdr.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "wpdr.excludeLabel" . }}
{{- end -}}

{{/* wpdr's own objects are never recorded in a set: a restored or drilled
namespace must not get a copy of the jobs that back the live site up. */}}
{{- define "wpdr.excludeLabel" -}}
wpdr.io/exclude-from-backup: "true"
{{- end -}}

{{- define "wpdr.podLabels" -}}
{{ include "wpdr.selectorLabels" . }}
{{ include "wpdr.excludeLabel" . }}
{{- end -}}

{{- define "wpdr.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "wpdr.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "wpdr.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "wpdr.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
{{- end -}}

{{/* Pod-level hardening shared by the daemon and the CronJobs. */}}
{{- define "wpdr.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "wpdr.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Credentials as files from the Secret; only their paths are in the environment. */}}
{{- define "wpdr.env" -}}
- name: WPDR_CONFIG
  value: /etc/wpdr/wpdr.yaml
- name: WPDR_DB_PASSWORD_FILE
  value: /var/run/secrets/wpdr/{{ .Values.secretKeys.dbPassword }}
- name: WPDR_S3_SECRET_ACCESS_KEY_FILE
  value: /var/run/secrets/wpdr/{{ .Values.secretKeys.s3SecretAccessKey }}
- name: WPDR_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: {{ .Values.secretKeys.s3AccessKeyId }}
      optional: true
{{- if .Values.config.media }}
{{- range $side, $keys := dict "SOURCE" (list .Values.secretKeys.mediaSourceAccessKeyId .Values.secretKeys.mediaSourceSecretAccessKey) "OFFSITE" (list .Values.secretKeys.mediaOffsiteAccessKeyId .Values.secretKeys.mediaOffsiteSecretAccessKey) }}
{{- if index $keys 1 }}
- name: WPDR_MEDIA_{{ $side }}_SECRET_ACCESS_KEY_FILE
  value: /var/run/secrets/wpdr/{{ index $keys 1 }}
- name: WPDR_MEDIA_{{ $side }}_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.existingSecret }}
      key: {{ index $keys 0 }}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.secretKeys.signingKey }}
- name: WPDR_SIGNING_KEY_FILE
  value: /var/run/secrets/wpdr/{{ .Values.secretKeys.signingKey }}
{{- end }}
{{- if .Values.secretKeys.daemonTriggerToken }}
- name: WPDR_DAEMON_TRIGGER_TOKEN_FILE
  value: /var/run/secrets/wpdr/{{ .Values.secretKeys.daemonTriggerToken }}
{{- end }}
- name: WPDR_LOG_FORMAT
  value: json
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{- define "wpdr.volumeMounts" -}}
- name: config
  mountPath: /etc/wpdr
  readOnly: true
- name: schedules
  mountPath: /etc/wpdr-schedules
  readOnly: true
- name: credentials
  mountPath: /var/run/secrets/wpdr
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "wpdr.volumes" -}}
- name: config
  configMap:
    name: {{ include "wpdr.fullname" . }}
- name: schedules
  configMap:
    name: {{ include "wpdr.fullname" . }}-schedules
- name: credentials
  secret:
    secretName: {{ .Values.existingSecret }}
    defaultMode: 0400
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit | default "1Gi" }}
{{- end -}}

{{/* A shared binlog archive's environment (the archive entry is the context). */}}
{{- define "wpdr.archiveEnv" -}}
- name: WPDR_CONFIG
  value: /etc/wpdr/wpdr.yaml
- name: WPDR_DB_PASSWORD_FILE
  value: /var/run/secrets/wpdr/{{ .dbPasswordKey | default "db-password" }}
- name: WPDR_S3_SECRET_ACCESS_KEY_FILE
  value: /var/run/secrets/wpdr/{{ .s3SecretAccessKeyKey | default "s3-secret-access-key" }}
- name: WPDR_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .s3AccessKeyIdKey | default "s3-access-key-id" }}
      optional: true
- name: WPDR_LOG_FORMAT
  value: json
{{- end -}}

{{- define "wpdr.archiveMounts" -}}
- name: config
  mountPath: /etc/wpdr
  readOnly: true
- name: schedules
  mountPath: /etc/wpdr-schedules
  readOnly: true
- name: credentials
  mountPath: /var/run/secrets/wpdr
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Context: dict name (the ConfigMap), secret, tmp (size limit). */}}
{{- define "wpdr.archiveVolumes" -}}
- name: config
  configMap:
    name: {{ .name }}
    items: [{key: wpdr.yaml, path: wpdr.yaml}]
- name: schedules
  configMap:
    name: {{ .name }}
    items: [{key: binlog-archive.yaml, path: binlog-archive.yaml}]
- name: credentials
  secret:
    secretName: {{ .secret }}
    defaultMode: 0400
- name: tmp
  emptyDir:
    sizeLimit: {{ .tmp | default "1Gi" }}
{{- end -}}
