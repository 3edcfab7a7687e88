"""The tool ecosystem as data: what each tool is for, how our data maps onto it, whether it runs here.

The facts about other tools live in one cited file, `data/ecosystem.yml` (a source URL per row);
our side of every mapping is read from the library itself (`our_schemas`: the request log's real
SQL columns, the gateway's Prometheus series, the common engine metric names, the registries' and
harnesses' fields), so a renamed column or metric breaks `check` instead of leaving a stale table.
Mappings that the library already holds are derived, never copied: an engine's metric names from
`engines.metrics.COMMON_NAMES`, the OpenTelemetry attribute names from `request_log.OTEL_ATTRIBUTES`.
`otel_spans` exports request-log rows as OpenTelemetry GenAI spans with the OpenTelemetry SDK
(in memory, nothing sent), to show that mapping on real rows.

Explained in: book/chapters/07_ecosystem/tools.ipynb
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from llmops_lib import datafile
from llmops_lib.about import cpu_model
from llmops_lib.config import REPO_ROOT
from llmops_lib.engines.metrics import COMMON_NAMES
from llmops_lib.errors import SpecError
from llmops_lib.evals.harness import HarnessResult, Sample
from llmops_lib.observe.gateway_metrics import GatewayMetrics
from llmops_lib.observe.request_log import OTEL_ATTRIBUTES, RequestLog
from llmops_lib.prompts.template import PromptVersion
from llmops_lib.release.registry import ModelRecord

Here = Literal["live", "data_only", "offline_only", "tried", "cannot"]
#: `here` values whose claim names a page of the book where the tool (or its data) is used
ON_A_PAGE: tuple[Here, ...] = ("live", "data_only", "offline_only")


def _has_cpu_flag(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as info:
            return any(line.startswith("flags") and flag in line.split() for line in info)
    except OSError:
        return False


#: What a tool may need that this machine may lack: (what it is, a probe of this machine, or None
#: when the book does not have it by design: it never leaves the machine or signs a contract).
REQUIREMENTS: dict[str, tuple[str, Callable[[], bool] | None]] = {
    "nvidia_gpu": ("an NVIDIA GPU", lambda: Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi") is not None),
    "intel_amx": ("a CPU with Intel AMX", lambda: _has_cpu_flag("amx_tile")),
    "docker": (
        "a running Docker daemon (and a registry to pull its images from)",
        lambda: Path("/var/run/docker.sock").exists() or "DOCKER_HOST" in os.environ,
    ),
    "internet": ("the internet (a hosted service)", None),
    "license_key": ("an Enterprise license key", None),
    "wandb_server": ("a W&B server (hosted, or its Docker image)", None),
}


class FieldMap(BaseModel):
    """One field of ours (`schema:field`) and what it is in the tool's data model (cited)."""

    model_config = ConfigDict(extra="forbid")
    ours: str = Field(pattern=r"^[a-z_]+:[A-Za-z0-9_.]+$")
    theirs: str = Field(min_length=1)


class Tool(BaseModel):
    """One row of `ecosystem.yml`."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    category: Literal["serving", "monitoring", "evaluation"]
    purpose: str = Field(min_length=10)
    status: str = Field(min_length=1)
    here: Here
    page: str | None = None
    label: str | None = None
    evidence: str | None = None
    mentions: str | None = None  # what the page must mention, when not the tool's name
    needs: list[str] = Field(default_factory=list)
    why_not: str | None = None
    metric_prefix: str | None = None
    otel_attributes: bool = False
    mapping: list[FieldMap] = Field(default_factory=list)
    sources: list[HttpUrl] = Field(min_length=1)

    @model_validator(mode="after")
    def _claims_complete(self) -> Tool:
        if self.here in ON_A_PAGE and not (self.page and self.label):
            raise ValueError(f"here={self.here} needs the page and its label where it happens")
        if self.here in ("live", "data_only") and not self.evidence:
            raise ValueError(f"here={self.here} needs `evidence`: a string a code cell of the page contains")
        if self.here != "live" and not self.why_not:
            raise ValueError(f"here={self.here} needs `why_not`: why it does not run live here")
        if self.here == "cannot" and not self.needs:
            raise ValueError("here=cannot needs `needs`: what this machine lacks")
        if unknown := sorted(set(self.needs) - set(REQUIREMENTS)):
            raise ValueError(f"unknown needs {unknown}: use {sorted(REQUIREMENTS)}")
        return self


class Job(BaseModel):
    """One row of the decision table: which tool for which job."""

    model_config = ConfigDict(extra="forbid")
    job: str = Field(min_length=1)
    pick: str
    when: str = Field(min_length=1)
    else_: str | None = Field(default=None, alias="else")


class Ecosystem(BaseModel):
    """The whole file: the tools and the decision table."""

    model_config = ConfigDict(extra="forbid")
    tools: list[Tool] = Field(min_length=1)
    jobs: list[Job] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names(self) -> Ecosystem:
        names = [tool.name for tool in self.tools]
        if duplicated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"tools listed twice: {duplicated}")
        for job in self.jobs:
            if missing := [t for t in (job.pick, job.else_) if t is not None and t not in names]:
                raise ValueError(f"job {job.job!r} names tools that are not listed: {missing}")
        return self

    def tool(self, name: str) -> Tool:
        """The tool called `name`.

        Raises:
            SpecError: no such tool in the file.
        """
        for tool in self.tools:
            if tool.name == name:
                return tool
        raise SpecError(f"no tool {name!r} in the ecosystem file: use one of {[t.name for t in self.tools]}")


def default_path() -> Path:
    """The shipped `llmops_lib/data/ecosystem.yml`."""
    return datafile.shipped("ecosystem.yml")


def load(path: str | Path | None = None) -> Ecosystem:
    """Read and validate the ecosystem file (default: the shipped one).

    Raises:
        SpecError: the file is missing, not YAML, or a row breaks the schema (the message names it).
    """
    return datafile.load(path if path is not None else default_path(), Ecosystem, "the ecosystem file")


# --- our side ------------------------------------------------------------------------------------


def _table_columns(db: sqlite3.Connection, table: str) -> frozenset[str]:
    return frozenset(row[1] for row in db.execute(f"PRAGMA table_info({table})"))


def _exposition_names(metrics: GatewayMetrics) -> frozenset[str]:
    """Series names as `/metrics` shows them: a counter gets `_total`, others keep their name."""
    return frozenset(
        family.name + ("_total" if family.type == "counter" else "") for family in metrics.registry.collect()
    )


@cache
def our_schemas() -> dict[str, frozenset[str]]:
    """Every field our side of a mapping may name, read from the library, by schema.

    The request log's columns come from a real (temporary) request log file, as SQLite made it.
    """
    with tempfile.TemporaryDirectory(prefix="ecosystem-") as folder:
        log = RequestLog(Path(folder) / "requests.sqlite")
        log.close()
        db = sqlite3.connect(log.path)
        try:
            request_log, feedback = _table_columns(db, "requests"), _table_columns(db, "feedback")
        finally:
            db.close()
    return {
        "request_log": request_log,
        "feedback": feedback,
        "gateway_metrics": _exposition_names(GatewayMetrics()),
        "engine_metrics": frozenset(COMMON_NAMES),
        "model_registry": frozenset(f.name for f in fields(ModelRecord)),
        "prompt_registry": frozenset(f.name for f in fields(PromptVersion) if not f.name.startswith("_")),
        "eval_result": frozenset(f.name for f in fields(HarnessResult)),
        "eval_sample": frozenset(f.name for f in fields(Sample)),
    }


def mappings(tool: Tool) -> list[FieldMap]:
    """The tool's mapping: the file's rows plus those derived from the library (engine metric names,
    OpenTelemetry attributes), derived first."""
    derived = []
    if tool.metric_prefix:
        for common, series in COMMON_NAMES.items():
            theirs = next((s for s in series if s.startswith(tool.metric_prefix)), None)
            if theirs:
                derived.append(FieldMap(ours=f"engine_metrics:{common}", theirs=theirs))
    if tool.otel_attributes:
        derived += [FieldMap(ours=f"request_log:{column}", theirs=attr) for attr, column in OTEL_ATTRIBUTES.items()]
    return derived + tool.mapping


# --- checks --------------------------------------------------------------------------------------


def unknown_fields(eco: Ecosystem, schemas: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """Mapped fields of ours that the library does not have, one line each ([] when all exist)."""
    schemas = {k: set(v) for k, v in (schemas if schemas is not None else our_schemas()).items()}
    problems = []
    for tool in eco.tools:
        for row in mappings(tool):
            schema, field = row.ours.split(":", 1)
            if schema not in schemas:
                problems.append(f"{tool.name}: {row.ours}: no schema {schema!r} (use {sorted(schemas)})")
            elif field not in schemas[schema]:
                problems.append(f"{tool.name}: {row.ours}: {schema} has no field {field!r}")
    return problems


def _page_text(path: Path) -> tuple[str, str]:
    """(all the source, the code cells' source) of a notebook or Markdown page."""
    text = path.read_text()
    if path.suffix != ".ipynb":
        return text, ""
    cells = json.loads(text)["cells"]
    source = ["".join(cell["source"]) for cell in cells]
    code = [s for cell, s in zip(cells, source, strict=True) if cell["cell_type"] == "code"]
    return "\n".join(source), "\n".join(code)


def page_problems(eco: Ecosystem, root: Path = REPO_ROOT) -> list[str]:
    """Claims about the book that its pages do not back, one line each ([] when all hold).

    A claim on a page holds when the page exists, defines its label, mentions the tool, and, for
    `live` and `data_only`, one of its code cells contains the row's `evidence`.
    """
    problems = []
    for tool in eco.tools:
        if not tool.page:
            continue
        path = root / tool.page
        if not path.is_file():
            problems.append(f"{tool.name}: page {tool.page} does not exist")
            continue
        source, code = _page_text(path)
        if f"({tool.label})=" not in source:
            problems.append(f"{tool.name}: {tool.page} does not define the label {tool.label}")
        if (mention := tool.mentions or tool.name).lower() not in source.lower():
            problems.append(f"{tool.name}: {tool.page} never mentions {mention}")
        if tool.evidence and tool.evidence not in code:
            problems.append(f"{tool.name}: no code cell of {tool.page} contains {tool.evidence!r}")
    return problems


def page_title(page: str, root: Path = REPO_ROOT) -> str:
    """The first `# ` heading of a book page (its title in the table of contents)."""
    source, _ = _page_text(root / page)
    return next((line[2:].strip() for line in source.splitlines() if line.startswith("# ")), page)


def check(eco: Ecosystem | None = None, root: Path = REPO_ROOT) -> None:
    """Raise unless every mapped field of ours exists and every claim about a page holds.

    Raises:
        SpecError: the first problems, one per line.
    """
    eco = eco or load()
    if problems := unknown_fields(eco) + page_problems(eco, root):
        raise SpecError("the ecosystem file does not match the library or the book:\n" + "\n".join(problems))


def missing_here(tool: Tool) -> dict[str, bool | None]:
    """For each need of the tool: True if this machine has it, False if not, None if the book lacks
    it by design (not probed)."""
    return {need: (probe() if (probe := REQUIREMENTS[need][1]) else None) for need in tool.needs}


def machine() -> str:
    """The CPU this page was built on (the probes above read the same machine)."""
    return f"{cpu_model()} × {os.cpu_count()} cores"


# --- export ---------------------------------------------------------------------------------------


def otel_spans(rows: Iterable[Mapping[str, object]]) -> list[dict]:
    """Request-log rows as OpenTelemetry GenAI client spans, made by the OpenTelemetry SDK and kept
    in memory (nothing is exported over the network): the span JSON a trace backend would receive.

    Each span is named `<operation> <model>` with the row's start and end times and the GenAI
    attributes of `OTEL_ATTRIBUTES` (plus time to first chunk and `error.type` when set).
    """
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, Status, StatusCode

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("llmops_lib.gateway")
    for row in rows:
        attributes = {attr: row[column] for attr, column in OTEL_ATTRIBUTES.items() if row.get(column) is not None}
        if row.get("ttft_s") is not None:
            attributes["gen_ai.response.time_to_first_chunk"] = row["ttft_s"]
        name = f"{row.get('gen_ai_operation_name')} {row.get('gen_ai_request_model')}"
        span = tracer.start_span(
            name, kind=SpanKind.CLIENT, attributes=attributes, start_time=int(float(row["started_at"]) * 1e9)
        )
        if row.get("error_type"):
            span.set_attribute("error.type", str(row["error_type"]))
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=int(float(row["finished_at"] or row["started_at"]) * 1e9))
    provider.shutdown()
    return [json.loads(span.to_json()) for span in exporter.get_finished_spans()]
