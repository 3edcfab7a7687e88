"""Tamper-evident audit log: a SHA-256 hash chain in SQLite and Ed25519-signed checkpoints kept outside it.

Every security-relevant action (alias moves, rollout decisions, runbook runs, admin API calls, guard
blocks, privacy deletions) is appended as one record: the canonical JSON (sorted keys, no spaces,
UTF-8) of `{seq, ts, event, fields}`, its `prev_hash` and `hash = SHA-256(prev_hash ‖ record)` (the
previous hash as 64 hex characters, then the record's bytes; the first record follows 64 zeros). An
append runs in `BEGIN IMMEDIATE`, so processes appending at once are serialised by SQLite and the
chain stays whole.

A chain alone only proves the rows agree with each other: whoever can write the database can
rewrite a record and recompute every hash after it, or cut the tail off. So, as Certificate
Transparency's signed tree heads (RFC 6962) and AWS CloudTrail's digest files do, the log signs its
head: a checkpoint is (size, hash of record `size`, time, key id) signed with an Ed25519 key that
lives outside the database (`<home>/keys/audit_ed25519.pem`, mode 0600, created on first use; the
public key beside it is what a verifier trusts), appended as one JSON line to a file beside the
database. A checkpoint is written after every `CHECKPOINT_EVERY` records and on demand
(`checkpoint()`, `llmops audit checkpoint`, e.g. from cron). The chain head commits to every record
before it, as a Merkle root would; a Merkle tree would add logarithmic inclusion proofs for third
parties, which nobody here asks for, so none is built.

Limits, stated: records after the last checkpoint are covered by the chain only, so truncating or
rewriting that tail cannot be detected until a checkpoint covers it; a thief of the private key
can sign anything (keep the key file, or a copy of the public key and the checkpoints, elsewhere).

Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmops_lib.atomic import write_bytes
from llmops_lib.config import settings
from llmops_lib.errors import AuditError, SpecError

#: A checkpoint is signed automatically when the log reaches a multiple of this many records: at
#: most this many records are ever covered by the chain alone (signing costs ~0.1 ms and one fsync).
CHECKPOINT_EVERY = 100
#: What the first record's `prev_hash` is.
GENESIS = "0" * 64
#: Overrides where the default log and key live (see `audit_home`).
AUDIT_HOME_ENV = "LLMOPS_AUDIT_HOME"
#: Event names: dotted lower-case words (`model.alias`, `admin.weights`).
EVENT_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    record TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    event TEXT GENERATED ALWAYS AS (json_extract(record, '$.event')) VIRTUAL,
    ts TEXT GENERATED ALWAYS AS (json_extract(record, '$.ts')) VIRTUAL
);
"""


def canonical(value: Any) -> str:
    """The one JSON text of `value`: keys sorted, no spaces, UTF-8 kept, NaN refused."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def chain_hash(prev_hash: str, record: str) -> str:
    """SHA-256(prev_hash ‖ record) in hex: the link from one record to the next."""
    return hashlib.sha256((prev_hash + record).encode()).hexdigest()


def audit_home() -> Path:
    """`LLMOPS_AUDIT_HOME` if set, else `LLMOPS_HOME`: where the audit log and its key live. The tests set
    it to a throwaway folder (as they do the registry's URI): the home's log records what operators,
    the book and the runbooks did, not test fixtures."""
    override = os.environ.get(AUDIT_HOME_ENV)
    return Path(override).expanduser().resolve() if override else settings().home


def default_path() -> Path:
    """`<audit home>/audit/audit.sqlite`: the log every library hook writes to."""
    return audit_home() / "audit" / "audit.sqlite"


def default_key_path() -> Path:
    """`<audit home>/keys/audit_ed25519.pem`: the signing key, outside the database."""
    return audit_home() / "keys" / "audit_ed25519.pem"


def public_key_path(key: Path) -> Path:
    """Where the public key of the private key file `key` is kept (beside it)."""
    return key.with_name(key.name.removesuffix(".pem") + ".pub.pem")


@dataclass(frozen=True)
class Entry:
    """One record of the log."""

    seq: int
    ts: str
    event: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Checkpoint:
    """A signed head: the log had `size` records and record `size` hashed to `head`."""

    size: int
    head: str
    time: str
    key_id: str
    signature: str

    def message(self) -> bytes:
        """The bytes signed: the canonical JSON of everything but the signature."""
        return canonical({"head": self.head, "key_id": self.key_id, "size": self.size, "time": self.time}).encode()


@dataclass(frozen=True)
class Verification:
    """What `verify()` found. `first_bad` is the seq of the first record not to be trusted (None if ok);
    `covered` the size of the last checkpoint that verified: records after it rest on the chain alone."""

    ok: bool
    records: int
    first_bad: int | None
    reason: str
    checkpoints: int = 0
    covered: int = 0


class AuditLog:
    """`AuditLog(path)` appends, checkpoints and verifies one log (default `<home>/audit/audit.sqlite`).

    `key` is the Ed25519 signing key file (default `<home>/keys/audit_ed25519.pem`), `checkpoints` the
    JSON-lines file of signed checkpoints (default `<log name>.checkpoints.jsonl` beside the log).
    Safe across threads (one lock) and processes (SQLite's write lock).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        key: str | Path | None = None,
        checkpoints: str | Path | None = None,
        every: int = CHECKPOINT_EVERY,
    ) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.key_path = Path(key) if key is not None else default_key_path()
        self.checkpoints_path = (
            Path(checkpoints) if checkpoints is not None else self.path.with_name(self.path.stem + ".checkpoints.jsonl")
        )
        if every < 1:
            raise SpecError(f"checkpoint every {every} records: give a positive number")
        self.every = every
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._signer: Any = None

    # --- writing -----------------------------------------------------------------------------

    def append(self, event: str, **fields: Any) -> int:
        """Append one record; its seq. Raises SpecError for a bad event name or non-JSON fields."""
        return self.append_many([(event, fields)])

    def append_many(self, entries: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
        """Append several records in one transaction (all or none); the seq of the last.

        Raises:
            SpecError: an event name that is not dotted lower-case words, or fields that are not JSON values.
            AuditError: the database cannot be written (the message says where).
        """
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        items = [(_checked_event(event), dict(fields)) for event, fields in entries]
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                    start, prev = last if last else (0, GENESIS)
                    rows = []
                    for seq, (event, fields) in enumerate(items, start + 1):
                        record = _record(seq, now, event, fields)
                        digest = chain_hash(prev, record)
                        rows.append((seq, record, prev, digest))
                        prev = digest
                    db.executemany("INSERT INTO audit (seq, record, prev_hash, hash) VALUES (?, ?, ?, ?)", rows)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise AuditError(f"cannot append to the audit log {self.path}: {exc}") from None
        size = start + len(rows)
        if size // self.every > start // self.every:
            self._sign(size, prev)
        return size

    def checkpoint(self) -> Checkpoint:
        """Sign the log's head now (size, hash of the last record) and append it to the checkpoints file."""
        with self._lock:
            last = self._connection().execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        size, head = last if last else (0, GENESIS)
        return self._sign(size, head)

    def _sign(self, size: int, head: str) -> Checkpoint:
        signer = self._signing_key()
        time = datetime.now(UTC).isoformat(timespec="microseconds")
        unsigned = Checkpoint(size, head, time, key_id(signer.public_key()), "")
        signed = Checkpoint(size, head, time, unsigned.key_id, signer.sign(unsigned.message()).hex())
        line = (canonical(signed.__dict__) + "\n").encode()
        self.checkpoints_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.checkpoints_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # one whole line per writer, whatever the other processes do
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return signed

    # --- reading -----------------------------------------------------------------------------

    def entries(self, *, event: str | None = None, last: int | None = None) -> list[Entry]:
        """The records (only `event`'s, if given), oldest first; only the `last` n if given."""
        where, args = ("WHERE event = ?", [event]) if event else ("", [])
        limit = f"LIMIT {int(last)}" if last is not None else ""
        query = f"SELECT record FROM (SELECT seq, record FROM audit {where} ORDER BY seq DESC {limit}) ORDER BY seq"
        with self._lock:
            rows = self._connection().execute(query, args).fetchall()
        return [_entry(record) for (record,) in rows]

    def checkpoints(self) -> list[Checkpoint]:
        """The checkpoints in the file, in the order written.

        Raises:
            AuditError: a line that is not a checkpoint (the file was edited).
        """
        if not self.checkpoints_path.exists():
            return []
        found = []
        for number, line in enumerate(self.checkpoints_path.read_text().splitlines(), 1):
            try:
                found.append(Checkpoint(**json.loads(line)))
            except (ValueError, TypeError):
                raise AuditError(
                    f"{self.checkpoints_path} line {number} is not a checkpoint: the file was edited"
                ) from None
        return found

    def verify(self, public_key: str | Path | None = None) -> Verification:
        """Check the chain record by record and every checkpoint against it.

        Detects an edited record (its hash), a deleted, inserted or reordered one (the seq sequence or
        the `prev_hash` link), a chain recomputed after a rewrite (a checkpoint's head differs), a
        truncation up to the last checkpoint (its size exceeds the records) and a checkpoint not signed
        by the trusted key (`public_key`, default the one beside the signing key). A truncation or
        rewrite of records after the last checkpoint cannot be detected: `covered` says where that
        tail starts.

        Raises:
            AuditError: no public key to check the checkpoints with, or an unreadable checkpoints file.
        """
        checkpoints = self.checkpoints()  # before the rows: a checkpoint is written after its rows commit
        findings: list[tuple[int, str]] = []
        trusted = self._trusted_key(Path(public_key) if public_key else None) if checkpoints else None
        signed = []
        for number, checkpoint in enumerate(checkpoints, 1):
            problem = _signature_problem(checkpoint, trusted)
            if problem:
                findings.append((max(checkpoint.size, 1), f"checkpoint {number} (size {checkpoint.size}) {problem}"))
            else:
                signed.append(checkpoint)
        sizes = {c.size for c in signed}
        with self._lock:
            db = self._connection()
            db.execute("BEGIN")
            try:
                records = db.execute("SELECT count(*) FROM audit").fetchone()[0]
                rows = db.execute("SELECT seq, record, prev_hash, hash FROM audit ORDER BY seq").fetchall()
            finally:
                db.execute("COMMIT")
        heads = {0: GENESIS}
        prev, intact = GENESIS, 0
        for seq, record, prev_hash, stored in rows:
            expected = intact + 1
            if seq != expected:
                findings.append((expected, f"record {expected} is missing (the next is {seq}): deleted or reordered"))
                break
            if prev_hash != prev:
                findings.append((seq, f"record {seq} does not follow record {seq - 1}: deleted, inserted or reordered"))
                break
            digest = chain_hash(prev, record)
            if digest != stored:
                findings.append((seq, f"record {seq} was changed: its hash does not match its content"))
                break
            if seq in sizes:
                heads[seq] = digest
            prev, intact = digest, seq
        covered = 0
        for checkpoint in sorted(signed, key=lambda c: c.size):
            if checkpoint.size > records:
                findings.append(
                    (
                        records + 1,
                        f"the log has {records} records but a checkpoint signed {checkpoint.size}: "
                        f"records {records + 1}..{checkpoint.size} were removed (truncated)",
                    )
                )
                break
            if checkpoint.size not in heads:
                break  # beyond the intact chain: the chain's own finding says where
            if heads[checkpoint.size] != checkpoint.head:
                findings.append(
                    (
                        covered + 1,
                        f"records {covered + 1}..{checkpoint.size} differ from the checkpoint signed at size "
                        f"{checkpoint.size}: rewritten and the chain recomputed",
                    )
                )
                break
            covered = checkpoint.size
        if findings:
            first_bad, reason = min(findings)
            return Verification(False, records, first_bad, reason, len(checkpoints), covered)
        tail = (
            f"; records {covered + 1}..{records} rest on the chain alone until the next checkpoint"
            if records > covered
            else ""
        )
        reason = f"{records} records, chain intact, {len(signed)} checkpoint(s) verify{tail}"
        return Verification(True, records, None, reason, len(checkpoints), covered)

    # --- keys and connection -----------------------------------------------------------------

    def _signing_key(self) -> Any:
        if self._signer is None:
            self._signer = load_or_create_key(self.key_path)
        return self._signer

    def _trusted_key(self, public_key: Path | None) -> Any:
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        path = public_key or public_key_path(self.key_path)
        if not path.exists():
            raise AuditError(
                f"no public key at {path} to check the checkpoints with: give the log's public key (--public-key)"
            )
        return load_pem_public_key(path.read_bytes())

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.executescript(_SCHEMA)
            except (OSError, sqlite3.Error) as exc:
                raise AuditError(f"cannot open the audit log {self.path}: {exc}") from None
            self._db = db
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def key_id(public_key: Any) -> str:
    """The first 16 hex digits of the SHA-256 of the raw public key: which key signed a checkpoint."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def load_or_create_key(path: Path) -> Any:
    """The Ed25519 private key at `path`, created (0600, its public key beside it) if there is none.

    Two processes creating it at once agree on one: each writes its own file and hard-links it into
    place, and the loser reads the winner's.

    Raises:
        AuditError: the key file is readable by others (chmod 600 it), or not an Ed25519 key.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
        load_pem_private_key,
    )

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(partial, path)
        except FileExistsError:
            pass
        finally:
            partial.unlink()
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise AuditError(f"the audit signing key {path} is readable by others (mode {mode:o}): chmod 600 {path}")
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditError(f"{path} is not an Ed25519 private key: move it away and a new key is created")
    public = public_key_path(path)
    if not public.exists():
        write_bytes(public, key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return key


def _signature_problem(checkpoint: Checkpoint, trusted: Any) -> str | None:
    from cryptography.exceptions import InvalidSignature

    if checkpoint.key_id != key_id(trusted):
        return f"was signed by key {checkpoint.key_id}, not the trusted key {key_id(trusted)}"
    try:
        trusted.verify(bytes.fromhex(checkpoint.signature), checkpoint.message())
    except (InvalidSignature, ValueError):
        return "has a signature that does not verify: the checkpoint was edited"
    return None


def _checked_event(event: str) -> str:
    if not EVENT_NAME.fullmatch(event):
        raise SpecError(f"bad audit event name {event!r}: use dotted lower-case words such as 'model.alias'")
    return event


def _record(seq: int, ts: str, event: str, fields: dict[str, Any]) -> str:
    try:
        return canonical({"event": event, "fields": fields, "seq": seq, "ts": ts})
    except (TypeError, ValueError) as exc:
        raise SpecError(
            f"audit event {event!r}: fields must be JSON values (text, numbers, booleans, null, lists, objects): {exc}"
        ) from None


def _entry(record: str) -> Entry:
    data = json.loads(record)
    return Entry(data["seq"], data["ts"], data["event"], data["fields"])


_logs: dict[Path, AuditLog] = {}
_logs_lock = threading.Lock()


def default_log() -> AuditLog:
    """The process's log at `default_path()` (one per home: tests change LLMOPS_HOME)."""
    path = default_path()
    with _logs_lock:
        if path not in _logs:
            _logs[path] = AuditLog(path)
        return _logs[path]


def record(event: str, **fields: Any) -> int:
    """Append `event` to the default log; its seq. A failure raises: an action that cannot be audited
    is an error, not a detail.

    Raises:
        SpecError: a bad event name or fields that are not JSON values.
        AuditError: the log cannot be written.
    """
    return default_log().append(event, **fields)
