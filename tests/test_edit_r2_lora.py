"""Merging an Edit-R2 LoRA checkpoint (full PEFT-wrapped LLM state dict, r 64, alpha 128) onto BAGEL."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from edit_r2_tiny import TINY, build_tiny_checkpoint, one_torch_thread  # noqa: E402

from micebench.editors.edit_r2.config import CheckpointError  # noqa: E402
from micebench.editors.edit_r2.loading import load_engine  # noqa: E402

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)

TARGETS = [f"self_attn.{p}_proj{s}" for s in ("", "_moe_gen") for p in "qkvo"] + [
    f"{m}.{p}_proj" for m in ("mlp", "mlp_moe_gen") for p in ("gate", "up", "down")
]
R, ALPHA = 64, 128


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("bagel_tiny"))


def write_peft_file(ckpt, path, fsdp_prefix=False):
    """What Edit-R2 saves: the PEFT-wrapped language model's full state dict (base weights + A/B)."""
    from safetensors.torch import load_file, save_file

    ema = load_file(str(ckpt / "ema.safetensors"))
    g = torch.Generator().manual_seed(5)
    out, pairs = {}, {}
    for key, t in ema.items():
        if not key.startswith("language_model."):
            continue
        name = key[len("language_model.") :]
        module, _, leaf = name.rpartition(".")
        if any(module.endswith(tg) for tg in TARGETS):
            out[f"base_model.model.{module}.base_layer.{leaf}"] = t
            if leaf == "weight":
                a = torch.randn(R, t.shape[1], generator=g) * 0.1
                b = torch.randn(t.shape[0], R, generator=g) * 0.1
                out[f"base_model.model.{module}.lora_A.default.weight"] = a
                out[f"base_model.model.{module}.lora_B.default.weight"] = b
                pairs[key] = (a, b)
        else:
            out[f"base_model.model.{name}"] = t
    # a base weight that differs from ema: the LoRA file's own base weights win
    changed = "language_model.model.layers.0.input_layernorm.weight"
    out["base_model.model.model.layers.0.input_layernorm.weight"] = torch.full_like(ema[changed], 0.5)
    if fsdp_prefix:
        out = {k.replace("model.layers.", "model._fsdp_wrapped_module.layers.", 1): v for k, v in out.items()}
    save_file(out, str(path))
    return ema, pairs, changed


@pytest.fixture(scope="module")
def base_state(ckpt):
    engine, _ = load_engine(ckpt, "cpu", torch.float32)
    return engine.model.state_dict()


def test_merge_is_w_plus_alpha_over_r_b_a(ckpt, tmp_path, base_state):
    ema, pairs, changed = write_peft_file(ckpt, tmp_path / "model.safetensors", fsdp_prefix=True)
    engine, report = load_engine(ckpt, "cpu", torch.float32, lora=tmp_path)  # a folder holding model.safetensors
    merged = engine.model.state_dict()
    assert report.lora_scaling == ALPHA / R == 2.0
    assert len(report.lora_merged) == len(TARGETS) * TINY.llm.num_hidden_layers == len(pairs)
    for key, (a, b) in pairs.items():
        want = ema[key].float() + (ALPHA / R) * (b @ a)
        torch.testing.assert_close(merged[key], want, atol=1e-6, rtol=1e-6)
        assert not torch.allclose(merged[key], base_state[key])
    torch.testing.assert_close(merged[changed], torch.full_like(merged[changed], 0.5))
    untouched = [k for k in base_state if k not in pairs and k != changed]
    assert "vit_model.vision_model.post_layernorm.weight" in untouched and "language_model.lm_head.weight" in untouched
    for key in untouched:
        torch.testing.assert_close(merged[key], base_state[key], atol=0, rtol=0)
    # q/k/v biases come from base_layer.bias and are not changed by the LoRA
    key = "language_model.model.layers.1.self_attn.q_proj_moe_gen.bias"
    torch.testing.assert_close(merged[key], base_state[key], atol=0, rtol=0)


def test_adapter_config_alpha_is_respected(ckpt, tmp_path):
    ema, pairs, _ = write_peft_file(ckpt, tmp_path / "model.safetensors")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": R, "lora_alpha": 32}))
    engine, report = load_engine(ckpt, "cpu", torch.float32, lora=tmp_path / "model.safetensors")
    assert report.lora_scaling == 0.5
    key, (a, b) = next(iter(pairs.items()))
    torch.testing.assert_close(engine.model.state_dict()[key], ema[key].float() + 0.5 * (b @ a), atol=1e-6, rtol=1e-6)


def test_lora_errors_name_the_file_and_tensor(ckpt, tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(CheckpointError, match="LoRA file .*missing"):
        load_engine(ckpt, "cpu", torch.float32, lora=tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    prefix = "base_model.model.model.layers.0.self_attn.nope"
    a, b = torch.zeros(4, 32), torch.zeros(32, 4)
    save_file({f"{prefix}.lora_A.default.weight": a, f"{prefix}.lora_B.default.weight": b}, str(bad))
    want = r"bad\.safetensors: adapter on 'language_model\.model\.layers\.0\.self_attn\.nope'"
    with pytest.raises(CheckpointError, match=want):
        load_engine(ckpt, "cpu", torch.float32, lora=bad)
    half = tmp_path / "half.safetensors"
    save_file({"base_model.model.model.layers.0.mlp.up_proj.lora_A.default.weight": torch.zeros(4, 32)}, str(half))
    with pytest.raises(CheckpointError, match="lacks lora_B"):
        load_engine(ckpt, "cpu", torch.float32, lora=half)
