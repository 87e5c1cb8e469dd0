"""Check that every EARSHOT_* setting the rendered chart passes to an
earshot container is one that container's subcommand reads.

A flag renamed in the binary would otherwise leave the chart setting an
environment variable nobody reads, and the pod silently running on the
default. Reads the subcommand's `--help` (clap prints `[env: NAME]` for each
flag) from the real binary.

Usage: chart_env.py EARSHOT_BINARY RENDERED.yaml...
"""

import re
import subprocess
import sys

import yaml

# Read outside clap: the models crate (EARSHOT_MODELS_DIR, EARSHOT_HUB_FORMAT)
# and the CUDA image's entrypoint (EARSHOT_COMPUTE_CAP, EARSHOT_BIN_DIR).
OUTSIDE_CLAP = {"EARSHOT_MODELS_DIR", "EARSHOT_HUB_FORMAT", "EARSHOT_COMPUTE_CAP", "EARSHOT_BIN_DIR"}


def known_env(binary, sub, cache={}):
    if sub not in cache:
        out = subprocess.run([binary, sub, "--help"], capture_output=True, text=True, check=True).stdout
        cache[sub] = set(re.findall(r"\[env: (EARSHOT_[A-Z0-9_]+)", out))
    return cache[sub]


def main():
    binary, files = sys.argv[1], sys.argv[2:]
    failed = 0
    for f in files:
        docs = [d for d in yaml.safe_load_all(open(f)) if d]
        configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
        for d in docs:
            if d["kind"] != "Deployment":
                continue
            for c in d["spec"]["template"]["spec"]["containers"]:
                sub = (c.get("args") or ["serve"])[0]
                names = {e["name"] for e in c.get("env", [])}
                for src in c.get("envFrom", []):
                    ref = src.get("configMapRef", {}).get("name")
                    if ref is not None:
                        if ref not in configmaps:
                            print(f"FAIL  {f}: {d['metadata']['name']} reads ConfigMap {ref}, which the chart does not render")
                            failed += 1
                            continue
                        names |= set(configmaps[ref])
                ours = sorted(n for n in names if n.startswith("EARSHOT_"))
                unknown = [n for n in ours if n not in known_env(binary, sub) and n not in OUTSIDE_CLAP]
                where = f"{f}: {d['metadata']['name']} (earshot {sub})"
                if unknown:
                    failed += 1
                    print(f"FAIL  {where}: not read by `earshot {sub}`: {', '.join(unknown)}")
                else:
                    print(f"ok    {where}: {len(ours)} EARSHOT_* settings, all read")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
