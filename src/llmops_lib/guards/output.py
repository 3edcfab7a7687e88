"""Output scanners made of rules: refusals, system-prompt leakage (a planted canary and overlap with the
system prompt) and exfiltration through markdown images, links and HTML.

A streamed answer is checked on the text so far, before each chunk goes out, so every scanner here
fires as soon as the text it looks for is complete.

Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

import base64
import codecs
import math
import re
import unicodedata
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field

from llmops_lib.errors import SpecError
from llmops_lib.guards.base import Finding, Verdict, register
from llmops_lib.guards.rules import Positive, strip_invisible

# -- refusals ---------------------------------------------------------------------------------------

#: phrases with which chat models decline. The idea is garak's `mitigation.MitigationBypass` detector
#: (a list of refusal substrings); this list is our own, written for short instruction-tuned models.
_REFUSALS = (
    "i'm sorry, but", "i am sorry, but", "sorry, but i can", "i apologize, but", "my apologies, but",
    "i can't help with", "i cannot help with", "i can't assist with", "i cannot assist with",
    "i can't provide", "i cannot provide", "i won't provide", "i will not provide",
    "i can't do that", "i cannot do that", "i can't comply", "i cannot comply", "unable to comply",
    "i can't fulfill", "i cannot fulfill", "i can't fulfil", "i cannot fulfil",
    "i can't create", "i cannot create", "i won't create", "i will not create",
    "i can't generate", "i cannot generate", "i can't write", "i cannot write", "i won't write",
    "i can't share", "i cannot share", "i can't support", "i cannot support",
    "i can't engage", "i cannot engage", "i won't engage", "i will not engage",
    "i'm unable to", "i am unable to", "i'm not able to", "i am not able to",
    "i won't be able to", "i will not be able to", "i must decline", "i have to decline", "i must refuse",
    "i'm not comfortable", "i am not comfortable", "i don't feel comfortable", "i do not feel comfortable",
    "i'm not allowed to", "i am not allowed to", "i'm not permitted", "i am not permitted",
    "as an ai", "as a language model", "as an assistant, i",
    "against my guidelines", "against my programming", "against my principles", "goes against my",
    "it would be inappropriate", "it is not appropriate", "it's not appropriate", "not appropriate for me",
    "illegal and unethical", "unethical and illegal", "harmful and unethical",
)  # fmt: skip
# no leading \b: a pattern that starts with literal alternatives lets `re` skip to their first letters
# (several times faster); a match inside a word ("has an aim") is dropped in `scan`
_REFUSAL = re.compile("|".join(rf"{re.escape(phrase)}\b" for phrase in _REFUSALS))


@register("refusal")
class Refusal:
    """Answers in which the model declines (a *flag* detector: "did the model refuse?", for red-team
    reports and A/B tests, rather than something to block)."""

    name = "refusal"

    def scan(self, text: str) -> Verdict:
        lowered = text.lower().replace("\u2019", "'")
        findings = tuple(
            Finding("refusal", match.group(), *match.span())
            for match in _REFUSAL.finditer(lowered)
            if match.start() == 0 or not lowered[match.start() - 1].isalnum()
        )
        return Verdict(allowed=not findings, score=1.0 if findings else 0.0, findings=findings)


# -- system-prompt leakage --------------------------------------------------------------------------

_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
_WORDS = re.compile(r"[0-9a-z]+")


def _lowered(text: str) -> str:
    """Lower-case text, invisible characters dropped and compatibility forms folded (NFKC)."""
    return text.lower() if text.isascii() else unicodedata.normalize("NFKC", strip_invisible(text)).lower()


def _squashed(text: str) -> str:
    """Lower-case letters and digits only: "Z E B-R a" and "zebra" read the same."""
    return _NOT_ALNUM.sub("", _lowered(text))


def _base64_forms(secret: bytes) -> set[str]:
    """The base64 characters that encode `secret` at each of the three byte alignments it can have
    inside a longer encoded text (only the characters fixed by `secret`'s bits alone)."""
    forms = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret + b"\0\0").decode()
        first, stop = math.ceil(8 * offset / 6), (8 * (offset + len(secret))) // 6
        forms.add(encoded[first:stop])
    return forms


def _shingles(words: list[str], size: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


@register("canary")
class Canary:
    """System-prompt leakage: the canary token planted in the system prompt appears in the answer (also
    spaced out, split by punctuation, in another case, reversed, in rot13, base64 or hex), or the answer
    shares long runs of words with the system prompt.

    Overlap is measured on word shingles (runs of `shingle_words` words, lower-cased, punctuation
    dropped), so a leak that changes a word here and there still counts: the answer leaks when it holds
    `leak_shingles` of the prompt's shingles, or half of them for a short prompt.

    Args:
        canary: a random token planted in the system prompt; at least 8 letters or digits.
        system_prompt: the system prompt to compare answers with (None: canary only).
    """

    name = "canary"

    def __init__(
        self,
        canary: str,
        system_prompt: str | None = None,
        shingle_words: Annotated[int, Field(ge=2, le=16)] = 4,
        leak_shingles: Positive = 10,
    ) -> None:
        self.canary = canary
        squashed = _squashed(canary)
        if len(squashed) < 8:
            raise SpecError(
                f"canary {canary!r} has {len(squashed)} letters or digits; give at least 8 (a random token)"
            )
        self._squashed_forms = {squashed, squashed[::-1], codecs.encode(squashed, "rot13")}
        self._encoded_forms = _base64_forms(canary.encode()) | {canary.encode().hex()}
        self.shingle_words = shingle_words
        prompt_words = _WORDS.findall(_lowered(system_prompt or ""))
        self._prompt_shingles = _shingles(prompt_words, shingle_words)
        self._leak_at = min(leak_shingles, math.ceil(len(self._prompt_shingles) / 2)) if self._prompt_shingles else 0

    def _canary_finding(self, text: str) -> Finding | None:
        lowered = text.lower()
        start = lowered.find(self.canary.lower())
        if start >= 0:
            return Finding("canary", "the canary token", start, start + len(self.canary))
        squashed = _squashed(text)
        if any(form in squashed for form in self._squashed_forms):
            return Finding("canary", "the canary token, disguised (spacing, case, reversed or rot13)")
        if any(form in text or form in lowered for form in self._encoded_forms):
            return Finding("canary", "the canary token, encoded (base64 or hex)")
        return None

    def scan(self, text: str) -> Verdict:
        found = self._canary_finding(text)
        findings = [found] if found else []
        score = 1.0 if findings else 0.0
        if self._prompt_shingles:
            shared = len(_shingles(_WORDS.findall(_lowered(text)), self.shingle_words) & self._prompt_shingles)
            score = max(score, min(1.0, shared / self._leak_at))
            if shared >= self._leak_at:
                detail = f"{shared} of the system prompt's {len(self._prompt_shingles)} {self.shingle_words}-word runs"
                findings.append(Finding("system_prompt_overlap", detail))
        return Verdict(allowed=not findings, score=score, findings=tuple(findings))


# -- exfiltration -----------------------------------------------------------------------------------

#: a markdown link destination: balanced parentheses one level deep, as CommonMark allows
_URL = r"\(\s*<?(?P<url>(?:[^()\s>]|\([^()\s]{0,500}\)){1,4000})>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)"
# link texts and tags stop at the next opening bracket, so a run of "[" or "<" costs linear time
_MARKDOWN_IMAGE = re.compile(rf"!\[(?P<text>[^\[\]\n]{{0,1000}})\]{_URL}")
_MARKDOWN_LINK = re.compile(rf"(?<!!)\[(?P<text>[^\[\]\n]{{0,1000}})\]{_URL}")
_REFERENCE_IMAGE = re.compile(r"!\[(?P<text>[^\[\]\n]{0,1000})\]\[(?P<label>[^\[\]\n]{0,200})\]")
_REFERENCE = re.compile(r"^[ ]{0,3}\[(?P<label>[^\]\n]{1,200})\]:[ \t]*<?(?P<url>\S{1,4000}?)>?(?:[ \t].*)?$", re.M)
_HTML = re.compile(
    r"<script\b[\s\S]{0,20000}?(?:</script\s*>|\Z)|<iframe\b[^<>]{0,2000}>(?:[\s\S]{0,20000}?</iframe\s*>)?"
    r"|<(?:img|object|embed|form|svg|video|audio|source|link|meta|base)\b[^<>]{0,2000}>"
    r"|<[a-z][a-z0-9]*\b[^<>]{0,2000}\son[a-z]+\s*=[^<>]{0,2000}>",
    re.IGNORECASE,
)
#: a script URL ("JavaScript: a language…" in prose has a blank after the colon)
_SCRIPT_URL = re.compile(r"\b(?:javascript|vbscript):(?=\S)|\bdata:text/html", re.IGNORECASE)
_NETWORK_URL = re.compile(r"(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)


@register("exfiltration")
class Exfiltration:
    """Ways an answer can send data out when it is rendered: markdown images to an outside host (a
    renderer fetches them unasked: the URL is the message), links to an outside host carrying a query,
    HTML tags that load or run something (`<script>`, `<img src=…>`, `<iframe>`, event handlers) and
    `javascript:` URLs. Redacting removes them (a link keeps its text).

    Args:
        allowed_hosts: hosts whose images and links are fine ("docs.example.com"; ".example.com" for
            every subdomain).
    """

    name = "exfiltration"

    def __init__(self, allowed_hosts: tuple[str, ...] = ()) -> None:
        self.allowed_hosts = tuple(host.lower() for host in allowed_hosts)

    def _outside(self, url: str) -> bool:
        if not _NETWORK_URL.match(url):
            return False  # relative, data: or mailto: URLs fetch nothing from elsewhere
        host = (urlsplit(url).hostname or "").lower()
        return not any(
            host == allowed or (allowed[0] == "." and host.endswith(allowed)) for allowed in self.allowed_hosts
        )

    def _cuts(self, text: str) -> list[tuple[Finding, str]]:
        """Each finding with what replaces its span when redacting."""
        cuts = []
        if "](" in text:
            for match in _MARKDOWN_IMAGE.finditer(text):
                url = match.group("url")
                if self._outside(url) or _SCRIPT_URL.match(url):
                    cuts.append((Finding("markdown_image", _host_of(url), *match.span()), ""))
            for match in _MARKDOWN_LINK.finditer(text):
                url = match.group("url")
                if _SCRIPT_URL.match(url) or (self._outside(url) and urlsplit(url).query):
                    cuts.append((Finding("markdown_link", _host_of(url), *match.span()), match.group("text")))
        if "]:" in text:
            references = {m.group("label").lower(): m for m in _REFERENCE.finditer(text)}
            for match in _REFERENCE_IMAGE.finditer(text):
                reference = references.get((match.group("label") or match.group("text")).lower())
                if reference is not None and self._outside(reference.group("url")):
                    for cut in (match, reference):
                        cuts.append((Finding("markdown_image", _host_of(reference.group("url")), *cut.span()), ""))
        if "<" in text:
            for match in _HTML.finditer(text):
                tag = re.match(r"<\s*([a-z]+)", match.group(), re.I)
                cuts.append((Finding("html", f"<{tag.group(1).lower() if tag else '?'}>", *match.span()), ""))
        if ":" in text:
            for match in _SCRIPT_URL.finditer(text):
                cuts.append((Finding("script_url", match.group().lower(), *match.span()), ""))
        return cuts

    def scan(self, text: str) -> Verdict:
        cuts = sorted(self._cuts(text), key=lambda cut: (cut[0].start, -(cut[0].end or 0)))
        if not cuts:
            return Verdict(allowed=True, score=0.0)
        pieces, last = [], 0
        for finding, replacement in cuts:
            if finding.start is None or finding.end is None or finding.start < last:
                continue  # inside a span already cut (a javascript: URL inside a link)
            pieces += [text[last : finding.start], replacement]
            last = finding.end
        findings = tuple(finding for finding, _ in cuts)
        return Verdict(allowed=False, score=1.0, findings=findings, redacted="".join(pieces) + text[last:])


def _host_of(url: str) -> str:
    """What a finding says about a URL: its host (never the query, which may hold the leaked data)."""
    if _SCRIPT_URL.match(url):
        return url.split(":", 1)[0].lower() + ": URL"
    return urlsplit(url).hostname or "a relative URL"
