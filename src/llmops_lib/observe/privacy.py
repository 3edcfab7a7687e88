"""Deleting personal data from the request log: one user's rows on request, every row past its retention.

A plain SQL DELETE leaves the deleted text in the file's free pages and in the write-ahead log
until they are reused, readable by anyone with the file. Here every delete runs with SQLite's
`secure_delete` on (deleted content is overwritten with zeros), then checkpoints and truncates
the WAL, so the bytes are gone from the files, not only from query results. Each run leaves an
event in the audit log (`privacy.forget`, `privacy.retention`).

Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from llmops_lib import audit
from llmops_lib.errors import LLMOpsError, SpecError

_DAY_S = 86_400.0


def secure(db: sqlite3.Connection) -> sqlite3.Connection:
    """Turn on `secure_delete` for `db`: what it deletes from now on is overwritten, not only unlinked."""
    db.execute("PRAGMA secure_delete=ON")
    return db


def _truncate_wal(db: sqlite3.Connection) -> bool:
    """Copy the WAL into the database and empty it (older page versions, with the deleted text, lived
    there); False when a reader kept it busy."""
    busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return not busy


def delete_user(db: sqlite3.Connection, user: str) -> int:
    """Delete the requests of `user` and the feedback on them, in one transaction; the number of requests."""
    with db:
        db.execute("DELETE FROM feedback WHERE request_id IN (SELECT request_id FROM requests WHERE user = ?)", [user])
        return db.execute("DELETE FROM requests WHERE user = ?", [user]).rowcount


def delete_before(db: sqlite3.Connection, cutoff: float) -> int:
    """Delete the requests started before `cutoff` (unix s), their feedback and any feedback older than
    it, in one transaction; the number of requests."""
    with db:
        db.execute(
            "DELETE FROM feedback WHERE created_at < ? OR request_id IN "
            "(SELECT request_id FROM requests WHERE started_at < ?)",
            [cutoff, cutoff],
        )
        return db.execute("DELETE FROM requests WHERE started_at < ?", [cutoff]).rowcount


def _open(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise SpecError(f"no request log at {path}: give the log the gateway writes (--log)")
    db = sqlite3.connect(path, timeout=30)
    db.execute("PRAGMA busy_timeout=30000")
    return secure(db)


def forget(path: Path, user: str) -> int:
    """Remove every request of `user` (the API key id, or the `user` field a client sent) and its
    feedback from the log at `path`, bytes included; audited. The number of requests removed.

    Raises:
        SpecError: no log at `path`, or an empty user.
        LLMOpsError: the WAL could not be emptied (a reader was open).
    """
    if not user.strip():
        raise SpecError("forget needs a user id (--user): the API key id or the `user` field sent with requests")
    db = _open(path)
    try:
        rows = delete_user(db, user)
        emptied = _truncate_wal(db)
    finally:
        db.close()
    audit.record("privacy.forget", user=user, rows=rows, log=str(path))
    _check_emptied(emptied, path)
    return rows


def retain(path: Path, days: float, now: float | None = None) -> int:
    """Delete every request older than `days` (and its feedback) from the log at `path`, bytes included;
    audited. The number of requests removed.

    Raises:
        SpecError: no log at `path`, or `days` not positive.
        LLMOpsError: the WAL could not be emptied (a reader was open).
    """
    if not days > 0:
        raise SpecError(f"retention must be a positive number of days, got {days}")
    db = _open(path)
    try:
        rows, emptied = expire(db, path, days, now)
    finally:
        db.close()
    _check_emptied(emptied, path)
    return rows


def expire(db: sqlite3.Connection, path: Path, days: float, now: float | None = None) -> tuple[int, bool]:
    """On an open log (`secure` on): delete what is older than `days`, empty the WAL, audit the run.
    The number of requests deleted and whether the WAL could be emptied (the request log's writer
    calls this hourly and tries again next time)."""
    rows = delete_before(db, (time.time() if now is None else now) - days * _DAY_S)
    emptied = _truncate_wal(db)
    audit.record("privacy.retention", days=days, rows=rows, log=str(path))
    return rows, emptied


def _check_emptied(emptied: bool, path: Path) -> None:
    if not emptied:
        raise LLMOpsError(
            f"rows deleted, but a reader of {path} kept the write-ahead log busy, so earlier copies of them "
            "may remain in it; run the command again when no reader has the log open"
        )
