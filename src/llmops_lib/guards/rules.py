"""Input scanners made of rules: prompt-injection phrases and role spoofing, invisible characters, size
limits (OWASP LLM10) and secrets.

The injection rules reimplement Rebuff's heuristic layer (verbs × adjectives × objects such as "ignore
previous instructions") without installing it: words are first normalised (NFKC, confusable letters,
leetspeak, invisible characters dropped) and misspelt words within one or two edits of the rule
vocabulary are mapped onto it (SymSpell-style deletion index, confirmed by `difflib`), so the phrase
rules are plain regular expressions over the normalised text. Base64, hex and rot13 payloads are
decoded (bounded in number, size and depth) and scanned again. `rule_score` is the layer the
classifier-based `injection` scanner puts in front of its model.

Explained in: book/chapters/06_security/security.ipynb
"""

from __future__ import annotations

import base64
import binascii
import codecs
import difflib
import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from llmops_lib.guards.base import Finding, Verdict, register

#: a positive count, as the scanners' parameters declare it (checked when a route's guards load)
Positive = Annotated[int, Field(ge=1)]

# -- normalisation --------------------------------------------------------------------------------

#: characters a reader cannot see: zero-width, joiners, fillers, bidi controls, tag characters,
#: supplementary variation selectors (used to smuggle bytes). Left-to-right/right-to-left *marks*
#: (U+200E/F, U+061C) and the emoji variation selector U+FE0F are ordinary in real text and allowed.
_INVISIBLE_CLASSES = {
    "zero_width": "\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200d\u2060-\u2064\u206a-\u206f\u3164\ufeff\uffa0",
    "bidi_control": "\u202a-\u202e\u2066-\u2069",
    "tag_characters": "\U000e0000-\U000e007f",
    "variation_selector": "\U000e0100-\U000e01ef",
}
_INVISIBLE = re.compile("|".join(f"(?P<{kind}>[{chars}]+)" for kind, chars in _INVISIBLE_CLASSES.items()))
_ANY_INVISIBLE = re.compile(f"[{''.join(_INVISIBLE_CLASSES.values())}]")
#: an emoji subdivision flag (e.g. England) is a black flag followed by tag letters and a cancel tag
_TAG_FLAG = re.compile("\U0001f3f4[\U000e0061-\U000e007a]{2,8}\U000e007f")
_JOINERS = "\u200c\u200d"
_TAG_TEXT = re.compile("[\U000e0020-\U000e007e]")

#: Cyrillic and Greek letters that look Latin, mapped to the Latin letter
_CONFUSABLES = str.maketrans(
    "асеіјоргхуѕԁһкмтвнАВСЕНІЈКМОРЅТХУαεικνορτυχ", "aceijoprxysdhkmtbhABCEHIJKMOPSTXYaeiknoptux"
)
_LEET = str.maketrans("0134573@$", "oieastbas")
_WORD = re.compile(r"[a-z0-9@$']+")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?\n]*")
_BLANKS = re.compile(r"[ \t\r\f\v]+")


def invisible_spans(text: str) -> Iterator[tuple[str, int, int]]:
    """(kind, start, end) of each run of invisible characters, an emoji's legitimate use excepted."""
    if text.isascii() or _ANY_INVISIBLE.search(text) is None:
        return
    flags = [match.span() for match in _TAG_FLAG.finditer(text)] if "\U0001f3f4" in text else []
    for match in _INVISIBLE.finditer(text):
        start, end = match.span()
        if any(lo <= start < hi for lo, hi in flags):
            continue
        if match.group() in _JOINERS and _joins_non_ascii(text, start, end):
            continue  # ZWJ/ZWNJ inside emoji sequences, Indic and Persian script
        yield match.lastgroup or "zero_width", start, end


def _joins_non_ascii(text: str, start: int, end: int) -> bool:
    return start > 0 and end < len(text) and not text[start - 1].isascii() and not text[end].isascii()


def strip_invisible(text: str) -> str:
    """`text` without the characters `invisible_spans` reports."""
    if text.isascii():
        return text
    if "\u200c" not in text and "\u200d" not in text and "\U0001f3f4" not in text:
        return _ANY_INVISIBLE.sub("", text)  # no exception to make: one pass at C speed
    pieces, last = [], 0
    for _, start, end in invisible_spans(text):
        pieces.append(text[last:start])
        last = end
    return "".join(pieces) + text[last:] if pieces else text


def hidden_ascii(text: str) -> str:
    """The ASCII text smuggled in tag characters (U+E0020–E007E map onto ASCII 0x20–0x7E)."""
    return "".join(chr(ord(char) - 0xE0000) for char in text if 0xE0020 <= ord(char) <= 0xE007E)


# -- the rule vocabulary ----------------------------------------------------------------------------

_STRONG_VERBS = (
    "ignore", "disregard", "forget", "bypass", "override", "overlook", "neglect", "abandon", "ditch", "ignoring",
    "disregarding", "forgetting", "bypassing", "overriding",
    "pay no attention to", "do not follow", "don't follow", "stop following", "do not obey", "stop obeying",
    "no longer follow",
)  # fmt: skip
_WEAK_VERBS = ("skip", "omit", "discard", "drop", "erase", "delete", "cancel", "clear", "reset", "remove")
_TEMPORAL = (
    "previous", "prior", "preceding", "above", "earlier", "former", "initial", "original", "foregoing",
    "aforementioned", "old", "past", "existing", "given",
)  # fmt: skip
_SCOPES = ("system", "default", "hidden", "safety", "ethical", "moral", "content", "developer", "built-in")
_STRONG_OBJECTS = (
    "instructions", "instruction", "rules", "rule", "guidelines", "directions", "directives", "directive",
    "prompts", "prompt", "programming", "constraints", "restrictions", "limitations", "guardrails", "policies",
    "policy", "filters", "safeguards", "principles", "protocols", "commands", "orders", "training", "ethics",
)  # fmt: skip
_WEAK_OBJECTS = (
    "text", "content", "context", "conversation", "messages", "message", "input", "inputs", "requests",
    "request", "tasks", "task", "everything", "data", "information",
)  # fmt: skip
_FILLERS = (
    "all", "any", "every", "each", "the", "of", "your", "these", "those", "that", "this", "its", "their",
    "previously", "said", "and", "or", "other", "you", "were", "have", "been", "was", "told", "just", "now",
    "entire", "whole", "completely", "totally", "please", "to", "what", "is", "it",
)  # fmt: skip
_PERSONAS = (
    "dan", "stan", "aim", "unrestricted", "unfiltered", "uncensored", "jailbroken", "evil",
)  # fmt: skip
_LEAK_TARGETS = (
    "system prompt", "system message", "system instructions", "initial prompt", "initial instructions",
    "hidden prompt", "hidden instructions", "original prompt", "original instructions", "your instructions",
    "your prompt", "your rules", "pre-prompt", "preprompt", "secret instructions", "secret prompt",
    "everything above", "the text above", "the words above", "the above text", "the above instructions",
    "the instructions above", "your guidelines", "your configuration", "your system prompt",
)  # fmt: skip
_LEAK_VERBS = (
    "reveal", "print", "show", "repeat", "output", "display", "tell me", "give me", "write out", "leak",
    "spell out", "recite", "echo", "dump", "share", "disclose", "what is", "what are", "what were",
)  # fmt: skip
#: real words within an edit of the vocabulary that must keep their meaning. Found by listing the
#: corrections made on WritingBench, FreshQA, Do-Not-Answer and HarmBench requests: for the rules, those
#: benign sets are not fully held out.
_NOT_MISSPELT = frozenset({
    "forgot", "forgets", "forest", "forged", "forges", "forging", "formed", "farmer", "firmer", "fellow", "flowing",
    "exciting", "precious", "directors", "directed", "constants", "instructor", "lounge", "longed",
})  # fmt: skip


def _alternation(words: tuple[str, ...]) -> str:
    return "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))


_NEGATED = r"(?<!\bnot )(?<!n't )(?<!\bnever )"
_VERB = rf"{_NEGATED}\b(?:{_alternation(_STRONG_VERBS)})\b"
_FILL = rf"(?:\s+(?:{_alternation(_FILLERS)})\b){{0,4}}"  # never "my"/"our": "ignore my previous message" is benign
_ADJ = rf"(?:(?:{_alternation(_TEMPORAL + _SCOPES)})\s+){{1,3}}"
_ANY_OBJECT = rf"(?:{_alternation(_STRONG_OBJECTS + _WEAK_OBJECTS)})\b"
#: words one of which a text must hold for a strong-verb rule to be tried (most texts hold none)
_VERB_WORDS = frozenset(word for verb in _STRONG_VERBS for word in verb.split() if len(word) > 3) - {
    "stop",
    "longer",
    "don't",
}


@dataclass(frozen=True)
class _Rule:
    """A phrase rule over the normalised text: tried only when the text holds one of its trigger words."""

    kind: str
    weight: float  # weights combine as 1 - Π(1 - w)
    pattern: re.Pattern[str]
    triggers: frozenset[str]


def _rule(kind: str, weight: float, pattern: str, triggers: Iterable[str]) -> _Rule:
    return _Rule(kind, weight, re.compile(pattern), frozenset(triggers))


_RULES = (
    _rule("override_phrase", 0.9, rf"{_VERB}{_FILL}\s+{_ADJ}{_ANY_OBJECT}", _VERB_WORDS),
    _rule("override_phrase", 0.75, rf"{_VERB}{_FILL}\s+(?:{_alternation(_STRONG_OBJECTS)})\b", _VERB_WORDS),
    _rule(
        "override_phrase", 0.9,
        rf"{_VERB}{_FILL}\s+(?:(?:everything|anything|all)\s+(?:(?:that|which)\s+)?(?:(?:was|is|you were|i)\s+)?"
        r"(?:above|before|prior|earlier|so far|said|written|told)\b"
        rf"|(?:{_alternation(_TEMPORAL)}|before)\s*(?:[.!,;:\n]|$|(?:and|then|instead|this|that|here|it)\b))",
        _VERB_WORDS,
    ),
    _rule(
        "override_phrase", 0.45,
        rf"{_NEGATED}\b(?:{_alternation(_WEAK_VERBS)})\b{_FILL}\s+(?:(?:{_alternation(_TEMPORAL)})\s+){{1,2}}{_ANY_OBJECT}",
        _WEAK_VERBS,
    ),
    _rule(
        "persona", 0.9,
        rf"\byou are (?:now |going to be |going to act as )?(?:an? )?(?:{_alternation(_PERSONAS)})\b"
        r"(?! (?:team|tools|console|documentation|docs)\b)",
        _PERSONAS,
    ),
    _rule("persona", 0.9, r"\bdo anything now\b", ["anything"]),
    _rule("persona", 0.8, r"\b(?:dan|jailbreak|jailbroken|evil|unrestricted|uncensored|god) mode\b", ["mode"]),
    _rule("persona", 0.8, r"\bdeveloper mode (?:enabled|activated|output)\b", ["mode"]),
    _rule("persona", 0.45, r"\b(?:developer|debug|admin|sudo|maintenance) mode\b", ["mode"]),
    _rule(
        "persona", 0.5,
        r"\b(?:act|behave|respond|answer|pretend|roleplay|role-play)\b[^.\n]{0,40}"
        r"\b(?:without|with no|free (?:of|from)|not bound by|no longer bound by)\b[^.\n]{0,20}"
        r"\b(?:restrictions|limitations|limits|filters|rules|guidelines|censorship|ethics|morals|boundaries)\b",
        ["restrictions", "limitations", "limits", "filters", "rules", "guidelines", "censorship", "ethics", "morals",
         "boundaries"],
    ),
    _rule("persona", 0.35, r"\b(?:stay|remain) in character\b", ["character"]),
    _rule("jailbreak", 0.6, r"\bjailbr(?:eak|oken)", ["jailbreak", "jailbroken", "jailbreaking", "jailbreaks"]),
    _rule(
        "prompt_leak", 0.8,
        rf"\b(?:{_alternation(_LEAK_VERBS)})\b(?:\s+\S+){{0,4}}?\s+(?:{_alternation(_LEAK_TARGETS)})\b",
        {target.split()[-1] for target in _LEAK_TARGETS},
    ),
    _rule("prompt_leak", 0.7, r"\b(?:starting|beginning) with (?:the words? )?\W?you are\b", ["starting", "beginning"]),
    _rule(
        "new_instructions", 0.6, r"\bnew (?:instructions?|rules|task|directives?|orders?)\s*:",
        ["instruction", "instructions", "rules", "task", "directive", "directives", "order", "orders"],
    ),
    _rule("new_instructions", 0.35, r"\bfrom now on,? you\b", ["now"]),
    _rule(
        "end_of_prompt", 0.35, r"\bend of (?:the )?(?:system )?(?:prompt|instructions?|input|context|document)\b",
        ["end"],
    ),
)  # fmt: skip
#: the trigger words in rot13, so a rot13 pass is made only for texts that may hold an encoded rule
_ROT13_TRIGGERS = frozenset(codecs.encode(word, "rot13") for rule in _RULES for word in rule.triggers)


_CHAT_TOKENS = re.compile(
    r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id|begin_of_text)\|>"
    r"|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>|\[system\]\(#\w+\)",
    re.IGNORECASE,
)
_INSTRUCTION_HEADER = re.compile(
    r"^[ \t]*#{2,}[ \t]*(?:instruction|system|response|system prompt)s?[ \t]*:", re.I | re.M
)
_ROLE_TAG = re.compile(r"</?(?:system|sys|system_prompt|instructions?)>", re.IGNORECASE)
_ROLE_LINE = re.compile(
    r"^[ \t>*\[]*(system|assistant|developer)"
    r"(?:[ \t]+(?:prompt|message|note|override|instructions?|update))?[ \t*\]]*:[ \t]*(.*)$",
    re.IGNORECASE | re.MULTILINE,
)
#: words that make a role label a fake turn giving orders rather than, say, "System: Ubuntu 22.04"
_ORDER_WORDS = re.compile(
    r"\b(?:you|your|ignore|must|always|never|now|new|respond|reply|answer|reveal|print|instructions?|rules?"
    r"|allowed|mode|override|disregard|forget|user)\b",
    re.IGNORECASE,
)

_BASE64 = re.compile(r"(?<![A-Za-z0-9+/_-])(?:[A-Za-z0-9+/]{20,}|[A-Za-z0-9_-]{20,})={0,2}")
_HEX_PAIRS = re.compile(r"[2-7][0-9a-fA-F][ :][2-7][0-9a-fA-F][ :][2-7][0-9a-fA-F]")  # spaced hex of ASCII text
_HEX = re.compile(r"(?:\\x[0-9a-fA-F]{2}){8,}|\b(?:[0-9a-fA-F]{2}[ :]?){11,}[0-9a-fA-F]{2}\b")
_MAX_DECODED = 16  # candidate payloads decoded per text
_MAX_PAYLOAD_CHARS = 4096  # characters of one payload decoded
_MAX_DEPTH = 2  # payloads inside payloads
_MAX_FINDINGS = 20  # findings listed one by one; the rest are counted


# -- fuzzy words ------------------------------------------------------------------------------------


def _deletions(word: str, edits: int) -> set[str]:
    found, frontier = set(), {word}
    for _ in range(edits):
        frontier = {w[:i] + w[i + 1 :] for w in frontier for i in range(len(w))}
        found |= frontier
    return found


def _edits_for(word: str) -> int:
    return 2 if len(word) >= 9 else 1


def _vocabulary() -> frozenset[str]:
    """The words worth correcting: the verbs, adjectives and objects that make a rule fire. Ordinary words
    of the rules ("system", "content", "message") are left out: their real neighbours ("systems",
    "contents", "massage") are far more frequent than their misspellings."""
    phrases = _STRONG_VERBS + _TEMPORAL + _STRONG_OBJECTS + _PERSONAS + ("character", "jailbreak", "anything")
    words = {word for phrase in phrases for word in re.findall(r"[a-z]+", phrase) if len(word) >= 6}
    return frozenset(words - {"developer", "policies", "principles", "commands", "orders"})


_VOCABULARY = _vocabulary()
_DELETION_INDEX: dict[str, frozenset[str]] = {}
for _word in _VOCABULARY:
    for _deleted in _deletions(_word, _edits_for(_word)) | {_word}:
        _DELETION_INDEX[_deleted] = _DELETION_INDEX.get(_deleted, frozenset()) | {_word}


def canonical_word(word: str) -> str:
    """The rule-vocabulary word `word` is a misspelling of (one edit, two for long words), else `word`."""
    if len(word) < 6 or len(word) > 16 or word in _VOCABULARY or word in _NOT_MISSPELT:
        return word
    candidates: set[str] = set()
    # one deletion on the text's side against up to two on the vocabulary's: one or two edits for the
    # cost of len(word) look-ups (two insertions or two substitutions are not found)
    for key in _deletions(word, 1) | {word}:
        candidates |= _DELETION_INDEX.get(key, frozenset())
    best, best_ratio = word, 0.8
    for candidate in sorted(candidates):
        if candidate[0] != word[0] and candidate[:2] != word[1::-1]:
            continue  # typing rarely changes a word's first letter (a swap of the first two is kept)
        ratio = difflib.SequenceMatcher(None, word, candidate).ratio()
        if ratio >= best_ratio:
            best, best_ratio = candidate, ratio
    return best


@functools.lru_cache(maxsize=65536)
def _canonical(token: str) -> str:
    """A rule word for `token` (misspelt or in leetspeak), else `token` unchanged."""
    if token.isalpha():
        return canonical_word(token)
    word = canonical_word(token.translate(_LEET))
    return word if word in _VOCABULARY else token


def _lowered(text: str) -> str:
    if not text.isascii():  # NFKC and the confusables change nothing in ASCII
        text = unicodedata.normalize("NFKC", strip_invisible(text)).translate(_CONFUSABLES).replace("\u2019", "'")
    return text.lower()


def _corrections(lowered: str) -> tuple[dict[str, str], set[str]]:
    """The misspelt tokens of a lowered text with their rule words, and the text's words once corrected."""
    words = set(_WORD.findall(lowered))
    corrected = {token: word for token in words if len(token) >= 6 and (word := _canonical(token)) != token}
    return corrected, (words - corrected.keys()) | set(corrected.values()) if corrected else words


def _corrected(lowered: str, corrected: dict[str, str]) -> str:
    if corrected:
        lowered = _WORD.sub(lambda match: corrected.get(match.group(), match.group()), lowered)
    return _BLANKS.sub(" ", lowered)


def normalise(text: str) -> str:
    """Lower-case text as the phrase rules read it: invisible characters dropped, NFKC, confusable and
    leetspeak letters mapped, misspelt rule words corrected, blanks collapsed (line breaks kept)."""
    lowered = _lowered(text)
    return _corrected(lowered, _corrections(lowered)[0])


# -- the injection rules ----------------------------------------------------------------------------


def _phrase_findings(text: str) -> Iterator[tuple[Finding, float]]:
    lowered = _lowered(text)
    corrected, words = _corrections(lowered)
    rules = [rule for rule in _RULES if not rule.triggers.isdisjoint(words)]
    if not rules:  # most texts: no rule's trigger word, nothing more to do
        return
    # a rule's pattern runs only on the sentences holding one of its trigger words
    normal = _corrected(lowered, corrected)
    sentences = [(sentence, set(_WORD.findall(sentence))) for sentence in _SENTENCE.findall(normal)]
    for rule in rules:
        for sentence, sentence_words in sentences:
            if rule.triggers.isdisjoint(sentence_words):
                continue
            for match in rule.pattern.finditer(sentence):
                yield Finding(rule.kind, match.group().strip()[:80]), rule.weight


def _spoofing_findings(text: str) -> Iterator[tuple[Finding, float]]:
    lower = text.lower()  # the `in` tests below skip the patterns on most texts, at C speed
    if "<" in text or "[" in text:
        for match in _CHAT_TOKENS.finditer(text):
            yield Finding("role_spoofing", f"chat-template token {match.group()}", *match.span()), 0.9
        for match in _ROLE_TAG.finditer(text):
            yield Finding("role_spoofing", f"role tag {match.group()}", *match.span()), 0.55
    if "##" in text:
        for match in _INSTRUCTION_HEADER.finditer(text):
            yield Finding("role_spoofing", f"instruction header {match.group().strip()}", *match.span()), 0.7
    if not any(role in lower for role in ("system", "assistant", "developer")):
        return
    for match in _ROLE_LINE.finditer(text):
        # a fake system turn gives orders; an "Assistant:" line is as often a pasted transcript
        gives_orders = match.group(1).lower() != "assistant" and _ORDER_WORDS.search(match.group(2)) is not None
        detail = f"fake {match.group(1)} turn" + ("" if gives_orders else " label")
        yield Finding("role_spoofing", detail, *match.span()), 0.7 if gives_orders else 0.3


def _printable(data: bytes) -> str | None:
    """`data` as text when it reads as text (UTF-8, letters and spaces), else None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    letters = sum(char.isalpha() for char in text)
    printable = sum(char.isprintable() or char.isspace() for char in text)
    if len(text) < 8 or printable < 0.95 * len(text) or letters < 0.5 * len(text) or " " not in text:
        return None
    return text


def _decoded_payloads(text: str) -> Iterator[tuple[str, str, int, int]]:
    """(encoding, decoded text, start, end) of base64 and hex payloads that decode to readable text."""
    long_word = max(map(len, text.split()), default=0) >= 20
    patterns = [("base64", _BASE64)] if long_word else []
    if long_word or "\\x" in text or _HEX_PAIRS.search(text):
        patterns.append(("hex", _HEX))
    attempts = 0
    for encoding, pattern in patterns:
        for match in pattern.finditer(text):
            if attempts == _MAX_DECODED:
                return
            attempts += 1
            payload = match.group()[:_MAX_PAYLOAD_CHARS]
            try:
                if encoding == "hex":
                    data = bytes.fromhex(re.sub(r"\\x|[ :]", "", payload))
                else:
                    payload = payload.rstrip("=")
                    payload = payload[: len(payload) - len(payload) % 4]
                    data = base64.b64decode(payload.translate(str.maketrans("-_", "+/")), validate=True)
            except (binascii.Error, ValueError):
                continue
            plain = _printable(data)
            if plain is not None:
                yield encoding, plain, *match.span()


def _scan(text: str, depth: int) -> list[tuple[Finding, float]]:
    found = list(_spoofing_findings(strip_invisible(text)))
    found += _phrase_findings(text)
    hidden = hidden_ascii(text) if _TAG_TEXT.search(text) else ""
    if hidden:
        found += [(Finding("hidden_text", f"tag characters: {f.detail}"), w) for f, w in _scan(hidden, depth + 1)]
    if depth >= _MAX_DEPTH:
        return found
    for encoding, plain, start, end in _decoded_payloads(text):
        for finding, weight in _scan(plain, depth + 1):
            found.append(
                (Finding("encoded_payload", f"{encoding}: {finding.kind}: {finding.detail}", start, end), weight)
            )
    if depth == 0 and not _ROT13_TRIGGERS.isdisjoint(_WORD.findall(text.lower())):
        rot13 = codecs.encode(text, "rot13")
        found += [(Finding("encoded_payload", f"rot13: {f.kind}: {f.detail}"), w) for f, w in _phrase_findings(rot13)]
    return found


def rule_score(text: str) -> tuple[float, tuple[Finding, ...]]:
    """The rules' injection score in [0, 1] (1 - Π(1 - weight) over the findings) and the findings (the
    first `_MAX_FINDINGS` of them)."""
    found = _scan(text, 0)
    remaining = 1.0
    for _, weight in found:
        remaining *= 1.0 - weight
    return 1.0 - remaining, tuple(finding for finding, _ in found[:_MAX_FINDINGS])


@register("injection_rules")
class InjectionRules:
    """Prompt injection and jailbreak phrases, role spoofing and encoded payloads, by rules alone.

    Args:
        threshold: the score at or above which the text is not allowed. One strong finding (an
            override phrase, a chat-template token) reaches 0.5 alone; weak ones ("developer mode", a
            bare "System:" label) need company.
    """

    name = "injection_rules"

    def __init__(self, threshold: Annotated[float, Field(gt=0, le=1)] = 0.5) -> None:
        self.threshold = threshold

    def scan(self, text: str) -> Verdict:
        score, findings = rule_score(text)
        return Verdict(allowed=score < self.threshold, score=score, findings=findings)


# -- invisible characters ---------------------------------------------------------------------------


@register("invisible")
class Invisible:
    """Zero-width characters, bidi controls and tag characters (ASCII smuggling); redacts by removing them.

    Emoji sequences (a zero-width joiner between non-ASCII characters, subdivision flags) and the
    left-to-right/right-to-left marks of bidirectional text are allowed.
    """

    name = "invisible"

    def scan(self, text: str) -> Verdict:
        findings, runs = [], 0
        for kind, start, end in invisible_spans(text):
            runs += 1
            if runs > _MAX_FINDINGS:
                continue
            run = text[start:end]
            detail = f"{len(run)} × U+{ord(run[0]):04X}"
            if kind == "tag_characters" and hidden_ascii(run):
                detail += f", hiding {hidden_ascii(run)[:60]!r}"
            findings.append(Finding(kind, detail, start, end))
        if not findings:
            return Verdict(allowed=True, score=0.0)
        if runs > _MAX_FINDINGS:
            findings.append(Finding("invisible", f"{runs - _MAX_FINDINGS} more runs"))
        return Verdict(allowed=False, score=1.0, findings=tuple(findings), redacted=strip_invisible(text))


# -- size -------------------------------------------------------------------------------------------


@register("size")
class Size:
    """Text longer than `max_chars` characters or `max_tokens` tokens (OWASP LLM10, unbounded consumption).

    Tokens are estimated as characters / `chars_per_token` unless a `tokenizer` (text -> token count) is
    given: exact counting needs the model's vocabulary or a round trip to the engine on every request,
    while this guard is a cheap bound in front of the engine, which enforces the exact context length
    itself. English prose runs a little over 4 characters per token with the vocabularies of both models
    here, so the estimate errs high (towards refusing); code and non-Latin scripts take more tokens per
    character, so give them a smaller `chars_per_token`, or an exact count such as
    `lambda text: len(Llama(path, vocab_only=True).tokenize(text.encode()))` (llama-cpp-python).
    Redacting cuts the text to the limit.
    """

    name = "size"

    def __init__(
        self,
        max_chars: Positive | None = 32_000,
        max_tokens: Positive | None = None,
        chars_per_token: Annotated[float, Field(gt=0)] = 4.0,
        tokenizer: Callable[[str], int] | None = None,
    ) -> None:
        self.max_chars = max_chars
        self.max_tokens = max_tokens
        self.chars_per_token = chars_per_token
        self.tokenizer = tokenizer

    def tokens(self, text: str) -> int:
        """The token count the limit is checked against (estimated unless a tokenizer was given)."""
        if self.tokenizer is not None:
            return self.tokenizer(text)
        return int(-(-len(text) // self.chars_per_token))

    def scan(self, text: str) -> Verdict:
        used, findings, keep = 0.0, [], len(text)
        if self.max_chars is not None:
            used = len(text) / self.max_chars
            if len(text) > self.max_chars:
                findings.append(Finding("max_chars", f"{len(text)} characters > {self.max_chars}"))
                keep = self.max_chars
        if self.max_tokens is not None:
            tokens = self.tokens(text)
            used = max(used, tokens / self.max_tokens)
            if tokens > self.max_tokens:
                findings.append(Finding("max_tokens", f"{tokens} tokens > {self.max_tokens}"))
                keep = min(keep, int(len(text) * self.max_tokens / tokens))
        if not findings:
            return Verdict(allowed=True, score=used)
        return Verdict(allowed=False, score=1.0, findings=tuple(findings), redacted=text[:keep])


# -- secrets ----------------------------------------------------------------------------------------

#: (kind, substrings one of which the text must hold for the pattern to be tried, pattern); where the
#: pattern has a group named `value`, only that part is the secret
_SECRETS: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = tuple(
    (kind, hints, re.compile(pattern))
    for kind, hints, pattern in (
        ("private_key", ("PRIVATE KEY",), r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----[\s\S]{0,20000}?"
                                          r"(?:-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----|\Z)"),
        ("aws_access_key", ("AKIA", "ASIA", "ABIA", "ACCA", "A3T"),
         r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b"),
        ("github_token", ("gh", "github_pat_"),
         r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
        ("slack_token", ("xox", "hooks.slack.com"),
         r"\bxox[abposr]-[A-Za-z0-9-]{10,250}|https://hooks\.slack\.com/services/[A-Za-z0-9/]{20,}"),
        ("openai_key", ("sk-",), r"\bsk-(?:proj-|svcacct-|admin-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{20,}"),
        ("google_api_key", ("AIza",), r"\bAIza[0-9A-Za-z_-]{35}\b"),
        ("stripe_key", ("_live_", "_test_"), r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}\b"),
        ("jwt", ("eyJ",), r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
        ("assigned_secret", ("key", "KEY", "Key", "secret", "SECRET", "Secret", "token", "TOKEN", "Token", "pass",
                             "PASS", "Pass", "pwd", "PWD"),
         # a name may carry a prefix (`aws_secret_access_key`, `DB_PASSWORD`): `_` is a word character, so no
         # word boundary; the prefix is bounded, so a long `a_a_a_…` costs linear time
         r"(?i)(?<![A-Za-z0-9])(?:[a-z0-9]{1,20}[_-]){0,3}"
         r"(?:api[_-]?key|apikey|secret(?:[_-]?access)?(?:[_-]?key)?|access[_-]?key(?:[_-]?id)?|client[_-]?secret"
         r"|auth[_-]?token|access[_-]?token|token|password|passwd|pwd)\b[\"']?\s*[:=]\s*[\"']?"
         r"(?P<value>[^\s\"'`,;<>{}$%]{8,})"),
    )
)  # fmt: skip
_CHARACTER_CLASSES = (re.compile(r"[a-z]"), re.compile(r"[A-Z]"), re.compile(r"[0-9]"), re.compile(r"[^A-Za-z0-9]"))


def _looks_secret(value: str) -> bool:
    """An assigned value is a secret when it mixes character classes (not `password: changeme`) and is not
    a placeholder (`xxxxxxxx`, `********`)."""
    return sum(bool(cls.search(value)) for cls in _CHARACTER_CLASSES) >= 2 and len(set(value)) > 3


def secret_spans(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of each secret, overlaps merged into the first pattern's kind."""
    spans: list[tuple[str, int, int]] = []
    for kind, hints, pattern in _SECRETS:
        if not any(hint in text for hint in hints):  # `in` runs at C speed; most texts hold no hint
            continue
        for match in pattern.finditer(text):
            if "value" in pattern.groupindex:
                if not _looks_secret(match.group("value")):
                    continue
                start, end = match.span("value")
            else:
                start, end = match.span()
            if not any(start < other_end and other_start < end for _, other_start, other_end in spans):
                spans.append((kind, start, end))
    return sorted(spans, key=lambda span: span[1])


@register("secrets")
class Secrets:
    """API keys (AWS, GitHub, Slack, OpenAI-style, Google, Stripe), private key blocks, JWTs and assigned
    secrets (`api_key=…`, `password: …`); redacts each with `<SECRET>`. A finding never repeats the secret."""

    name = "secrets"

    def scan(self, text: str) -> Verdict:
        spans = secret_spans(text)
        if not spans:
            return Verdict(allowed=True, score=0.0)
        findings = tuple(Finding(kind, f"{end - start} characters", start, end) for kind, start, end in spans)
        pieces, last = [], 0
        for _, start, end in spans:
            pieces += [text[last:start], "<SECRET>"]
            last = end
        return Verdict(allowed=False, score=1.0, findings=findings, redacted="".join(pieces) + text[last:])
