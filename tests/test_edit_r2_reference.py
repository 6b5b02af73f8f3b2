"""Cross-checks against independent implementations in ``transformers``.

- The understanding ("und") path of the MoT decoder is a Qwen2 decoder with QK-norm: it must match
  transformers' Qwen3 (RMSNorm QK-norm before RoPE, rotate-half RoPE, GQA, SwiGLU) configured with
  q/k/v biases and a zero o_proj bias, on a full sequence AND when fed in chunks through the KV cache
  (which exercises the bottom-right causal alignment) and one token at a time.
- The SigLIP encoder with a *linear* patch embedding must match transformers' SigLIP (conv patch
  embedding) once the conv kernel is reshaped the way BAGEL does.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from edit_r2_tiny import one_torch_thread  # noqa: E402

from micebench.editors.edit_r2.config import LLMConfig, ViTConfig  # noqa: E402
from micebench.editors.edit_r2.context import Context  # noqa: E402
from micebench.editors.edit_r2.llm import Qwen2MoTForCausalLM  # noqa: E402
from micebench.editors.edit_r2.vit import SiglipVisionTransformer, patchify  # noqa: E402

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)

CFG = LLMConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=64, rope_theta=10000.0)  # fmt: skip


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    ours = Qwen2MoTForCausalLM(CFG).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    hf_cfg = transformers.Qwen3Config(
        vocab_size=CFG.vocab_size, hidden_size=CFG.hidden_size, intermediate_size=CFG.intermediate_size,
        num_hidden_layers=CFG.num_hidden_layers, num_attention_heads=CFG.num_attention_heads,
        num_key_value_heads=CFG.num_key_value_heads, head_dim=CFG.head_dim, rope_theta=CFG.rope_theta,
        rms_norm_eps=CFG.rms_norm_eps, attention_bias=True, tie_word_embeddings=False, hidden_act="silu",
    )  # fmt: skip
    hf_cfg._attn_implementation = "eager"
    hf = transformers.Qwen3ForCausalLM(hf_cfg).eval()
    state = {k: v for k, v in ours.state_dict().items() if "moe_gen" not in k}
    for n in range(CFG.num_hidden_layers):
        state[f"model.layers.{n}.self_attn.o_proj.bias"] = torch.zeros(CFG.hidden_size)
    hf.load_state_dict(state, strict=True)
    return ours, hf


def our_logits(model, ids, positions, past, causal=True):
    h, kv = model.forward_chunk(model.model.embed_tokens(ids), positions, past, causal=causal)
    return model.lm_head(model.final_norm(h, gen=False)), kv


@torch.no_grad()
def test_und_path_matches_qwen3_with_biases_full_sequence(pair):
    ours, hf = pair
    ids = torch.randint(0, CFG.vocab_size, (9,), generator=torch.Generator().manual_seed(1))
    want = hf(input_ids=ids[None]).logits[0]
    got, _ = our_logits(ours, ids, torch.arange(9), None)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_und_path_matches_qwen3_in_chunks_and_token_by_token(pair):
    ours, hf = pair
    ids = torch.randint(0, CFG.vocab_size, (10,), generator=torch.Generator().manual_seed(2))
    want = hf(input_ids=ids[None]).logits[0]
    ctx = Context()
    pieces = []
    for lo, hi in ((0, 4), (4, 7), (7, 8), (8, 9), (9, 10)):  # chunks of 4, 3 (causal, bottom-right) then 1s
        logits, kv = our_logits(ours, ids[lo:hi], torch.arange(lo, hi), ctx)
        ctx = ctx.extended(kv, rope_advance=hi - lo)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces), want, atol=1e-4, rtol=1e-4)
    assert ctx.kv_len == ctx.rope == 10


@torch.no_grad()
def test_siglip_with_linear_patch_embedding_matches_conv_siglip():
    torch.manual_seed(3)
    vcfg = ViTConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=42)
    ours = SiglipVisionTransformer(vcfg).eval()
    hf_cfg = transformers.SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=14,
        image_size=42, layer_norm_eps=vcfg.layer_norm_eps, hidden_act="gelu_pytorch_tanh", vision_use_head=False,
    )  # fmt: skip
    hf_cfg._attn_implementation = "eager"
    hf = transformers.SiglipVisionModel(hf_cfg).eval()
    state = {}
    for k, v in hf.state_dict().items():
        k = k.removeprefix("vision_model.")
        if k == "embeddings.patch_embedding.weight":  # conv [out, 3, 14, 14] -> linear over (row, col, channel)
            v = v.permute(0, 2, 3, 1).reshape(v.shape[0], -1)
        state[k] = v
    ours.load_state_dict(state, strict=True)
    pixels = torch.rand(3, 42, 42) * 2 - 1
    want = hf(pixel_values=pixels[None]).last_hidden_state[0]
    got = ours(patchify(pixels, 14), torch.arange(9))  # a full 3x3 grid: ids r*3+c
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_gen_mode_routes_flagged_tokens_to_the_generation_expert(pair):
    """With the generation expert set equal to the base one, gen mode equals und mode; changing only the
    generation expert changes exactly the flagged tokens' keys at layer 0 (the markers keep theirs)."""
    ours, _ = pair
    import copy

    model = copy.deepcopy(ours)
    state = model.state_dict()
    for k in list(state):
        if "_moe_gen" in k:
            state[k] = state[k.replace("_moe_gen", "")].clone()
    model.load_state_dict(state)
    x = torch.randn(6, CFG.hidden_size, generator=torch.Generator().manual_seed(4))
    pos = torch.full((6,), 3)
    mask = torch.tensor([False, True, True, True, True, False])
    h_und, kv_und = model.forward_chunk(x, pos, None, causal=False)
    h_gen, kv_gen = model.forward_chunk(x, pos, None, causal=False, gen_span=(1, 5))
    torch.testing.assert_close(h_gen, h_und, atol=1e-5, rtol=1e-5)
    model.model.layers[0].self_attn.k_proj_moe_gen.weight.add_(0.5)
    _, kv_changed = model.forward_chunk(x, pos, None, causal=False, gen_span=(1, 5))
    k0, k1 = kv_gen[0][0], kv_changed[0][0]
    torch.testing.assert_close(k1[~mask], k0[~mask])
    assert not torch.allclose(k1[mask], k0[mask])
