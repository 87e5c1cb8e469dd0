"""Validate rendered Kubernetes manifests (multi-document YAML files).

Built-in kinds go to kubernetes-validate (the Kubernetes OpenAPI schemas
for one version, strict: unknown fields are errors). Custom resources are
checked against the openAPIV3Schema of vendored CustomResourceDefinitions,
made strict the same way: an object that lists its properties and does not
say x-kubernetes-preserve-unknown-fields rejects any other field, as the
API server's strict field validation (kubectl apply --validate=strict)
would. A kind with no schema at all is an error, never a silent pass.

Usage: validate_manifests.py --k8s 1.33.0 --crds DIR [--crds DIR] FILE...
Prints one line per resource; exits 1 if any is invalid.
"""

import argparse
import copy
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml


def strict(schema):
    """Copy of an OpenAPI v3 CRD schema where listed properties are closed."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


def load_crds(dirs):
    """(apiVersion, kind) -> strict JSON schema, from every CRD in `dirs`."""
    out = {}
    for d in dirs:
        for path in sorted(pathlib.Path(d).glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for version in spec["versions"]:
                    if not version.get("served", True):
                        continue
                    schema = version["schema"]["openAPIV3Schema"]
                    key = (f'{spec["group"]}/{version["name"]}', spec["names"]["kind"])
                    out[key] = strict(schema)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k8s", required=True, help="Kubernetes version, e.g. 1.33.0")
    ap.add_argument("--crds", action="append", default=[], help="folder of CRD YAML files")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    crds = load_crds(args.crds)
    failed = 0
    for f in args.files:
        for doc in yaml.safe_load_all(pathlib.Path(f).read_text()):
            if not doc:
                continue
            api, kind = doc.get("apiVersion"), doc.get("kind")
            name = f'{f}: {kind} {doc.get("metadata", {}).get("name")}'
            try:
                if (api, kind) in crds:
                    validator = jsonschema.Draft7Validator(crds[(api, kind)])
                    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
                    if errors:
                        raise ValueError(
                            "; ".join(
                                f'{"/".join(map(str, e.path)) or "(root)"}: {e.message}'
                                for e in errors
                            )
                        )
                    via = "vendored CRD schema"
                elif "." in api.split("/")[0] and not api.split("/")[0].endswith("k8s.io"):
                    raise ValueError(f"no vendored CRD schema for {api} {kind}")
                else:
                    kubernetes_validate.validate(doc, args.k8s, strict=True)
                    via = f"Kubernetes {args.k8s} schema"
                print(f"ok    {name} ({via})")
            except (kubernetes_validate.ValidationError, ValueError,
                    kubernetes_validate.SchemaNotFoundError) as e:
                failed += 1
                msg = getattr(e, "message", None) or str(e)
                path = "/".join(map(str, getattr(e, "path", []) or []))
                print(f"FAIL  {name}: {path + ': ' if path else ''}{msg}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
