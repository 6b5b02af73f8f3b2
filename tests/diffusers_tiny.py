"""Tiny random diffusers image-editing pipelines, written in the real on-disk layout.

Every builder makes the pipeline's real classes (transformer or UNet, VAE, text encoders,
tokenizers, scheduler) from small configs with random weights, and saves it with
``save_pretrained``: a folder with ``model_index.json`` and one sub-folder per component, as on the
Hugging Face hub. Nothing is downloaded:

- CLIP tokenizers use the BPE merges that ship inside open_clip (the first few thousand only, so
  the vocabulary stays small), in the vocab.json + merges.txt layout of ``CLIPTokenizer``;
- the T5 tokenizer is a small hand-written Unigram vocabulary;
- the Qwen2 tokenizer is a byte-level BPE trained locally with ``tokenizers`` on a few sentences,
  with Qwen's special tokens; the Qwen2-VL processor wraps it with a small-image image processor.

Building takes a few seconds per family; tests cache the folders per session (see
``tiny_pipelines`` in test_editors_diffusers.py).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

TEXT_HIDDEN = 32  # hidden size of every tiny text encoder (= the transformer's joint attention dim)

FAMILY_CLASSES = {
    "flux-kontext": "FluxKontextPipeline",
    "qwen-image-edit": "QwenImageEditPipeline",
    "qwen-image-edit-plus": "QwenImageEditPlusPipeline",
    "instruct-pix2pix": "StableDiffusionInstructPix2PixPipeline",
}

_WORDS = ("make the sky red add a cat on sofa remove dog replace with blue hat change color of car to green "
          "turn it into wood put two cups keep everything else same picture image user assistant system describe")


def clip_tokenizer(merges: int = 2000):
    """A CLIPTokenizer whose vocabulary is built from open_clip's BPE file (first ``merges`` merges)."""
    import open_clip.tokenizer as oct
    from transformers import CLIPTokenizer

    with gzip.open(oct.default_bpe(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1 : merges + 1]  # line 0 is a version header
    pairs = [tuple(line.split()) for line in lines]
    alphabet = list(oct.bytes_to_unicode().values())
    vocab_list = alphabet + [a + "</w>" for a in alphabet] + ["".join(p) for p in pairs]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    tok = CLIPTokenizer(vocab=vocab, merges=pairs)
    tok.model_max_length = 77
    return tok


def t5_tokenizer():
    """A T5 tokenizer over a small hand-made Unigram vocabulary (pad, eos, unk first, as T5's)."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    words = sorted(set(_WORDS.split()))
    pieces += [("\u2581" + w, -5.0 - 0.01 * i) for i, w in enumerate(words)]
    chars = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()"))
    pieces += [(c, -10.0) for c in chars]
    return T5TokenizerFast(vocab=pieces, extra_ids=0)


QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]  # fmt: skip


def qwen_tokenizer(folder: Path):
    """A Qwen2Tokenizer: byte-level BPE trained here on a few sentences, Qwen's special tokens added."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=QWEN_SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator([_WORDS] * 5, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    vocab = tok.get_vocab()
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    qt = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    qt.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL[1:]})  # never split by the BPE
    return qt


def qwen25vl_text_encoder(tokenizer, seed: int):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    text = dict(
        vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )  # fmt: skip
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=TEXT_HIDDEN,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                  fullatt_block_indexes=[0])  # fmt: skip
    cfg = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(cfg).eval()


def clip_text_encoder(vocab_size: int, seed: int):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, projection_dim=TEXT_HIDDEN,
                         bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    return CLIPTextModel(cfg).eval()


def build_instruct_pix2pix(folder: Path, seed: int = 0) -> Path:
    """StableDiffusionInstructPix2PixPipeline: 2-block UNet with 8 input channels, 4-level VAE, CLIP text."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )

    tok = clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=8, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN, attention_head_dim=4, norm_num_groups=4,
    )  # fmt: skip
    # Four levels, as Stable Diffusion's VAE: 8x downsampling, so a 64x64 image is an 8x8 latent.
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        norm_num_groups=4, layers_per_block=1, sample_size=64)  # fmt: skip
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=clip_text_encoder(len(tok), seed), tokenizer=tok, unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


def build_flux_kontext(folder: Path, seed: int = 0) -> Path:
    """FluxKontextPipeline: 1+1-layer Flux transformer, 4-level VAE (scale 8), CLIP + T5 text encoders."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    tok, tok2 = clip_tokenizer(), t5_tokenizer()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=TEXT_HIDDEN, pooled_projection_dim=TEXT_HIDDEN,
        guidance_embeds=True, axes_dims_rope=(4, 6, 6),
    )  # fmt: skip
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        norm_num_groups=4, layers_per_block=1, sample_size=32, use_quant_conv=False,
                        use_post_quant_conv=False, shift_factor=0.1, scaling_factor=0.5)  # fmt: skip
    t5 = T5EncoderModel(T5Config(vocab_size=len(tok2), d_model=TEXT_HIDDEN, d_kv=8, d_ff=64, num_layers=1,
                                 num_heads=2, relative_attention_num_buckets=8)).eval()  # fmt: skip
    pipe = FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                  base_image_seq_len=256, max_image_seq_len=4096),
        vae=vae, text_encoder=clip_text_encoder(len(tok), seed), tokenizer=tok, text_encoder_2=t5,
        tokenizer_2=tok2, transformer=transformer,
    )  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


def _qwen_parts(folder: Path, seed: int):
    import torch
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    tok = qwen_tokenizer(folder / "_tokenizer_build")
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
                                 tokenizer=tok, video_processor=Qwen2VLVideoProcessor())  # fmt: skip
    z = 4
    torch.manual_seed(seed)
    vae = AutoencoderKLQwenImage(base_dim=4, z_dim=z, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                 temperal_downsample=[False, True, True],
                                 latents_mean=[0.0] * z, latents_std=[1.0] * z)  # fmt: skip
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=4 * z, out_channels=z, num_layers=1,
                                              attention_head_dim=16, num_attention_heads=2,
                                              joint_attention_dim=TEXT_HIDDEN, axes_dims_rope=(4, 6, 6))  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                                                base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02,
                                                time_shift_type="exponential")  # fmt: skip
    return dict(scheduler=scheduler, vae=vae, text_encoder=qwen25vl_text_encoder(tok, seed), tokenizer=tok,
                processor=processor, transformer=transformer)


def build_qwen_image_edit(folder: Path, seed: int = 0, plus: bool = False) -> Path:
    """QwenImageEditPipeline (or the multi-image Plus/2509 variant): tiny Qwen-Image transformer, a
    4-channel Qwen-Image VAE, a 1-layer Qwen2.5-VL text encoder with its processor."""
    import shutil

    from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline

    cls = QwenImageEditPlusPipeline if plus else QwenImageEditPipeline
    parts = _qwen_parts(folder, seed)
    cls(**parts).save_pretrained(folder)
    shutil.rmtree(folder / "_tokenizer_build")
    return folder


BUILDERS = {
    "instruct-pix2pix": build_instruct_pix2pix,
    "flux-kontext": build_flux_kontext,
    "qwen-image-edit": build_qwen_image_edit,
    "qwen-image-edit-plus": lambda folder, seed=0: build_qwen_image_edit(folder, seed, plus=True),
}


# Call arguments that keep the tiny pipelines fast (64x64 work, 2 steps); the adapter gets the same
# values as -M options so that tests compare like with like.
FAST_OPTIONS = {
    "instruct-pix2pix": {"steps": 2},
    "flux-kontext": {"steps": 2, "max_area": 64 * 64, "kontext_auto_resize": False},
    "qwen-image-edit": {"steps": 2, "height": 64, "width": 64},
    "qwen-image-edit-plus": {"steps": 2, "height": 64, "width": 64},
}
