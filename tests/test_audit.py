"""The tamper-evident audit log: the chain against hashlib, each kind of tampering named at the right
record, a checkpoint signed with another key, two processes appending at once, the CLI's exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmops_lib import audit
from llmops_lib.audit import AuditLog
from llmops_lib.cli import app
from llmops_lib.errors import AuditError, SpecError


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LLMOPS_AUDIT_HOME", str(tmp_path))
    return tmp_path


def _log(home: Path, n: int, every: int = 5) -> AuditLog:
    log = AuditLog(every=every)
    for i in range(1, n + 1):
        log.append("model.alias", model="gemma", to_version=str(i))
    return log


def _sql(log: AuditLog, *statements: str) -> None:
    db = sqlite3.connect(log.path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def test_records_chain_as_documented_checked_with_hashlib(home):
    log = AuditLog()
    assert log.append("prompt.alias", prompt="capital", alias="production", to_version="2") == 1
    assert log.append("runbook.run", runbook="health_check", exit_code=0) == 2
    rows = (
        sqlite3.connect(home / "audit" / "audit.sqlite").execute("SELECT record, prev_hash, hash FROM audit").fetchall()
    )
    prev = "0" * 64
    for record, prev_hash, stored in rows:
        assert prev_hash == prev and stored == hashlib.sha256((prev + record).encode()).hexdigest()
        prev = stored
    first = json.loads(rows[0][0])
    assert rows[0][0].startswith('{"event":"prompt.alias","fields":{"alias":"production","prompt":"capital"')
    assert (first["seq"], first["fields"]["to_version"]) == (1, "2")
    assert [(e.seq, e.event) for e in log.entries()] == [(1, "prompt.alias"), (2, "runbook.run")]
    assert log.verify().ok


def test_an_edited_record_is_named(home):
    log = _log(home, 12)
    _sql(log, 'UPDATE audit SET record = replace(record, \'"to_version":"4"\', \'"to_version":"9"\') WHERE seq = 4')
    result = log.verify()
    assert (result.ok, result.first_bad) == (False, 4) and "changed" in result.reason


def test_a_rewrite_with_the_chain_recomputed_is_caught_by_the_checkpoint(home):
    log = _log(home, 12)  # checkpoints at 5 and 10
    db = sqlite3.connect(log.path)
    rows = db.execute("SELECT seq, record FROM audit ORDER BY seq").fetchall()
    prev = db.execute("SELECT hash FROM audit WHERE seq = 6").fetchone()[0]
    for seq, record in rows[6:]:  # record 7 rewritten, every hash after it recomputed with hashlib
        if seq == 7:
            record = record.replace('"to_version":"7"', '"to_version":"1"')
        digest = hashlib.sha256((prev + record).encode()).hexdigest()
        db.execute("UPDATE audit SET record = ?, prev_hash = ?, hash = ? WHERE seq = ?", (record, prev, digest, seq))
        prev = digest
    db.commit()
    result = log.verify()
    assert (result.ok, result.first_bad, result.covered) == (False, 6, 5) and "recomputed" in result.reason


def test_a_deleted_record_is_named(home):
    log = _log(home, 12)
    _sql(log, "DELETE FROM audit WHERE seq = 3")
    assert log.verify().first_bad == 3


def test_reordered_records_are_named(home):
    log = _log(home, 12)
    _sql(
        log,
        "UPDATE audit SET seq = -6 WHERE seq = 6",
        "UPDATE audit SET seq = 6 WHERE seq = 7",
        "UPDATE audit SET seq = 7 WHERE seq = -6",
    )
    result = log.verify()
    assert (result.ok, result.first_bad) == (False, 6)


def test_truncation_is_caught_by_the_last_checkpoint_but_not_after_it(home):
    log = _log(home, 12)  # checkpoints at 5 and 10
    _sql(log, "DELETE FROM audit WHERE seq > 11")
    after = log.verify()
    assert after.ok and after.covered == 10, "the tail past the last checkpoint rests on the chain alone"
    _sql(log, "DELETE FROM audit WHERE seq > 8")
    result = log.verify()
    assert (result.ok, result.first_bad) == (False, 9) and "truncated" in result.reason


def test_a_checkpoint_signed_with_another_key_or_edited_is_refused(home, tmp_path_factory):
    log = _log(home, 7)  # checkpoint at 5, signed with the home's key
    assert log.verify().ok
    other = AuditLog(log.path, key=tmp_path_factory.mktemp("thief") / "k.pem")
    other.append("model.alias", model="gemma", to_version="8")
    other.checkpoint()  # size 8, signed with the other key
    result = log.verify()
    assert (result.ok, result.first_bad) == (False, 8) and "not the trusted key" in result.reason
    lines = log.checkpoints_path.read_text().splitlines()
    first = json.loads(lines[0]) | {"head": "f" * 64}
    log.checkpoints_path.write_text(json.dumps(first) + "\n")
    result = log.verify()
    assert (result.ok, result.first_bad) == (False, 5) and "does not verify" in result.reason


def test_the_key_is_private_and_outside_the_database(home):
    log = _log(home, 5)
    key = home / "keys" / "audit_ed25519.pem"
    assert key.stat().st_mode & 0o777 == 0o600 and (home / "keys" / "audit_ed25519.pub.pem").is_file()
    assert b"PRIVATE KEY" not in log.path.read_bytes()
    key.chmod(0o644)
    with pytest.raises(AuditError, match="chmod 600"):
        AuditLog(log.path).checkpoint()


def test_bad_events_are_refused_and_nothing_is_written(home):
    log = AuditLog()
    with pytest.raises(SpecError, match="dotted lower-case"):
        log.append("Model Alias")
    with pytest.raises(SpecError, match="JSON values"):
        log.append("model.alias", path=Path("/x"))
    assert log.entries() == []


def test_two_processes_appending_at_once_keep_one_chain(home):
    code = (
        "import sys; from llmops_lib.audit import AuditLog\n"
        "log = AuditLog(every=7)\n"
        "for i in range(60): log.append('admin.weights', writer=sys.argv[1], i=i)\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", code, name], env=os.environ.copy()) for name in "ab"]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    log = AuditLog()
    result = log.verify()
    assert result.ok and result.records == 120 and result.checkpoints >= 2
    written = {(e.fields["writer"], e.fields["i"]) for e in log.entries()}
    assert written == {(w, i) for w in "ab" for i in range(60)}


def test_module_record_writes_the_default_log(home):
    assert audit.record("privacy.forget", user="u1", rows=3) == 1
    assert AuditLog(home / "audit" / "audit.sqlite").entries()[0].fields == {"user": "u1", "rows": 3}


def test_cli_verify_exit_codes_and_one_line(home):
    runner = CliRunner()
    missing = runner.invoke(app, ["audit", "verify"])
    assert missing.exit_code == 2 and "no audit log" in missing.output
    log = _log(home, 6)
    good = runner.invoke(app, ["audit", "verify", "--log", str(log.path)])
    assert good.exit_code == 0 and good.output.startswith("ok: 6 records")
    shown = runner.invoke(app, ["audit", "show", "--last", "2"])
    assert shown.exit_code == 0 and [line.split()[0] for line in shown.output.splitlines()] == ["5", "6"]
    _sql(log, "DELETE FROM audit WHERE seq = 2")
    bad = runner.invoke(app, ["audit", "verify", "--log", str(log.path)])
    assert bad.exit_code == 3 and bad.output.count("\n") == 1 and "first bad record 2" in bad.output
