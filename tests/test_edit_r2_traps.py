"""Unit tests for the BAGEL details that are easy to get wrong (BAGEL_FACTS 'traps'), each checked
against a reference computed a different way."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from edit_r2_tiny import one_torch_thread  # noqa: E402

from micebench.editors.edit_r2.attention import attend, bottom_right_causal_mask  # noqa: E402
from micebench.editors.edit_r2.context import VAE_RESIZE, VIT_RESIZE, resize_size  # noqa: E402
from micebench.editors.edit_r2.generation import extract_instruction, mode_for_subset, rewrite_request  # noqa: E402
from micebench.editors.edit_r2.llm import apply_rope, rope_cos_sin, rope_inv_freq  # noqa: E402
from micebench.editors.edit_r2.model import sincos_2d_table, timestep_frequency_embedding  # noqa: E402
from micebench.editors.edit_r2.sampler import SamplerSettings, combine_cfg, sample, shifted_timesteps  # noqa: E402
from micebench.editors.edit_r2.vae import latent_to_tokens, tokens_to_latent  # noqa: E402
from micebench.editors.edit_r2.vit import extrapolate_position_ids, patchify  # noqa: E402

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)


# -- causal mask alignment ------------------------------------------------------------------------
def test_bottom_right_mask_matches_full_sequence_causal_attention():
    """A chunk of Lq queries after Lk-Lq cached keys must equal the last Lq rows of ordinary
    (top-left) causal attention over the whole sequence."""
    g = torch.Generator().manual_seed(0)
    total, lq, heads, d = 11, 4, 2, 8
    q = torch.randn(total, heads, d, generator=g)
    k = torch.randn(total, heads, d, generator=g)
    v = torch.randn(total, heads, d, generator=g)
    full = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True)
    reference = full.transpose(0, 1)[-lq:]
    chunk = attend(q[-lq:], k, v, causal=True, impl="sdpa")
    torch.testing.assert_close(chunk, reference, atol=1e-6, rtol=1e-5)
    # SDPA's own is_causal on the chunk is top-left aligned, which is the trap: it differs
    wrong = F.scaled_dot_product_attention(
        q[-lq:].transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True
    ).transpose(0, 1)
    assert not torch.allclose(wrong, reference, atol=1e-3)


def test_bottom_right_mask_explicit_entries():
    m = bottom_right_causal_mask(2, 5)
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    with pytest.raises(ValueError):
        bottom_right_causal_mask(3, 2)


def test_grouped_kv_heads_read_head_h_div_group():
    g = torch.Generator().manual_seed(1)
    hq, hkv, d = 6, 2, 4
    q = torch.randn(3, hq, d, generator=g)
    k, v = torch.randn(5, hkv, d, generator=g), torch.randn(5, hkv, d, generator=g)
    out = attend(q, k, v, causal=False, impl="sdpa")
    for h in range(hq):
        kh, vh = k[:, h // (hq // hkv)], v[:, h // (hq // hkv)]
        w = torch.softmax(q[:, h] @ kh.T / math.sqrt(d), dim=-1)
        torch.testing.assert_close(out[:, h], w @ vh, atol=1e-5, rtol=1e-5)


# -- RoPE -----------------------------------------------------------------------------------------
def test_rope_is_rotate_half_form_against_complex_reference():
    d, pos = 8, torch.tensor([0, 3, 7])
    x = torch.randn(3, 1, d, generator=torch.Generator().manual_seed(2))
    inv = rope_inv_freq(d, 10000.0)
    cos, sin = rope_cos_sin(pos, inv)
    got = apply_rope(x, cos, sin)
    # rotate-half pairs dim k with dim k + d/2 (not 2k with 2k+1)
    z = torch.complex(x[..., : d // 2], x[..., d // 2 :])
    rot = z * torch.polar(torch.ones(3, d // 2), pos[:, None].float() * inv[None])[:, None, :]
    torch.testing.assert_close(got, torch.cat([rot.real, rot.imag], dim=-1), atol=1e-5, rtol=1e-5)
    assert torch.allclose(inv[1], torch.tensor(10000.0 ** (-2 / d)))


def test_rope_bf16_rounding_option_changes_only_by_bf16_rounding():
    exact = rope_inv_freq(128, 1e6)
    rounded = rope_inv_freq(128, 1e6, round_to_bf16=True)
    assert not torch.equal(exact, rounded)
    torch.testing.assert_close(rounded, exact.to(torch.bfloat16).float())


# -- 2-D sin-cos tables ---------------------------------------------------------------------------
def test_sincos_table_against_elementwise_reference():
    dim, grid = 16, 5
    table = sincos_2d_table(dim, grid).numpy()
    assert table.shape == (grid * grid, dim)
    quarter = dim // 4
    for r in range(grid):
        for c in range(grid):
            row = table[r * grid + c]
            for k in range(quarter):
                w = 10000.0 ** (-k / quarter)
                # column coordinate in the first half, row in the second; sin before cos
                assert row[k] == pytest.approx(math.sin(c * w), abs=1e-6)
                assert row[quarter + k] == pytest.approx(math.cos(c * w), abs=1e-6)
                assert row[2 * quarter + k] == pytest.approx(math.sin(r * w), abs=1e-6)
                assert row[3 * quarter + k] == pytest.approx(math.cos(r * w), abs=1e-6)
    assert table.dtype == np.float32


# -- time embedding -------------------------------------------------------------------------------
def test_time_embedding_cos_first_and_t_not_scaled():
    emb = timestep_frequency_embedding(torch.tensor([0.0, 0.5]), dim=256)
    assert emb.shape == (2, 256)
    torch.testing.assert_close(emb[0, :128], torch.ones(128))  # cos(0) first
    torch.testing.assert_close(emb[0, 128:], torch.zeros(128))
    k = 5
    f = math.exp(-math.log(10000) * k / 128)
    assert emb[1, k].item() == pytest.approx(math.cos(0.5 * f), abs=1e-6)
    assert emb[1, 128 + k].item() == pytest.approx(math.sin(0.5 * f), abs=1e-6)


# -- schedule and sampler -------------------------------------------------------------------------
def test_shifted_schedule_values():
    ts = shifted_timesteps(5, 3.0)
    raw = [1.0, 0.75, 0.5, 0.25, 0.0]
    for got, t in zip(ts.tolist(), raw, strict=True):
        assert got == pytest.approx(3 * t / (1 + 2 * t), abs=1e-6)
    torch.testing.assert_close(shifted_timesteps(4, 1.0), torch.linspace(1, 0, 4))
    with pytest.raises(ValueError):
        shifted_timesteps(1, 3.0)


def test_sampler_evaluates_n_minus_one_times_and_takes_euler_steps():
    calls = []

    def v(x, t):
        calls.append(t)
        return torch.ones_like(x)

    settings = SamplerSettings(steps=3, shift=3.0, cfg_text=1.0, cfg_img=1.0)
    x = sample(torch.zeros(2, 64), settings, v, v, v)
    ts = shifted_timesteps(3, 3.0)
    assert calls == pytest.approx(ts[:2].tolist())
    torch.testing.assert_close(x, torch.full((2, 64), -1.0))  # x + v * (0 - 1) with v == 1


def test_cfg_interval_gates_the_guidance_branches():
    seen = {"tu": [], "iu": []}

    def vc(x, t):
        return torch.ones_like(x)

    def tu(x, t):
        seen["tu"].append(t)
        return torch.zeros_like(x)

    def iu(x, t):
        seen["iu"].append(t)
        return torch.zeros_like(x)

    settings = SamplerSettings(steps=5, shift=1.0, cfg_interval=(0.4, 0.9))
    sample(torch.zeros(1, 4), settings, vc, tu, iu)
    assert seen["tu"] == pytest.approx([0.75, 0.5]) and seen["iu"] == pytest.approx([0.75, 0.5])


def _branches():
    g = torch.Generator().manual_seed(3)
    return (torch.randn(4, 8, generator=g) for _ in range(3))


def test_cfg_text_channel_formula():
    vc, vt, vi = _branches()
    got = combine_cfg(vc, vt, vi, 4.0, 2.0, "text_channel")
    txt = vt + 4.0 * (vc - vt)
    for n in range(4):  # per token, by hand
        r = min(max(vc[n].norm().item() / (txt[n].norm().item() + 1e-8), 0.0), 1.0)
        want = vi[n] + 2.0 * (txt[n] * r - vi[n])
        torch.testing.assert_close(got[n], want, atol=1e-5, rtol=1e-5)


def test_cfg_global_and_channel_formulas_differ_by_norm_axis():
    vc, vt, vi = _branches()
    both = vi + 2.0 * ((vt + 4.0 * (vc - vt)) - vi)
    g = combine_cfg(vc, vt, vi, 4.0, 2.0, "global")
    torch.testing.assert_close(g, both * min(vc.norm() / (both.norm() + 1e-8), 1.0), atol=1e-5, rtol=1e-5)
    c = combine_cfg(vc, vt, vi, 4.0, 2.0, "channel")
    ratio = (vc.norm(dim=-1) / (both.norm(dim=-1) + 1e-8)).clamp(0, 1)
    torch.testing.assert_close(c, both * ratio[:, None], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(g, c)
    torch.testing.assert_close(combine_cfg(vc, vt, vi, 4.0, 2.0, "none"), both)


def test_cfg_renorm_min_and_scales_at_most_one():
    vc, vt, vi = _branches()
    tiny = vc * 1e-3
    out = combine_cfg(tiny, vt, vi, 4.0, 1.0, "text_channel", renorm_min=0.5)
    txt = vt + 4.0 * (tiny - vt)
    torch.testing.assert_close(out, txt * 0.5)  # ratio clamped up to renorm_min
    torch.testing.assert_close(combine_cfg(vc, vt, vi, 1.0, 2.0, "text_channel"), vc)  # guidance off
    with pytest.raises(ValueError):
        combine_cfg(vc, vt, vi, 4.0, 2.0, "bogus")


# -- packing orders -------------------------------------------------------------------------------
def test_vit_patchify_matches_conv_patch_embedding():
    g = torch.Generator().manual_seed(4)
    img = torch.randn(3, 28, 42, generator=g)
    conv_w, conv_b = torch.randn(5, 3, 14, 14, generator=g), torch.randn(5, generator=g)
    ref = F.conv2d(img[None], conv_w, conv_b, stride=14)[0].flatten(1).T  # [(2*3), 5], row-major
    lin_w = conv_w.permute(0, 2, 3, 1).reshape(5, -1)  # (row, col, channel), channel fastest
    torch.testing.assert_close(patchify(img, 14) @ lin_w.T + conv_b, ref, atol=1e-4, rtol=1e-4)
    assert extrapolate_position_ids(2, 3, 70).tolist() == [0, 1, 2, 70, 71, 72]


def test_latent_token_order_and_roundtrip():
    lat = torch.arange(16 * 4 * 6, dtype=torch.float32).reshape(16, 4, 6)
    tok = latent_to_tokens(lat)
    assert tok.shape == (6, 64)
    h, w, pi, qi, c = 1, 2, 1, 0, 5  # token (1, 2), patch pixel (1, 0), channel 5
    assert tok[h * 3 + w, (2 * pi + qi) * 16 + c] == lat[c, 2 * h + pi, 2 * w + qi]
    torch.testing.assert_close(tokens_to_latent(tok, 2, 3, 16), lat)


def test_resize_rule():
    assert resize_size(512, 512, *VAE_RESIZE) == (512, 512)
    assert resize_size(512, 512, *VIT_RESIZE) == (518, 518)
    assert resize_size(64, 64, *VAE_RESIZE) == (512, 512)
    assert resize_size(2000, 1000, *VAE_RESIZE) == (1024, 512)
    w, h = resize_size(640, 480, *VAE_RESIZE)
    assert (w % 16, h % 16) == (0, 0) and min(w, h) == 512


# -- IC-CoT text handling -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("output", "want", "reason"),
    [
        ("<think> it is the cat </think> make the cat blue", "make the cat blue", None),
        ("  <think>a</think>\n  paint the car red  ", "paint the car red", None),
        ("<think>a</think> x </think> y", "x </think> y", None),
        ("", "ORIG", "empty output"),
        ("   ", "ORIG", "empty output"),
        ("<think> never closed", "ORIG", "no closing </think> tag"),
        ("just an answer", "ORIG", "no closing </think> tag"),
        ("<think>all thought</think>   ", "ORIG", "nothing after </think>"),
    ],
)
def test_extract_instruction(output, want, reason):
    assert extract_instruction(output, "ORIG") == (want, reason)


def test_rewrite_request_lists_original_history_and_mode_task():
    text = rewrite_request(["add a hat", "make it red"], "remove it", "cu")
    assert "Round 1: add a hat\nRound 2: make it red" in text
    assert '"remove it"' in text and "vague" in text
    assert rewrite_request([], "x", "cm") != rewrite_request([], "x", "generic")
    with pytest.raises(ValueError):
        rewrite_request([], "x", "other")
    assert [mode_for_subset(s) for s in ("cm", "CU", "", "photos")] == ["cm", "cu", "generic", "generic"]
