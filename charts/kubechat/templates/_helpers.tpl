{{/* Names, labels, images and the store wiring shared by the templates. */}}

{{- define "kubechat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object's name; truncated so that suffixes like "-elasticsearch" fit: a StatefulSet name must stay under 53 characters. */}}
{{- define "kubechat.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 36 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 36 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 36 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubechat.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "api"). Never change them: a
Deployment's selector is immutable. */}}
{{- define "kubechat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubechat.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Standard labels of one component: (dict "ctx" $ "component" "api"). */}}
{{- define "kubechat.labels" -}}
helm.sh/chart: {{ include "kubechat.chart" .ctx }}
{{ include "kubechat.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: kubechat
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* An image reference from {repository, tag, digest}: (dict "image" .Values.image "ctx" $). */}}
{{- define "kubechat.imageRef" -}}
{{- $tag := .image.tag | default .ctx.Chart.AppVersion -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "kubechat.image" -}}
{{- include "kubechat.imageRef" (dict "image" .Values.image "ctx" .) -}}
{{- end -}}

{{- define "kubechat.cpuImage" -}}
{{- include "kubechat.imageRef" (dict "image" .Values.models.cpuImage "ctx" .) -}}
{{- end -}}

{{- define "kubechat.apiName" -}}{{ include "kubechat.fullname" . }}-api{{- end -}}
{{- define "kubechat.operatorName" -}}{{ include "kubechat.fullname" . }}-operator{{- end -}}
{{- define "kubechat.weightCacheName" -}}{{ include "kubechat.fullname" . }}-weight-cache{{- end -}}
{{- define "kubechat.elasticsearchName" -}}{{ include "kubechat.fullname" . }}-elasticsearch{{- end -}}
{{- define "kubechat.minioName" -}}{{ include "kubechat.fullname" . }}-minio{{- end -}}
{{- define "kubechat.storesConfigName" -}}{{ include "kubechat.fullname" . }}-stores{{- end -}}
{{/* The chart's own Secret: API keys and store credentials given as values. */}}
{{- define "kubechat.secretName" -}}{{ include "kubechat.fullname" . }}{{- end -}}

{{/* Store endpoints: the dev stores when enabled, else the values. */}}
{{- define "kubechat.elasticsearchUrl" -}}
{{- if .Values.dev.elasticsearch.enabled -}}
{{- printf "http://%s.%s.svc:9200" (include "kubechat.elasticsearchName" .) .Release.Namespace -}}
{{- else -}}
{{- .Values.elasticsearch.url -}}
{{- end -}}
{{- end -}}

{{- define "kubechat.s3Endpoint" -}}
{{- if .Values.dev.minio.enabled -}}
{{- printf "%s.%s.svc:9000" (include "kubechat.minioName" .) .Release.Namespace -}}
{{- else -}}
{{- .Values.s3.endpoint -}}
{{- end -}}
{{- end -}}

{{- define "kubechat.s3Secure" -}}
{{- if .Values.dev.minio.enabled -}}false{{- else -}}{{ .Values.s3.secure }}{{- end -}}
{{- end -}}

{{/* Refuse values that would deploy something broken. */}}
{{- define "kubechat.validate" -}}
{{- if and .Values.dev.elasticsearch.enabled .Values.elasticsearch.url -}}
{{- fail "set either elasticsearch.url or dev.elasticsearch.enabled, not both" -}}
{{- end -}}
{{- if and .Values.dev.minio.enabled .Values.s3.endpoint -}}
{{- fail "set either s3.endpoint or dev.minio.enabled, not both" -}}
{{- end -}}
{{- $es := include "kubechat.elasticsearchUrl" . -}}
{{- $s3 := include "kubechat.s3Endpoint" . -}}
{{- if and $es (not $s3) -}}
{{- fail "Elasticsearch is set but S3 is not: every API replica would keep uploaded documents on its own disk while sharing one catalog. Set s3.endpoint (or dev.minio.enabled) too." -}}
{{- end -}}
{{- if and $s3 (not $es) -}}
{{- fail "S3 is set but Elasticsearch is not: each API replica would index into its own SQLite. Set elasticsearch.url (or dev.elasticsearch.enabled) too." -}}
{{- end -}}
{{- if and .Values.s3.endpoint (not .Values.s3.existingSecret) (not (and .Values.s3.accessKey .Values.s3.secretKey)) -}}
{{- fail "s3.endpoint needs s3.existingSecret or both s3.accessKey and s3.secretKey" -}}
{{- end -}}
{{- end -}}

{{/* env entries for store credentials, shared by the API and the operator. Only what is set is
passed: an empty KUBECHAT_ELASTICSEARCH_API_KEY would be an (empty) credential. */}}
{{- define "kubechat.storeSecretEnv" -}}
{{- $es := .Values.elasticsearch -}}
{{- if and (not .Values.dev.elasticsearch.enabled) $es.url }}
{{- if $es.existingSecret }}
- name: KUBECHAT_ELASTICSEARCH_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $es.existingSecret }}
      key: {{ $es.existingSecretKeys.password }}
      optional: true
- name: KUBECHAT_ELASTICSEARCH_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $es.existingSecret }}
      key: {{ $es.existingSecretKeys.apiKey }}
      optional: true
{{- else }}
{{- if $es.password }}
- name: KUBECHAT_ELASTICSEARCH_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "kubechat.secretName" . }}
      key: KUBECHAT_ELASTICSEARCH_PASSWORD
{{- end }}
{{- if $es.apiKey }}
- name: KUBECHAT_ELASTICSEARCH_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "kubechat.secretName" . }}
      key: KUBECHAT_ELASTICSEARCH_API_KEY
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.dev.minio.enabled }}
- name: KUBECHAT_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "kubechat.minioName" . }}
      key: root-user
- name: KUBECHAT_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "kubechat.minioName" . }}
      key: root-password
{{- else if .Values.s3.endpoint }}
- name: KUBECHAT_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret | default (include "kubechat.secretName" .) }}
      key: {{ ternary .Values.s3.existingSecretKeys.accessKey "KUBECHAT_S3_ACCESS_KEY" (ne .Values.s3.existingSecret "") }}
- name: KUBECHAT_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret | default (include "kubechat.secretName" .) }}
      key: {{ ternary .Values.s3.existingSecretKeys.secretKey "KUBECHAT_S3_SECRET_KEY" (ne .Values.s3.existingSecret "") }}
{{- end }}
{{- end -}}

{{/* The CA bundle of Elasticsearch, when given: volume and mount. */}}
{{- define "kubechat.esCaVolume" -}}
{{- if and .Values.elasticsearch.caSecret.name (not .Values.dev.elasticsearch.enabled) }}
- name: elasticsearch-ca
  secret:
    secretName: {{ .Values.elasticsearch.caSecret.name }}
    items:
      - key: {{ .Values.elasticsearch.caSecret.key }}
        path: ca.crt
{{- end }}
{{- end -}}

{{- define "kubechat.esCaMount" -}}
{{- if and .Values.elasticsearch.caSecret.name (not .Values.dev.elasticsearch.enabled) }}
- name: elasticsearch-ca
  mountPath: /etc/kubechat/elasticsearch-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* What rolls the pods when configuration changes. Values, not rendered Secrets: a generated
key renders differently each time it is not looked up (helm template), and must not roll pods. */}}
{{- define "kubechat.configChecksum" -}}
{{- $config := dict "auth" .Values.auth "elasticsearch" .Values.elasticsearch "s3" .Values.s3 "dev" .Values.dev "models" .Values.models -}}
{{- toJson $config | sha256sum | trunc 16 -}}
{{- end -}}

{{/* An existing Secret's value (kept across upgrades), else `default`: (dict "ctx" $ "name" n "key" k "default" d). */}}
{{- define "kubechat.keptSecretValue" -}}
{{- $secret := lookup "v1" "Secret" .ctx.Release.Namespace .name -}}
{{- if and $secret $secret.data (hasKey $secret.data .key) -}}
{{- index $secret.data .key | b64dec -}}
{{- else -}}
{{- .default -}}
{{- end -}}
{{- end -}}

{{/* Egress both the API and the operator need: DNS, the Kubernetes API server, the stores. */}}
{{- define "kubechat.commonEgress" -}}
{{- $np := .Values.networkPolicy -}}
- to:
    - namespaceSelector:
        {{- toYaml $np.egress.dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml $np.egress.dns.podSelector | nindent 8 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
- to:
    {{- range $np.egress.kubeApiServer.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range $np.egress.kubeApiServer.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- if .Values.dev.elasticsearch.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "kubechat.selectorLabels" (dict "ctx" . "component" "elasticsearch") | nindent 10 }}
  ports:
    - port: 9200
      protocol: TCP
{{- else if .Values.elasticsearch.url }}
- ports:
    {{- range $np.egress.elasticsearch.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with $np.egress.elasticsearch.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- if .Values.dev.minio.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "kubechat.selectorLabels" (dict "ctx" . "component" "minio") | nindent 10 }}
  ports:
    - port: 9000
      protocol: TCP
{{- else if .Values.s3.endpoint }}
- ports:
    {{- range $np.egress.s3.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with $np.egress.s3.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Logging and tracing settings of the API and the operator: ctx, service (OTEL_SERVICE_NAME). */}}
{{- define "kubechat.observabilityEnv" -}}
{{- $v := .ctx.Values }}
- name: KUBECHAT_LOG_FORMAT
  value: {{ $v.logging.format | quote }}
- name: KUBECHAT_LOG_LEVEL
  value: {{ $v.logging.level | quote }}
{{- with $v.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $v.tracing.protocol | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ $.service | quote }}
{{- end }}
{{- end -}}
