"""Depth pruning: GGUF surgery on the real model, checked by reading the bytes back and by llama.cpp itself."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest

from llmops_lib.engines import EngineSpec, InProcessEngine
from llmops_lib.errors import SpecError
from llmops_lib.gguf_header import read_header
from llmops_lib.optimize.prune import DepthPruner, PruneSettings, least_important, prune_gguf

PATTERN_KEY = b"gemma3.attention.sliding_window_pattern"


@pytest.fixture(scope="module")
def pruner(model_path, tmp_path_factory) -> DepthPruner:
    settings = PruneSettings(n_ctx=64, threads=1, prompt_tokens=32, generate_tokens=4)
    return DepthPruner(model_path, prune_settings=settings, cache=tmp_path_factory.mktemp("prune-cache"))


def _pattern(path) -> list[bool]:
    """The per-layer sliding-window array, decoded from the raw header (independently of the writer)."""
    head = path.read_bytes()[: read_header(path).data_offset]
    at = head.index(PATTERN_KEY) + len(PATTERN_KEY)
    kind, item, count = struct.unpack_from("<IIQ", head, at)
    assert (kind, item) == (9, 7), "an ARRAY (9) of BOOL (7)"
    return [bool(b) for b in head[at + 16 : at + 16 + count]]


def _tensor_bytes(path, name: str) -> bytes:
    header = read_header(path)
    tensor = next(t for t in header.tensors if t.name == name)
    with path.open("rb") as stream:
        stream.seek(header.data_offset + tensor.offset)
        return stream.read(tensor.n_bytes)


def test_pruned_file_declares_fewer_blocks_renumbers_them_and_keeps_their_attention(model_path, tmp_path):
    pruned = prune_gguf(model_path, [0, 5], tmp_path / "pruned.gguf")
    header, source = read_header(pruned), read_header(model_path)
    assert header.fields["gemma3.block_count"] == 16
    assert {t.name.split(".")[1] for t in header.tensors if t.name.startswith("blk.")} == {str(i) for i in range(16)}
    assert len(header.tensors) == len(source.tensors) - 2 * 13  # 13 tensors per Gemma 3 block
    # blocks 1-4, 6-17 kept: llama.cpp's Gemma 3 has full attention in layers 5, 11, 17 (every sixth)
    assert _pattern(pruned) == [True] * 9 + [False] + [True] * 5 + [False]
    assert _tensor_bytes(pruned, "blk.4.attn_q.weight") == _tensor_bytes(model_path, "blk.6.attn_q.weight")
    assert _tensor_bytes(pruned, "token_embd.weight") == _tensor_bytes(model_path, "token_embd.weight")


def test_pruned_file_loads_and_generates(model_path, tmp_path):
    pruned = prune_gguf(model_path, [13, 14], tmp_path / "pruned.gguf")
    with InProcessEngine(EngineSpec(model=pruned, n_ctx=128, threads=1)) as engine:
        done = engine.complete("The capital of France is", max_tokens=8, ignore_eos=True)
    assert done.completion_tokens == 8 and done.text.strip()


def test_an_unpruned_copy_has_zero_kl(pruner, tmp_path):
    copy = prune_gguf(pruner.source, [], tmp_path / "copy.gguf")
    scores = pruner.divergence(copy)
    assert np.allclose(scores.kl, 0.0, atol=1e-6) and scores.same_top.all()


def test_removing_a_block_equals_a_block_that_adds_nothing(pruner, tmp_path):
    """Oracle: a Gemma 3 block adds post-normed outputs to the residual stream; with both post-norm weights
    zeroed it adds exactly 0. Removing block 3 must give the same distributions, which holds only if the
    later blocks keep their attention type (block 5, full attention, must not become block 4, sliding)."""
    bypassed = tmp_path / "bypassed.gguf"
    shutil.copyfile(pruner.source, bypassed)
    header = read_header(bypassed)
    with bypassed.open("r+b") as stream:
        for tensor in header.tensors:
            if tensor.name in ("blk.3.post_attention_norm.weight", "blk.3.post_ffw_norm.weight"):
                stream.seek(header.data_offset + tensor.offset)
                stream.write(b"\0" * tensor.n_bytes)
    removed = pruner.divergence(prune_gguf(pruner.source, [3], tmp_path / "removed.gguf"))
    reference = pruner.divergence(bypassed)
    assert reference.kl.mean() > 0.1, "the block matters, so the comparison can tell"
    np.testing.assert_allclose(removed.token_logprobs, reference.token_logprobs, atol=1e-4)


@pytest.mark.parametrize(
    ("drop", "message"),
    [([18], "no block 18 in a model of 18 blocks"), ([-1, 2], "no block -1"), (range(18), "leaves no model")],
)
def test_bad_layer_indices_are_refused_with_what_to_do_and_nothing_written(model_path, tmp_path, drop, message):
    with pytest.raises(SpecError, match=message):
        prune_gguf(model_path, drop, tmp_path / "pruned.gguf")
    assert list(tmp_path.iterdir()) == []


def test_layer_importance_and_speed_of_a_pruned_copy(pruner):
    importance = pruner.layer_importance([5, 17])
    assert [(r.layer, r.attention) for r in importance] == [(5, "full"), (17, "full")]
    assert all(r.kl > 0.01 for r in importance)
    assert least_important(importance, 1) == [min(importance, key=lambda r: r.kl).layer]
    with pytest.raises(SpecError, match="no block 40"):
        pruner.layer_importance([40])
    full, pruned = pruner.pruned_speeds({"without 17": [17]})
    assert (full.layers, pruned.layers) == (18, 17)
    assert full.kl == 0.0 and pruned.kl > 0.01
    assert pruned.prompt_tokens_per_cpu_s > 0 and pruned.generation_tokens_per_cpu_s > 0
