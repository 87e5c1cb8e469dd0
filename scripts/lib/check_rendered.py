"""Checks of rendered chart manifests that no schema expresses.

KEDA's CRD types trigger metadata as a map of strings, so a misspelled key
or an impossible cron window passes validate_manifests.py and only fails
inside the KEDA operator. This checks, per ScaledObject:

- trigger metadata keys against the scaler's own fields in KEDA 2.20
  (the `keda:"name=..."` tags of pkg/scalers/{aws_sqs_queue,cron,
  aws_cloudwatch}_scaler.go at v2.20.2), and the required ones present;
- cron: 5-field start/end that differ, a time zone the tz database knows,
  desiredReplicas >= 1; a cron trigger next to another trigger must be
  combined by advanced.scalingModifiers (the HPA takes the maximum of its
  metrics, so a plain cron trigger is a floor, not a gate);
- aws-cloudwatch: metricStatPeriod 1, 5, 10, 30 or a multiple of 60, and
  metricCollectionTime a multiple of it;
- scalingModifiers: formula and target (> 0) set, every name the formula
  uses is a named trigger, trigger names unique;
- authenticationRef names a TriggerAuthentication in the same file.

And per Deployment: a container whose backends are all managed
(EARSHOT_SPEECH_BACKEND=transcribe, EARSHOT_SUMMARY_BACKEND=bedrock, no
route or shadow that could run locally) gets no GPU, no GPU toleration, no
required spot affinity, no model cache, and EARSHOT_DEVICE cpu; a container
with EARSHOT_MIN_JOB_AGE (the overflow worker) is scaled by a ScaledObject
whose formula gates on that age.

Usage: check_rendered.py RENDERED.yaml...   (exits 1 on any failure)
"""

import re
import sys
import zoneinfo

import yaml

# Trigger metadata keys per scaler type, KEDA v2.20.2. identityOwner is left
# out on purpose: deprecated since 2.13 (the TriggerAuthentication says it).
SCALERS = {
    "aws-sqs-queue": {
        "keys": {"queueURL", "queueURLFromEnv", "queueLength", "activationQueueLength", "awsRegion",
                 "awsEndpoint", "scaleOnInFlight", "scaleOnDelayed"},
        "required": [{"awsRegion"}, {"queueURL", "queueURLFromEnv"}],
    },
    "cron": {
        "keys": {"timezone", "start", "end", "desiredReplicas"},
        "required": [{"timezone"}, {"start"}, {"end"}, {"desiredReplicas"}],
    },
    "aws-cloudwatch": {
        "keys": {"namespace", "metricName", "dimensionName", "dimensionValue", "expression",
                 "targetMetricValue", "activationTargetMetricValue", "minMetricValue", "ignoreNullValues",
                 "metricCollectionTime", "metricStat", "metricStatPeriod", "metricUnit",
                 "metricEndTimeOffset", "awsAccountId", "awsRegion", "awsEndpoint"},
        "required": [{"awsRegion"}, {"targetMetricValue"}, {"minMetricValue"}],
    },
}
# Words of the expr language (github.com/expr-lang/expr) that are not names.
EXPR_WORDS = {"and", "or", "not", "in", "matches", "contains", "startsWith", "endsWith", "true", "false",
              "nil", "let", "if", "else", "abs", "ceil", "floor", "round", "max", "min", "int", "float",
              "len", "all", "any", "none", "one", "filter", "map", "count", "sum", "mean", "median"}
CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,\-]+$")


def check_cron(meta, err):
    for k in ("start", "end"):
        fields = str(meta.get(k, "")).split()
        if len(fields) != 5 or not all(CRON_FIELD.match(f) for f in fields):
            err(f"cron {k} {meta.get(k)!r} is not a 5-field cron expression")
    if " ".join(str(meta.get("start", "")).split()) == " ".join(str(meta.get("end", "")).split()):
        err(f"cron start and end are the same ({meta.get('start')!r}): KEDA refuses the trigger")
    tz = meta.get("timezone", "")
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        err(f"cron timezone {tz!r}: unknown time zone (not in the IANA tz database)")
    if not re.fullmatch(r"[1-9][0-9]*", str(meta.get("desiredReplicas", ""))):
        err(f"cron desiredReplicas {meta.get('desiredReplicas')!r} must be an integer >= 1")


def check_cloudwatch(meta, err):
    if "expression" not in meta:
        for k in ("namespace", "metricName", "dimensionName", "dimensionValue"):
            if not meta.get(k):
                err(f"aws-cloudwatch without expression needs {k}")
        if len(meta.get("dimensionName", "").split(";")) != len(meta.get("dimensionValue", "").split(";")):
            err("aws-cloudwatch dimensionName and dimensionValue differ in length")
    period = int(meta.get("metricStatPeriod", 300))
    if not (period in (1, 5, 10, 30) or (period >= 60 and period % 60 == 0)):
        err(f"aws-cloudwatch metricStatPeriod {period} is not 1, 5, 10, 30 or a multiple of 60")
    collection = int(meta.get("metricCollectionTime", 300))
    if collection <= 0 or collection % period:
        err(f"aws-cloudwatch metricCollectionTime {collection} is not a positive multiple of {period}")
    for k in ("targetMetricValue", "minMetricValue", "activationTargetMetricValue"):
        if k in meta:
            try:
                float(meta[k])
            except ValueError:
                err(f"aws-cloudwatch {k} {meta[k]!r} is not a number")


def check_scaledobject(doc, auths, err):
    spec = doc["spec"]
    triggers = spec.get("triggers", [])
    names = [t["name"] for t in triggers if t.get("name")]
    if len(names) != len(set(names)):
        err(f"trigger names are not unique: {names}")
    for t in triggers:
        kind, meta = t["type"], t.get("metadata", {})
        scaler = SCALERS.get(kind)
        if scaler is None:
            err(f"trigger type {kind!r} is not one this check knows ({', '.join(sorted(SCALERS))})")
            continue
        unknown = sorted(set(meta) - scaler["keys"])
        if unknown:
            err(f"{kind} trigger: unknown metadata {', '.join(unknown)} (KEDA 2.20 reads {', '.join(sorted(scaler['keys']))})")
        for one_of in scaler["required"]:
            if not one_of & set(meta):
                err(f"{kind} trigger: missing {' or '.join(sorted(one_of))}")
        if kind == "cron":
            check_cron(meta, err)
        elif kind == "aws-cloudwatch":
            check_cloudwatch(meta, err)
        ref = (t.get("authenticationRef") or {})
        if ref and ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication" and ref["name"] not in auths:
            err(f"{kind} trigger: authenticationRef {ref['name']!r} is not rendered")
    mods = (spec.get("advanced") or {}).get("scalingModifiers")
    if mods:
        formula, target = mods.get("formula", ""), mods.get("target", "")
        if not formula or not target:
            err("scalingModifiers needs both formula and target")
        try:
            if float(target) <= 0:
                err(f"scalingModifiers target {target!r} must be > 0")
        except ValueError:
            err(f"scalingModifiers target {target!r} is not a number")
        used = set(re.findall(r"\b[A-Za-z_][A-Za-z0-9_]*", formula)) - EXPR_WORDS
        missing = sorted(used - set(names))
        if missing:
            err(f"scalingModifiers formula uses {', '.join(missing)}, which no named trigger provides")
    elif any(t["type"] == "cron" for t in triggers) and len(triggers) > 1:
        err("a cron trigger next to other triggers without advanced.scalingModifiers is only a floor "
            "(the HPA takes the maximum of the metrics), not a gate")


def env_of(container, configmaps):
    env = {}
    for src in container.get("envFrom", []):
        ref = (src.get("configMapRef") or {}).get("name")
        env.update(configmaps.get(ref, {}))
    for e in container.get("env", []):
        env[e["name"]] = e.get("value")
    return env


def check_deployment(doc, configmaps, scaledobjects, err):
    pod = doc["spec"]["template"]["spec"]
    for c in pod["containers"]:
        env = env_of(c, configmaps)
        managed_only = (
            env.get("EARSHOT_SPEECH_BACKEND") == "transcribe"
            and (env.get("EARSHOT_SUMMARY_BACKEND") == "bedrock" or env.get("EARSHOT_NO_SUMMARIZER") == "true")
            and "local" not in (env.get("EARSHOT_ROUTE") or "")
            and float(env.get("EARSHOT_SHADOW_RATE") or 0) == 0
        )
        if managed_only:
            res = c.get("resources", {})
            if any("nvidia.com/gpu" in (res.get(k) or {}) for k in ("limits", "requests")):
                err(f"container {c['name']}: managed backends only, but it asks for a GPU")
            if any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])):
                err(f"container {c['name']}: managed backends only, but it tolerates the GPU taint")
            req = ((pod.get("affinity") or {}).get("nodeAffinity") or {}).get(
                "requiredDuringSchedulingIgnoredDuringExecution")
            if req:
                err(f"container {c['name']}: managed backends only, but it has a required node affinity")
            if any(v["name"] == "model-cache" for v in pod.get("volumes", [])):
                err(f"container {c['name']}: managed backends only, but it mounts a model cache")
            if env.get("EARSHOT_DEVICE") != "cpu":
                err(f"container {c['name']}: managed backends only, but EARSHOT_DEVICE is {env.get('EARSHOT_DEVICE')!r}")
        age = env.get("EARSHOT_MIN_JOB_AGE")
        if age is not None:
            so = scaledobjects.get(doc["metadata"]["name"])
            formula = (((so or {}).get("spec", {}).get("advanced") or {}).get("scalingModifiers") or {}).get("formula", "")
            if not so or f"> {age}" not in formula:
                err(f"container {c['name']}: EARSHOT_MIN_JOB_AGE={age}, but no ScaledObject gates it on that age")
            elif not any(t["type"] == "aws-cloudwatch" and t["metadata"].get("metricName") == "ApproximateAgeOfOldestMessage"
                         for t in so["spec"]["triggers"]):
                err(f"container {c['name']}: its ScaledObject does not read ApproximateAgeOfOldestMessage")


def main():
    failed = 0
    for f in sys.argv[1:]:
        docs = [d for d in yaml.safe_load_all(open(f)) if d]
        auths = {d["metadata"]["name"] for d in docs if d.get("kind") == "TriggerAuthentication"}
        configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d.get("kind") == "ConfigMap"}
        scaledobjects = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d.get("kind") == "ScaledObject"}
        checked, before = 0, failed
        for d in docs:
            problems = []
            where = f"{f}: {d.get('kind')} {d.get('metadata', {}).get('name')}"
            if d.get("kind") == "ScaledObject":
                check_scaledobject(d, auths, problems.append)
            elif d.get("kind") == "Deployment":
                check_deployment(d, configmaps, scaledobjects, problems.append)
            else:
                continue
            checked += 1
            for p in problems:
                print(f"FAIL  {where}: {p}")
            failed += len(problems)
        if failed == before:
            print(f"ok    {f}: {checked} ScaledObject(s) and Deployment(s) checked")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
