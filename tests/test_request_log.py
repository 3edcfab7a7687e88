"""The request log: the writer writes in the background; the one reader reads without writing."""

from __future__ import annotations

import contextlib
import sqlite3
import threading

import pytest

from llmops_lib.errors import SpecError
from llmops_lib.observe.request_log import RequestLog, RequestLogReader, RequestRecord


def _tables(path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _ids(rows: list[dict]) -> list[str]:
    return [row["request_id"] for row in rows]


@pytest.fixture
def log_path(tmp_path):
    path = tmp_path / "requests.sqlite"
    with RequestLog(path) as log:
        for i, (started, deployment) in enumerate([(10.0, "a"), (20.0, "b"), (30.0, "a")], start=1):
            log.submit(RequestRecord(f"r{i}", started, finished_at=started + 5, deployment=deployment, http_status=200))
        log.add_feedback("r2", 1.0, "good")
        log.add_feedback("unknown", -1.0)
    return path


def test_reader_reads_half_open_periods_by_start_or_finish(log_path):
    reader = RequestLogReader(log_path)
    assert _ids(reader.rows()) == ["r1", "r2", "r3"]
    assert _ids(reader.rows(since=10, until=30)) == ["r1", "r2"], "until is excluded"
    assert _ids(reader.rows(deployment="a")) == ["r1", "r3"]
    assert _ids(reader.rows(since=25, until=36, by="finished_at")) == ["r2", "r3"]
    assert _ids(reader.rows_including({"r3"}, timeout_s=1)) == ["r1", "r2", "r3"]
    with pytest.raises(SpecError, match="started_at or finished_at"):
        reader.rows(by="http_status")


def test_feedback_rows_name_the_deployment_they_rate(log_path):
    feedback = RequestLogReader(log_path).feedback_rows()
    assert [(f["request_id"], f["score"], f["deployment"]) for f in feedback] == [
        ("r2", 1.0, "b"),
        ("unknown", -1.0, None),
    ]
    assert [f["request_id"] for f in RequestLogReader(log_path).feedback_rows(deployment="b")] == ["r2"]


def test_reader_never_writes(tmp_path):
    missing = tmp_path / "missing.sqlite"
    with pytest.raises(SpecError, match=f"no request log at {missing}"):
        RequestLogReader(missing).rows()
    assert not missing.exists(), "a reader creates no file"

    other = tmp_path / "other.sqlite"
    with contextlib.closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE unrelated (x)")
    threads = threading.active_count()
    with RequestLogReader(other) as reader:
        assert reader.rows() == [] and reader.feedback_rows() == []
    assert _tables(other) == {"unrelated"}, "a reader runs no CREATE TABLE"
    assert threading.active_count() == threads, "a reader starts no writer thread"
