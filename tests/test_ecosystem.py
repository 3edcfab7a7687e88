"""The tool-ecosystem file against the library, the book and the OpenTelemetry conventions package.

Explained in: book/chapters/07_ecosystem/tools.ipynb
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics

from llmops_lib import ecosystem
from llmops_lib.config import REPO_ROOT
from llmops_lib.errors import SpecError

TOOLS_PAGE = REPO_ROOT / "book/chapters/07_ecosystem/tools.ipynb"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(ecosystem.default_path().read_text())


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "ecosystem.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _row(data: dict, name: str) -> dict:
    return next(row for row in data["tools"] if row["name"] == name)


def test_the_shipped_file_matches_the_library_and_the_book() -> None:
    ecosystem.check()  # raises with every mismatch listed


def test_the_guide_tools_are_all_there(raw: dict) -> None:
    names = {row["name"] for row in raw["tools"]}
    guide = {"vLLM", "llama.cpp", "TensorRT-LLM", "TGI", "SGLang", "LangSmith", "Langfuse", "Weights & Biases"}
    guide |= {"Evidently", "MLflow tracing", "Prometheus", "OpenTelemetry GenAI", "HELM", "lm-eval", "Inspect AI"}
    assert guide | {"promptfoo"} <= names


def test_every_row_has_a_source_url(raw: dict) -> None:
    for row in raw["tools"]:
        assert row.get("sources"), row["name"]
        assert all(re.match(r"https://[^\s/]+\.[a-z]+/", url) for url in row["sources"]), row["name"]


def test_each_page_claim_names_a_page_that_uses_the_tool(raw: dict) -> None:
    """Read independently of the module: the page exists, defines its label, and its code (for live
    and data-only claims) contains the evidence."""
    claims = [row for row in raw["tools"] if row["here"] in ("live", "data_only", "offline_only")]
    assert {row["name"] for row in claims} >= {"vLLM", "llama.cpp", "lm-eval", "Inspect AI", "Evidently"}
    for row in claims:
        notebook = nbformat.read(REPO_ROOT / row["page"], as_version=4)
        source = "\n".join(cell.source for cell in notebook.cells)
        code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
        assert f"({row['label']})=" in source, row["name"]
        assert (row.get("mentions") or row["name"]).lower() in source.lower(), row["name"]
        if row["here"] != "offline_only":
            assert row["evidence"] in code, row["name"]


def test_the_tools_page_links_every_page_it_claims(raw: dict) -> None:
    notebook = nbformat.read(TOOLS_PAGE, as_version=4)
    markdown = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    labels = {row["label"] for row in raw["tools"] if row.get("label") and row["label"] != "ch-tools"}
    assert labels, "no claims about other pages"
    for label in labels:
        assert f"{{ref}}`{label}`" in markdown, label


def test_our_schemas_hold_the_fields_we_know() -> None:
    schemas = ecosystem.our_schemas()
    assert {"request_id", "started_at", "latency_s", "ttft_s", "prompt", "completion", "gen_ai_usage_input_tokens"} <= (
        schemas["request_log"]
    )
    assert {"request_id", "score", "comment"} <= schemas["feedback"]
    assert {"llmops_gateway_requests_total", "llmops_gateway_ttft_seconds", "llmops_gateway_queue_depth"} <= (
        schemas["gateway_metrics"]
    )
    assert {"ttft_seconds_sum", "kv_cache_usage_ratio"} <= schemas["engine_metrics"]
    assert {"version", "aliases", "sha256"} <= schemas["model_registry"]
    assert "latency" not in schemas["request_log"]


def test_a_renamed_field_of_ours_is_caught(raw: dict, tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(raw))
    _row(data, "Evidently")["mapping"][0]["ours"] = "request_log:latency"
    problems = ecosystem.unknown_fields(ecosystem.load(_write(tmp_path, data)))
    assert problems == ["Evidently: request_log:latency: request_log has no field 'latency'"]
    with pytest.raises(SpecError, match="request_log has no field 'latency'"):
        ecosystem.check(ecosystem.load(_write(tmp_path, data)))


def test_a_false_claim_about_a_page_is_caught(raw: dict, tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(raw))
    _row(data, "lm-eval")["evidence"] = "run_no_such_harness"
    _row(data, "Evidently")["page"] = "book/chapters/05_quality/no_such_page.ipynb"
    problems = ecosystem.page_problems(ecosystem.load(_write(tmp_path, data)))
    assert problems == [
        "Evidently: page book/chapters/05_quality/no_such_page.ipynb does not exist",
        "lm-eval: no code cell of book/chapters/05_quality/evaluation.ipynb contains 'run_no_such_harness'",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: _row(d, "HELM").pop("sources"), r"tools\[\d+\] \(HELM\)\.sources: Field required"),
        (lambda d: _row(d, "HELM").update(sources=["not a url"]), r"\(HELM\)\.sources\[0\]"),
        (lambda d: _row(d, "vLLM").pop("page"), r"\(vLLM\): Value error, here=live needs the page"),
        (lambda d: _row(d, "SGLang").update(needs=["quantum"]), r"unknown needs \['quantum'\]"),
        (lambda d: _row(d, "TGI").update(here="sometimes"), r"\(TGI\)\.here: Input should be"),
        (lambda d: d["jobs"][0].update(pick="Ollama"), r"names tools that are not listed: \['Ollama'\]"),
        (lambda d: d["tools"].append(dict(d["tools"][0])), r"tools listed twice: \['llama.cpp'\]"),
    ],
)
def test_a_bad_row_gives_a_one_line_error(raw: dict, tmp_path: Path, change, message: str) -> None:
    data = yaml.safe_load(yaml.safe_dump(raw))
    change(data)
    with pytest.raises(SpecError, match=message) as caught:
        ecosystem.load(_write(tmp_path, data))
    assert "\n" not in str(caught.value)


def test_a_missing_or_broken_file_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the ecosystem file"):
        ecosystem.load(tmp_path / "absent.yml")
    (tmp_path / "broken.yml").write_text("tools: [\n")
    with pytest.raises(SpecError, match="is not valid YAML"):
        ecosystem.load(tmp_path / "broken.yml")


def test_the_opentelemetry_names_are_the_official_ones() -> None:
    """The oracle is the OpenTelemetry semantic-conventions package, not our file."""
    official = {v for k, v in vars(gen_ai_attributes).items() if k.startswith("GEN_AI_")}
    official |= {v for k, v in vars(gen_ai_metrics).items() if k.startswith("GEN_AI_")}
    otel = ecosystem.load().tool("OpenTelemetry GenAI")
    theirs = [row.theirs for row in ecosystem.mappings(otel)]
    assert "gen_ai.usage.input_tokens" in theirs and "gen_ai.server.time_to_first_token" in theirs
    assert [name for name in theirs if name not in official] == []


def test_engine_mappings_come_from_the_common_metric_names() -> None:
    vllm = {row.ours: row.theirs for row in ecosystem.mappings(ecosystem.load().tool("vLLM"))}
    assert vllm["engine_metrics:ttft_seconds_sum"] == "vllm:time_to_first_token_seconds_sum"
    llama = {row.ours: row.theirs for row in ecosystem.mappings(ecosystem.load().tool("llama.cpp"))}
    assert llama["engine_metrics:generation_tokens_total"] == "llamacpp:tokens_predicted_total"


def test_request_log_rows_become_genai_spans() -> None:
    rows = [
        {
            "started_at": 1000.0,
            "finished_at": 1000.5,
            "ttft_s": 0.125,
            "gen_ai_operation_name": "text_completion",
            "gen_ai_request_model": "gemma",
            "gen_ai_usage_input_tokens": 6,
            "gen_ai_usage_output_tokens": 8,
            "gen_ai_request_temperature": None,
            "error_type": None,
        },
        {"started_at": 1001.0, "finished_at": None, "gen_ai_operation_name": "chat", "gen_ai_request_model": "x"}
        | {"error_type": "upstream_timeout"},
    ]
    first, second = ecosystem.otel_spans(rows)
    assert first["name"] == "text_completion gemma"
    assert first["kind"] == "SpanKind.CLIENT"
    assert first["start_time"] == "1970-01-01T00:16:40.000000Z"
    assert first["end_time"] == "1970-01-01T00:16:40.500000Z"
    assert first["attributes"] == {
        "gen_ai.operation.name": "text_completion",
        "gen_ai.request.model": "gemma",
        "gen_ai.usage.input_tokens": 6,
        "gen_ai.usage.output_tokens": 8,
        "gen_ai.response.time_to_first_chunk": 0.125,
    }
    assert second["status"]["status_code"] == "ERROR"
    assert second["attributes"]["error.type"] == "upstream_timeout"
    assert second["end_time"] == second["start_time"]


def test_needs_that_the_book_lacks_by_design_are_not_probed() -> None:
    langsmith = ecosystem.load().tool("LangSmith")
    found = ecosystem.missing_here(langsmith)
    assert found["internet"] is None and found["license_key"] is None
    assert isinstance(found["docker"], bool)
