"""Vendor the official CRD schemas that `llmops validate` checks custom resources against.

    .venv/bin/python scripts/vendor_crds.py --repos DIR            # rewrite src/llmops_lib/data/crds/
    .venv/bin/python scripts/vendor_crds.py --repos DIR --out OUT  # write elsewhere

DIR holds one git clone per upstream repository (bare or not), found as `DIR/<owner>+<name>/repo`
(the layout of the session's mirror tool) or `DIR/<name>` (a plain `git clone`). Files are read at the
pinned tags with `git show TAG:PATH`, so the checkouts may sit on any branch; nothing is downloaded.

Per CRD one compact JSON file (`<group>_<plural>.json`: group, kind, plural, scope and, per served
version, its `openAPIV3Schema` without descriptions; `x-kubernetes-*` markers, defaults and CEL rules
kept, `llmops_lib.scale.crds` turns them into strict JSON Schema at load time) and `SOURCES.yml`
(repo, tag, path, license, sha256 of the upstream file). Validation never reads the network.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "llmops_lib" / "data" / "crds"
LICENSE = "Apache-2.0"

#: (repository, tag, path of the CRD YAML in it): the tags the research pinned
#: (shared/research/beyond-one-machine.md, "Kubernetes manifests offline").
CRDS: tuple[tuple[str, str, str], ...] = (
    ("argoproj/argo-rollouts", "v1.9.1", "manifests/crds/rollout-crd.yaml"),
    ("argoproj/argo-rollouts", "v1.9.1", "manifests/crds/analysis-template-crd.yaml"),
    ("ray-project/kuberay", "v1.7.0", "ray-operator/config/crd/bases/ray.io_rayservices.yaml"),
    ("kserve/kserve", "v0.20.0", "config/crd/full/serving.kserve.io_inferenceservices.yaml"),
    ("kserve/kserve", "v0.20.0", "config/crd/full/llmisvc/serving.kserve.io_llminferenceservices.yaml"),
    (
        "kubernetes-sigs/gateway-api-inference-extension",
        "v1.6.0",
        "config/crd/bases/inference.networking.k8s.io_inferencepools.yaml",
    ),
    ("kubernetes-sigs/gateway-api", "v1.6.1", "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml"),
)

_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")


def without_descriptions(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema node without `description` keywords (a property NAMED description is kept)."""
    node = {key: value for key, value in schema.items() if key != "description"}
    if "properties" in node:
        node["properties"] = {name: without_descriptions(sub) for name, sub in node["properties"].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            node[key] = without_descriptions(node[key])
    for key in _SUBSCHEMA_LISTS:
        if key in node:
            node[key] = [without_descriptions(sub) for sub in node[key]]
    return node


def find_repo(root: Path, repo: str) -> Path:
    owner, name = repo.split("/")
    for candidate in (root / f"{owner}+{name}" / "repo", root / name, root / f"{name}.git"):
        if candidate.exists():
            return candidate
    raise SystemExit(f"error: no clone of {repo} under {root}: git clone https://github.com/{repo} {root / name}")


def upstream_file(clone: Path, tag: str, path: str) -> bytes:
    shown = subprocess.run(["git", "-C", str(clone), "show", f"{tag}:{path}"], capture_output=True, check=False)
    if shown.returncode != 0:
        raise SystemExit(f"error: {clone} has no {tag}:{path} ({shown.stderr.decode().strip()}); git fetch --tags")
    return shown.stdout


def compact_crd(crd: dict[str, Any]) -> dict[str, Any]:
    spec = crd["spec"]
    return {
        "group": spec["group"],
        "kind": spec["names"]["kind"],
        "plural": spec["names"]["plural"],
        "scope": spec["scope"],
        "versions": {
            version["name"]: {"schema": without_descriptions(version["schema"]["openAPIV3Schema"])}
            for version in spec["versions"]
            if version.get("served", True)
        },
    }


def vendor(repos: Path, out: Path) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    sources = []
    for repo, tag, path in CRDS:
        raw = upstream_file(find_repo(repos, repo), tag, path)
        crd = compact_crd(yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
        name = f"{crd['group']}_{crd['plural']}.json"
        (out / name).write_text(json.dumps(crd, separators=(",", ":"), sort_keys=True) + "\n", encoding="utf-8")
        sources.append(
            {
                "file": name,
                "kind": crd["kind"],
                "group": crd["group"],
                "versions": sorted(crd["versions"]),
                "repo": f"https://github.com/{repo}",
                "tag": tag,
                "path": path,
                "license": LICENSE,
                "sha256": hashlib.sha256(raw).hexdigest(),
            }
        )
    header = "# Written by scripts/vendor_crds.py: where each vendored CRD schema comes from. Do not edit.\n"
    (out / "SOURCES.yml").write_text(header + yaml.safe_dump(sources, sort_keys=False), encoding="utf-8")
    return sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=Path, required=True, help="folder holding the upstream git clones")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"output folder (default {OUT_DIR})")
    args = parser.parse_args()
    for source in vendor(args.repos, args.out):
        size = (args.out / source["file"]).stat().st_size
        print(f"{source['file']:<55} {source['kind']:<22} {source['tag']:<8} {size / 1024:8.1f} KiB")


if __name__ == "__main__":
    main()
