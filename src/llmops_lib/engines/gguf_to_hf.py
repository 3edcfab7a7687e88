"""Worker: de-quantize a GGUF into a Hugging Face folder with transformers.

Runs inside vLLM's own environment (transformers, torch, accelerate and gguf live there, not in
ours), started by `llmops_lib.engines.hf_export.export_hf`; it therefore imports nothing from
llmops_lib. Usage: python gguf_to_hf.py MODEL.gguf OUT_DIR

Explained in: book/chapters/02_optimization/choosing_an_engine.ipynb
"""

from __future__ import annotations

import sys
from pathlib import Path


def convert(gguf: Path, out: Path) -> None:
    """Write model (bf16 safetensors), config and a tokenizer that adds <bos> into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Gemma is trained with <bos> first; llama.cpp adds it from the GGUF's metadata, and the
    # tokenizer converted from the GGUF must do the same or every prompt is out of distribution.
    tokenizer.add_bos_token = True
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # The weights were de-quantized while loading; what remains of "GGUF quantization" is a marker
    # that makes save_pretrained refuse. The saved folder is plain bf16.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    reloaded = AutoTokenizer.from_pretrained(out)
    ids = reloaded("Hello").input_ids
    if not ids or ids[0] != reloaded.bos_token_id:
        raise SystemExit(f"the exported tokenizer does not add <bos> (ids {ids[:4]}, bos {reloaded.bos_token_id})")
    print(
        f"exported {gguf.name}: {sum(p.numel() for p in model.parameters()):,} parameters, bos {reloaded.bos_token_id}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
