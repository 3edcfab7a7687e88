"""The `llmops` command: models, serving, gateway, load tests, releases (registry, rollouts), prompts, runbooks.

Every error the library raises on purpose is printed as one line (`error: …`, `errors.fail`) with
a non-zero exit; see `llmops runbook run --help` for the runbook exit codes.

Explained in: README.md (every section starts with the command it explains).
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmops_lib import models
from llmops_lib.atomic import write_text
from llmops_lib.errors import EngineError, ExitCode, LLMOpsError, RunbookParameterError, SpecError, fail

if TYPE_CHECKING:
    from llmops_lib.bench import LoadResult
    from llmops_lib.engines import LlamaServer, OpenAIClient

app = typer.Typer(
    help=(
        "Operate LLMs with the LLMOps Handbook's library: inspect models, serve them, put a gateway in front, "
        "load-test them, evaluate them, release versions, version prompts, review unsure answers, issue API keys, "
        "verify the audit log, erase personal data, run runbooks, scale out on a Ray cluster, render and validate "
        "Kubernetes manifests."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Inspect model files (GGUF) and the catalogue of named models.", no_args_is_help=True)
runbook_app = typer.Typer(help="Run operational notebooks (papermill) with validated parameters.", no_args_is_help=True)
from llmops_lib.audit_cli import audit_app  # noqa: E402
from llmops_lib.evals.cli import eval_app  # noqa: E402 - light: the harnesses are imported on use
from llmops_lib.gateway.keys_cli import keys_app  # noqa: E402
from llmops_lib.observe.privacy_cli import privacy_app  # noqa: E402
from llmops_lib.observe.review_cli import review_app  # noqa: E402
from llmops_lib.prompts.cli import prompt_app  # noqa: E402 - light: MLflow is imported on use
from llmops_lib.release import maturity_cli  # noqa: E402 - light: MLflow is imported on use
from llmops_lib.release.cli import registry_app, rollout_app  # noqa: E402 - light: MLflow is imported on use
from llmops_lib.scale import manifest_cli  # noqa: E402 - light: renderer and validator are imported on use
from llmops_lib.scale.cli import scale_app  # noqa: E402 - light: Ray is imported on use

app.add_typer(model_app, name="model")
app.add_typer(runbook_app, name="runbook")
app.add_typer(rollout_app, name="rollout")
app.add_typer(registry_app, name="registry")
app.add_typer(prompt_app, name="prompt")
app.add_typer(review_app, name="review")
app.add_typer(eval_app, name="eval")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(privacy_app, name="privacy")
app.add_typer(scale_app, name="scale")
app.command("maturity", help=maturity_cli.HELP)(maturity_cli.maturity_command)
app.command("render", help=manifest_cli.RENDER_HELP)(manifest_cli.render_command)
app.command("validate", help=manifest_cli.VALIDATE_HELP)(manifest_cli.validate_command)


def resolve_model(model: str | None) -> Path:
    """A catalogue name or a GGUF path (sha256-verified for a name); None is the default model.
    Engines check the file's structure as they start."""
    return models.model_path() if model is None else models.resolve_model(model)


ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="A model name (gemma3-270m, smollm2) or a GGUF file. Default: the embedded Gemma 3 270M Q4_K_M.",
    ),
]


def _interrupt(*_: object) -> None:
    """SIGTERM stops `serve` as Ctrl-C does, so the server child is always stopped."""
    raise KeyboardInterrupt


def _model_exit_code(error: LLMOpsError) -> ExitCode:
    """2 for an unknown catalogue name (bad input), 1 for a model file that is missing or damaged."""
    return ExitCode.BAD_PARAMETERS if isinstance(error, SpecError) else ExitCode.ERROR


_CATALOGUE = ", ".join(f"{name} ({model.description})" for name, model in models.MODELS.items())


@model_app.command("info")
def model_info(
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="[NAME|PATH]",
            help=f"Catalogue model name or GGUF file. Default: {models.DEFAULT_MODEL}. Names: {_CATALOGUE}.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show a GGUF file's architecture, size, parameters, context, vocabulary, chat template and quantization types."""
    try:
        # refuses an unknown name, a missing, non-GGUF or damaged file
        info = models.inspect_gguf(resolve_model(model))
    except LLMOpsError as exc:
        raise fail(str(exc), _model_exit_code(exc)) from None
    if as_json:
        typer.echo(json.dumps(info.summary() | {"tensor types": info.tensor_types}, indent=2))
        return
    summary = info.summary()
    width = max(len(key) for key in [*summary, *info.tensor_types]) + 2
    for key, value in summary.items():
        typer.echo(f"{key:<{width}}  {value}")
    typer.echo("quantization by tensor group:")
    for group, kind in info.tensor_types.items():
        typer.echo(f"  {group:<{width - 2}}  {kind}")


@model_app.command("path")
def model_path(
    name: Annotated[
        str | None,
        typer.Argument(
            metavar="[NAME]", help=f"Catalogue model. Default: {models.DEFAULT_MODEL}. Names: {_CATALOGUE}."
        ),
    ] = None,
) -> None:
    """Print the file of a catalogue model, after verifying its sha256 (assembling the default first)."""
    try:
        typer.echo(models.model_path(name))
    except LLMOpsError as exc:
        raise fail(str(exc), _model_exit_code(exc)) from None


@app.command()
def serve(
    model: ModelOption = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8080,
    ctx: Annotated[int, typer.Option("--ctx", help="Context length per request, in tokens.")] = 2048,
    threads: Annotated[int | None, typer.Option(help="CPU threads. Default: half the cores.")] = None,
    parallel: Annotated[int, typer.Option(help="Requests served at once (continuous batching slots).")] = 4,
) -> None:
    """Serve a model with llama.cpp's llama-server (OpenAI-compatible API, /metrics, /health) until Ctrl-C."""
    from llmops_lib.engines import EngineSpec, LlamaServer

    try:
        spec = EngineSpec(
            model=resolve_model(model), n_ctx=ctx, parallel=parallel, **({"threads": threads} if threads else {})
        )
        with _started(LlamaServer(spec, port=port)) as server:
            typer.echo(f"serving {spec.model.name} at {server.base_url}/v1 (metrics: /metrics, log: {server.log_path})")
            typer.echo("press Ctrl-C to stop")
            signal.signal(signal.SIGTERM, _interrupt)
            try:
                while server.running():
                    time.sleep(0.5)
            except KeyboardInterrupt:
                typer.echo("stopping")
                return
            raise fail(f"llama-server exited on its own: {server.log_tail()} (log: {server.log_path})")
    except LLMOpsError as exc:
        raise fail(str(exc)) from None


# llama.cpp says why it refused a model on one of these lines (ggml's GGUF reader, then the model loader),
# after a time stamp and a level: `0.02.385.194 E llama_model_load: error loading model: …`.
_LOAD_ERROR = re.compile(
    r"(?:^|\s)(?:gguf_init_from_file\w*: (?P<gguf>.+)|llama_model_load: error loading model: (?P<load>.+))$"
)
_GENERIC = ("failed to read", "failed to load model")


def load_error(log: Path | None) -> str | None:
    """llama.cpp's own reason for refusing a model, from a server's log (None when the log names none)."""
    if log is None or not log.exists():
        return None
    reasons = [
        match.group("gguf") or match.group("load")
        for line in log.read_text(errors="replace").splitlines()
        if (match := _LOAD_ERROR.search(line.strip()))
    ]
    specific = [reason for reason in reasons if not reason.startswith(_GENERIC)]
    return (specific or reasons or [None])[0]


@contextmanager
def _started(server: LlamaServer) -> Iterator[LlamaServer]:
    """Start `server` and stop it after; when it dies while loading the model, say llama.cpp's reason."""
    try:
        server.start()
    except EngineError as exc:
        if (reason := load_error(server.log_path)) is None:
            raise
        raise EngineError(
            f"llama-server could not load {server.spec.model}: {reason} (log: {server.log_path}); "
            "replace the file with an intact copy"
        ) from exc
    try:
        yield server
    finally:
        server.stop()


@app.command()
def gateway(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="Gateway YAML: routes, keys, log, cache, queue, prices (see deploy/gateway.example.yaml).",
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the OpenAI-compatible gateway in front of running engines until Ctrl-C.

    Serves /v1/completions, /v1/chat/completions, /v1/models, /v1/feedback, /health, /metrics and /admin;
    one request-log row per request.
    """
    from llmops_lib.gateway import load_config, run_gateway

    try:
        settings = load_config(config)
    except LLMOpsError as exc:
        raise fail(str(exc)) from None
    typer.echo(
        f"gateway at http://{host}:{port}/v1 for models {[route.model for route in settings.routes]} "
        "(metrics: /metrics)"
    )
    run_gateway(settings, host=host, port=port)


@app.command()
def bench(
    endpoint: Annotated[
        str,
        typer.Option(
            help="Base URL of an OpenAI-compatible server (e.g. http://127.0.0.1:8080). "
            "Default: start llama-server on --model."
        ),
    ] = "",
    concurrency: Annotated[int, typer.Option(help="Requests in flight at most (vLLM's --max-concurrency).")] = 1,
    request_rate: Annotated[
        float, typer.Option(help="Mean requests/s, Poisson arrivals; inf sends as fast as --concurrency allows.")
    ] = float("inf"),
    num_requests: Annotated[
        int | None, typer.Option(help="Requests to send. Default: 4 × concurrency unless --duration is given.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Seconds to keep sending (requests in flight then finish and count).")
    ] = None,
    output_len: Annotated[int, typer.Option(help="Output tokens per request (ignore_eos: exactly this many).")] = 64,
    context_words: Annotated[
        int, typer.Option(help="Filler words before each prompt (≈1.3 tokens each), for longer prompts.")
    ] = 0,
    range_ratio: Annotated[
        float, typer.Option(help="Lengths drawn uniformly within ±this fraction, as vLLM's random dataset.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the prompts, lengths and Poisson arrivals.")] = 0,
    goodput: Annotated[
        list[str] | None,
        typer.Option(
            help="SLO as name:milliseconds (ttft, tpot, e2el); repeat for several. Goodput counts requests meeting all."
        ),
    ] = None,
    model: ModelOption = None,
    parallel: Annotated[int, typer.Option(help="Without --endpoint: llama-server slots (continuous batching).")] = 4,
    threads: Annotated[
        int | None, typer.Option(help="Without --endpoint: llama-server CPU threads. Default: half the cores.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the metrics, plan and errors as JSON here.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar of finished requests.")] = True,
) -> None:
    """Load-test an OpenAI-compatible endpoint and print vLLM `bench serve`'s metrics.

    TTFT, TPOT = (E2EL − TTFT)/(output tokens − 1), ITL and E2EL (mean, median, p95, p99), request, output
    and total token throughput, and goodput under --goodput SLOs.

    Failed requests are counted with their error (nothing is dropped); the exit code is 1 when no request completed.
    """
    from llmops_lib.bench import LoadPlan, Workload, parse_slos, run_load

    if num_requests is None and duration is None:
        num_requests = 4 * max(concurrency, 1)
    try:
        slos = parse_slos(goodput or [])
        workload = Workload.random(output_len, context_words=context_words, range_ratio=range_ratio, seed=seed)
        plan = LoadPlan(
            concurrency=concurrency, request_rate=request_rate, num_requests=num_requests, duration_s=duration
        )
        with _bench_client(endpoint, model, parallel, threads) as client:
            result = run_load(client, workload, plan, slos=slos, progress=progress)
    except LLMOpsError as exc:
        raise fail(str(exc)) from None
    _report(result, json_out)


@contextmanager
def _bench_client(endpoint: str, model: str | None, parallel: int, threads: int | None) -> Iterator[OpenAIClient]:
    """A client of `endpoint`, or of a llama-server started on `model` for this run and stopped after it."""
    from llmops_lib.engines import EngineSpec, LlamaServer, OpenAIClient

    if endpoint:
        client = OpenAIClient(endpoint)
        try:
            yield client
        finally:
            client.close()
        return
    spec = EngineSpec(
        model=resolve_model(model), n_ctx=1024, parallel=parallel, **({"threads": threads} if threads else {})
    )
    with _started(LlamaServer(spec)) as server:
        typer.echo(f"started llama-server ({parallel} slots, {spec.threads} threads) at {server.base_url}", err=True)
        yield server.client


def _report(result: LoadResult, json_out: Path | None) -> None:
    """Print the metrics and each distinct error; write the JSON; exit 1 when no request completed."""
    typer.echo(result.metrics.report())
    for message, count in result.errors.items():
        typer.echo(f"{count} × {message}", err=True)
    if json_out is not None:
        write_text(json_out, json.dumps(result.as_dict(), indent=2) + "\n")
    if not result.metrics.completed:
        raise fail(f"no request completed ({result.metrics.failed} failed)")


@runbook_app.command("list")
def runbook_list() -> None:
    """List the runbooks and their parameters."""
    from llmops_lib.runbooks import available_runbooks, declared_parameters, find_runbook

    for name in available_runbooks():
        try:
            params = declared_parameters(find_runbook(name))
        except RunbookParameterError as exc:
            raise fail(exc) from None
        typer.echo(f"{name}: " + ", ".join(p.signature for p in params.values()))


@runbook_app.command("params")
def runbook_params(name: Annotated[str, typer.Argument(help="Runbook name or .ipynb path.")]) -> None:
    """Show the typed parameters a runbook accepts, with defaults, ranges and help.

    A number's range (inclusive) comes from its help comment in the runbook: `# what it is; range: 1..10000`.
    """
    from llmops_lib.runbooks import declared_parameters, find_runbook

    try:
        params = declared_parameters(find_runbook(name))
    except RunbookParameterError as exc:
        raise fail(exc, ExitCode.BAD_PARAMETERS) from None
    for p in params.values():
        typer.echo(p.describe())


@runbook_app.command("run")
def runbook_run(
    name: Annotated[str, typer.Argument(help="Runbook name (see `llmops runbook list`) or .ipynb path.")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", "-p", help="key=value; repeat for several. Checked against the runbook's typed parameters."
        ),
    ] = None,
    cell_timeout: Annotated[
        int | None, typer.Option(help="Seconds a single cell may run before the run counts as broken.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar over the cells.")] = True,
) -> None:
    """Run a runbook and archive its output notebook under LLMOPS_HOME/runs/<run-id>/.

    Exit codes: 0 success · 2 bad parameters (unknown, given twice, wrong type, out of range) or unknown
    runbook (nothing ran) · 3 a gate failed (the system is outside a threshold) · 4 the run broke (an error
    that is not a gate, a timeout).

    The output notebook, parameters.json and summary.json are archived in every case but 2.
    """
    from llmops_lib.runbooks import parse_assignments, run_runbook

    try:
        result = run_runbook(name, parse_assignments(param or []), progress_bar=progress, cell_timeout_s=cell_timeout)
    except LLMOpsError as exc:  # a RunbookParameterError is a SpecError: 2; anything else 4
        raise fail(exc) from None
    for key, value in result.records.items():
        typer.echo(f"{key}: {value}")
    typer.echo(f"{result.status} ({result.duration_s:.1f} s): {result.run_dir}")
    if result.exit_code != ExitCode.OK:
        raise fail(result.error or result.status, result.exit_code)
