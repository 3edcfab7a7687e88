"""`llmops prompt …`: the prompt registry for operators: register versions, move aliases, roll back, audit.

Exit codes: 0 done · 2 bad input, nothing registered or moved (a template syntax error, an unknown
prompt, version or alias, a move without --why) · 4 the registry could not be reached.
The registry is `LLMOPS_REGISTRY_URI`, else the embedded SQLite store in `LLMOPS_HOME`.
Explained in: book/chapters/prompts/version_control.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmops_lib.errors import LLMOpsError, PromptError, fail

if TYPE_CHECKING:
    from llmops_lib.prompts.registry import PromptRegistry
    from llmops_lib.prompts.template import PromptVersion

prompt_app = typer.Typer(
    help=(
        "The prompt registry (MLflow): versioned templates with a model config, aliases as deployable "
        "pointers (production, candidate, previous), rollback, and the audit of every alias move."
    ),
    no_args_is_help=True,
)

WhyOption = Annotated[str, typer.Option("--why", help="Why the alias moves (required: kept in the audit trail).")]
WhoOption = Annotated[str | None, typer.Option("--who", help="Who moves it. Default: the login name.")]


def _registry() -> PromptRegistry:
    from llmops_lib.prompts.registry import PromptRegistry

    return PromptRegistry()


def _load_yaml(text: str, what: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PromptError(f"{what} is not valid JSON/YAML: {str(exc).splitlines()[0]}") from None


def _read_template(file: Path | None, text: str | None, chat: bool) -> str | list[dict[str, str]]:
    if (file is None) == (text is None):
        raise PromptError("give the template either as a FILE or with --text (one of them)")
    if file is not None:
        if not file.is_file():
            raise PromptError(f"template file {file} does not exist")
        text = file.read_text()
    if not chat:
        return text
    messages = _load_yaml(text, "the --chat template")
    if not isinstance(messages, list):
        raise PromptError("a --chat template is a JSON/YAML list of {role, content} messages")
    return messages


def _read_config(items: list[str]) -> dict[str, Any]:
    """`key=value` items (values read as YAML: `temperature=0.2`, `stop=["\\n"]`) or YAML files of a mapping."""
    from llmops_lib.runbooks import parse_assignments

    config: dict[str, Any] = {}
    for item in items:
        if "=" in item:
            config |= {k: _load_yaml(v, f"--config {k}") for k, v in parse_assignments([item]).items()}
            continue
        path = Path(item)
        if not path.is_file():
            raise PromptError(f"--config {item!r} is neither key=value nor an existing YAML file")
        loaded = _load_yaml(path.read_text(), str(path))
        if not isinstance(loaded, dict):
            raise PromptError(f"--config file {path} must hold a mapping (model, temperature, max_tokens, stop)")
        config |= loaded
    return config


def _describe(version: PromptVersion) -> str:
    aliases = f" [{', '.join(version.aliases)}]" if version.aliases else ""
    when = datetime.fromtimestamp(version.created_at, UTC).strftime("%Y-%m-%d %H:%M")
    return f"{version.reference}{aliases} {when} · {version.commit_message}"


@prompt_app.command("register")
def prompt_register(
    name: Annotated[str, typer.Argument(help="Prompt name (letters, digits, '.', '_', '-').")],
    file: Annotated[Path | None, typer.Argument(help="File holding the template (or give --text).")] = None,
    text: Annotated[str | None, typer.Option("--text", help="The template itself, instead of a FILE.")] = None,
    chat: Annotated[
        bool, typer.Option("--chat", help="The template is a JSON/YAML list of {role, content} messages.")
    ] = False,
    message: Annotated[str, typer.Option("--message", "-m", help="What this version changes (required).")] = "",
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config", help="Model config: key=value (model, temperature, max_tokens, stop) or a YAML file; repeat."
        ),
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="key=value label of this version; repeat.")] = None,
) -> None:
    """Check a template and register it as the next (immutable) version of a prompt.

    Variables are written {{name}}. Nothing is registered if the template, config or tags are malformed.

    Examples:

      llmops prompt register capital --text 'Capital of {{country}}? Answer:' -m "zero-shot"

      llmops prompt register support messages.yaml --chat -m "shorter system prompt" --config model=smollm2

      llmops prompt register support messages.yaml --chat -m "greedy" --config model.yaml --tag owner=support
    """
    from llmops_lib.runbooks import parse_assignments

    try:
        template = _read_template(file, text, chat)
        version = _registry().register(
            name,
            template,
            commit_message=message,
            model_config=_read_config(config or []),
            tags=parse_assignments(tag or []),
        )
    except LLMOpsError as exc:
        raise fail(exc) from None
    typer.echo(
        f"{version.reference} registered ({'chat' if version.is_chat else 'text'}; variables: "
        f"{', '.join(version.variables) or 'none'}; model config: {json.dumps(version.model_config)})"
    )


@prompt_app.command("list")
def prompt_list() -> None:
    """Every prompt with its newest version and its aliases."""
    registry = _registry()
    try:
        names = registry.list()
        if not names:
            typer.echo(f"no prompts in the registry at {registry.uri}: `llmops prompt register` one")
        for name in names:
            aliases = registry.aliases(name)
            pointers = ", ".join(f"{alias} → v{v}" for alias, v in sorted(aliases.items())) or "no aliases"
            typer.echo(f"{name}: newest {_describe(registry.load(f'{name}@latest'))} · {pointers}")
    except LLMOpsError as exc:
        raise fail(exc) from None


@prompt_app.command("show")
def prompt_show(
    reference: Annotated[
        str, typer.Argument(help="name@alias, name/<version>, name@latest, or a bare name (= name@production).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the version as JSON.")] = False,
) -> None:
    """One version: template, variables, model config, tags, aliases.

    Examples: llmops prompt show capital@production · llmops prompt show capital/2 --json
    """
    try:
        version = _registry().load(reference)
    except LLMOpsError as exc:
        raise fail(exc) from None
    if as_json:
        fields = ("name", "version", "template", "model_config", "commit_message", "tags", "aliases", "created_at")
        typer.echo(json.dumps({f: getattr(version, f) for f in fields}, indent=2))
        return
    typer.echo(_describe(version))
    typer.echo(f"variables: {', '.join(version.variables) or 'none'}")
    typer.echo(f"model config: {json.dumps(version.model_config)}")
    if version.tags:
        typer.echo(f"tags: {json.dumps(version.tags)}")
    typer.echo("---")
    if version.is_chat:
        for message in version.template:
            typer.echo(f"[{message['role']}]\n{message['content']}")
    else:
        typer.echo(version.template)


@prompt_app.command("diff")
def prompt_diff(
    ref_a: Annotated[str, typer.Argument(help="The old version (reference).")],
    ref_b: Annotated[str, typer.Argument(help="The new version (reference).")],
) -> None:
    """A unified diff of two versions' templates and model configs.

    Example: llmops prompt diff capital@previous capital@production
    """
    try:
        text = _registry().diff(ref_a, ref_b)
    except LLMOpsError as exc:
        raise fail(exc) from None
    typer.echo(text or f"{ref_a} and {ref_b} have the same template and model config")


def _event_line(event: Any) -> str:
    before = f"v{event.from_version}" if event.from_version else "(unset)"
    return f"{event.when} {event.who}: {event.alias} {before} → v{event.to_version} · {event.why}"


@prompt_app.command("alias")
def prompt_alias(
    name: str,
    alias: Annotated[str, typer.Argument(help="production, candidate, previous, or any name of yours.")],
    version: Annotated[int, typer.Argument(help="The version number it should point at.")],
    why: WhyOption = "",
    who: WhoOption = None,
) -> None:
    """Point an alias at a version (audited). Moving production also moves previous to the version it leaves.

    Example: llmops prompt alias capital production 3 --why "few-shot wins the A/B test (p=0.002)"
    """
    registry = _registry()
    try:
        event = registry.set_alias(name, alias, version, why=why, who=who)
        aliases = registry.aliases(name)
    except LLMOpsError as exc:
        raise fail(exc) from None
    typer.echo(_event_line(event) if event else f"{name}: {alias} already points at v{version}; nothing moved")
    typer.echo(f"{name}: " + ", ".join(f"{a} → v{v}" for a, v in sorted(aliases.items())))


@prompt_app.command("rollback")
def prompt_rollback(
    name: str,
    alias: Annotated[str, typer.Option("--alias", help="The alias to move back.")] = "production",
    why: WhyOption = "",
    who: WhoOption = None,
) -> None:
    """Point the alias back at the version `previous` points at (previous then points at the one left).

    The gateway serves the rolled-back version from its next request on. Example:
    llmops prompt rollback capital --why "complaints about wrong capitals since v3"
    """
    try:
        event = _registry().rollback(name, alias, why=why, who=who)
    except LLMOpsError as exc:
        raise fail(exc) from None
    typer.echo(_event_line(event))


@prompt_app.command("history")
def prompt_history(name: str) -> None:
    """Every alias move of a prompt, oldest first: when, who, which alias, from which version to which, why."""
    try:
        events = _registry().history(name)
    except LLMOpsError as exc:
        raise fail(exc) from None
    if not events:
        typer.echo(f"{name}: no alias has been moved yet")
    for event in events:
        typer.echo(_event_line(event))
