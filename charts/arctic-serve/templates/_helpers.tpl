{{/*
Names and labels. <fullname> is the release name (plus "-arctic-serve" unless it already contains
the chart name); every object of the operator is "<fullname>-operator". Cluster-scoped objects also
carry the release namespace, so two releases of the same name in different namespaces never clash.
*/}}
{{- define "arctic-serve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "arctic-serve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The operator's namespaced objects (Deployment, Service, ServiceAccount, Role). */}}
{{- define "arctic-serve.operatorName" -}}
{{- printf "%s-operator" (include "arctic-serve.fullname" .) }}
{{- end }}

{{/* The operator's cluster-scoped objects (ClusterRoles, ClusterRoleBindings). */}}
{{- define "arctic-serve.clusterName" -}}
{{- printf "%s-%s-operator" .Release.Namespace (include "arctic-serve.fullname" .) }}
{{- end }}

{{- define "arctic-serve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "arctic-serve.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "arctic-serve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "arctic-serve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "arctic-serve.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "arctic-serve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: arctic-serve
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "arctic-serve.operatorImage" -}}
{{- $img := .Values.operator.image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* An engine image ({repository, tag}) as repository:tag; call with (list $ $image). */}}
{{- define "arctic-serve.engineImage" -}}
{{- $root := index . 0 }}
{{- $img := index . 1 }}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) }}
{{- end }}

{{/*
The operator's workload permissions: the same rules whether they land in the ClusterRole
(cluster-wide) or in the Role of watchNamespace (single namespace).
*/}}
{{- define "arctic-serve.workloadRules" -}}
# Its own resource. patch/update on the main resource: kopf keeps its finalizer and handler state
# in metadata (finalizers, annotations); the operator never creates or deletes these objects.
- apiGroups: [serving.arctic-serve.dev]
  resources: [arcticinferenceservices]
  verbs: [get, list, watch, patch, update]
- apiGroups: [serving.arctic-serve.dev]
  resources: [arcticinferenceservices/status, arcticinferenceservices/scale]
  verbs: [get, patch, update]
# Children carry an ownerReference with blockOwnerDeletion: true (kopf.adopt); clusters with the
# OwnerReferencesPermissionEnforcement admission plugin (OpenShift, for one) allow that only to
# whoever may update the owner's finalizers.
- apiGroups: [serving.arctic-serve.dev]
  resources: [arcticinferenceservices/finalizers]
  verbs: [update]
# The children it owns (deleted with their parent by ownerReference garbage collection; the operator
# deletes them itself only when the spec no longer asks for them). list/watch: the operator keeps a
# watch-based cache of its children (a kopf index per kind), instead of listing them every pass. The engines run as a Deployment
# (model cache on an emptyDir) or a StatefulSet (a cache PVC per replica, which the StatefulSet
# controller creates: the operator needs no PVC rights).
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, update, patch, delete]
# The per-service admin token of the runtime's /arctic/v1 API: created once, never rewritten (the
# ownerReference's garbage collection deletes it). No list/watch: it reads only the Secrets it names,
# so it cannot enumerate the namespace's other Secrets; no update/patch/delete.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create]
# Engine pods, read only, never watched: a reconcile lists a resource's engine pods by label while
# its workload is not all ready (crash loops, image pulls, unschedulable pods), and the control loop
# (spec.autoscaling, capController) lists them to scrape their /metrics and reach their admin API.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
# kopf posts handler progress and errors as core/v1 Events on the objects it handles.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- if .Values.networkPolicy.enabled }}
# networkPolicy.enabled: a NetworkPolicy per ArcticInferenceService (its engines' admin port admits
# only the operator's pods).
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, update, patch, delete]
{{- end }}
{{- if .Values.monitoring.enabled }}
# monitoring.enabled: a ServiceMonitor/PodMonitor per ArcticInferenceService.
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors, podmonitors]
  verbs: [get, list, watch, create, update, patch, delete]
{{- end }}
{{- with .Values.rbac.extraRules }}
# rbac.extraRules
{{ toYaml . }}
{{- end }}
{{- end }}
