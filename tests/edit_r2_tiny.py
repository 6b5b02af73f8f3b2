"""Build a tiny random BAGEL checkpoint in the official BAGEL-7B-MoT file layout (test helper).

Same architecture as the real model (Qwen2 MoT with both experts, QK-norm, GQA; SigLIP NaViT with a
linear patch embedding and the 70x70 position table; the FLUX VAE layout; 64x64 latent positions),
only narrower and shallower. Files written: ``ema.safetensors`` (bf16, like the official file),
``ae.safetensors`` (fp32), ``llm_config.json``, ``vit_config.json`` and Qwen2-style tokenizer files
(``tokenizer.json``, ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``) trained locally with
``tokenizers`` on a few sentences: no download.
"""

from __future__ import annotations

import json
from pathlib import Path

from micebench.editors.edit_r2.config import (
    BagelConfig,
    LLMConfig,
    VAEConfig,
    ViTConfig,
    llm_config_json,
    vit_config_json,
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
CORPUS = [
    "Add a red hat to the cat. Make it blue. Remove the dog from the picture.",
    "Editing history: Round 1: change the sky. Current instruction: replace them with apples.",
    "<think> the user means the car </think> make the car green",
    "Before you answer, reason about the request step by step, then output only the enhanced instruction.",
]

TINY = BagelConfig(
    llm=LLMConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
    ),
    vit=ViTConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2),
    vae=VAEConfig(ch=8, ch_mult=(1, 2, 4, 4), num_res_blocks=1),
)


def build_tokenizer(folder: Path, vocab_size: int = 400) -> int:
    """Train a byte-level BPE on CORPUS, save it Qwen2-style; returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.save(str(folder / "tokenizer.json"))
    tok.model.save(str(folder))  # vocab.json + merges.txt
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "Qwen2Tokenizer",
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "add_prefix_space": False,
            }
        )
    )
    return tok.get_vocab_size()


def build_tiny_checkpoint(folder: str | Path, seed: int = 0, cfg: BagelConfig = TINY) -> Path:
    """Write a random tiny checkpoint into ``folder`` and return it."""
    import torch
    from safetensors.torch import save_file

    from micebench.editors.edit_r2.model import BagelModel
    from micebench.editors.edit_r2.vae import AutoEncoder

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_vocab = build_tokenizer(folder)
    if n_vocab > cfg.llm.vocab_size:
        raise ValueError(f"tokenizer has {n_vocab} entries, more than the tiny vocab_size {cfg.llm.vocab_size}")
    torch.manual_seed(seed)
    model = BagelModel(cfg)
    with torch.no_grad():  # non-trivial norms so that a routing mix-up changes outputs
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name or "norm_moe_gen" in name:
                p.add_(0.1 * torch.randn_like(p))
    vae = AutoEncoder(cfg.vae)
    ema = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    save_file(ema, str(folder / "ema.safetensors"), metadata={"format": "pt"})
    ae = {k: v.detach().float().contiguous() for k, v in vae.state_dict().items()}
    save_file(ae, str(folder / "ae.safetensors"), metadata={"format": "pt"})
    (folder / "llm_config.json").write_text(json.dumps(llm_config_json(cfg.llm), indent=2))
    (folder / "vit_config.json").write_text(json.dumps(vit_config_json(cfg.vit), indent=2))
    return folder


def one_torch_thread():
    """Generator for an autouse fixture: tiny models run far faster on one thread on a shared 2-core box."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
