"""Requests generated from the gateway's served OpenAPI document (schemathesis), sent to a gateway over a
real llama-server: no answer is a 5xx, none contradicts the document (status, content type, body), and
each request made invalid on purpose is refused with a 4xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.gateway.access import key_entry
from llmops_lib.gateway.routes import router

pytestmark = pytest.mark.engine

KEY = "sk-llmops-schema-test"  # the client and the admin key: generated admin calls get past the key check
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
#: Every (path, method) the gateway routes; the served document must list exactly these.
OPERATIONS = sorted((route.path, method) for route in router.routes for method in route.methods)
#: Those that take input (a body, a path parameter or a header) can also be sent invalid on purpose.
WITH_INPUT = [(path, method) for path, method in OPERATIONS if method in ("POST", "PUT", "DELETE") or "{" in path]


@pytest.fixture(scope="module")
def gateway_schema(server, tmp_path_factory):
    # The fallback is the live engine: a deployment the generated admin calls add (at a made-up URL)
    # and weight up fails over to it, as in production, instead of answering 502.
    route = Route(model="gemma", deployments=[Deployment(name="a", url=server.base_url)], fallback="a")
    config = GatewayConfig(
        routes=[route],
        keys=[key_entry(KEY, "schema", admin=True)],
        request_log=str(tmp_path_factory.mktemp("schema") / "requests.sqlite"),
        max_tokens_limit=4,
        context_window=256,
    )
    with GatewayServer(config) as gw:
        yield schemathesis.openapi.from_url(gw.base_url + "/openapi.json")


def test_the_served_document_lists_every_route(gateway_schema):
    served = {(op.ok().path, op.ok().method.upper()) for op in gateway_schema.get_all_operations()}
    assert served == set(OPERATIONS)


def _call(gateway_schema, path: str, method: str, mode: GenerationMode, data: st.DataObject) -> None:
    case = data.draw(gateway_schema[path][method].as_strategy(generation_mode=mode))
    case.call_and_validate(headers={"authorization": f"Bearer {KEY}"}, checks=CHECKS, timeout=120)


@pytest.mark.parametrize("path, method", OPERATIONS)
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_valid_generated_requests_get_no_5xx_and_answers_the_document_allows(gateway_schema, path, method, data):
    _call(gateway_schema, path, method, GenerationMode.POSITIVE, data)


@pytest.mark.parametrize("path, method", WITH_INPUT)
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_requests_invalid_on_purpose_are_refused_with_a_documented_4xx(gateway_schema, path, method, data):
    _call(gateway_schema, path, method, GenerationMode.NEGATIVE, data)
