"""Drift of the traffic itself: has what users send, or what the service answers, changed?

Latency SLOs and quality checks judge each request; drift compares two *windows* of the request
log: a reference (last week, the stable release) and the current one. Longer prompts, a new topic,
a canary that answers slower or differently all show as a change in the distribution of some column
before any single request looks wrong. Evidently does the testing and draws the report; it runs in
the evaluation tools' environment (`.venv-evals`, pandas < 3) through the worker
`evidently_report.py`, so the project's environment never imports it.

Columns (`COLUMNS`) are chosen explicitly, never "every column": numbers and categories from the log,
and text descriptors Evidently computes from the captured prompt and completion (length, words,
share of non-letters, digits, valid JSON: none needs a downloaded model). Raw text is not tested
itself: Evidently's text-drift classifier fails on a templated prompt ("no terms remain"). Each
column gets a p-value test (K-S, chi-square) at `alpha / k` for k columns (Bonferroni), and the
traffic is flagged when any column drifts: the chance that the same traffic is flagged is then at
most `alpha`, which `false_alarm_rate` measures on random halves of one window.

Explained in: book/chapters/05_quality/quality_assurance.ipynb
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from llmops_lib.errors import LLMOpsError, SpecError
from llmops_lib.evals.harness import tools_env, tools_python
from llmops_lib.observe.request_log import RequestLogReader

WORKER = Path(__file__).with_name("evidently_report.py")
#: numeric columns: name in the report -> request-log column
NUMERICAL = {
    "latency_s": "latency_s",
    "ttft_s": "ttft_s",
    "input_tokens": "gen_ai_usage_input_tokens",
    "output_tokens": "gen_ai_usage_output_tokens",
}
#: categorical columns: name in the report -> request-log column
CATEGORICAL = {"deployment": "deployment", "http_status": "http_status", "route": "gen_ai_request_model"}
TEXTS = ("prompt", "completion")
#: text descriptors computed by Evidently (see `evidently_report.DESCRIPTORS`), as `<text>_<kind>` columns
DESCRIPTOR_KINDS = ("chars", "words", "non_letter", "has_digit", "is_json")
COLUMNS = (
    *NUMERICAL,
    *CATEGORICAL,
    *(f"{text}_{kind}" for text in TEXTS for kind in DESCRIPTOR_KINDS),
)
#: the default choice: what the traffic is (sizes, topic-ish text shape), how it is served, and whether
#: answers stay JSON; `has_digit` and `route` are there to be chosen
DEFAULT_COLUMNS = (
    "latency_s",
    "ttft_s",
    "input_tokens",
    "output_tokens",
    "deployment",
    "http_status",
    "prompt_chars",
    "prompt_words",
    "prompt_non_letter",
    "completion_chars",
    "completion_words",
    "completion_non_letter",
    "completion_is_json",
)
MIN_ROWS = 10


@dataclass(frozen=True)
class ColumnDrift:
    """One column's test: its p-value, the test, the threshold it was held to, the verdict."""

    drifted: bool
    p_value: float
    method: str
    threshold: float


@dataclass(frozen=True)
class DriftResult:
    """Two windows compared: flagged when any tested column drifted; the report's files."""

    drifted: bool
    share: float  # of the tested columns, the share that drifted
    per_column: dict[str, ColumnDrift]
    skipped: dict[str, str]  # column -> why it was not tested (no values in a window)
    reference_rows: int
    current_rows: int
    html: Path | None
    json: Path

    def drifted_columns(self) -> list[str]:
        return [name for name, column in self.per_column.items() if column.drifted]

    def rows(self) -> list[dict]:
        """One table row per tested column (for `viz.rows`)."""
        return [
            {"column": name, "p_value": c.p_value, "threshold": c.threshold, "test": c.method, "drifted": c.drifted}
            for name, c in self.per_column.items()
        ]


def _window_row(row: Mapping) -> dict:
    values = {name: row.get(column) for name, column in NUMERICAL.items()}
    values |= {name: None if row.get(column) is None else str(row[column]) for name, column in CATEGORICAL.items()}
    values |= {text: row.get(text) for text in TEXTS}
    return values


def _plan(reference: list[dict], current: list[dict], columns: Sequence[str]) -> tuple[dict, dict[str, str]]:
    """The worker's column spec for these windows, and the columns left out with the reason."""
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown or not columns:
        raise SpecError(
            f"unknown drift column(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(COLUMNS)}"
        )
    spec: dict = {"numerical": [], "categorical": [], "descriptors": []}
    skipped = {}
    for column in dict.fromkeys(columns):
        text, _, kind = column.partition("_")
        source = text if text in TEXTS and kind in DESCRIPTOR_KINDS else column
        empty = [
            name
            for name, rows in (("reference", reference), ("current", current))
            if all(r[source] is None for r in rows)
        ]
        if empty:
            why = "no text captured (start the gateway with capture_text)" if source in TEXTS else "no value"
            skipped[column] = f"{why} in the {' and '.join(empty)} window"
        elif source in TEXTS:
            spec["descriptors"].append([text, kind, column])
        else:
            spec["numerical" if column in NUMERICAL else "categorical"].append(column)
    return spec, skipped


def _run_worker(spec: dict, out: Path, timeout_s: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=out, delete=False) as handle:
        json.dump(spec, handle)
    try:
        done = subprocess.run(
            [str(tools_python()), str(WORKER), handle.name, str(out)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=tools_env(),
        )
    except subprocess.TimeoutExpired as exc:
        raise LLMOpsError(f"the Evidently report took more than {timeout_s:.0f} s; is the machine overloaded?") from exc
    finally:
        Path(handle.name).unlink(missing_ok=True)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise LLMOpsError(f"the Evidently report failed: {tail}")


def _result(folder: Path, skipped: dict[str, str], n_reference: int, n_current: int, html: bool) -> DriftResult:
    columns = json.loads((folder / "summary.json").read_text())["columns"]
    per_column = {
        name: ColumnDrift(bool(c["drifted"]), float(c["score"]), str(c["method"]), float(c["threshold"]))
        for name, c in columns.items()
    }
    drifted = sum(c.drifted for c in per_column.values())
    return DriftResult(
        drifted=drifted > 0,
        share=drifted / len(per_column) if per_column else 0.0,
        per_column=per_column,
        skipped=skipped,
        reference_rows=n_reference,
        current_rows=n_current,
        html=folder / "drift.html" if html else None,
        json=folder / "drift.json",
    )


def drift_reports(
    pairs: Mapping[str, tuple[Sequence[Mapping], Sequence[Mapping]]],
    output_dir: Path,
    *,
    columns: Sequence[str] = DEFAULT_COLUMNS,
    alpha: float = 0.05,
    html: bool = True,
    timeout_s: float = 600.0,
) -> dict[str, DriftResult]:
    """`drift_report` of several (reference, current) pairs by name, each into `output_dir/<name>`, in
    one Evidently run (its import alone takes 10-20 s). The same columns are tested in every pair.

    Raises:
        SpecError: an unknown column, a bad alpha, a window with fewer than `MIN_ROWS` rows, or no
            column with values in both windows; Evidently's environment is missing (`make evals`).
        LLMOpsError: Evidently failed (the message ends with its error).
    """
    if not 0 < alpha < 1:
        raise SpecError(f"alpha must be within (0, 1), got {alpha}")
    windows = {
        name: ([_window_row(r) for r in ref], [_window_row(r) for r in cur]) for name, (ref, cur) in pairs.items()
    }
    for pair, (reference, current) in windows.items():
        for which, rows in (("reference", reference), ("current", current)):
            if len(rows) < MIN_ROWS:
                raise SpecError(
                    f"the {which} window of {pair!r} holds {len(rows)} request(s); "
                    f"drift needs at least {MIN_ROWS} in each: widen it"
                )
    every = list(windows.values())
    spec, skipped = _plan([r for ref, _ in every for r in ref], [r for _, cur in every for r in cur], columns)
    tested = len(spec["numerical"]) + len(spec["categorical"]) + len(spec["descriptors"])
    if not tested:
        raise SpecError(f"none of the drift columns has values in both windows: {skipped}")
    spec["threshold"] = alpha / tested  # Bonferroni: the same traffic is flagged with chance <= alpha
    spec["windows"] = [
        {"name": name, "reference": ref, "current": cur, "html": html} for name, (ref, cur) in windows.items()
    ]
    output_dir = Path(output_dir)
    _run_worker(spec, output_dir, timeout_s)
    return {name: _result(output_dir / name, skipped, len(ref), len(cur), html) for name, (ref, cur) in windows.items()}


def drift_report(
    reference_rows: Sequence[Mapping],
    current_rows: Sequence[Mapping],
    output_dir: Path,
    *,
    columns: Sequence[str] = DEFAULT_COLUMNS,
    alpha: float = 0.05,
    timeout_s: float = 300.0,
) -> DriftResult:
    """Compare two windows of request-log rows (as `RequestLogReader.rows` returns them); the Evidently
    report (`drift.html`, self-contained, and `drift.json`) goes to `output_dir`.

    Raises:
        SpecError: an unknown column, a bad alpha, a window with fewer than `MIN_ROWS` rows, or no
            column with values in both windows; Evidently's environment is missing (`make evals`).
        LLMOpsError: Evidently failed (the message ends with its error).
    """
    pairs = {".": (reference_rows, current_rows)}
    return drift_reports(pairs, output_dir, columns=columns, alpha=alpha, timeout_s=timeout_s)["."]


def drift_between(
    reader: RequestLogReader,
    *,
    reference: tuple[float, float],
    current: tuple[float, float],
    output_dir: Path,
    **options,
) -> DriftResult:
    """`drift_report` of two time windows (since, until) in unix seconds of one request log."""
    for name, (since, until) in (("reference", reference), ("current", current)):
        if not since < until:
            raise SpecError(f"the {name} window must start before it ends, got {since} .. {until}")
    return drift_report(reader.rows(*reference), reader.rows(*current), output_dir, **options)


def false_alarm_rate(
    rows: Sequence[Mapping],
    splits: int = 10,
    seed: int = 0,
    *,
    columns: Sequence[str] = DEFAULT_COLUMNS,
    alpha: float = 0.05,
    timeout_s: float = 600.0,
) -> float:
    """Share of `splits` random halvings of the same traffic that `drift_report` flags: the rate of
    false alarms, which the Bonferroni threshold keeps at most about `alpha`. One Evidently run."""
    if splits < 1:
        raise SpecError(f"splits must be at least 1, got {splits}")
    generator = random.Random(seed)
    pairs = {}
    for i in range(splits):
        order = list(rows)
        generator.shuffle(order)
        pairs[f"split-{i}"] = (order[: len(order) // 2], order[len(order) // 2 :])
    with tempfile.TemporaryDirectory() as scratch:
        results = drift_reports(pairs, Path(scratch), columns=columns, alpha=alpha, html=False, timeout_s=timeout_s)
    return sum(r.drifted for r in results.values()) / splits


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_moment(text: str, now: float | None = None) -> float:
    """A point in time (unix s) from `2h` (that long before `now`; units s, m, h, d), an ISO 8601 time
    (UTC unless it says otherwise) or '' / `now`."""
    now = time.time() if now is None else now
    if text.strip() in ("", "now"):
        return now
    if match := _DURATION.match(text):
        return now - float(match[1]) * _UNIT_S[match[2]]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SpecError(
            f"{text!r} is neither a duration back from now (30m, 2h, 1d) nor an ISO 8601 time (2026-01-31T00:00)"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
