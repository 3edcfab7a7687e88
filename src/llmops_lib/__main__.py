"""`python -m llmops_lib` is the `llmops` command."""

from llmops_lib.cli import app

app(prog_name="llmops")
