"""Application scenarios, measured: what a dialogue, knowledge Q&A, code and styled writing cost to serve.

Four uses of a language model, each with the operational cost it brings, on our own models:

- **Dialogue with context** (`run_dialogue`): every turn resends the whole conversation, so the
  prompt, the time to first token and the KV cache grow turn by turn, unless the server finds the
  conversation's start in its prompt cache. Measured with and without that cache.
- **Knowledge Q&A with external knowledge** (`PassageStore`, `run_qa`): facts the model cannot know
  (an invented company's knowledge base, shipped in `data/knowledge_store.json`) retrieved by
  TF-IDF and put in the prompt: accuracy bought with prompt tokens.
- **Code** (`CODE_GENERATION_PROMPT`): writing new code is free text for a drafter, editing code
  copies the prompt; the page measures both with `optimize.speculative` (bench may not import it).
- **Content creation with style control** (`run_style`, `style_violations`): a written style guide
  alone versus the same guide with worked examples (few-shot), scored by rules a program can check,
  against the prompt tokens the examples add.

Chat prompts are rendered by llama-server with the model's own chat template (`chat_prompt`) and
sent to `/v1/completions`, so the server's timings (prompt tokens served from its cache) come back
with each answer.

Explained in: book/chapters/01_application_scenarios.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import httpx

from llmops_lib.engines.base import Engine
from llmops_lib.engines.llamacpp import LlamaServer
from llmops_lib.errors import EngineError, SpecError

# --- Dialogue with context -------------------------------------------------------------------

DIALOGUE_SYSTEM = "You are the support assistant of Brightwater Freight, a delivery company. Answer briefly."
DIALOGUE_TURNS: tuple[str, ...] = (
    "Hello, my parcel was supposed to arrive yesterday but it has not come. What should I do?",
    "The tracking number is BW-4471-22. Can you see where it is?",
    "The tracking page says it is at the Port Ellery warehouse. How long do parcels usually stay there?",
    "Can I pick it up myself instead of waiting for the driver?",
    "What documents do I need to bring with me?",
    "If I cannot go, can a neighbour pick it up for me?",
    "Can you also change the delivery address for my next order?",
    "Last question: how do I complain about the delay?",
)


@dataclass(frozen=True)
class DialogueTurn:
    """One turn of a conversation: its prompt (everything said so far) and what serving it cost.

    `ttft_s` is measured as a client meets it, with llama-server's prompt cache holding the
    conversation up to the previous answer (`cached_tokens` of the prompt came from it);
    `cold_ttft_s` is the same prompt sent again after a short unique line that defeats the cache
    (`cold_prompt_tokens` counts that line too; `cold_cached_tokens` is what the cache still matched).
    """

    turn: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    ttft_s: float
    cold_prompt_tokens: int
    cold_cached_tokens: int
    cold_ttft_s: float

    @property
    def context_tokens(self) -> int:
        """Tokens the conversation holds after this turn's answer: what the next turn resends."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def computed_tokens(self) -> int:
        """Prompt tokens the server had to compute (not served from its cache)."""
        return self.prompt_tokens - self.cached_tokens


def chat_prompt(server: LlamaServer, messages: Sequence[dict[str, str]]) -> str:
    """The conversation as one text, rendered by llama-server with the model's own chat template
    (`/apply-template`), ending where the assistant's next answer starts."""
    response = httpx.post(f"{server.base_url}/apply-template", json={"messages": list(messages)}, timeout=30.0)
    if response.status_code != 200:
        raise EngineError(
            f"{server.name} could not apply its chat template ({response.status_code}: {response.text[:200]}); "
            "serve a model that has one (smollm2)"
        )
    return response.json()["prompt"]


def run_dialogue(
    server: LlamaServer,
    turns: Sequence[str] = DIALOGUE_TURNS,
    *,
    system: str = DIALOGUE_SYSTEM,
    max_tokens: int = 48,
) -> list[DialogueTurn]:
    """Hold a conversation of `turns` (user messages) and measure every turn, cached and cold.

    First the conversation itself: each turn sends the system message, every earlier message and
    answer, and the new user message, as a chat client does; the server keeps its slot's cache.
    Then each of those prompts again, preceded by a random line no other prompt starts with, so no
    cached prefix matches (as `optimize.kv_cache.measure_prefix_cache` measures a cold prefix);
    these generate one token, their TTFT is the measurement. Greedy, so the conversation repeats.
    """
    if not turns:
        raise SpecError("run_dialogue needs at least one user turn")
    if max_tokens < 1:
        raise SpecError(f"max_tokens must be at least 1, got {max_tokens}")
    messages = [{"role": "system", "content": system}] if system else []
    prompts, warm = [], []
    for user in turns:
        messages.append({"role": "user", "content": user})
        prompt = chat_prompt(server, messages)
        done, timings = server.complete_with_timings(prompt, max_tokens=max_tokens)
        messages.append({"role": "assistant", "content": done.text.strip()})
        prompts.append(prompt)
        warm.append((done, timings))
    rows = []
    for number, (prompt, (done, timings)) in enumerate(zip(prompts, warm, strict=True), start=1):
        cold, cold_timings = server.complete_with_timings(f"{uuid.uuid4().hex[:8]}\n{prompt}", max_tokens=1)
        rows.append(
            DialogueTurn(
                turn=number,
                prompt_tokens=done.prompt_tokens,
                completion_tokens=done.completion_tokens,
                cached_tokens=timings.cache_n,
                ttft_s=done.ttft_s,
                cold_prompt_tokens=cold.prompt_tokens,
                cold_cached_tokens=cold_timings.cache_n,
                cold_ttft_s=cold.ttft_s,
            )
        )
    return rows


# --- Knowledge Q&A with external knowledge ---------------------------------------------------


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Question:
    """A question, the passage that answers it, and its gold answer (any alias counts too)."""

    id: str
    passage: str
    question: str
    answer: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class KnowledgeBase:
    passages: tuple[Passage, ...]
    questions: tuple[Question, ...]
    source: str
    licence: str


def load_knowledge(path: Path | str | None = None) -> KnowledgeBase:
    """The shipped passage store (`data/knowledge_store.json`, invented facts) or one in that shape.

    Raises:
        SpecError: the file is missing, not JSON, or a question names a passage that is not there.
    """
    source = Path(path) if path is not None else files("llmops_lib") / "data" / "knowledge_store.json"
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
        passages = tuple(Passage(p["id"], p["title"], p["text"]) for p in data["passages"])
        questions = tuple(
            Question(q["id"], q["passage"], q["question"], q["answer"], tuple(q.get("aliases", ())))
            for q in data["questions"]
        )
        base = KnowledgeBase(passages, questions, data["source"], data["licence"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SpecError(
            f"cannot read the passage store {source} ({type(exc).__name__}: {exc}); it needs JSON with "
            "'passages' (id, title, text), 'questions' (id, passage, question, answer), 'source' and 'licence'"
        ) from None
    known = {p.id for p in passages}
    if missing := sorted({q.passage for q in questions} - known):
        raise SpecError(f"questions in {source} name passages that are not in it: {', '.join(missing)}")
    return base


class PassageStore:
    """TF-IDF retrieval over passages (title and text), best match first: a small, honest retriever.

    A production system would use embeddings or BM25 over millions of chunks; the operational
    point, that retrieved text is paid for in prompt tokens, is the same.
    """

    def __init__(self, passages: Sequence[Passage]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not passages:
            raise SpecError("a PassageStore needs at least one passage")
        self.passages = tuple(passages)
        self._vectorizer = TfidfVectorizer(stop_words="english", sublinear_tf=True)
        self._matrix = self._vectorizer.fit_transform(f"{p.title}. {p.text}" for p in self.passages)

    def search(self, query: str, k: int = 1) -> list[Passage]:
        """The `k` passages most similar to `query` (cosine of TF-IDF vectors), best first."""
        if not query.strip():
            raise SpecError("search needs a non-empty query")
        if not 1 <= k <= len(self.passages):
            raise SpecError(f"k must be between 1 and {len(self.passages)} (the passages in the store), got {k}")
        scores = (self._matrix @ self._vectorizer.transform([query]).T).toarray().ravel()
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        return [self.passages[i] for i in order[:k]]


# One worked example, outside the store, showing the answer format (a base model needs it).
QA_DEMO = (
    "The parcel sorter in hall B runs at 9,000 parcels per hour and was installed in 2021.",
    "How many parcels per hour does the hall B sorter handle?",
    "9,000",
)


def qa_prompt(question: str, passages: Sequence[str] = ()) -> str:
    """A completion prompt for a base model: one worked example, the passages (none: closed-book),
    the question; the answer is the text up to the next newline."""
    demo_passage, demo_question, demo_answer = QA_DEMO
    if passages:
        head = "Answer the question with a few words from the passage.\n\n"
        demo = f"Passage: {demo_passage}\nQuestion: {demo_question}\nAnswer: {demo_answer}\n\n"
        context = "".join(f"Passage: {text}\n" for text in passages)
    else:
        head, context = "Answer the question with a few words.\n\n", ""
        demo = f"Question: {demo_question}\nAnswer: {demo_answer}\n\n"
    return f"{head}{demo}{context}Question: {question}\nAnswer:"


def _normalize(text: str) -> str:
    words = re.sub(r"[^0-9a-z]+", " ", text.lower()).split()
    return " ".join(w for w in words if w not in ("the", "a", "an"))


def answer_matches(output: str, question: Question) -> bool:
    """Whether the gold answer (or an alias) appears, as whole words, in the output's first line.

    Case, punctuation and articles are ignored: "Port Ellery." matches "Port Ellery"; "170" does
    not match "17".
    """
    first_line = output.strip().split("\n", 1)[0]
    said = f" {_normalize(first_line)} "
    return any(f" {_normalize(gold)} " in said for gold in (question.answer, *question.aliases) if _normalize(gold))


@dataclass(frozen=True)
class QAResult:
    """One question answered with `k` retrieved passages (0: closed-book)."""

    question_id: str
    k: int
    retrieved: tuple[str, ...]
    hit: bool
    """The passage that holds the answer was among those retrieved (False when closed-book)."""
    output: str
    correct: bool
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    latency_s: float


def run_qa(
    engine: Engine,
    store: PassageStore,
    questions: Sequence[Question],
    *,
    ks: Sequence[int] = (0, 1),
    max_tokens: int = 12,
) -> dict[int, list[QAResult]]:
    """Answer each question greedily with the top `k` passages in the prompt, for every `k` of `ks`
    (0: closed-book). The ways of asking take turns question by question, so a change in the
    machine's load while this runs falls on all of them alike."""
    if not ks or min(ks) < 0:
        raise SpecError(f"ks must be one or more passage counts, 0 (closed-book) or more, got {list(ks)}")
    results: dict[int, list[QAResult]] = {k: [] for k in ks}
    for question in questions:
        for k in ks:
            found = store.search(question.question, k) if k else []
            done = engine.complete(
                qa_prompt(question.question, [p.text for p in found]), max_tokens=max_tokens, stop=["\n"]
            )
            results[k].append(
                QAResult(
                    question_id=question.id,
                    k=k,
                    retrieved=tuple(p.id for p in found),
                    hit=question.passage in {p.id for p in found},
                    output=done.text.strip(),
                    correct=answer_matches(done.text, question),
                    prompt_tokens=done.prompt_tokens,
                    completion_tokens=done.completion_tokens,
                    ttft_s=done.ttft_s,
                    latency_s=done.latency_s,
                )
            )
    return results


# --- Code --------------------------------------------------------------------------------------

# Writing new code from a specification: nothing to copy from the prompt but the names it gives.
# (The copy-heavy edit is `optimize.speculative.WORKLOADS["edit code"]`.)
CODE_GENERATION_PROMPT = (
    "# Python 3. A function that parses durations such as '1h30m' or '45s' into seconds.\n\n"
    "```python\ndef parse_duration(text: str) -> int:\n"
)

# --- Content creation with style control -----------------------------------------------------

STYLE_GUIDE = (
    "Write a one-sentence announcement for the product. Style guide: start with the product name, "
    "use at most 15 words, end with an exclamation mark, no hashtags or emojis."
)
STYLE_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Parcel Pulse: live tracking for every delivery", "Parcel Pulse shows where every delivery is, live!"),
    ("Night Dock: deliveries accepted after 22:00", "Night Dock takes your deliveries after ten at night!"),
    ("Green Mile: electric trucks in the city centre", "Green Mile brings quiet electric trucks to the city centre!"),
)
STYLE_PRODUCTS: tuple[str, ...] = (
    "Swift Crate: next-day delivery for small businesses",
    "Harbor Vault: secure storage near the port",
    "Route Wise: smarter routes for regional drivers",
    "Cold Chain Plus: refrigerated transport for food",
    "Pallet Pal: book a pallet pickup in two clicks",
    "Border Ease: customs paperwork handled for you",
    "Drop Point: collect parcels at 300 local shops",
    "Fleet View: a dashboard for fleet managers",
    "Quiet Hours: deliveries scheduled around your day",
    "Return Run: free return pickups from home",
    "Bulk Lane: discounts on large regular shipments",
    "Signal Box: text alerts before every delivery",
)
STYLE_RULES = (
    "starts with the product name",
    "at most 15 words",
    "ends with an exclamation mark",
    "no hashtag or emoji",
)
_EMOJI_OR_HASHTAG = re.compile(r"#\w|[\U0001F000-\U0001FAFF\u2600-\u27BF]")


def style_messages(product: str, *, shots: int) -> list[dict[str, str]]:
    """Chat messages asking for an announcement of `product`: the style guide as the system message,
    then `shots` worked examples as earlier user and assistant turns."""
    if not 0 <= shots <= len(STYLE_EXAMPLES):
        raise SpecError(f"shots must be between 0 and {len(STYLE_EXAMPLES)} (the worked examples), got {shots}")
    messages = [{"role": "system", "content": STYLE_GUIDE}]
    for example, answer in STYLE_EXAMPLES[:shots]:
        messages += [{"role": "user", "content": f"Product: {example}"}, {"role": "assistant", "content": answer}]
    return [*messages, {"role": "user", "content": f"Product: {product}"}]


def style_violations(text: str, product: str) -> list[str]:
    """The rules of `STYLE_GUIDE` the announcement breaks (empty: compliant), in `STYLE_RULES` order.

    The product name is the part of `product` before its colon.
    """
    name = product.split(":", 1)[0].strip()
    answer = text.strip()
    broken = []
    if not answer.lower().startswith(name.lower()):
        broken.append(STYLE_RULES[0])
    if len(answer.split()) > 15:
        broken.append(STYLE_RULES[1])
    if not answer.endswith("!"):
        broken.append(STYLE_RULES[2])
    if _EMOJI_OR_HASHTAG.search(answer):
        broken.append(STYLE_RULES[3])
    return broken


@dataclass(frozen=True)
class StyleResult:
    """One announcement written with `shots` worked examples, and the rules it broke."""

    product: str
    shots: int
    text: str
    violations: tuple[str, ...]
    prompt_tokens: int
    completion_tokens: int

    @property
    def compliant(self) -> bool:
        return not self.violations


def run_style(
    server: LlamaServer, products: Sequence[str] = STYLE_PRODUCTS, *, shots: int, max_tokens: int = 40
) -> list[StyleResult]:
    """Write an announcement of each product greedily (a chat model) and score it against the style guide."""
    results = []
    for product in products:
        done = server.complete(chat_prompt(server, style_messages(product, shots=shots)), max_tokens=max_tokens)
        broken = style_violations(done.text, product)
        results.append(
            StyleResult(product, shots, done.text.strip(), tuple(broken), done.prompt_tokens, done.completion_tokens)
        )
    return results
