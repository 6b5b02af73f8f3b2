"""Loading the tiny checkpoint written in the official BAGEL-7B-MoT layout: every key consumed, none
missing, clear errors for a missing file, a wrong shape and a config mismatch; the image-chunk rules."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from edit_r2_tiny import TINY, build_tiny_checkpoint, one_torch_thread  # noqa: E402
from PIL import Image  # noqa: E402

from micebench.editors.edit_r2.config import CheckpointError  # noqa: E402
from micebench.editors.edit_r2.context import Context  # noqa: E402
from micebench.editors.edit_r2.llm import apply_rope, rope_cos_sin, rope_inv_freq  # noqa: E402
from micebench.editors.edit_r2.loading import load_engine, resolve_weights, safetensors_shapes  # noqa: E402

LLM_LAYER_KEYS = [
    "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight", "self_attn.k_proj.bias",
    "self_attn.v_proj.weight", "self_attn.v_proj.bias", "self_attn.o_proj.weight",
    "self_attn.q_norm.weight", "self_attn.k_norm.weight",
    "self_attn.q_proj_moe_gen.weight", "self_attn.q_proj_moe_gen.bias",
    "self_attn.k_proj_moe_gen.weight", "self_attn.k_proj_moe_gen.bias",
    "self_attn.v_proj_moe_gen.weight", "self_attn.v_proj_moe_gen.bias", "self_attn.o_proj_moe_gen.weight",
    "self_attn.q_norm_moe_gen.weight", "self_attn.k_norm_moe_gen.weight",
    "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
    "mlp_moe_gen.gate_proj.weight", "mlp_moe_gen.up_proj.weight", "mlp_moe_gen.down_proj.weight",
    "input_layernorm.weight", "input_layernorm_moe_gen.weight",
    "post_attention_layernorm.weight", "post_attention_layernorm_moe_gen.weight",
]  # fmt: skip
VIT_LAYER_KEYS = [
    f"{m}.{p}"
    for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
              "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2")
    for p in ("weight", "bias")
]  # fmt: skip
TOP_KEYS = [
    "language_model.model.embed_tokens.weight", "language_model.lm_head.weight",
    "language_model.model.norm.weight", "language_model.model.norm_moe_gen.weight",
    "vit_model.vision_model.embeddings.patch_embedding.weight",
    "vit_model.vision_model.embeddings.patch_embedding.bias",
    "vit_model.vision_model.embeddings.position_embedding.weight",
    "vit_model.vision_model.post_layernorm.weight", "vit_model.vision_model.post_layernorm.bias",
    "connector.fc1.weight", "connector.fc1.bias", "connector.fc2.weight", "connector.fc2.bias",
    "vit_pos_embed.pos_embed", "latent_pos_embed.pos_embed",
    "time_embedder.mlp.0.weight", "time_embedder.mlp.0.bias", "time_embedder.mlp.2.weight", "time_embedder.mlp.2.bias",
    "vae2llm.weight", "vae2llm.bias", "llm2vae.weight", "llm2vae.bias",
]  # fmt: skip


def official_ema_keys(llm_layers: int, vit_layers: int) -> set[str]:
    keys = set(TOP_KEYS)
    keys |= {f"language_model.model.layers.{n}.{k}" for n in range(llm_layers) for k in LLM_LAYER_KEYS}
    keys |= {f"vit_model.vision_model.encoder.layers.{n}.{k}" for n in range(vit_layers) for k in VIT_LAYER_KEYS}
    return keys


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("bagel_tiny"))


@pytest.fixture(scope="module")
def loaded(ckpt):
    return load_engine(ckpt, "cpu", torch.float32)


def test_every_checkpoint_key_consumed_and_none_missing(ckpt, loaded):
    engine, report = loaded
    want = official_ema_keys(TINY.llm.num_hidden_layers, TINY.vit.num_hidden_layers)
    in_file = set(safetensors_shapes(ckpt / "ema.safetensors"))
    assert in_file == want  # the helper writes exactly the official names
    assert set(report.ema_keys) == want  # ...and the loader consumed each of them
    assert set(engine.model.state_dict()) == want
    assert set(report.ae_keys) == set(safetensors_shapes(ckpt / "ae.safetensors"))
    assert "encoder.down.1.block.0.nin_shortcut.weight" in report.ae_keys
    assert "decoder.up.0.block.0.nin_shortcut.weight" in report.ae_keys
    assert "decoder.up.3.upsample.conv.weight" in report.ae_keys
    assert "decoder.up.0.upsample.conv.weight" not in report.ae_keys
    # the JSON says one ViT layer more than is built
    assert json.loads((ckpt / "vit_config.json").read_text())["num_hidden_layers"] == TINY.vit.num_hidden_layers + 1
    assert engine.cfg.vae.ch == 8 and engine.cfg.vae.num_res_blocks == 1  # inferred from ae.safetensors


def test_loaded_values_equal_file_values(ckpt, loaded):
    from safetensors.torch import load_file

    engine, _ = loaded
    ema = load_file(str(ckpt / "ema.safetensors"))
    state = engine.model.state_dict()
    for key in ("language_model.model.layers.1.self_attn.k_proj_moe_gen.bias", "vit_pos_embed.pos_embed"):
        torch.testing.assert_close(state[key], ema[key].float())


def _copy(ckpt, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(ckpt, dst)
    return dst


def test_missing_file_named(ckpt, tmp_path):
    dst = _copy(ckpt, tmp_path)
    (dst / "ae.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"ae\.safetensors: missing"):
        load_engine(dst, "cpu", torch.float32)


def test_wrong_shape_names_file_and_tensor(ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    dst = _copy(ckpt, tmp_path)
    ema = load_file(str(dst / "ema.safetensors"))
    ema["connector.fc1.bias"] = torch.zeros(7)
    save_file(ema, str(dst / "ema.safetensors"))
    with pytest.raises(CheckpointError, match=r"ema\.safetensors: tensor 'connector\.fc1\.bias' has shape \[7\]"):
        load_engine(dst, "cpu", torch.float32)


def test_config_mismatch_names_missing_tensors(ckpt, tmp_path):
    dst = _copy(ckpt, tmp_path)
    cfg = json.loads((dst / "llm_config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (dst / "llm_config.json").write_text(json.dumps(cfg))
    want = r"ema\.safetensors: \d+ tensor\(s\) missing, e\.g\. language_model\.model\.layers\.2"
    with pytest.raises(CheckpointError, match=want):
        load_engine(dst, "cpu", torch.float32)


def test_unknown_hub_id_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache|no such folder"):
        resolve_weights("nobody-here/not-a-model")
    with pytest.raises(CheckpointError, match="no such folder"):
        resolve_weights(str(tmp_path / "nothing"))


# -- image chunks: one shared RoPE position, bidirectional, counters ------------------------------
def test_image_chunks_share_one_rope_position_and_advance_it_by_one(loaded):
    engine, _ = loaded
    ctx = engine.add_text(Context(), "add a hat")
    n_text = len(engine.tok.encode("add a hat")) + 2
    assert (ctx.kv_len, ctx.rope) == (n_text, n_text)
    img = Image.new("RGB", (64, 64), (200, 30, 30))
    # the two halves of add_image, without its resize to 512 px (kept small for speed)
    after_vae = engine._add_vae_chunk(ctx, img)
    assert (after_vae.kv_len, after_vae.rope) == (n_text + 4 * 4 + 2, n_text + 1)
    after = engine._add_vit_chunk(after_vae, img)  # the ViT rule resizes 64 -> 224 px: 16 x 16 patches
    assert (after.kv_len, after.rope) == (n_text + 18 + 16 * 16 + 2, n_text + 2)
    # the VAE chunk's layer-0 keys, recomputed by hand with every token at position n_text
    model = engine.model
    patches, rows, cols = engine.encode_latent_tokens(img)
    tokens = model.latent_tokens(patches, 0.0, rows, cols)
    start, end = model.embed_tokens(torch.tensor([engine.tok.vision_start_id, engine.tok.vision_end_id]))
    layer = model.language_model.model.layers[0]
    att = layer.self_attn
    hd = TINY.llm.head_dim

    def keys(x, ln, proj, norm):
        return norm(proj(ln(x)).view(x.shape[0], -1, hd))

    k_lat = keys(tokens, layer.input_layernorm_moe_gen, att.k_proj_moe_gen, att.k_norm_moe_gen)
    k_mark = keys(torch.stack([start, end]), layer.input_layernorm, att.k_proj, att.k_norm)
    k = torch.cat([k_mark[:1], k_lat, k_mark[1:]])
    cos, sin = rope_cos_sin(torch.full((k.shape[0],), n_text), rope_inv_freq(hd, TINY.llm.rope_theta))
    want = apply_rope(k, cos, sin)
    got = after.kv[0][0][n_text : n_text + 4 * 4 + 2]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)

    # the ViT chunk: base expert for every token, all at position n_text + 1
    from micebench.editors.edit_r2.context import VIT_RESIZE, resize_image, to_pixels
    from micebench.editors.edit_r2.vit import extrapolate_position_ids, patchify

    small = resize_image(img, VIT_RESIZE)
    ids = extrapolate_position_ids(16, 16, 70)
    vit = model.vit_tokens(patchify(to_pixels(small), 14), ids)
    k = keys(torch.cat([start[None], vit, end[None]]), layer.input_layernorm, att.k_proj, att.k_norm)
    cos, sin = rope_cos_sin(torch.full((k.shape[0],), n_text + 1), rope_inv_freq(hd, TINY.llm.rope_theta))
    torch.testing.assert_close(after.kv[0][0][n_text + 18 :], apply_rope(k, cos, sin), atol=1e-4, rtol=1e-4)

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)


def test_generation_query_is_permutation_equivariant(loaded):
    """All latents share one position and attend bidirectionally, so permuting them permutes the output."""
    engine, _ = loaded
    ctx = engine.add_text(Context(), "make it blue")
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
    v = engine.velocity(ctx, x, 0.7, 4, 4)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    # the latent position table is added per grid cell, so permute inputs AND compare against a model
    # whose position table is constant: check equivariance with the table zeroed
    table = engine.model.latent_pos_embed.pos_embed
    saved = table.data.clone()
    table.data.zero_()
    try:
        v0 = engine.velocity(ctx, x, 0.7, 4, 4)
        vp = engine.velocity(ctx, x[perm], 0.7, 4, 4)
    finally:
        table.data.copy_(saved)
    torch.testing.assert_close(vp, v0[perm], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(v, v0, atol=1e-4)  # the table does matter when present


def test_generation_query_is_not_cached_and_text_is_causal(loaded):
    engine, _ = loaded
    ctx = engine.add_text(Context(), "add a hat")
    before = (ctx.kv_len, ctx.rope)
    engine.velocity(ctx, torch.zeros(4, 64), 1.0, 2, 2)
    assert (ctx.kv_len, ctx.rope) == before
    # causal text: a chunk's first tokens do not depend on later tokens of the same chunk
    a = engine.add_text(Context(), "add a hat to the cat")
    b = engine.add_text(Context(), "add a hat to the dog")
    n_same = 1 + len(engine.tok.encode("add a hat to the "))
    common = min(n_same, len(engine.tok.encode("add a hat to the cat")))
    torch.testing.assert_close(a.kv[1][0][: common - 1], b.kv[1][0][: common - 1])


def test_full_size_architecture_matches_the_fact_sheet():
    """Built on the meta device (no memory): the official shapes and parameter counts."""
    from micebench.editors.edit_r2.config import BagelConfig
    from micebench.editors.edit_r2.model import BagelModel
    from micebench.editors.edit_r2.vae import AutoEncoder

    cfg = BagelConfig()
    with torch.device("meta"):
        model, vae = BagelModel(cfg), AutoEncoder(cfg.vae)
    sd = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(sd) == official_ema_keys(28, 26)
    expected = {
        "language_model.model.embed_tokens.weight": (152064, 3584),
        "language_model.model.layers.27.self_attn.k_proj_moe_gen.weight": (512, 3584),
        "language_model.model.layers.0.self_attn.q_norm.weight": (128,),
        "language_model.model.layers.0.mlp_moe_gen.down_proj.weight": (3584, 18944),
        "vit_model.vision_model.embeddings.patch_embedding.weight": (1152, 588),
        "vit_model.vision_model.embeddings.position_embedding.weight": (4900, 1152),
        "vit_model.vision_model.encoder.layers.25.mlp.fc1.weight": (4304, 1152),
        "connector.fc1.weight": (3584, 1152),
        "vit_pos_embed.pos_embed": (4900, 3584),
        "latent_pos_embed.pos_embed": (4096, 3584),
        "time_embedder.mlp.0.weight": (3584, 256),
        "vae2llm.weight": (3584, 64),
        "llm2vae.weight": (64, 3584),
    }
    for key, shape in expected.items():
        assert sd[key] == shape, key
    state = model.state_dict()
    count = {p: sum(v.numel() for k, v in state.items() if k.startswith(p)) for p in ("language_model", "vit_model")}
    assert count["language_model"] == 14_141_252_608  # 28 x 466.1 M + 2 x 545.0 M
    assert round(count["vit_model"] / 1e9, 3) == 0.403
    vae_sd = vae.state_dict()
    assert round(sum(v.numel() for v in vae_sd.values()) / 1e6, 1) == 83.8
    assert sorted(k for k in vae_sd if k.endswith("nin_shortcut.weight")) == [
        "decoder.up.0.block.0.nin_shortcut.weight", "decoder.up.1.block.0.nin_shortcut.weight",
        "encoder.down.1.block.0.nin_shortcut.weight", "encoder.down.2.block.0.nin_shortcut.weight",
    ]  # fmt: skip
    assert tuple(vae_sd["encoder.conv_out.weight"].shape) == (32, 512, 3, 3)
    assert tuple(vae_sd["decoder.conv_in.weight"].shape) == (512, 16, 3, 3)
