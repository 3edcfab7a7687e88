"""Engine specs: refused early when invalid, turned into the right llama-server flags."""

from pathlib import Path

import pytest

from llmops_lib.engines import EngineSpec, LlamaServer, make_engine
from llmops_lib.errors import SpecError


@pytest.mark.parametrize(
    "field, value",
    [("n_ctx", 0), ("threads", 0), ("parallel", -1), ("batch_size", 0), ("cache_type_k", "q3_z"), ("cache_type_v", "fp8")],
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
