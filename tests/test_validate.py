"""Kubernetes manifests validated offline: hand-written valid objects of every kind pass, deliberately broken
ones are all rejected with the reason, a kind with no schema fails. No cluster, no network, no engine."""

from __future__ import annotations

import copy

import pytest
import yaml

from llmops_lib.errors import SpecError
from llmops_lib.scale import crds
from llmops_lib.scale.crds import strict_schema
from llmops_lib.scale.validate import Problem, check_manifests, validate_files, validate_manifests

SERVE_CONFIG = """\
proxy_location: HeadOnly
http_options: {host: 0.0.0.0, port: 8000}
applications:
- name: llm
  route_prefix: /
  import_path: llmops_lib.scale.serve_app:build_app
  deployments:
  - name: llama_server
    num_replicas: 2
    ray_actor_options: {num_cpus: 1}
"""

VALID = {
    "Deployment": """
apiVersion: apps/v1
kind: Deployment
metadata: {name: llm-stable, namespace: llmops, labels: {app: llm}}
spec:
  replicas: 2
  selector: {matchLabels: {app: llm}}
  template:
    metadata: {labels: {app: llm}}
    spec:
      containers:
      - name: llama-server
        image: ghcr.io/ggml-org/llama.cpp:server
        args: [--model, /models/gemma.gguf, --host, 0.0.0.0, --port, "8080"]
        ports: [{containerPort: 8080, name: http}]
""",
    "Service": """
apiVersion: v1
kind: Service
metadata: {name: llm-stable, namespace: llmops}
spec:
  selector: {app: llm}
  ports: [{name: http, port: 8080, targetPort: 8080}]
""",
    "Rollout": """
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: llm, namespace: llmops}
spec:
  replicas: 2
  selector: {matchLabels: {app: llm}}
  template:
    metadata: {labels: {app: llm}}
    spec:
      containers:
      - name: llama-server
        image: ghcr.io/ggml-org/llama.cpp:server
        args: [--port, "8080"]
        ports: [{containerPort: 8080}]
  strategy:
    canary:
      stableService: llm-stable
      canaryService: llm-canary
      trafficRouting:
        plugins:
          argoproj-labs/gatewayAPI: {httpRoute: llm, namespace: llmops}
      steps:
      - setWeight: 10
      - pause: {duration: 60s}
      - analysis: {templates: [{templateName: llm-analysis}]}
      - setWeight: 60
      - pause: {}
""",
    "AnalysisTemplate": """
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: llm-analysis, namespace: llmops}
spec:
  metrics:
  - name: error-rate
    interval: 30s
    count: 3
    failureLimit: 1
    successCondition: result[0] <= 0.01
    provider:
      prometheus:
        address: http://prometheus.monitoring:9090
        query: sum(rate(llmops_gateway_requests_total{status!~"2.."}[1m]))
""",
    "RayService": f"""
apiVersion: ray.io/v1
kind: RayService
metadata: {{name: llm, namespace: llmops}}
spec:
  serveConfigV2: {yaml.safe_dump(SERVE_CONFIG)}
  rayClusterConfig:
    rayVersion: "2.60.0"
    headGroupSpec:
      rayStartParams: {{}}
      template:
        spec:
          containers: [{{name: ray-head, image: "rayproject/ray:2.60.0"}}]
    workerGroupSpecs:
    - groupName: workers
      replicas: 1
      minReplicas: 1
      maxReplicas: 2
      rayStartParams: {{}}
      template:
        spec:
          containers: [{{name: ray-worker, image: "rayproject/ray:2.60.0"}}]
""",
    "InferenceService": """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {name: llm, namespace: llmops}
spec:
  predictor:
    minReplicas: 1
    maxReplicas: 2
    model:
      modelFormat: {name: huggingface}
      storageUri: pvc://llmops-models/gemma
      args: [--model_name=gemma, --backend=vllm]
""",
    "LLMInferenceService": """
apiVersion: serving.kserve.io/v1alpha2
kind: LLMInferenceService
metadata: {name: llm-canary, namespace: llmops}
spec:
  model: {uri: pvc://llmops-models/gemma, name: gemma}
  replicas: 1
  router:
    gateway: {}
    route: {group: llm, weight: 10}
    scheduler: {}
""",
    "HTTPRoute": """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: llm, namespace: llmops}
spec:
  parentRefs: [{name: llmops-gateway}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    backendRefs:
    - {name: llm-stable, port: 8080, weight: 100}
    - {name: llm-canary, port: 8080, weight: 0}
""",
    "InferencePool": """
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: llm, namespace: llmops}
spec:
  selector: {matchLabels: {app: llm}}
  targetPorts: [{number: 8000}]
  endpointPickerRef: {name: llm-epp, port: {number: 9002}}
""",
}


def valid(kind: str) -> dict:
    return yaml.safe_load(VALID[kind])


DELETE = object()


def mutated(kind: str, *edits: tuple[tuple, object]) -> dict:
    """The valid object of `kind` with each (path, value) edit applied (value DELETE removes the key)."""
    doc = copy.deepcopy(valid(kind))
    for path, value in edits:
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if value is DELETE:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return doc


CANARY = ("spec", "strategy", "canary")
METRIC = ("spec", "metrics", 0)
CONTAINER = ("spec", "template", "spec", "containers", 0)
HTTP_RULE = ("spec", "rules", 0)
RAY_CLUSTER = ("spec", "rayClusterConfig")

# (id, broken object, JSON path of the problem, a fragment of its message)
MUTATIONS = [
    (
        "rollout-step-key-typo",
        mutated("Rollout", ((*CANARY, "steps", 0), {"setweight": 10})),
        "spec.strategy.canary.steps[0]",
        "'setweight' was unexpected",
    ),
    (
        "rollout-weight-not-a-number",
        mutated("Rollout", ((*CANARY, "steps", 0, "setWeight"), "ten")),
        "spec.strategy.canary.steps[0].setWeight",
        "'ten' is not of type 'integer'",
    ),
    (
        "rollout-canary-service-typo",
        mutated("Rollout", ((*CANARY, "canaryServise"), "llm-canary")),
        "spec.strategy.canary",
        "'canaryServise' was unexpected",
    ),
    (
        "analysis-condition-typo",
        mutated("AnalysisTemplate", ((*METRIC, "sucessCondition"), "result[0] <= 0.01")),
        "spec.metrics[0]",
        "'sucessCondition' was unexpected",
    ),
    (
        "analysis-query-as-list",
        mutated("AnalysisTemplate", ((*METRIC, "provider", "prometheus", "query"), ["up"])),
        "spec.metrics[0].provider.prometheus.query",
        "['up'] is not of type 'string'",
    ),
    (
        "analysis-metric-without-name",
        mutated("AnalysisTemplate", ((*METRIC, "name"), DELETE)),
        "spec.metrics[0]",
        "'name' is a required property",
    ),
    (
        "deployment-replicas-as-string",
        mutated("Deployment", (("spec", "replicas"), "2")),
        "spec.replicas",
        "'2' is not of type 'integer'",
    ),
    (
        "deployment-container-port-as-string",
        mutated("Deployment", ((*CONTAINER, "ports", 0, "containerPort"), "8080")),
        "spec.template.spec.containers[0].ports[0].containerPort",
        "'8080' is not of type 'integer'",
    ),
    (
        "deployment-unknown-container-field",
        mutated("Deployment", ((*CONTAINER, "imagePullPolicyy"), "Always")),
        "spec.template.spec.containers[0]",
        "'imagePullPolicyy' was unexpected",
    ),
    (
        "deployment-uppercase-name",
        mutated("Deployment", (("metadata", "name"), "LLM-Stable")),
        "metadata.name",
        "'LLM-Stable' does not match",
    ),
    (
        "service-port-missing",
        mutated("Service", (("spec", "ports", 0, "port"), DELETE)),
        "spec.ports[0]",
        "'port' is a required property",
    ),
    (
        "httproute-weight-too-large",
        mutated("HTTPRoute", ((*HTTP_RULE, "backendRefs", 0, "weight"), 1_000_001)),
        "spec.rules[0].backendRefs[0].weight",
        "1000001 is greater than the maximum of 1000000",
    ),
    (
        "httproute-negative-weight",
        mutated("HTTPRoute", ((*HTTP_RULE, "backendRefs", 1, "weight"), -1)),
        "spec.rules[0].backendRefs[1].weight",
        "-1 is less than the minimum of 0",
    ),
    (
        "httproute-path-type-typo",
        mutated("HTTPRoute", ((*HTTP_RULE, "matches", 0, "path", "type"), "Prefix")),
        "spec.rules[0].matches[0].path.type",
        "'Prefix' is not one of",
    ),
    (
        "httproute-relative-path-cel",
        mutated("HTTPRoute", ((*HTTP_RULE, "matches", 0, "path", "value"), "v1")),
        "spec.rules[0].matches[0].path",
        "value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']",
    ),
    (
        "httproute-duplicate-header-match",
        mutated("HTTPRoute", ((*HTTP_RULE, "matches", 0, "headers"), [{"name": "x-tenant", "value": v} for v in "ab"])),
        "spec.rules[0].matches[0].headers[1]",
        'duplicate entry {"name": "x-tenant"} in a list of type map',
    ),
    (
        "rayservice-old-serve-config-field",
        mutated("RayService", (("spec", "serveConfig"), {"importPath": "x:y"})),
        "spec",
        "'serveConfig' was unexpected",
    ),
    (
        "rayservice-without-head-group",
        mutated("RayService", ((*RAY_CLUSTER, "headGroupSpec"), DELETE)),
        "spec.rayClusterConfig",
        "'headGroupSpec' is a required property",
    ),
    (
        "rayservice-serve-config-unknown-key",
        mutated("RayService", (("spec", "serveConfigV2"), SERVE_CONFIG.replace("num_replicas", "num_replica"))),
        "spec.serveConfigV2",
        "unknown key 'num_replica'",
    ),
    (
        "rayservice-serve-config-not-yaml",
        mutated("RayService", (("spec", "serveConfigV2"), "applications: [")),
        "spec.serveConfigV2",
        "not valid YAML",
    ),
    (
        "rayservice-managed-by-cel",
        mutated("RayService", (("spec", "managedBy"), "someone-else")),
        "spec.managedBy",
        "the managedBy field value must be either 'ray.io/kuberay-operator' or 'kueue.x-k8s.io/multikueue'",
    ),
    (
        "rayservice-cpu-quantity-as-float",
        mutated(
            "RayService",
            (
                (*RAY_CLUSTER, "headGroupSpec", "template", "spec", "containers", 0, "resources"),
                {"limits": {"cpu": 0.5}},
            ),
        ),
        "spec.rayClusterConfig.headGroupSpec.template.spec.containers[0].resources.limits.cpu",
        "0.5 is not of type 'integer', 'string'",
    ),
    (
        "service-without-metadata",
        mutated("Service", (("metadata",), DELETE)),
        "",
        "'metadata' is a required property",
    ),
    (
        "isvc-model-format-without-name",
        mutated("InferenceService", (("spec", "predictor", "model", "modelFormat"), {"version": "1"})),
        "spec.predictor.model.modelFormat",
        "'name' is a required property",
    ),
    (
        "isvc-min-replicas-as-string",
        mutated("InferenceService", (("spec", "predictor", "minReplicas"), "1")),
        "spec.predictor.minReplicas",
        "'1' is not of type 'integer'",
    ),
    (
        "llmisvc-without-model-uri",
        mutated("LLMInferenceService", (("spec", "model", "uri"), DELETE)),
        "spec.model",
        "'uri' is a required property",
    ),
    (
        "llmisvc-negative-route-weight",
        mutated("LLMInferenceService", (("spec", "router", "route", "weight"), -5)),
        "spec.router.route.weight",
        "-5 is less than the minimum of 0",
    ),
    (
        "llmisvc-replicas-and-scaling-cel",
        mutated("LLMInferenceService", (("spec", "scaling"), {"minReplicas": 1, "maxReplicas": 2})),
        "spec",
        "replicas and scaling are mutually exclusive",
    ),
    (
        "custom-resource-uppercase-name",
        mutated("LLMInferenceService", (("metadata", "name"), "LLM_Canary")),
        "metadata.name",
        "'LLM_Canary' does not match",
    ),
    (
        "custom-resource-unknown-metadata-field",
        mutated("InferencePool", (("metadata", "labelz"), {"app": "llm"})),
        "metadata",
        "'labelz' was unexpected",
    ),
    (
        "inferencepool-without-target-ports",
        mutated("InferencePool", (("spec", "targetPorts"), DELETE)),
        "spec",
        "'targetPorts' is a required property",
    ),
    (
        "inferencepool-nine-target-ports",
        mutated("InferencePool", (("spec", "targetPorts"), [{"number": 8000 + i} for i in range(9)])),
        "spec.targetPorts",
        "is too long",
    ),
    (
        "inferencepool-duplicate-ports-cel",
        mutated("InferencePool", (("spec", "targetPorts"), [{"number": 8000}, {"number": 8000}])),
        "spec.targetPorts",
        "port number must be unique",
    ),
    (
        "inferencepool-picker-without-port-cel",
        mutated("InferencePool", (("spec", "endpointPickerRef", "port"), DELETE)),
        "spec.endpointPickerRef",
        "port is required when kind is 'Service' or unspecified (defaults to 'Service')",
    ),
    (
        "rayservice-unserved-api-version",
        mutated("RayService", (("apiVersion",), "ray.io/v2")),
        "apiVersion",
        "RayService is vendored for ray.io/v1, ray.io/v1alpha1, not ray.io/v2",
    ),
]


@pytest.mark.parametrize("kind", sorted(VALID))
def test_a_valid_object_of_every_kind_passes(kind):
    result = check_manifests([valid(kind)], source=f"{kind}.yaml")
    assert result.problems == [] and result.documents == 1


def test_every_vendored_kind_has_a_valid_example():
    assert {crd.kind for crd in crds.vendored().values()} <= set(VALID)


def test_cel_rules_are_evaluated_and_the_ones_not_evaluated_are_counted():
    result = check_manifests([valid(kind) for kind in sorted(VALID)])
    assert result.ok and result.cel_evaluated >= 10
    # Rollout's `spec.selector` rule is `self == oldSelf`: it needs the object being replaced
    assert result.cel_skipped["transition rule (compares with the object it replaces)"] >= 1


def test_the_mutation_suite_has_at_least_20_cases_covering_every_kind():
    assert len(MUTATIONS) >= 20 and len({case[0] for case in MUTATIONS}) == len(MUTATIONS)
    assert {doc["kind"] for _, doc, _, _ in MUTATIONS} == set(VALID)


@pytest.mark.parametrize(("case", "doc", "path", "fragment"), MUTATIONS, ids=[case[0] for case in MUTATIONS])
def test_every_broken_manifest_is_rejected_with_its_reason(case, doc, path, fragment):
    problems = validate_manifests([doc], source=f"{case}.yaml")
    assert problems, f"{case} passed"
    assert any(p.path == path and fragment in p.message for p in problems), [str(p) for p in problems]
    assert all(p.where.startswith(f"{case}.yaml#1 {doc['kind']}/") for p in problems)


def test_cel_only_mutations_pass_the_json_schema_and_fail_on_cel():
    for case, doc, _, _ in MUTATIONS:
        if case.endswith("-cel"):
            assert all("(CEL: " in p.message for p in validate_manifests([doc])), case


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [("example.com/v1", "Widget"), ("v1", "Widget"), ("apps.example.com/v1", "Deployment")],
    ids=["custom-resource", "unknown-core-kind", "built-in-look-alike"],
)
def test_a_kind_with_no_schema_fails(api_version, kind):
    doc = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "w"}, "spec": {"replicas": 1}}
    [problem] = validate_manifests([doc], source="w.yaml")
    assert problem.where == f"w.yaml#1 {kind}/w" and "no schema for " + kind in problem.message


def test_documents_that_are_not_objects_are_problems():
    problems = validate_manifests(["just text", {"kind": "Service", "metadata": {"name": "s"}}])
    assert [p.message for p in problems] == [
        "a Kubernetes object is a mapping, got str",
        "apiVersion and kind must be non-empty strings",
    ]


def test_files_multi_document_and_errors(tmp_path):
    good = tmp_path / "all.yaml"
    good.write_text("---\n".join(VALID[kind] for kind in sorted(VALID)))
    assert validate_files([good]) == []
    broken = tmp_path / "broken.yaml"
    broken.write_text(VALID["Service"] + "---\n" + yaml.safe_dump(MUTATIONS[0][1]))
    [problem] = validate_files([good, broken])
    assert str(problem).startswith(f"{broken}#2 Rollout/llm: spec.strategy.canary.steps[0]: Additional properties")
    not_yaml = tmp_path / "not.yaml"
    not_yaml.write_text("kind: [unclosed\n")
    [problem] = validate_files([not_yaml])
    assert problem == Problem(str(not_yaml), "", problem.message) and problem.message.startswith("not valid YAML")
    with pytest.raises(SpecError, match="cannot read manifest file"):
        validate_files([tmp_path / "missing.yaml"])


def test_strict_schema_conversion_on_a_literal_crd_schema():
    raw = {
        "type": "object",
        "properties": {
            "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "mode": {"type": "string", "nullable": True, "enum": ["a", "b"]},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "either": {"type": "object", "properties": {"a": {"type": "string"}}, "oneOf": [{"required": ["a"]}]},
        },
        "x-kubernetes-validations": [{"rule": "true"}],
    }
    assert strict_schema(raw) == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "port": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "mode": {"type": ["string", "null"], "enum": ["a", "b", None]},
            "free": {"type": "object"},
            "either": {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "oneOf": [{"required": ["a"]}],
                "additionalProperties": False,
            },
        },
    }


def test_sources_name_a_pinned_tag_and_license_for_every_vendored_file():
    sources = crds.sources()
    assert {(s.kind, s.tag) for s in sources} == {
        ("Rollout", "v1.9.1"),
        ("AnalysisTemplate", "v1.9.1"),
        ("RayService", "v1.7.0"),
        ("InferenceService", "v0.20.0"),
        ("LLMInferenceService", "v0.20.0"),
        ("HTTPRoute", "v1.6.1"),
        ("InferencePool", "v1.6.0"),
    }
    assert all(
        s.license == "Apache-2.0" and len(s.sha256) == 64 and s.repo.startswith("https://github.com/") for s in sources
    )


def test_schemas_are_loaded_once_and_reused():
    """Speed sanity without a clock: the vendored files are parsed once per process and every CRD's
    validator is built once, so validating many manifests does not re-read 2 MB of schemas."""
    first = crds.vendored()
    check_manifests([valid(kind) for kind in sorted(VALID)])
    validators = {key: crd.validator for key, crd in first.items()}
    check_manifests([valid(kind) for kind in sorted(VALID)])
    assert crds.vendored() is first
    assert all(crd.validator is validators[key] for key, crd in crds.vendored().items())
