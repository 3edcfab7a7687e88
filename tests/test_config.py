"""Where state lives: one home, the checkout's, whichever folder a lab or a command runs from."""

from pathlib import Path

from llmops_lib.config import settings

ROOT = Path(__file__).resolve().parents[1]


def test_home_defaults_to_the_checkouts_folder_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMOPS_HOME", raising=False)
    monkeypatch.chdir(ROOT / "labs")  # where `jupyter lab labs/` starts a lab's kernel
    assert settings().home == ROOT / ".llmops"
    monkeypatch.chdir(tmp_path)
    assert settings().home == ROOT / ".llmops"


def test_the_environment_overrides_the_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "elsewhere"))
    assert settings().home == tmp_path / "elsewhere"
    monkeypatch.setenv("LLMOPS_HOME", "~/llmops-home")
    assert settings().home == Path.home() / "llmops-home"
