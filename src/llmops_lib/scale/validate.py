"""Kubernetes manifests validated offline, strictly: what `kubectl apply` would accept, minus the silent parts.

There is no cluster here, and `kubectl --dry-run=client` needs one. Built-in kinds are checked by
kubernetes-validate against its strict schemas (unknown fields are errors). kubernetes-validate
passes every custom resource with a warning, so custom resources are checked here against the
vendored CRD schemas made strict (`crds.strict_schema`: a typo the API server would prune is an
error), then against the CRDs' CEL rules (`x-kubernetes-validations`, with cel-python) and their
list uniqueness (`x-kubernetes-list-type` set/map), all on the object as the API server sees it
(nulls of non-nullable fields dropped, schema defaults applied). Rules cel-python cannot evaluate
and transition rules (they compare with the object being replaced) are counted, never guessed. A
KubeRay RayService's `serveConfigV2` is a YAML string to the CRD: it is parsed and checked with
Ray's own Serve schema (`serve_config.check_serve_config`). A kind with no schema is a problem,
never a pass.

Explained in: book/chapters/10_scale/beyond_one_machine.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import kubernetes_validate
import yaml
from celpy import celtypes
from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError

from llmops_lib.errors import SpecError
from llmops_lib.scale.crds import OBJECT_META, vendored
from llmops_lib.scale.serve_config import check_serve_config

#: the Kubernetes release whose built-in schemas check built-in kinds (kubernetes-validate's newest)
KUBERNETES_VERSION = kubernetes_validate.latest_version()
#: API groups of built-in kinds without a dot (the others end in ".k8s.io"); "" is the core group
_LEGACY_GROUPS = {"", "apps", "batch", "autoscaling", "policy", "extensions"}
_TRANSITION = re.compile(r"\boldSelf\b")
_MESSAGE_CHARS = 300


@dataclass(frozen=True)
class Problem:
    """One reason a manifest would be refused (or silently changed) by a cluster."""

    where: str  # "deploy/rollout.yaml#2 Rollout/llm": file, document number (from 1), kind/name
    path: str  # JSON path inside the document: "spec.strategy.canary.steps[0]" ("" = the document)
    message: str  # one line

    def __str__(self) -> str:
        return f"{self.where}: {self.path or '<document>'}: {self.message}"


@dataclass
class Validation:
    """What a validation run found, and how much of the CRDs' CEL it could check."""

    problems: list[Problem] = field(default_factory=list)
    documents: int = 0
    cel_evaluated: int = 0  # rule evaluations that gave true or false
    cel_skipped: Counter[str] = field(default_factory=Counter)  # why a rule was not evaluated -> how many times

    @property
    def ok(self) -> bool:
        return not self.problems


def check_manifests(docs: Sequence[Any], *, source: str = "") -> Validation:
    """Validate Kubernetes objects (parsed YAML documents); `source` names them in every problem."""
    result = Validation()
    _check_into(result, docs, source)
    return result


def validate_manifests(docs: Sequence[Any], *, source: str = "") -> list[Problem]:
    """The problems of `check_manifests` ([] = every object valid)."""
    return check_manifests(docs, source=source).problems


def check_files(paths: Iterable[str | Path]) -> Validation:
    """Validate every document of every YAML file. SpecError for a file that cannot be read; a file
    that is not YAML is a problem of that file."""
    result = Validation()
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"cannot read manifest file {path}: {exc}; pass YAML files") from exc
        try:
            docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
        except yaml.YAMLError as exc:
            result.problems.append(Problem(str(path), "", "not valid YAML: " + _one_line(str(exc))))
            continue
        _check_into(result, docs, str(path))
    return result


def validate_files(paths: Iterable[str | Path]) -> list[Problem]:
    """The problems of `check_files` ([] = every document of every file valid)."""
    return check_files(paths).problems


def _check_into(result: Validation, docs: Sequence[Any], source: str) -> None:
    for number, doc in enumerate(docs, start=1):
        result.documents += 1
        where = f"{source}#{number}"
        if not isinstance(doc, dict):
            result.problems.append(Problem(where, "", f"a Kubernetes object is a mapping, got {type(doc).__name__}"))
            continue
        api_version, kind, metadata = doc.get("apiVersion"), doc.get("kind"), doc.get("metadata")
        where += f" {kind}/{metadata.get('name') if isinstance(metadata, dict) else None}"
        if not (isinstance(api_version, str) and isinstance(kind, str) and api_version and kind):
            result.problems.append(Problem(where, "", "apiVersion and kind must be non-empty strings"))
            continue
        for path, message in _document_problems(doc, result):
            result.problems.append(Problem(where, path, _one_line(message)))


def _document_problems(doc: dict, result: Validation) -> Iterator[tuple[str, str]]:
    api_version, kind = doc["apiVersion"], doc["kind"]
    crd = vendored().get((api_version, kind))
    if crd is not None:
        defaulted = _with_defaults(crd.raw, doc)  # what the API server validates: a required field may have a default
        yield from _schema_problems(crd.validator, defaulted)
        yield from _cel_problems(crd.raw, defaulted, "", result)
        if kind == "RayService" and isinstance(doc.get("spec"), dict) and "serveConfigV2" in doc["spec"]:
            yield from _serve_config_problems(doc["spec"]["serveConfigV2"])
        return
    served = sorted(crd.api_version for crd in vendored().values() if crd.kind == kind)
    if served:
        yield "apiVersion", f"{kind} is vendored for {', '.join(served)}, not {api_version}: use one of those"
        return
    if not _builtin_group(api_version):
        yield (
            "",
            (
                f"no schema for {kind} ({api_version}): not a built-in kind and no vendored CRD; "
                "vendor its CRD (scripts/vendor_crds.py) or fix apiVersion/kind"
            ),
        )
        return
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        yield "", f"no schema for {kind} ({api_version}) in Kubernetes {KUBERNETES_VERSION}: fix apiVersion/kind"
        return
    except kubernetes_validate.ValidationError as exc:  # it stops at the first error
        yield _json_path(exc.absolute_path), exc.message
    yield from _schema_problems(_metadata_validator(), doc)


def _builtin_group(api_version: str) -> bool:
    """kubernetes-validate drops the domain of a group (`apps.example.com/v1` -> apps): only groups
    Kubernetes itself serves may reach it, or a look-alike custom resource would pass as built-in."""
    group = api_version.rpartition("/")[0]
    return group in _LEGACY_GROUPS or group.endswith(".k8s.io")


@cache
def _metadata_validator() -> Draft7Validator:
    """What kubernetes-validate leaves out: metadata is required, and so are a valid name and namespace."""
    return Draft7Validator({"type": "object", "required": ["metadata"], "properties": {"metadata": OBJECT_META}})


def _schema_problems(validator: Draft7Validator, instance: Any) -> Iterator[tuple[str, str]]:
    for error in sorted(validator.iter_errors(instance), key=lambda error: list(map(str, error.absolute_path))):
        yield _json_path(error.absolute_path), _explain(error)


def _explain(error: ValidationError) -> str:
    """jsonschema's message, made specific for "valid under none of the given schemas"."""
    if error.validator not in ("anyOf", "oneOf") or not error.context:
        return error.message
    if all(sub.validator == "type" and not sub.relative_path for sub in error.context):
        types = ", ".join(repr(sub.validator_value) for sub in error.context)  # e.g. int-or-string
        return f"{error.instance!r} is not of type {types}"
    closest = min(error.context, key=lambda sub: len(sub.relative_path))
    return f"{_json_path(closest.relative_path) or 'value'}: {closest.message}"


def _json_path(parts: Iterable[Any]) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path.lstrip(".")


def _one_line(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= _MESSAGE_CHARS else message[: _MESSAGE_CHARS - 1] + "…"


def _with_defaults(schema: dict, value: Any) -> Any:
    """`value` as the API server sees it before validating: nulls of non-nullable fields dropped, then
    the schema's `default`s filled in where a field is absent (a required field may have a default;
    CEL rules rely on defaults too)."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        value = {
            name: item
            for name, item in value.items()
            if item is not None or name not in properties or properties[name].get("nullable")
        }
        for name, sub in properties.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = _with_defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in value.keys() - properties.keys():
                value[name] = _with_defaults(extra, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [_with_defaults(schema["items"], item) for item in value]
    return value


def _cel_problems(schema: dict, value: Any, path: str, result: Validation) -> Iterator[tuple[str, str]]:
    """Evaluate every CEL rule of the schema node at `path` with `self` = value, check list uniqueness,
    then do the same for the children."""
    for rule in schema.get("x-kubernetes-validations", ()):
        outcome = _evaluate(rule["rule"], value)
        if isinstance(outcome, str):
            result.cel_skipped[outcome] += 1
            continue
        result.cel_evaluated += 1
        if not outcome:
            where = path + rule.get("fieldPath", "") if rule.get("fieldPath", "").startswith(".") else path
            yield where.lstrip("."), f"{rule.get('message') or 'failed rule'} (CEL: {rule['rule']})"
    if isinstance(value, list):
        yield from _duplicates(schema, value, path)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            sub = properties.get(name, extra if isinstance(extra, dict) else None)
            if sub is not None:
                yield from _cel_problems(sub, item, f"{path}.{name}", result)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _cel_problems(schema["items"], item, f"{path}[{index}]", result)


def _duplicates(schema: dict, items: list, path: str) -> Iterator[tuple[str, str]]:
    """Entries a list-type `set` or `map` (keyed by `x-kubernetes-list-map-keys`) must not repeat:
    the API server refuses them; JSON Schema cannot say it for maps."""
    list_type = schema.get("x-kubernetes-list-type")
    if list_type not in ("set", "map"):
        return
    keys = schema.get("x-kubernetes-list-map-keys", ())
    seen = set()
    for index, item in enumerate(items):
        if list_type == "map" and isinstance(item, dict):
            key = json.dumps({name: item.get(name) for name in keys}, sort_keys=True)
        else:
            key = json.dumps(item, sort_keys=True, default=str)
        if key in seen:
            yield f"{path}[{index}]".lstrip("."), f"duplicate entry {key} in a list of type {list_type}"
        seen.add(key)


def _evaluate(rule: str, value: Any) -> bool | str:
    """True/False, or why the rule was not evaluated."""
    if _TRANSITION.search(rule):
        return "transition rule (compares with the object it replaces)"
    program = _program(rule)
    if program is None:
        return "cel-python cannot parse it"
    try:
        outcome = program.evaluate({"self": celpy.json_to_cel(value)})
    except (celpy.CELEvalError, TypeError, ValueError, KeyError, AttributeError):
        return "cel-python cannot evaluate it"
    if not isinstance(outcome, celtypes.BoolType):  # an error value, or a rule that is not a predicate
        return "cel-python cannot evaluate it"
    return bool(outcome)


@cache
def _program(rule: str) -> celpy.Runner | None:
    environment = _environment()
    try:
        return environment.program(environment.compile(rule))
    except celpy.CELParseError:
        return None


@cache
def _environment() -> celpy.Environment:
    return celpy.Environment()


def _serve_config_problems(text: Any) -> Iterator[tuple[str, str]]:
    if not isinstance(text, str):
        return  # the CRD schema already says it must be a string
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        yield "spec.serveConfigV2", f"not valid YAML: {exc}"
        return
    for message in check_serve_config(config):
        yield "spec.serveConfigV2", f"Serve config: {message}"
