"""The vendored CRD schemas of the custom resources we render, as strict JSON Schema.

The API server validates a custom resource against its CRD's `openAPIV3Schema` and then silently
prunes fields the schema does not know: a typo such as `setweight` is accepted and dropped, and the
canary runs without its step. Offline we want the opposite, so `strict_schema` converts the CRD
schema into JSON Schema that rejects what would be pruned: `additionalProperties: false` on every
object unless it is marked `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-int-or-string` as
integer-or-string, `nullable` as a null type, the other `x-kubernetes-*` markers dropped, and
`metadata` as a strict ObjectMeta whose name must be a DNS-1123 subdomain. The raw schema is kept
for what JSON Schema cannot say: defaults and the CEL rules (`x-kubernetes-validations`).

The files come from `scripts/vendor_crds.py` (pinned upstream tags, descriptions dropped);
`data/crds/SOURCES.yml` records repo, tag, path, license and sha256 of each upstream file.

Explained in: book/chapters/10_scale/beyond_one_machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, cached_property
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import yaml
from jsonschema import Draft7Validator
from pydantic import BaseModel, ConfigDict

DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = rf"^{DNS1123_LABEL}(\.{DNS1123_LABEL})*$"

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
#: metadata as the API server accepts it in a manifest (status-only fields included, so that an
#: exported object still validates); name and namespace are checked as the API server does.
OBJECT_META: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": DNS1123_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63, "pattern": rf"^{DNS1123_LABEL}$"},
        "generateName": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
        "uid": {"type": "string"},
        "resourceVersion": {"type": "string"},
        "generation": {"type": "integer"},
        "creationTimestamp": {"type": ["string", "null"]},
        "deletionTimestamp": {"type": ["string", "null"]},
        "deletionGracePeriodSeconds": {"type": "integer"},
        "managedFields": {"type": "array", "items": {"type": "object"}},
        "selfLink": {"type": "string"},
    },
}

_JUNCTORS = ("allOf", "anyOf", "oneOf")


def strict_schema(node: dict[str, Any], *, in_junctor: bool = False) -> dict[str, Any]:
    """JSON Schema (Draft 7) for one CRD schema node that rejects every field the API server would prune.

    Nodes under `allOf`/`anyOf`/`oneOf`/`not` only add constraints to the node that holds them (a
    structural-schema rule), so they never close an object themselves.
    """
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = strict_schema(value, in_junctor=in_junctor)
        elif key == "not":
            out[key] = strict_schema(value, in_junctor=True)
        elif key in _JUNCTORS:
            out[key] = [strict_schema(sub, in_junctor=True) for sub in value]
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    closed = not (in_junctor or node.get("x-kubernetes-preserve-unknown-fields"))
    if out.get("type") == "object" and closed and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


@dataclass(frozen=True)
class Crd:
    """One served version of one vendored CRD."""

    group: str
    version: str
    kind: str
    raw: dict[str, Any]  # the upstream openAPIV3Schema (defaults, CEL rules, x-kubernetes-* markers)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @cached_property
    def schema(self) -> dict[str, Any]:
        """The strict JSON Schema of a whole object of this kind."""
        schema = strict_schema(self.raw)
        schema.setdefault("properties", {})["metadata"] = OBJECT_META
        schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind", "metadata"})
        return schema

    @cached_property
    def validator(self) -> Draft7Validator:
        return Draft7Validator(self.schema)


class CrdSource(BaseModel):
    """Where one vendored CRD comes from (a row of `data/crds/SOURCES.yml`)."""

    model_config = ConfigDict(extra="forbid")
    file: str
    kind: str
    group: str
    versions: list[str]
    repo: str
    tag: str
    path: str
    license: str
    sha256: str


def crd_dir() -> Traversable:
    return files("llmops_lib") / "data" / "crds"


def sources() -> list[CrdSource]:
    """The provenance of every vendored CRD, in the order `scripts/vendor_crds.py` wrote them."""
    return [CrdSource(**row) for row in yaml.safe_load((crd_dir() / "SOURCES.yml").read_text(encoding="utf-8"))]


@cache
def vendored() -> dict[tuple[str, str], Crd]:
    """Every served version of every vendored CRD, by (apiVersion, kind)."""
    crds = {}
    for source in sources():
        data = json.loads((crd_dir() / source.file).read_text(encoding="utf-8"))
        for version, entry in data["versions"].items():
            crd = Crd(group=data["group"], version=version, kind=data["kind"], raw=entry["schema"])
            crds[(crd.api_version, crd.kind)] = crd
    return crds
