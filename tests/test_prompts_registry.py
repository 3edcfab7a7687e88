"""The prompt registry on MLflow's real prompt registry (a temporary SQLite store): versions, aliases,
rollback, audit, and every bad input refused with a clear error and nothing registered or moved.

No engine: prompts are data until the gateway serves them (tests/test_gateway*.py).
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import uuid
from datetime import datetime

import pytest
from typer.testing import CliRunner

from llmops_lib.cli import app
from llmops_lib.errors import PromptError, PromptNotFound, SpecError
from llmops_lib.prompts.registry import PromptRegistry
from llmops_lib.prompts.template import PromptVersion, Reference, parse_reference

TEXT = "Q: What is the capital of {{ country }}?\nA:"
CHAT = [
    {"role": "system", "content": "Answer with the {{unit}} only."},
    {"role": "user", "content": "What is the capital of {{country}}? Say {{ unit }}."},
]


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    """One store for the module (creating an MLflow database takes seconds); each test its own prompt names."""
    return f"sqlite:///{tmp_path_factory.mktemp('prompts') / 'mlflow.db'}"


@pytest.fixture
def registry(uri) -> PromptRegistry:
    return PromptRegistry(uri)


def _name() -> str:
    return f"p-{uuid.uuid4().hex[:8]}"


def _two_versions(registry: PromptRegistry) -> str:
    name = _name()
    registry.register(name, TEXT, commit_message="zero-shot")
    registry.register(name, CHAT, commit_message="chat")
    return name


# --- templates (pure Python) --------------------------------------------------------------------


def test_text_template_variables_and_render():
    version = PromptVersion("capital", 1, "{{country}}: {{ city }}, {{country}}")
    assert version.variables == ("country", "city") and not version.is_chat
    assert version.render({"country": "France", "city": "Paris"}) == "France: Paris, France"
    assert version.render({"country": "Peru", "city": 3}) == "Peru: 3, Peru"  # numbers written as text


def test_render_is_one_pass():
    """A value that looks like a variable is inserted as text, never expanded (no injection through values)."""
    version = PromptVersion("p", 1, "{{a}}|{{b}}")
    assert version.render({"a": "{{b}}", "b": "x"}) == "{{b}}|x"


def test_chat_template_renders_each_message():
    version = PromptVersion("capital", 2, CHAT)
    assert version.is_chat and version.variables == ("unit", "country")
    assert version.render({"unit": "city", "country": "Chile"}) == [
        {"role": "system", "content": "Answer with the city only."},
        {"role": "user", "content": "What is the capital of Chile? Say city."},
    ]
    assert version.template[0]["content"] == "Answer with the {{unit}} only."  # the template is not changed


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"country": "France"}, "missing variable 'city'"),
        ({"country": "France", "city": "Paris", "extra": "x"}, "unknown variable 'extra'"),
        ({"country": "France", "city": ["Paris"]}, "variable 'city' must be text or a number"),
        ({"country": "France", "city": True}, "variable 'city' must be text or a number"),
    ],
)
def test_render_refuses_missing_unknown_and_non_text_variables(variables, named):
    with pytest.raises(PromptError, match=named):
        PromptVersion("capital", 1, "{{country}}: {{city}}").render(variables)


@pytest.mark.parametrize(
    ("template", "named"),
    [
        ("Capital of {{country?", "'{{' at character 11 is never closed"),
        ("Capital of {{ }}", "empty variable name"),
        ("Capital of {{1country}}", "variable name '1country'"),
        ("Capital of {{first country}}", "variable name 'first country'"),
        ("{% if x %}a{% endif %}", "Jinja2"),
        ("   ", "it is empty"),
        ([], "non-empty list"),
        ([{"role": "robot", "content": "hi"}], "unknown role 'robot'"),
        ([{"role": "user"}], "exactly the keys role and content"),
        ([{"role": "user", "content": "hi", "name": "x"}], "exactly the keys role and content"),
        ([{"role": "user", "content": 3}], "content must be text"),
        ([{"role": "user", "content": "{{x"}], "message 0"),
    ],
)
def test_template_syntax_errors_register_nothing(registry, template, named):
    name = _name()
    with pytest.raises(PromptError, match=named):
        registry.register(name, template, commit_message="broken")
    assert name not in registry.list()


def test_literal_braces_and_json_are_text():
    """Single braces (JSON examples in a prompt) and a stray `}}` are text, not syntax errors."""
    version = PromptVersion("extract", 1, 'Reply as {"name": {"first": "{{first}}"}}')
    assert version.render({"first": "Ada"}) == 'Reply as {"name": {"first": "Ada"}}'


@pytest.mark.parametrize(
    ("reference", "parsed"),
    [
        ("support-answer@production", Reference("support-answer", "production")),
        ("support-answer/3", Reference("support-answer", 3)),
        ("prompts:/support-answer@candidate", Reference("support-answer", "candidate")),
        ("prompts:/support-answer/12", Reference("support-answer", 12)),
        ("support-answer", Reference("support-answer", None)),
        ("  a.b_c@latest ", Reference("a.b_c", "latest")),
    ],
)
def test_parse_reference(reference, parsed):
    assert parse_reference(reference) == parsed


@pytest.mark.parametrize("reference", ["", "a@", "a/", "a/0", "a/x", "a@b@c", "a b@c", "@prod", "a@pro duction"])
def test_bad_reference_is_named(reference):
    with pytest.raises(PromptError, match="bad prompt reference"):
        parse_reference(reference)


def test_template_module_does_not_import_mlflow():
    """The gateway renders on every request: the template module must stay free of MLflow's import."""
    code = "import sys, llmops_lib.prompts.template; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --- registry round trip ------------------------------------------------------------------------


def test_text_round_trip(registry):
    name = _name()
    config = {"model": "smollm2", "temperature": 0, "max_tokens": 16, "stop": ["\n"]}
    made = registry.register(name, TEXT, commit_message="zero-shot", model_config=config, tags={"owner": "book"})
    loaded = registry.load(f"{name}/1")
    assert made.version == loaded.version == 1
    assert loaded.template == TEXT and not loaded.is_chat and loaded.variables == ("country",)
    assert loaded.model_config == {"model": "smollm2", "temperature": 0.0, "max_tokens": 16, "stop": ["\n"]}
    assert loaded.commit_message == "zero-shot" and loaded.tags == {"owner": "book"}
    assert loaded.created_at > 1.7e9  # unix seconds, not milliseconds
    assert loaded.render({"country": "Japan"}) == "Q: What is the capital of Japan?\nA:"


def test_chat_round_trip_renders_as_mlflow_does(registry, uri):
    """Our pure-Python render against MLflow's own `PromptVersion.format` (the independent oracle)."""
    from llmops_lib.mlflow_store import mlflow_client

    name = _name()
    registry.register(name, CHAT, commit_message="chat", model_config={"max_tokens": 8})
    loaded = registry.load(f"prompts:/{name}/1")
    assert loaded.is_chat and loaded.template == CHAT and loaded.model_config == {"max_tokens": 8}
    values = {"unit": "city", "country": "Kenya"}
    assert loaded.render(values) == mlflow_client(uri).get_prompt_version(name, 1).format(**values)


def test_registering_again_makes_a_new_immutable_version(registry):
    name = _two_versions(registry)
    third = registry.register(name, TEXT, commit_message="same text again")
    assert third.version == 3
    versions = registry.versions(name)
    assert [v.version for v in versions] == [1, 2, 3]
    assert [v.commit_message for v in versions] == ["zero-shot", "chat", "same text again"]
    assert registry.load(f"{name}/2").template == CHAT  # the older versions are unchanged
    assert registry.load(f"{name}@latest").version == 3
    assert name in registry.list()


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"top_p": 0.9}, "unknown key 'top_p'"),
        ({"temperature": -1}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": "\n"}, "stop"),
    ],
)
def test_bad_model_config_registers_nothing(registry, config, named):
    name = _name()
    with pytest.raises(PromptError, match=named):
        registry.register(name, TEXT, commit_message="m", model_config=config)
    assert name not in registry.list()


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"commit_message": " "}, "commit message"),
        ({"commit_message": "m", "tags": {"llmops.alias_event.1": "{}"}}, "bad tag"),  # no forged audit event
        ({"commit_message": "m", "tags": {"mlflow.prompt.text": "x"}}, "bad tag"),
    ],
)
def test_bad_commit_message_or_tags_register_nothing(registry, kwargs, named):
    name = _name()
    with pytest.raises(PromptError, match=named):
        registry.register(name, TEXT, **kwargs)
    assert name not in registry.list()


def test_a_failed_version_leaves_an_existing_prompt_as_it_was(registry):
    name = _two_versions(registry)
    with pytest.raises(PromptError):
        registry.register(name, "{{broken", commit_message="broken")
    assert [v.version for v in registry.versions(name)] == [1, 2]


def test_a_model_of_the_same_name_is_refused(registry, uri):
    """Models and prompts share MLflow's store: a prompt may not take a registered model's name."""
    from llmops_lib.mlflow_store import mlflow_client

    name = _name()
    mlflow_client(uri).create_registered_model(name)
    with pytest.raises(PromptError, match=f"refused registering '{name}'.*same name"):
        registry.register(name, TEXT, commit_message="m")
    assert name not in registry.list()


def test_mlflow_is_imported_with_telemetry_off(uri):
    """The registry's first MLflow import happens with MLFLOW_DISABLE_TELEMETRY set (no DNS lookup offline)."""
    code = f"""
import os, sys
os.environ.pop("MLFLOW_DISABLE_TELEMETRY", None)
seen = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "mlflow" and not seen:
            seen.append(os.environ.get("MLFLOW_DISABLE_TELEMETRY"))
sys.meta_path.insert(0, Spy())
from llmops_lib.errors import PromptNotFound
from llmops_lib.prompts.registry import PromptRegistry
try:
    PromptRegistry({uri!r}).load("absent@production")
except PromptNotFound:
    print(seen)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['true']"


def test_bad_prompt_name(registry):
    with pytest.raises(PromptError, match="bad prompt name 'a b'"):
        registry.register("a b", TEXT, commit_message="m")


# --- aliases, rollback, audit -------------------------------------------------------------------


def test_moving_production_keeps_previous_and_rollback_goes_back(registry):
    name = _two_versions(registry)
    registry.set_alias(name, "production", 1, why="first release", who="alice")
    assert registry.aliases(name) == {"production": 1}
    registry.set_alias(name, "production", 2, why="chat wins", who="bob")
    assert registry.aliases(name) == {"production": 2, "previous": 1}
    assert registry.load(name).version == 2  # a bare name is its production version
    assert [v.aliases for v in registry.versions(name)] == [("previous",), ("production",)]

    event = registry.rollback(name, why="complaints", who="carol")
    assert (event.alias, event.from_version, event.to_version) == ("production", "2", "1")
    assert registry.aliases(name) == {"production": 1, "previous": 2}
    assert registry.load(f"{name}@production").version == 1

    history = registry.history(name)
    assert [(e.alias, e.from_version, e.to_version, e.who) for e in history] == [
        ("production", None, "1", "alice"),
        ("previous", None, "1", "bob"),
        ("production", "1", "2", "bob"),
        ("production", "2", "1", "carol"),
        ("previous", "1", "2", "carol"),
    ]
    assert history[2].why == "chat wins" and "complaints" in history[4].why
    times = [datetime.fromisoformat(e.when) for e in history]
    assert times == sorted(times) and all(t.tzinfo is not None for t in times)


def test_moving_to_where_it_points_is_no_event(registry):
    name = _two_versions(registry)
    registry.set_alias(name, "candidate", 2, why="try chat")
    generation = registry.generation()
    assert registry.set_alias(name, "candidate", 2, why="again") is None
    assert len(registry.history(name)) == 1 and registry.generation() == generation


def test_who_defaults_to_the_login_name(registry):
    name = _two_versions(registry)
    event = registry.set_alias(name, "candidate", 2, why="try chat")
    assert event.who == getpass.getuser() == registry.history(name)[0].who


def test_generation_changes_on_every_move_and_not_on_reads(registry):
    name = _two_versions(registry)
    before = registry.generation()
    registry.set_alias(name, "production", 1, why="first")
    after_move = registry.generation()
    assert after_move != before
    for read in (registry.load, registry.versions, registry.history, registry.aliases):
        read(name)
    registry.list()
    registry.diff(f"{name}/1", f"{name}/2")
    assert registry.generation() == after_move
    registry.set_alias(name, "production", 2, why="second")
    after_second = registry.generation()
    assert after_second not in (before, after_move)
    registry.rollback(name, why="back")
    assert registry.generation() not in (before, after_move, after_second)
    assert PromptRegistry(registry.uri).generation() == registry.generation()  # another process sees it


def test_rollback_without_previous_is_refused_and_moves_nothing(registry):
    name = _two_versions(registry)
    registry.set_alias(name, "production", 2, why="first release")
    generation = registry.generation()
    with pytest.raises(PromptError, match="no previous version to roll production back to"):
        registry.rollback(name, why="oops")
    with pytest.raises(PromptError, match="no alias 'candidate' to roll back"):
        registry.rollback(name, "candidate", why="oops")
    assert registry.aliases(name) == {"production": 2}
    assert len(registry.history(name)) == 1 and registry.generation() == generation


def test_a_move_without_a_reason_is_refused(registry):
    name = _two_versions(registry)
    with pytest.raises(SpecError, match="say why"):
        registry.set_alias(name, "production", 1, why="  ")
    with pytest.raises(SpecError, match="say why"):
        registry.rollback(name, why="")
    assert registry.aliases(name) == {} and registry.history(name) == []


@pytest.mark.parametrize("alias", ["latest", "v2", "V3", "7", "pro duction", "a@b"])
def test_reserved_or_malformed_alias_is_refused(registry, alias):
    name = _two_versions(registry)
    with pytest.raises(PromptError, match="bad alias"):
        registry.set_alias(name, alias, 1, why="x")
    assert registry.aliases(name) == {}


def test_unknown_prompt_alias_and_version_are_named(registry):
    name = _two_versions(registry)
    registry.set_alias(name, "production", 2, why="first")
    missing = _name()
    with pytest.raises(PromptNotFound, match=f"no prompt '{missing}'.*prompts: .*{name}"):
        registry.load(f"{missing}@production")
    with pytest.raises(PromptNotFound, match=rf"'{name}' has no alias 'candidate'; it has: v1, v2 \(production\)"):
        registry.load(f"{name}@candidate")
    with pytest.raises(PromptNotFound, match=f"'{name}' has no version 9"):
        registry.load(f"{name}/9")
    with pytest.raises(PromptNotFound, match=f"'{name}' has no version 9"):
        registry.set_alias(name, "production", 9, why="x")
    for call in (registry.versions, registry.history, registry.aliases):
        with pytest.raises(PromptNotFound, match=f"no prompt '{missing}'"):
            call(missing)
    with pytest.raises(PromptNotFound, match=f"no prompt '{missing}'"):
        registry.rollback(missing, why="x")


def test_diff_shows_template_and_config_changes(registry):
    name = _name()
    registry.register(name, "Capital of {{country}}?", commit_message="a", model_config={"temperature": 0})
    registry.register(name, "Capital city of {{country}}?", commit_message="b", model_config={"temperature": 0.7})
    registry.set_alias(name, "production", 2, why="x")
    diff = registry.diff(f"{name}/1", f"{name}@production").splitlines()
    assert diff[:2] == [f"--- {name}/1", f"+++ {name}/2 ({name}@production)"]
    assert "-Capital of {{country}}?" in diff and "+Capital city of {{country}}?" in diff
    assert "-  temperature: 0.0" in diff and "+  temperature: 0.7" in diff
    assert registry.diff(f"{name}/1", f"{name}/1") == ""


# --- CLI ----------------------------------------------------------------------------------------


@pytest.fixture
def cli(uri):
    def run(*args: str):
        return CliRunner().invoke(app, ["prompt", *args], env={"LLMOPS_REGISTRY_URI": uri})

    return run


def test_cli_round_trip(cli, registry, tmp_path):
    name = _name()
    messages = tmp_path / "messages.yaml"
    messages.write_text("- role: system\n  content: City only.\n- role: user\n  content: 'Capital of {{country}}?'\n")
    config = tmp_path / "config.yaml"
    config.write_text("model: smollm2\nmax_tokens: 8\n")

    result = cli("register", name, "--text", "Capital of {{country}}?", "-m", "zero-shot", "--config", "temperature=0")
    assert result.exit_code == 0 and f"{name}/1 registered (text; variables: country" in result.output
    result = cli("register", name, str(messages), "--chat", "-m", "chat", "--config", str(config), "--tag", "k=v")
    assert result.exit_code == 0 and f"{name}/2 registered (chat" in result.output
    version = registry.load(f"{name}/2")
    assert version.template[1] == {"role": "user", "content": "Capital of {{country}}?"}
    assert version.model_config == {"model": "smollm2", "max_tokens": 8} and version.tags == {"k": "v"}

    assert cli("alias", name, "production", "1", "--why", "first").exit_code == 0
    result = cli("alias", name, "production", "2", "--why", "chat wins", "--who", "dana")
    assert result.exit_code == 0 and "dana: production v1 → v2 · chat wins" in result.output
    result = cli("list")
    assert result.exit_code == 0 and f"{name}: newest {name}/2 [production]" in result.output
    result = cli("show", f"{name}@production")
    assert result.exit_code == 0 and "[user]\nCapital of {{country}}?" in result.output
    result = cli("diff", f"{name}@previous", f"{name}@production")
    assert result.exit_code == 0 and "+[system]" in result.output
    result = cli("rollback", name, "--why", "complaints")
    assert result.exit_code == 0 and "production v2 → v1 · complaints" in result.output
    assert registry.aliases(name) == {"production": 1, "previous": 2}
    result = cli("history", name)
    assert result.exit_code == 0 and len(result.output.strip().splitlines()) == 5


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("register", "{name}", "--text", "Capital of {{country", "-m", "x"), "never closed"),
        (("register", "{name}", "--text", "x", "-m", "x", "--config", "top_p=1"), "unknown key 'top_p'"),
        (("register", "{name}", "--text", "x", "-m", "x", "--config", "nofile.yaml"), "neither key=value"),
        (("register", "{name}", "--text", "x"), "commit message"),
        (("register", "{name}", "--text", "x: [", "--chat", "-m", "x"), "not valid JSON/YAML"),
        (("register", "{name}", "-m", "x"), "either as a FILE or with --text"),
        (("show", "{name}@production"), "no prompt"),
        (("show", "bad ref"), "bad prompt reference"),
        (("history", "{name}"), "no prompt"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line_and_registers_nothing(cli, registry, args, named):
    name = _name()
    result = cli(*(arg.replace("{name}", name) for arg in args))
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert named in result.output
    assert name not in registry.list()


def test_cli_alias_and_rollback_refusals_exit_2(cli, registry):
    name = _two_versions(registry)
    result = cli("alias", name, "production", "1")
    assert result.exit_code == 2 and result.output.startswith("error: say why")
    registry.set_alias(name, "production", 1, why="first")
    result = cli("rollback", name, "--why", "oops")
    assert result.exit_code == 2 and "no previous version" in result.output
    assert registry.aliases(name) == {"production": 1}


@pytest.mark.parametrize("command", ["register", "list", "show", "diff", "alias", "rollback", "history"])
def test_every_prompt_command_explains_itself(cli, command):
    result = cli(command, "--help")
    assert result.exit_code == 0 and f" prompt {command} [OPTIONS]" in result.output


def test_the_installed_command_prints_one_error_line_on_stderr(uri):
    env = os.environ | {"LLMOPS_REGISTRY_URI": uri}
    result = subprocess.run(
        [sys.executable, "-m", "llmops_lib", "prompt", "show", "absent@production"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: no prompt 'absent' in the registry at ")
    assert len(result.stderr.strip().splitlines()) == 1
