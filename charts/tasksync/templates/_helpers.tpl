{{/*
Names, labels and the checks that values.schema.json cannot express.
*/}}

{{- define "tasksync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The instance name. 56 characters at most: it is what a RateLimitPolicy's spec.target names
(the CRD caps it there), and the operator's ConfigMap is "<instance>-limits".
*/}}
{{- define "tasksync.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 56 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tasksync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tasksync.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "tasksync.labels" -}}
helm.sh/chart: {{ include "tasksync.chart" . }}
app.kubernetes.io/name: {{ include "tasksync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ default .Chart.AppVersion .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tasksync
{{- end }}

{{/* Selector labels of the service pods. */}}
{{- define "tasksync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tasksync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{/* Selector labels of the operator pod. */}}
{{- define "tasksync.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tasksync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "tasksync.operator.fullname" -}}
{{- printf "%s-operator" (include "tasksync.fullname" .) }}
{{- end }}

{{- define "tasksync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tasksync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tasksync.operator.serviceAccountName" -}}
{{- default (include "tasksync.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- end }}

{{- define "tasksync.daprAppId" -}}
{{- default (include "tasksync.fullname" .) .Values.dapr.appId }}
{{- end }}

{{/* Secret names: the chart's own Secret holds whatever was given inline. */}}
{{- define "tasksync.secretName" -}}
{{- include "tasksync.fullname" . }}
{{- end }}

{{- define "tasksync.daprTokenSecretName" -}}
{{- default (printf "%s-dapr-token" (include "tasksync.fullname" .)) .Values.dapr.appTokenExistingSecret }}
{{- end }}

{{/*
True when the pods get a Dapr app token: whenever Dapr is on. Outside development mode (which
the chart never runs) the service answers /dapr/* only with a token, and with one, nothing but
the sidecar can post events for any user.
*/}}
{{- define "tasksync.hasDaprToken" -}}
{{- if .Values.dapr.enabled }}true{{ end }}
{{- end }}

{{- define "tasksync.createsDaprTokenSecret" -}}
{{- if and (include "tasksync.hasDaprToken" .) (not .Values.dapr.appTokenExistingSecret) }}true{{ end }}
{{- end }}

{{/*
The Dapr app token in the chart's Secret: dapr.appToken; else the token that Secret already
holds, so `helm upgrade` keeps the one the running sidecars send; else a new random one (48
alphanumerics from crypto/rand, about 285 bits). `lookup` finds nothing under `helm template`
and client-side dry runs, so each of those renders generates a new token.
The token is kept in .Values for the rest of the render: secret.yaml is rendered twice (as
itself and into the pods' checksum annotation), and both must hold the same token, or the first
upgrade after an install would roll every pod for a token that did not change.
*/}}
{{- define "tasksync.daprAppToken" -}}
{{- if not (hasKey .Values.dapr "renderedAppToken") }}
{{- $token := .Values.dapr.appToken }}
{{- if not $token }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "tasksync.daprTokenSecretName" .) }}
{{- $token = dig "data" "token" "" $existing | b64dec | default (randAlphaNum 48) }}
{{- end }}
{{- $_ := set .Values.dapr "renderedAppToken" $token }}
{{- end }}
{{- .Values.dapr.renderedAppToken }}
{{- end }}

{{/*
The paths an ingress.hosts entry routes, as JSON: its own, else exactly /ws.
*/}}
{{- define "tasksync.ingressPaths" -}}
{{- toJson (default (list (dict "path" "/ws" "pathType" "Exact")) .paths) }}
{{- end }}

{{/*
The service's endpoints other than /ws that the Ingress routes, comma-separated: what a path
beyond the default publishes to whoever reaches the Ingress. A Prefix (or
ImplementationSpecific) path reaches an endpoint equal to it or below it, element by element.
*/}}
{{- define "tasksync.ingressExposedEndpoints" -}}
{{- $endpoints := list "/metrics" "/v1/events" "/dapr/subscribe" .Values.dapr.route "/health" "/health/ready" "/debug/heap" }}
{{- $exposed := list }}
{{- range $host := .Values.ingress.hosts }}
{{- range $path := include "tasksync.ingressPaths" $host | fromJsonArray }}
{{- $prefix := trimSuffix "/" $path.path }}
{{- range $endpoint := $endpoints }}
{{- if eq $path.pathType "Exact" }}
{{- if eq $path.path $endpoint }}{{ $exposed = append $exposed $endpoint }}{{ end }}
{{- else if or (eq $prefix "") (eq $prefix $endpoint) (hasPrefix (printf "%s/" $prefix) $endpoint) }}
{{- $exposed = append $exposed $endpoint }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $exposed | uniq | sortAlpha | join ", " }}
{{- end }}

{{/* True when the chart's Secret has something to hold. */}}
{{- define "tasksync.needsSecret" -}}
{{- if or .Values.auth.jwt.secret .Values.auth.header.secret .Values.apiKeys.keys (and (not .Values.broker.existingSecret) (ne .Values.broker.url "memory")) }}true{{ end }}
{{- end }}

{{- define "tasksync.usesMemoryBroker" -}}
{{- if and (not .Values.broker.existingSecret) (eq .Values.broker.url "memory") }}true{{ end }}
{{- end }}

{{- define "tasksync.declarativeSubscription" -}}
{{- if and .Values.dapr.enabled (eq .Values.dapr.subscription.mode "declarative") }}true{{ end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the kubelet counts the preStop sleep against it, then the drain
may take up to graceSeconds; 5 seconds on top let the process exit after its last close.
*/}}
{{- define "tasksync.terminationGracePeriod" -}}
{{- $needed := add .Values.drain.preStopSeconds (ceil .Values.drain.graceSeconds) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $needed 5 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed drain.preStopSeconds + drain.graceSeconds (%v), or the kubelet kills pods that are still draining" .Values.terminationGracePeriodSeconds $needed) }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Combinations of values that would deploy something broken. */}}
{{- define "tasksync.validate" -}}
{{- if include "tasksync.usesMemoryBroker" . }}
{{- if .Values.autoscaling.enabled }}
{{- fail "autoscaling.enabled needs the Redis broker (broker.url: redis://...): the memory broker cannot fan events out across pods" }}
{{- end }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail (printf "replicaCount %d needs the Redis broker (broker.url: redis://...): the memory broker cannot fan events out across pods" (int .Values.replicaCount)) }}
{{- end }}
{{- end }}
{{- if lt (float64 .Values.drain.graceSeconds) (float64 .Values.drain.windowSeconds) }}
{{- fail "drain.graceSeconds must be at least drain.windowSeconds, or the process exits before the drain has closed every socket" }}
{{- end }}
{{- if and .Values.auth.jwt.secret .Values.auth.jwt.existingSecret }}
{{- fail "set auth.jwt.secret or auth.jwt.existingSecret, not both" }}
{{- end }}
{{- if and .Values.apiKeys.keys .Values.apiKeys.existingSecret }}
{{- fail "set apiKeys.keys or apiKeys.existingSecret, not both" }}
{{- end }}
{{- if and .Values.dapr.appToken .Values.dapr.appTokenExistingSecret }}
{{- fail "set dapr.appToken or dapr.appTokenExistingSecret, not both" }}
{{- end }}
{{- if and .Values.auth.header.secret .Values.auth.header.existingSecret }}
{{- fail "set auth.header.secret or auth.header.existingSecret, not both" }}
{{- end }}
{{- if and (eq .Values.auth.plugin "jwt") (not (or .Values.auth.jwt.secret .Values.auth.jwt.existingSecret .Values.auth.jwt.jwksUrl)) }}
{{- fail "auth.plugin jwt needs auth.jwt.secret, auth.jwt.existingSecret or auth.jwt.jwksUrl" }}
{{- end }}
{{- if and (eq .Values.auth.plugin "header") (not (or .Values.auth.header.trustedProxies .Values.auth.header.secret .Values.auth.header.existingSecret)) }}
{{- fail "auth.plugin header needs auth.header.trustedProxies, auth.header.secret or auth.header.existingSecret: a header anyone can send proves nothing" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.enabled needs at least one host in ingress.hosts, e.g. [{host: sync.example.com}]: an Ingress without hosts has no rules and routes nothing to TaskSync" }}
{{- end }}
{{- if not (or .Values.dapr.enabled .Values.apiKeys.keys .Values.apiKeys.existingSecret) }}
{{- fail "dapr.enabled is false and no apiKeys are set, so nothing could ever deliver an event to this install: without Dapr, events arrive only on POST /v1/events, which needs an API key. Set apiKeys.keys or apiKeys.existingSecret, or enable Dapr" }}
{{- end }}
{{- end }}

{{/*
Label matchers that select this release's series in PromQL: the ServiceMonitor's job is the
Service's name.
*/}}
{{- define "tasksync.promSelector" -}}
job="{{ include "tasksync.fullname" . }}", namespace="{{ .Release.Namespace }}"
{{- end }}

{{/*
The operator's RBAC, exactly tasksync_operator.rbac.RULES (tests/chart compares them): the
rules it needs in each watched namespace, and those that only a ClusterRole can grant.
*/}}
{{- define "tasksync.operator.namespacedRules" -}}
- apiGroups: [tasksync.io]
  resources: [tasksyncsubscriptions, ratelimitpolicies]
  verbs: [list, watch, patch]
- apiGroups: [tasksync.io]
  resources: [tasksyncsubscriptions/status, ratelimitpolicies/status]
  verbs: [patch]
- apiGroups: [tasksync.io]
  resources: [tasksyncsubscriptions/finalizers]
  verbs: [update]
- apiGroups: [dapr.io]
  resources: [subscriptions]
  verbs: [get, list, watch, create, update]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{- define "tasksync.operator.clusterScopedRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}

{{/*
The namespaces the operator watches, one per line; empty when it watches all of them.
*/}}
{{- define "tasksync.operator.namespaces" -}}
{{- if not .Values.operator.watchAllNamespaces }}
{{- range (default (list .Release.Namespace) .Values.operator.watchNamespaces) }}
{{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/*
True when the namespaced rules must be granted cluster-wide: all namespaces, or a glob that
matches namespaces which may not exist yet (a Role cannot be created ahead of them).
*/}}
{{- define "tasksync.operator.clusterWide" -}}
{{- if .Values.operator.watchAllNamespaces }}true
{{- else }}
{{- range .Values.operator.watchNamespaces }}
{{- if regexMatch "[*?\\[]" . }}true{{ end }}
{{- end }}
{{- end }}
{{- end }}
