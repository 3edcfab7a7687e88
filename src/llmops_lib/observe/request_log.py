"""One row per gateway request, written off the response path.

The gateway calls `RequestLog.submit` (a queue put, never blocks); a writer thread batches the rows
into SQLite in WAL mode, so readers (dashboards, the cost report, the release analysis) can read
while it writes. `close()` drains the queue before it returns: nothing is lost on shutdown. Readers
use `RequestLogReader`, which opens the file read-only and never writes.
Column names follow the OpenTelemetry GenAI semantic conventions (`OTEL_ATTRIBUTES`).
Explained in: book/chapters/03_observability/monitoring.ipynb
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, Self

from llmops_lib.config import settings
from llmops_lib.errors import LLMOpsError, SpecError
from llmops_lib.observe import privacy

#: OpenTelemetry GenAI attribute -> SQL column of the `requests` table.
OTEL_ATTRIBUTES: dict[str, str] = {
    "gen_ai.operation.name": "gen_ai_operation_name",
    "gen_ai.request.model": "gen_ai_request_model",
    "gen_ai.response.model": "gen_ai_response_model",
    "gen_ai.usage.input_tokens": "gen_ai_usage_input_tokens",
    "gen_ai.usage.output_tokens": "gen_ai_usage_output_tokens",
    "gen_ai.request.max_tokens": "gen_ai_request_max_tokens",
    "gen_ai.request.temperature": "gen_ai_request_temperature",
}


@dataclass
class RequestRecord:
    """What the gateway knows about one request when it has answered it."""

    request_id: str
    started_at: float
    finished_at: float | None = None
    deployment: str | None = None
    upstream_url: str | None = None
    gen_ai_operation_name: str | None = None
    gen_ai_request_model: str | None = None
    gen_ai_response_model: str | None = None
    gen_ai_usage_input_tokens: int | None = None
    gen_ai_usage_output_tokens: int | None = None
    gen_ai_request_max_tokens: int | None = None
    gen_ai_request_temperature: float | None = None
    stream: int = 0
    priority: str | None = None
    http_status: int | None = None
    error_type: str | None = None
    error: str | None = None
    ttft_s: float | None = None
    queue_s: float | None = None  # time waiting in the gateway's queue for an upstream slot
    latency_s: float | None = None
    cost_usd: float | None = None
    cache_hit: int = 0
    fallback_from: str | None = None
    cached_from: str | None = None  # for a cache hit: the deployment whose answer was cached
    prompt_name: str | None = None  # for a request by prompt reference: the registered prompt served,
    prompt_version: int | None = None  # its version,
    prompt_alias: str | None = None  # and the alias (the A/B arm) it was reached through, if any
    confidence: float | None = None  # on a route with review_below: the answer's confidence from its
    needs_review: int | None = None  # token log-probabilities, and 1 when under the threshold (NULL: streamed)
    guard_blocked: str | None = None  # the guard that blocked the request or cut its stream
    guard_flags: str | None = None  # the guards that flagged it, comma-joined
    pii_types: str | None = None  # PII types redacted from the captured text, comma-joined ("" none; NULL not scanned)
    api_key_id: str | None = None  # the id of the API key it came with (never the key)
    user: str | None = None  # the OpenAI `user` field when given, else the key's id
    prompt: str | None = None
    completion: str | None = None


_TYPES = {int: "INTEGER", float: "REAL", str: "TEXT"}
_COLUMNS = [f.name for f in fields(RequestRecord)]
_COLUMN_TYPES = [
    f"{f.name} {_TYPES[next(t for t in _TYPES if t.__name__ in str(f.type))]}" for f in fields(RequestRecord)
]
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    {", ".join(_COLUMN_TYPES[1:])}
);
CREATE INDEX IF NOT EXISTS requests_started ON requests (started_at);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY, request_id TEXT, created_at REAL, score REAL, comment TEXT
);
"""
_INSERT = f"INSERT OR REPLACE INTO requests ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_FEEDBACK = "INSERT INTO feedback (request_id, created_at, score, comment) VALUES (?, ?, ?, ?)"
_TEXTS = (_COLUMNS.index("prompt"), _COLUMNS.index("completion"))
_PII_TYPES = _COLUMNS.index("pii_types")
#: how often a log with a retention deletes what has expired (also once when it opens)
RETENTION_EVERY_S = 3600.0
_logger = logging.getLogger(__name__)


def database_path(url: str | Path | None = None) -> Path:
    """The SQLite file of `url`: a path, a `sqlite:///path` URL, or None for LLMOPS_HOME/requests.sqlite."""
    if url is None:
        return settings().home / "requests.sqlite"
    text = str(url)
    if "://" in text:
        if not text.startswith("sqlite:///"):
            raise SpecError(
                f"request log URL {text!r} is not supported: use sqlite:///path/to/file.sqlite or a plain path"
            )
        text = text[len("sqlite:///") :]
    return Path(text).expanduser().resolve()


class RequestLogReader:
    """Read the request log at `url` (see `database_path`) without writing to it.

    Every query opens the SQLite file read-only (`mode=ro`), so a dashboard, the cost report or the
    release analysis never creates tables, starts a writer or takes a write lock on a log that a
    gateway in another process is writing (WAL: readers see every committed row). Periods are
    half-open, [since, until), so consecutive periods never count a request twice.
    """

    def __init__(self, url: str | Path | None = None) -> None:
        self.path = database_path(url)

    def exists(self) -> bool:
        """Whether the log file exists yet (a gateway creates it when it starts)."""
        return self.path.is_file()

    def _select(self, sql: str, args: Sequence[object]) -> list[dict]:
        if not self.exists():
            raise SpecError(
                f"no request log at {self.path}: run the gateway with a request log first, or point at an existing one"
            )
        db = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute(sql, args)]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []  # the gateway has opened the file but not created its tables yet: nothing logged
            raise LLMOpsError(f"cannot read the request log {self.path}: {exc}") from exc
        finally:
            db.close()

    def rows(
        self,
        since: float | None = None,
        until: float | None = None,
        deployment: str | None = None,
        *,
        by: Literal["started_at", "finished_at"] = "started_at",
    ) -> list[dict]:
        """Request rows whose `by` time (unix s) is in [since, until), optionally of one deployment,
        in that order. `by="finished_at"` counts a request when its outcome became known.

        Raises:
            SpecError: the log file does not exist.
        """
        if by not in ("started_at", "finished_at"):
            raise SpecError(f"rows(by={by!r}): use started_at or finished_at")
        where, args = _period(f"r.{by}", since, until)
        if deployment is not None:
            where.append("r.deployment = ?")
            args.append(deployment)
        return self._select(f"SELECT r.* FROM requests r{_where(where)} ORDER BY r.{by}", args)

    def feedback_rows(
        self, since: float | None = None, until: float | None = None, deployment: str | None = None
    ) -> list[dict]:
        """Feedback rows created in [since, until), each with the `deployment` that served the request
        it rates (None if that request is not in the log), optionally only about one deployment.

        Raises:
            SpecError: the log file does not exist.
        """
        where, args = _period("f.created_at", since, until)
        if deployment is not None:
            where.append("r.deployment = ?")
            args.append(deployment)
        return self._select(
            "SELECT f.*, r.deployment FROM feedback f LEFT JOIN requests r USING (request_id)"
            f"{_where(where)} ORDER BY f.created_at",
            args,
        )

    def has_request(self, request_id: str) -> bool:
        """Whether the log holds the request `request_id` (False while the log file does not exist)."""
        if not self.exists():
            return False
        return bool(self._select("SELECT 1 FROM requests WHERE request_id = ? LIMIT 1", [request_id]))

    def rows_including(self, request_ids: Iterable[str], timeout_s: float = 30.0) -> list[dict]:
        """All rows, once every id of `request_ids` is among them: a gateway in another process
        writes in the background, so a reader that just got answers waits for their rows.

        Raises:
            LLMOpsError: some ids are still missing after `timeout_s` (is the gateway running?).
        """
        wanted = set(request_ids)
        deadline = time.monotonic() + timeout_s
        while True:
            rows = self.rows() if self.exists() else []
            missing = wanted - {row["request_id"] for row in rows}
            if not missing:
                return rows
            if time.monotonic() > deadline:
                raise LLMOpsError(
                    f"{len(missing)} request(s) not in the log at {self.path} after {timeout_s:.0f} s, "
                    f"e.g. {min(missing)}: is the gateway still running?"
                )
            time.sleep(0.1)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to release: every query opens and closes its own connection."""


def _period(column: str, since: float | None, until: float | None) -> tuple[list[str], list[object]]:
    where: list[str] = []
    args: list[object] = []
    if since is not None:
        where.append(f"{column} >= ?")
        args.append(since)
    if until is not None:
        where.append(f"{column} < ?")
        args.append(until)
    return where, args


def _where(conditions: Sequence[str]) -> str:
    return " WHERE " + " AND ".join(conditions) if conditions else ""


def _add_new_columns(db: sqlite3.Connection) -> None:
    """Bring a log written by an older version up to `RequestRecord`: add the columns it lacks (NULL
    in its old rows), so every log file keeps opening. One write transaction: two gateways opening
    the same old file add each column once."""
    db.execute("BEGIN IMMEDIATE")
    have = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
    for name, column in zip(_COLUMNS, _COLUMN_TYPES, strict=True):
        if name not in have:
            db.execute(f"ALTER TABLE requests ADD COLUMN {column}")
    db.execute("COMMIT")


def _redacted(redact: Callable[[str], tuple[str, list[str]]], kind: str, row: tuple) -> tuple:
    """`row` with its text redacted: a request's prompt and completion (types found into `pii_types`,
    "" for none) or a feedback comment; other queue items as they are."""
    texts = _TEXTS if kind == "requests" else (3,) if kind == "feedback" else ()
    if all(row[i] is None for i in texts):
        return row
    values, types = list(row), set()
    for i in texts:
        if values[i] is not None:
            try:
                values[i], found = redact(values[i])
                types.update(found)
            except Exception:  # a redactor's bug must neither stop the log nor let raw text through
                _logger.exception("redacting a %s row failed: its text is dropped", kind)
                values[i] = None
    if kind == "requests":
        values[_PII_TYPES] = ",".join(sorted(types))
    return tuple(values)


class RequestLog(RequestLogReader):
    """The request log at `url` (see `database_path`), written by a background thread; prompt and
    completion text are kept only with `capture_text`. It reads as a `RequestLogReader` does; a
    process that only reads uses `RequestLogReader`, which never creates the file nor a writer.

    `redact(text) -> (redacted text, PII types found)` runs in the writer thread (off the response
    path) on the captured prompt, completion and feedback comment before they reach the file; the
    types go to `pii_types`. If it fails the text is dropped, never written raw. With
    `retention_days`, the writer deletes older rows when it starts and every `RETENTION_EVERY_S`
    (`privacy.expire`: bytes overwritten, audited)."""

    def __init__(
        self,
        url: str | Path | None = None,
        capture_text: bool = False,
        redact: Callable[[str], tuple[str, list[str]]] | None = None,
        retention_days: float | None = None,
    ) -> None:
        super().__init__(url)
        self.capture_text = capture_text
        self.redact = redact
        self.retention_days = retention_days
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            _add_new_columns(db)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="request-log-writer", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=30000")
        # WAL with synchronous=NORMAL: a crash of the process loses nothing committed; only a power
        # cut may lose the last commits. One fsync per batch would otherwise cost every request.
        db.execute("PRAGMA synchronous=NORMAL")
        return privacy.secure(db)

    def submit(self, record: RequestRecord) -> None:
        """Queue `record` for writing; returns at once."""
        if not self.capture_text:
            record.prompt = record.completion = None
        # the fields are scalars: no deep copy (`asdict` was the costliest step of a logged request)
        self._queue.put(("requests", tuple(getattr(record, name) for name in _COLUMNS)))

    def add_feedback(self, request_id: str, score: float, comment: str | None = None) -> None:
        """Queue a feedback row about `request_id`."""
        self._queue.put(("feedback", (request_id, time.time(), float(score), comment)))

    def _expire(self, db: sqlite3.Connection, due: float) -> float:
        """Apply the retention if due (monotonic time `due`); when it is next due."""
        if self.retention_days is None or time.monotonic() < due:
            return due
        try:
            privacy.expire(db, self.path, self.retention_days)
        except Exception:  # e.g. the audit log unwritable: logged, and tried again next time
            _logger.exception("applying the request log's retention of %s days failed", self.retention_days)
        return time.monotonic() + RETENTION_EVERY_S

    def _write_loop(self) -> None:
        db = self._connect()
        due = time.monotonic()
        try:
            while True:
                due = self._expire(db, due)
                try:
                    wait = None if self.retention_days is None else max(0.0, due - time.monotonic())
                    batch = [self._queue.get(timeout=wait)]
                except queue.Empty:
                    continue
                while len(batch) < 500:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                if self.redact is not None:
                    batch = [(kind, _redacted(self.redact, kind, row)) for kind, row in batch]
                with db:
                    for kind, sql in (("requests", _INSERT), ("feedback", _FEEDBACK)):
                        db.executemany(sql, [item[1] for item in batch if item[0] == kind])
                for kind, marker in batch:
                    if kind == "flush":
                        marker.set()
                if any(kind == "stop" for kind, _ in batch):
                    return
        finally:
            db.close()

    def flush(self) -> None:
        """Wait until everything submitted so far is in the database."""
        done = threading.Event()
        self._queue.put(("flush", done))
        done.wait()

    def close(self) -> None:
        """Write everything queued, then stop the writer."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(("stop", None))
        self._writer.join()

    def __exit__(self, *exc: object) -> None:
        self.close()
