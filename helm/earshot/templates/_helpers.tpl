{{/* Names and labels. */}}
{{- define "earshot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "earshot.fullname" -}}
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

{{- define "earshot.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "earshot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "earshot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "earshot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component: (dict "root" $ "component" "worker"). */}}
{{- define "earshot.componentLabels" -}}
{{ include "earshot.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "earshot.componentSelector" -}}
{{ include "earshot.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "earshot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "earshot.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* image: repository[:tag][@digest]; the tag defaults to appVersion-cuda|cpu. */}}
{{- define "earshot.image" -}}
{{- $tag := default (printf "%s-%s" .Chart.AppVersion .Values.device) .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
Scheduling of one component's pods: (dict "root" $ "component" .Values.worker).
The chart-wide `scheduling` merged with the component's own. Spot capacity
is a node affinity on Karpenter's or EKS managed node groups' capacity
label; a GPU request tolerates the nvidia.com/gpu taint.
*/}}
{{- define "earshot.scheduling" -}}
{{- $root := .root -}}
{{- $s := mergeOverwrite (deepCopy $root.Values.scheduling) (deepCopy (default dict .component.scheduling)) -}}
{{- $gpu := and (eq $root.Values.device "cuda") (gt (int .component.gpu) 0) -}}
{{- $spotTerm := dict -}}
{{- if $s.spot.enabled -}}
{{- if eq $s.spot.provisioner "karpenter" -}}
{{- $spotTerm = dict "key" "karpenter.sh/capacity-type" "operator" "In" "values" (list "spot") -}}
{{- else -}}
{{- $spotTerm = dict "key" "eks.amazonaws.com/capacityType" "operator" "In" "values" (list "SPOT") -}}
{{- end -}}
{{- end -}}
{{- $affinity := deepCopy (default dict $s.affinity) -}}
{{- if $s.spot.enabled -}}
{{- $nodeAffinity := default dict $affinity.nodeAffinity -}}
{{- if eq $s.spot.mode "required" -}}
{{- $req := default dict (get $nodeAffinity "requiredDuringSchedulingIgnoredDuringExecution") -}}
{{- $terms := default list $req.nodeSelectorTerms -}}
{{- if $terms -}}
{{- $newTerms := list -}}
{{- range $terms -}}
{{- $newTerms = append $newTerms (merge (dict "matchExpressions" (append (default list .matchExpressions) $spotTerm)) .) -}}
{{- end -}}
{{- $terms = $newTerms -}}
{{- else -}}
{{- $terms = list (dict "matchExpressions" (list $spotTerm)) -}}
{{- end -}}
{{- $_ := set $req "nodeSelectorTerms" $terms -}}
{{- $_ := set $nodeAffinity "requiredDuringSchedulingIgnoredDuringExecution" $req -}}
{{- else -}}
{{- $pref := default list (get $nodeAffinity "preferredDuringSchedulingIgnoredDuringExecution") -}}
{{- $pref = append $pref (dict "weight" 100 "preference" (dict "matchExpressions" (list $spotTerm))) -}}
{{- $_ := set $nodeAffinity "preferredDuringSchedulingIgnoredDuringExecution" $pref -}}
{{- end -}}
{{- $_ := set $affinity "nodeAffinity" $nodeAffinity -}}
{{- end -}}
{{- $tolerations := default list $s.tolerations -}}
{{- if and $gpu $s.gpuToleration -}}
{{- $tolerations = append $tolerations (dict "key" "nvidia.com/gpu" "operator" "Exists" "effect" "NoSchedule") -}}
{{- end -}}
{{- with $s.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $s.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $s.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/*
The pod-spec fields every earshot pod shares, for one component:
(dict "root" $ "component" .Values.worker). The kubelet's grace period is
the component's own shutdown grace plus a margin, so it never SIGKILLs a
pod that is still draining.
*/}}
{{- define "earshot.podSpecCommon" -}}
{{- $root := .root -}}
serviceAccountName: {{ include "earshot.serviceAccountName" $root }}
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ add .component.shutdownGraceSeconds .component.terminationMarginSeconds }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with (include "earshot.scheduling" . | trim) }}
{{ . }}
{{- end }}
{{- end -}}

{{/* Container resources, with the GPU limit when the component has one. */}}
{{- define "earshot.resources" -}}
{{- $r := deepCopy (default dict .component.resources) -}}
{{- if and (eq .root.Values.device "cuda") (gt (int .component.gpu) 0) -}}
{{- $limits := default dict $r.limits -}}
{{- $_ := set $limits "nvidia.com/gpu" (int .component.gpu) -}}
{{- $_ := set $r "limits" $limits -}}
{{- end -}}
{{- toYaml $r -}}
{{- end -}}

{{/* Environment shared by every earshot container (besides the ConfigMap). */}}
{{- define "earshot.secretEnv" -}}
{{- with .Values.models.hfTokenSecret.name }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.models.hfTokenSecret.key }}
{{- end }}
{{- end -}}

{{/* Volumes shared by every earshot pod: /tmp and the model cache. */}}
{{- define "earshot.volumes" -}}
- name: tmp
  emptyDir: {}
- name: model-cache
{{- if .Values.models.cache.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.models.cache.existingClaim }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.models.cache.sizeLimit }}
{{- end }}
{{- end -}}

{{- define "earshot.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: model-cache
  mountPath: {{ .Values.models.cache.mountPath }}
{{- end -}}

{{/* Probes on a named port: (dict "probes" .Values.worker "port" "probes"). */}}
{{- define "earshot.probes" -}}
startupProbe:
  httpGet:
    path: /health
    port: {{ .port }}
  periodSeconds: {{ .probes.startupProbe.periodSeconds }}
  failureThreshold: {{ .probes.startupProbe.failureThreshold }}
livenessProbe:
  httpGet:
    path: /health
    port: {{ .port }}
  periodSeconds: {{ .probes.livenessProbe.periodSeconds }}
  failureThreshold: {{ .probes.livenessProbe.failureThreshold }}
  timeoutSeconds: 5
readinessProbe:
  httpGet:
    path: /ready
    port: {{ .port }}
  periodSeconds: {{ .probes.readinessProbe.periodSeconds }}
  failureThreshold: {{ .probes.readinessProbe.failureThreshold }}
  timeoutSeconds: 5
{{- end -}}

{{/* Checks values the schema cannot express. */}}
{{- define "earshot.validate" -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail (printf "autoscaling.minReplicas (%v) is above autoscaling.maxReplicas (%v)" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) -}}
{{- end -}}
{{- if and .Values.worker.enabled (eq .Values.queue.type "sqs") (not .Values.queue.url) -}}
{{- fail "queue.url is required when queue.type is sqs (the SQS queue URL the worker drains and KEDA watches)" -}}
{{- end -}}
{{- if and .Values.worker.enabled .Values.autoscaling.enabled (eq .Values.queue.type "local") -}}
{{- fail "autoscaling needs queue.type sqs: KEDA cannot read the local folder queue; set autoscaling.enabled=false" -}}
{{- end -}}
{{- if and .Values.worker.enabled (eq .Values.queue.type "local") (gt (int .Values.worker.replicas) 1) (not .Values.queue.local.existingClaim) -}}
{{- fail "several workers on a local queue need a shared volume: set queue.local.existingClaim (a ReadWriteMany claim)" -}}
{{- end -}}
{{- if and .Values.api.hpa.enabled (gt (int .Values.api.hpa.minReplicas) (int .Values.api.hpa.maxReplicas)) -}}
{{- fail (printf "api.hpa.minReplicas (%v) is above api.hpa.maxReplicas (%v)" .Values.api.hpa.minReplicas .Values.api.hpa.maxReplicas) -}}
{{- end -}}
{{- end -}}
