"""Data privacy: the PII scanner on literal cases and on the synthetic labelled set, redaction in the
request log's writer, forgetting a user and retention (bytes gone, audited), and a gateway with text
capture on that keeps no raw PII in any of its files."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from llmops_lib import audit
from llmops_lib.cli import app
from llmops_lib.errors import SpecError
from llmops_lib.gateway import Deployment, GatewayConfig, GatewayServer, Route
from llmops_lib.guards.base import find_scanner
from llmops_lib.guards.pii import STRUCTURED, Pii
from llmops_lib.guards.pii_data import generate, recall
from llmops_lib.guards.pipeline import load_guards
from llmops_lib.observe import privacy
from llmops_lib.observe.request_log import RequestLog, RequestLogReader, RequestRecord

# Literal cases, each value checked by hand: the cards pass Luhn (the 2-series Mastercard and the
# 19-digit Visa are issuers Presidio's own pattern misses), the IBAN is the ISO 13616 example.
LITERAL_PII = {
    "EMAIL_ADDRESS": "jane.doe@example.org",
    "CREDIT_CARD": "2223 0000 4840 0011",
    "IBAN_CODE": "GB82 WEST 1234 5698 7654 32",
    "IP_ADDRESS": "192.168.10.77",
    "US_SSN": "536-22-8726",
    "PHONE_NUMBER": "(415) 555-0132",
}
SENTENCES = {
    "EMAIL_ADDRESS": "Please write to {} about the refund.",
    "CREDIT_CARD": "Block my card {} right now.",
    "IBAN_CODE": "Send the money to {} today.",
    "IP_ADDRESS": "The login came from {} last night.",
    "US_SSN": "My social security number is {}.",
    "PHONE_NUMBER": "Call me back on {} after six.",
}


@pytest.fixture(scope="module")
def patterns() -> Pii:
    """The scanner without NER: patterns and checksums only (a blank spaCy pipeline tokenizes)."""
    return Pii(ner=False)


@pytest.mark.parametrize("entity", sorted(LITERAL_PII))
def test_each_structured_entity_is_found_and_redacted(patterns, entity):
    value = LITERAL_PII[entity]
    text = SENTENCES[entity].format(value)
    verdict = patterns.scan(text)
    assert not verdict.allowed
    assert [f.kind for f in verdict.findings] == [entity]
    finding = verdict.findings[0]
    assert text[finding.start : finding.end] == value
    assert verdict.redacted == SENTENCES[entity].format(f"<{entity}>")
    assert value not in finding.detail


@pytest.mark.parametrize(
    "text",
    [
        "The meeting is at 10:30 and the tickets cost 25 dollars each.",
        "Card 4111 1111 1111 1112 fails the Luhn check.",  # one digit off a valid Visa test number
        "Version 3.12.4 was released in 2024 with 1500 changes.",
    ],
)
def test_text_without_pii_is_allowed(patterns, text):
    verdict = patterns.scan(text)
    assert verdict.allowed and verdict.findings == () and verdict.redacted is None


def test_recall_on_the_synthetic_set_per_structured_type(patterns, guard_data):
    samples = generate(STRUCTURED, per_type=25, seed=11)
    assert samples == generate(STRUCTURED, per_type=25, seed=11)  # seeded: the same set again
    for sample in samples:  # the oracle: every labelled span is where its value is
        assert all(sample.text[s.start : s.end] == s.value for s in sample.spans)
    result = recall(patterns, samples)
    for entity in STRUCTURED:
        assert result[entity].total >= 25
        assert result[entity].found / result[entity].total >= 0.95, (entity, result[entity].missed)


def test_ner_finds_a_person_and_a_place():
    verdict = Pii().scan("My name is Margaret Thompson and I moved to Chicago last year.")
    assert {f.kind for f in verdict.findings} == {"PERSON", "LOCATION"}
    assert verdict.redacted == "My name is <PERSON> and I moved to <LOCATION> last year."


def test_registered_and_params_checked_when_the_config_loads():
    assert find_scanner("pii") is Pii
    guards = load_guards({"input": [{"scanner": "pii", "action": "redact", "params": {"ner": False}}]})
    assert guards.input[0].params == {"ner": False}
    with pytest.raises(SpecError, match="entities"):
        load_guards({"input": [{"scanner": "pii", "params": {"entities": ["PASSPORT"]}}]})
    with pytest.raises(SpecError, match="ner: true"):
        Pii(entities=["PERSON"], ner=False)


def test_presidio_is_not_imported_with_the_gateway():
    code = (
        "import sys, llmops_lib.gateway.app, llmops_lib.guards.pii\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'presidio_analyzer', 'spacy', 'faker'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _files_bytes(path: Path) -> bytes:
    """The database, its write-ahead log and shared-memory file, as bytes (free pages included)."""
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


def test_writer_redacts_prompt_completion_and_feedback(tmp_path, patterns):
    path = tmp_path / "requests.sqlite"
    email, card = LITERAL_PII["EMAIL_ADDRESS"], LITERAL_PII["CREDIT_CARD"]
    with RequestLog(path, capture_text=True, redact=patterns.redact) as log:
        log.submit(RequestRecord("r1", time.time(), prompt=f"mail {email}", completion=f"card {card}"))
        log.submit(RequestRecord("r2", time.time(), prompt="nothing personal", completion="fine"))
        log.add_feedback("r1", 1.0, f"reach me at {email}")
    rows = {row["request_id"]: row for row in RequestLogReader(path).rows()}
    assert rows["r1"]["prompt"] == "mail <EMAIL_ADDRESS>" and rows["r1"]["completion"] == "card <CREDIT_CARD>"
    assert rows["r1"]["pii_types"] == "CREDIT_CARD,EMAIL_ADDRESS"
    assert rows["r2"]["pii_types"] == "" and rows["r2"]["prompt"] == "nothing personal"
    assert RequestLogReader(path).feedback_rows()[0]["comment"] == "reach me at <EMAIL_ADDRESS>"
    raw = _files_bytes(path)
    assert email.encode() not in raw and card.encode() not in raw


def test_a_failing_redactor_drops_the_text(tmp_path):
    def broken(text: str) -> tuple[str, list[str]]:
        raise RuntimeError("bug")

    path = tmp_path / "requests.sqlite"
    with RequestLog(path, capture_text=True, redact=broken) as log:
        log.submit(RequestRecord("r1", time.time(), prompt="secret 536-22-8726", completion="x"))
    row = RequestLogReader(path).rows()[0]
    assert row["prompt"] is None and row["completion"] is None
    assert b"536-22-8726" not in _files_bytes(path)


def _log_with(path: Path, rows: list[tuple[str, str, float]]) -> None:
    """Requests (id, user, started_at) whose text names the request, each with one feedback row."""
    with RequestLog(path, capture_text=True) as log:
        for request_id, user, started in rows:
            log.submit(RequestRecord(request_id, started, user=user, prompt=f"private-{request_id}", completion="x"))
            log.add_feedback(request_id, 1.0, f"comment-{request_id}")


def _events(event: str) -> list[audit.Entry]:
    return audit.default_log().entries(event=event)


def test_forget_removes_a_users_rows_feedback_and_bytes(tmp_path):
    path = tmp_path / "requests.sqlite"
    now = time.time()
    _log_with(path, [("a1", "alice", now), ("b1", "bob", now), ("a2", "alice", now)])
    before = len(_events("privacy.forget"))
    result = CliRunner().invoke(app, ["privacy", "forget", "--user", "alice", "--log", str(path)])
    assert result.exit_code == 0, result.output
    assert "deleted 2 request(s)" in result.output
    reader = RequestLogReader(path)
    assert [row["request_id"] for row in reader.rows()] == ["b1"]
    assert [row["request_id"] for row in reader.feedback_rows()] == ["b1"]
    raw = _files_bytes(path)
    for gone in (b"private-a1", b"private-a2", b"comment-a1", b"comment-a2"):
        assert gone not in raw
    assert b"private-b1" in raw  # the scan would see text that is there
    events = _events("privacy.forget")
    assert len(events) == before + 1 and events[-1].fields["user"] == "alice" and events[-1].fields["rows"] == 2


def test_forget_refuses_bad_input(tmp_path):
    missing = CliRunner().invoke(app, ["privacy", "forget", "--user", "x", "--log", str(tmp_path / "none.sqlite")])
    assert missing.exit_code == 2 and "no request log" in missing.output
    _log_with(tmp_path / "log.sqlite", [])
    with pytest.raises(SpecError, match="user id"):
        privacy.forget(tmp_path / "log.sqlite", " ")


def test_retention_by_command_and_by_the_writer(tmp_path):
    now = time.time()
    day = 86_400
    by_command, by_writer = tmp_path / "command.sqlite", tmp_path / "writer.sqlite"
    for path in (by_command, by_writer):
        _log_with(path, [("old", "u", now - 10 * day), ("new", "u", now - 1 * day)])
    before = len(_events("privacy.retention"))
    result = CliRunner().invoke(app, ["privacy", "retain", "--days", "5", "--log", str(by_command)])
    assert result.exit_code == 0 and "deleted 1 request(s)" in result.output, result.output
    with RequestLog(by_writer, retention_days=5) as log:
        log.flush()  # the writer applies the retention when it starts, before anything queued
    for path in (by_command, by_writer):
        reader = RequestLogReader(path)
        assert [row["request_id"] for row in reader.rows()] == ["new"]
        assert [row["request_id"] for row in reader.feedback_rows()] == ["new"]
        assert b"private-old" not in _files_bytes(path) and b"comment-old" not in _files_bytes(path)
    events = _events("privacy.retention")[before:]
    assert [(e.fields["days"], e.fields["rows"]) for e in events] == [(5, 1), (5, 1)]
    bad = CliRunner().invoke(app, ["privacy", "retain", "--days", "0", "--log", str(by_command)])
    assert bad.exit_code == 2 and "positive number of days" in bad.output


def test_gateway_with_capture_keeps_no_raw_pii(server, tmp_path):
    """A synthetic PII workload through a real gateway and engine with text capture on: afterwards no
    generated value of a structured type is anywhere in the log's files or the gateway's own log."""
    samples = generate(STRUCTURED, per_type=1, seed=5)
    log = tmp_path / "requests.sqlite"
    config = GatewayConfig(
        routes=[Route(model="gemma", deployments=[Deployment(name="a", url=server.base_url)])],
        request_log=str(log),
        capture_text=True,
        cache_size=0,
    )
    ids = []
    with GatewayServer(config) as gw:
        for sample in samples:
            body = {"model": "gemma", "prompt": sample.text, "max_tokens": 4, "temperature": 0}
            response = httpx.post(gw.base_url + "/v1/completions", json=body, timeout=120)
            assert response.status_code == 200, response.text
            ids.append(response.headers["x-request-id"])
        rows = {row["request_id"]: row for row in RequestLogReader(log).rows_including(ids, timeout_s=300)}
        gateway_log = gw.log_path
    values = {span.value for sample in samples for span in sample.spans if span.entity in STRUCTURED}
    assert len(values) >= len(STRUCTURED)
    raw = _files_bytes(log) + gateway_log.read_bytes()
    assert [value for value in values if value.encode() in raw] == []
    for request_id, sample in zip(ids, samples, strict=True):
        expected = {span.entity for span in sample.spans if span.entity in STRUCTURED}
        assert expected <= set(rows[request_id]["pii_types"].split(","))
        assert all(f"<{entity}>" in rows[request_id]["prompt"] for entity in expected)
