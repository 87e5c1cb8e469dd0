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

{{/* The image of a pod that needs no GPU: the main image when `device` is
cpu, else the CPU image (image.cpuTag, default <appVersion>-cpu). */}}
{{- define "earshot.cpuImage" -}}
{{- if eq .Values.device "cpu" -}}
{{- include "earshot.image" . -}}
{{- else -}}
{{- $tag := default (printf "%s-cpu" .Chart.AppVersion) .Values.image.cpuTag -}}
{{- if .Values.image.cpuDigest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.cpuDigest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
"true" when the queue worker loads no model: speech on Transcribe, the
summary on Bedrock (or no summarizer), and neither a route nor shadow runs
that could send work to a local engine.
*/}}
{{- define "earshot.workerManagedOnly" -}}
{{- $b := .Values.backends -}}
{{- if and (eq $b.speech "transcribe") (or (eq $b.summary "bedrock") (not .Values.models.summarizer)) (not (regexMatch "local" (default "" $b.route))) (eq (float64 (default 0 $b.shadowRate)) 0.0) -}}
true
{{- end -}}
{{- end -}}

{{/*
The 5-field cron expression of scaling.activeHours' `start` or `end`:
(dict "time" "08:00" "days" "1-5"). HH:MM becomes "M H * * days"; a cron
expression is used as it is.
*/}}
{{- define "earshot.activeHoursCron" -}}
{{- if regexMatch "^[0-9]{1,2}:[0-9]{2}$" .time -}}
{{- $hm := splitList ":" .time -}}
{{- printf "%d %d * * %s" (atoi (index $hm 1)) (atoi (index $hm 0)) (default "*" .days) -}}
{{- else -}}
{{- regexReplaceAll "\\s+" (trim .time) " " -}}
{{- end -}}
{{- end -}}

{{/* The SQS queue's name (the last segment of queue.url), for CloudWatch. */}}
{{- define "earshot.queueName" -}}
{{- .Values.queue.url | trimSuffix "/" | splitList "/" | last -}}
{{- end -}}

{{/*
Scheduling of one component's pods: (dict "root" $ "component" .Values.worker),
plus "cpuOnly" true for pods without a GPU (managed backends only).
The chart-wide `scheduling` merged with the component's own. Spot capacity
is a node affinity on Karpenter's or EKS managed node groups' capacity
label; a GPU request tolerates the nvidia.com/gpu taint. A cpuOnly pod
takes none of the chart-wide GPU placement: spot is at most preferred.
*/}}
{{- define "earshot.scheduling" -}}
{{- $root := .root -}}
{{- $base := $root.Values.scheduling -}}
{{- if .cpuOnly -}}
{{- $spot := dict "enabled" $root.Values.scheduling.spot.enabled "provisioner" (default "karpenter" $root.Values.scheduling.spot.provisioner) "mode" "preferred" -}}
{{- $base = dict "spot" $spot "gpuToleration" false "priorityClassName" (default "" $root.Values.scheduling.priorityClassName) -}}
{{- end -}}
{{- $s := mergeOverwrite (deepCopy $base) (deepCopy (default dict .component.scheduling)) -}}
{{- $gpu := and (not .cpuOnly) (eq $root.Values.device "cuda") (gt (int .component.gpu) 0) -}}
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
{{- if and (not .cpuOnly) (eq .root.Values.device "cuda") (gt (int .component.gpu) 0) -}}
{{- $limits := default dict $r.limits -}}
{{- $_ := set $limits "nvidia.com/gpu" (int .component.gpu) -}}
{{- $_ := set $r "limits" $limits -}}
{{- end -}}
{{- toYaml $r -}}
{{- end -}}

{{/* Environment shared by every earshot container (besides the ConfigMap). */}}
{{- define "earshot.secretEnv" -}}
{{- with .Values.models.hfTokenSecret.name }}
{{- if $.Values.models.hfTokenSecret.mountAsFile }}
- name: HF_TOKEN_PATH
  value: /var/run/secrets/earshot/hf/token
{{- else }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.models.hfTokenSecret.key }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes of an earshot pod: /tmp, and the model cache unless the pod
loads no model: (dict "root" $ "cpuOnly" false). */}}
{{- define "earshot.volumes" -}}
- name: tmp
  emptyDir: {}
{{- with .root.Values.models.hfTokenSecret }}
{{- if and .name .mountAsFile }}
- name: hf-token
  secret:
    secretName: {{ .name }}
    defaultMode: 0440
    items:
      - key: {{ .key }}
        path: token
{{- end }}
{{- end }}
{{- if not .cpuOnly }}
- name: model-cache
{{- if .root.Values.models.cache.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .root.Values.models.cache.existingClaim }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .root.Values.models.cache.sizeLimit }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "earshot.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- with .root.Values.models.hfTokenSecret }}
{{- if and .name .mountAsFile }}
- name: hf-token
  mountPath: /var/run/secrets/earshot/hf
  readOnly: true
{{- end }}
{{- end }}
{{- if not .cpuOnly }}
- name: model-cache
  mountPath: {{ .root.Values.models.cache.mountPath }}
{{- end }}
{{- end -}}

{{/*
Backend settings of a queue worker that runs the configured backends (not
the overflow worker): (dict "root" $ "cpuOnly" bool). The managed-backend
settings only when a job can reach Transcribe or Bedrock.
*/}}
{{- define "earshot.backendEnv" -}}
{{- $b := .root.Values.backends -}}
- name: EARSHOT_SPEECH_BACKEND
  value: {{ $b.speech | quote }}
- name: EARSHOT_SUMMARY_BACKEND
  value: {{ $b.summary | quote }}
{{- if gt (int $b.deadlineSeconds) 0 }}
- name: EARSHOT_DEADLINE
  value: {{ $b.deadlineSeconds | quote }}
{{- end }}
{{- with $b.route }}
- name: EARSHOT_ROUTE
  value: {{ . | quote }}
{{- end }}
{{- if gt (float64 (default 0 $b.shadowRate)) 0.0 }}
- name: EARSHOT_SHADOW_RATE
  value: {{ $b.shadowRate | toString | quote }}
{{- end }}
{{- if or (ne $b.speech "local") (ne $b.summary "local") $b.route (gt (float64 (default 0 $b.shadowRate)) 0.0) }}
{{- include "earshot.managedEnv" .root }}
{{- end }}
{{- if not .cpuOnly }}
{{- with $b.instanceType }}
- name: EARSHOT_INSTANCE_TYPE
  value: {{ . | quote }}
{{- end }}
{{- if not (kindIs "invalid" $b.spotShare) }}
- name: EARSHOT_SPOT_SHARE
  value: {{ $b.spotShare | toString | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Where the managed backends write and which model they call. */}}
{{- define "earshot.managedEnv" -}}
{{- $b := .Values.backends }}
- name: EARSHOT_BEDROCK_MODEL
  value: {{ $b.bedrockModel | quote }}
{{- with $b.transcribeBucket }}
- name: EARSHOT_TRANSCRIBE_BUCKET
  value: {{ . | quote }}
{{- end }}
- name: EARSHOT_TRANSCRIBE_PREFIX
  value: {{ $b.transcribePrefix | quote }}
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
{{- $b := .Values.backends -}}
{{- if and (or (eq $b.speech "hybrid") (eq $b.summary "hybrid")) (eq (int $b.deadlineSeconds) 0) -}}
{{- fail "a hybrid backend needs backends.deadlineSeconds: it runs a job on the managed backend only when local processing would miss that deadline" -}}
{{- end -}}
{{- $o := .Values.overflow -}}
{{- if $o.enabled -}}
{{- if eq (int $b.deadlineSeconds) 0 -}}
{{- fail "overflow needs backends.deadlineSeconds: the overflow worker takes only jobs older than the deadline (EARSHOT_MIN_JOB_AGE), and KEDA starts it when the queue's oldest message is past it" -}}
{{- end -}}
{{- if ne .Values.queue.type "sqs" -}}
{{- fail "overflow needs queue.type sqs: it shares the SQS queue with the GPU workers and KEDA scales it on that queue's CloudWatch metrics" -}}
{{- end -}}
{{- if gt (int $o.minReplicas) (int $o.maxReplicas) -}}
{{- fail (printf "overflow.minReplicas (%v) is above overflow.maxReplicas (%v)" $o.minReplicas $o.maxReplicas) -}}
{{- end -}}
{{- if ne (mod (int $o.ageMetric.collectionSeconds) (int $o.ageMetric.periodSeconds)) 0 -}}
{{- fail (printf "overflow.ageMetric.collectionSeconds (%v) must be a multiple of overflow.ageMetric.periodSeconds (%v)" $o.ageMetric.collectionSeconds $o.ageMetric.periodSeconds) -}}
{{- end -}}
{{- end -}}
{{- $ah := .Values.scaling.activeHours -}}
{{- if $ah.enabled -}}
{{- if not (and .Values.worker.enabled .Values.autoscaling.enabled (eq .Values.queue.type "sqs")) -}}
{{- fail "scaling.activeHours needs the KEDA-scaled worker: worker.enabled, autoscaling.enabled and queue.type sqs" -}}
{{- end -}}
{{- if gt (int .Values.autoscaling.minReplicas) 0 -}}
{{- fail (printf "scaling.activeHours scales the workers to zero outside the active hours, but autoscaling.minReplicas is %v: set it to 0" .Values.autoscaling.minReplicas) -}}
{{- end -}}
{{- $cronForm := or (not (regexMatch "^[0-9]{1,2}:[0-9]{2}$" $ah.start)) (not (regexMatch "^[0-9]{1,2}:[0-9]{2}$" $ah.end)) -}}
{{- if and $cronForm $ah.days -}}
{{- fail "scaling.activeHours.days applies to HH:MM start and end only: put the days into the cron expressions instead" -}}
{{- end -}}
{{- $start := include "earshot.activeHoursCron" (dict "time" $ah.start "days" $ah.days) -}}
{{- $end := include "earshot.activeHoursCron" (dict "time" $ah.end "days" $ah.days) -}}
{{- if eq $start $end -}}
{{- fail (printf "scaling.activeHours: start and end are the same (%q): KEDA's cron trigger needs a window" $start) -}}
{{- end -}}
{{- end -}}
{{- end -}}
