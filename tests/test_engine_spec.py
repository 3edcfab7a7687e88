"""Engine specs: refused early when invalid, turned into the right llama-server flags."""

import subprocess
from pathlib import Path

import pytest

from llmops_lib.engines import EngineSpec, LlamaServer, make_engine
from llmops_lib.engines.llamacpp import DRAFT_FLAGS, NGRAM_FLAGS, llama_server_binary
from llmops_lib.errors import SpecError


@pytest.mark.parametrize(
    "field, value",
    [
        ("n_ctx", 0),
        ("threads", 0),
        ("parallel", -1),
        ("batch_size", 0),
        ("cache_type_k", "q3_z"),
        ("cache_type_v", "fp8"),
    ],
)
def test_invalid_values_are_refused(field, value):
    with pytest.raises(SpecError, match=field):
        EngineSpec(model=Path("m.gguf"), **{field: value})


def test_quantized_v_cache_needs_flash_attention():
    with pytest.raises(SpecError, match="flash_attn"):
        EngineSpec(model=Path("m.gguf"), cache_type_v="q8_0")
    assert EngineSpec(model=Path("m.gguf"), cache_type_v="q8_0", flash_attn=True).cache_type_v == "q8_0"


def test_llama_server_context_is_per_slot():
    spec = EngineSpec(model=Path("m.gguf"), n_ctx=1024, parallel=4, threads=1, extra_args=("--foo",))
    argv = LlamaServer(spec).command(port=9999)
    assert argv[argv.index("--ctx-size") + 1] == "4096"
    assert argv[argv.index("--parallel") + 1] == "4"
    assert "--metrics" in argv and argv[-1] == "--foo"


def test_unknown_engine_name_is_refused():
    with pytest.raises(SpecError, match="llama-server"):
        make_engine("tgi", EngineSpec(model=Path("m.gguf")))


def test_speculative_options_become_llama_server_flags(tmp_path):
    draft = tmp_path / "draft.gguf"
    spec = EngineSpec(model=Path("m.gguf"), threads=1, draft_model=draft, draft_max=8, draft_min=1)
    assert spec.spec_type == "draft-simple"  # a draft model implies draft-model speculation
    argv = LlamaServer(spec).command(port=9999)
    assert argv[argv.index("--spec-type") + 1] == "draft-simple"
    assert argv[argv.index("--spec-draft-model") + 1] == str(draft)
    assert argv[argv.index("--spec-draft-n-max") + 1] == "8" and argv[argv.index("--spec-draft-n-min") + 1] == "1"
    assert "--spec-type" not in LlamaServer(EngineSpec(model=Path("m.gguf"))).command(port=9999)
    assert spec.as_dict()["draft_model"] == str(draft)
    # an n-gram drafter takes its own flags: lookup length and draft length
    argv = LlamaServer(
        EngineSpec(model=Path("m.gguf"), spec_type="ngram-simple", ngram_lookup=6, draft_max=64)
    ).command(9999)
    assert argv[argv.index("--spec-ngram-simple-size-n") + 1] == "6"
    assert argv[argv.index("--spec-ngram-simple-size-m") + 1] == "64" and "--spec-draft-n-max" not in argv
    argv = LlamaServer(
        EngineSpec(model=Path("m.gguf"), spec_type="ngram-mod", ngram_lookup=8, draft_min=8, draft_max=32)
    ).command(9999)
    assert [argv[argv.index(f) + 1] for f in NGRAM_FLAGS["ngram-mod"]] == ["8", "32", "8"]


def test_every_speculative_flag_is_one_llama_server_knows():
    """The flag names are llama-server's own, checked against the installed binary's --help."""
    known = subprocess.run([llama_server_binary(), "--help"], capture_output=True, text=True, timeout=60).stdout
    flags = {flag for group in (*NGRAM_FLAGS.values(), DRAFT_FLAGS) for flag in group if flag}
    assert flags and {flag for flag in flags if f"{flag} " not in known} == set()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"spec_type": "medusa"}, "spec_type='medusa' is not a speculative decoding type"),
        ({"spec_type": "draft-simple"}, "needs a draft_model"),
        ({"spec_type": "ngram-simple", "draft_model": Path("d.gguf")}, "draft-simple"),
        ({"draft_max": 4}, "set spec_type too"),
        ({"spec_type": "ngram-simple", "draft_max": -1}, "draft_max must be at least 0"),
        ({"spec_type": "ngram-mod", "draft_max": 2, "draft_min": 4}, "draft_min .* above draft_max"),
        ({"spec_type": "ngram-simple", "draft_min": 4}, "draft_min does not apply to spec_type='ngram-simple'"),
        ({"spec_type": "ngram-cache", "ngram_lookup": 4}, "ngram_lookup does not apply"),
        ({"spec_type": "ngram-simple", "ngram_lookup": 0}, "ngram_lookup must be at least 1"),
        ({"ngram_lookup": 4}, "set spec_type too"),
    ],
)
def test_bad_speculative_options_are_refused(options, message):
    with pytest.raises(SpecError, match=message):
        EngineSpec(model=Path("m.gguf"), **options)


def test_draft_model_with_another_vocabulary_is_refused_before_starting(model_path, tmp_path):
    import gguf

    other = tmp_path / "other-vocab.gguf"
    writer = gguf.GGUFWriter(str(other), "llama")
    writer.add_token_list([f"tok{i}" for i in range(32)])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    server = LlamaServer(EngineSpec(model=model_path, threads=1, draft_model=other))
    with pytest.raises(SpecError, match="32-token vocabulary.*262,144"):
        server.start()
    assert not server.running()


def test_in_process_engine_refuses_speculation(model_path):
    from llmops_lib.engines import InProcessEngine

    with pytest.raises(SpecError, match="LlamaServer"):
        InProcessEngine(EngineSpec(model=model_path, spec_type="ngram-simple")).start()
