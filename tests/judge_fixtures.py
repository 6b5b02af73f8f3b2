"""Shared helpers of the judge tests: fake backends and tiny random models saved to disk.

Fakes identify an image by its top-left pixel (tests draw solid images of distinct colours), so
a test says "in image A, phrase P has these boxes" and "the VLM answers X to template T".
The tiny models are real transformers / open_clip architectures with random weights, written
with ``save_pretrained`` (or open_clip's checkpoint layout) and loaded back by path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from micebench.judges.backends.detector import Detection
from micebench.judges.backends.vlm import VLMError, VLMReply
from micebench.spec import JudgeRequest, Session, Turn

PALETTE = {
    "src": (200, 10, 10),
    "out1": (10, 200, 10),
    "out2": (10, 10, 200),
    "out3": (200, 200, 10),
}


def solid(name: str, size: int = 64) -> Image.Image:
    return Image.new("RGB", (size, size), PALETTE[name])


def image_name(img: Any) -> str:
    px = img.getpixel((0, 0))
    for name, colour in PALETTE.items():
        if tuple(px) == colour:
            return name
    return "?"


def det(x1: float, y1: float, x2: float, y2: float, score: float = 0.9, label: str = "") -> Detection:
    return Detection(box=(x1, y1, x2, y2), score=score, label=label)


class FakeDetector:
    """Boxes from a table {image name: {phrase: [Detection, ...]}}, filtered by the threshold."""

    name = "fake-detector"
    revision = "r0"

    def __init__(self, table: dict[str, dict[str, list[Detection]]]) -> None:
        self.table = table
        self.calls: list[tuple[str, tuple[str, ...], float]] = []

    def detect(self, image: Any, phrases: list[str], threshold: float) -> list[Detection]:
        name = image_name(image)
        self.calls.append((name, tuple(phrases), threshold))
        found = [d for p in phrases for d in self.table.get(name, {}).get(p, []) if d.score >= threshold]
        return sorted(found, key=lambda d: -d.score)


class FakeVLM:
    """Answers from ``answer(prompt, image_names, vote) -> str`` (or raises VLMError); records calls."""

    name = "fake-vlm"
    revision = "v0"

    def __init__(self, answer: Callable[[str, list[str], int], str] | str, finish_reason: str = "stop") -> None:
        self.answer = answer if callable(answer) else (lambda p, i, v, a=answer: a)
        self.finish_reason = finish_reason
        self.calls: list[tuple[str, list[str], int]] = []
        self._lock = threading.Lock()

    def ask(self, images, prompt, *, temperature, max_tokens, vote=0):
        names = [image_name(im) for im in images]
        with self._lock:
            self.calls.append((prompt, names, vote))
        text = self.answer(prompt, names, vote)
        if isinstance(text, VLMReply):
            return text
        return VLMReply(text=text, finish_reason=self.finish_reason)


def failing_vlm(message: str = "server down") -> FakeVLM:
    def fail(p, i, v):
        raise VLMError(message, raw="<html>502</html>")

    return FakeVLM(fail)


def session(turns: list[Turn], subset: str = "cm", sid: str = "s1") -> Session:
    return Session(id=sid, suite="test", subset=subset, source_image="/nonexistent/src.png", turns=tuple(turns))


def turn(task_type: str, formatted: str, instruction: str | None = None, **kw: Any) -> Turn:
    return Turn(instruction=instruction or formatted.replace("[", "").replace("]", ""), task_type=task_type,
                formatted_instruction=formatted, **kw)  # fmt: skip


def request(sess: Session, turn_index: int, size: int = 64) -> JudgeRequest:
    outs = tuple(solid(f"out{k + 1}", size) for k in range(turn_index + 1))
    return JudgeRequest(session=sess, turn_index=turn_index, source_image=solid("src", size), outputs=outs)


# ----- tiny random models saved in the real on-disk layout --------------------------------------


def save_tiny_dinov3(path: Path, hidden: int = 32, registers: int = 4, image_size: int = 64, seed: int = 0) -> Path:
    import torch
    from transformers import DINOv3ViTConfig, DINOv3ViTImageProcessor, DINOv3ViTModel

    torch.manual_seed(seed)
    cfg = DINOv3ViTConfig(
        hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=16,
        num_register_tokens=registers, image_size=image_size,
    )  # fmt: skip
    model = DINOv3ViTModel(cfg).eval()
    model.save_pretrained(path)
    DINOv3ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path


def save_tiny_grounding_dino(path: Path, seed: int = 0) -> Path:
    """A 4-stage tiny Swin + 1-layer BERT GroundingDINO (about 170k parameters); inputs 256x256."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )  # fmt: skip

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(["a cat . a dog . red mug . sofa lamp bed apple vase book cup ."] * 10, trainer)
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "wordpiece.json"))
    bert_tok = BertTokenizerFast(tokenizer_file=str(path / "wordpiece.json"), model_max_length=256)
    swin = SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4, image_size=256,
                      out_features=["stage2", "stage3", "stage4"])  # fmt: skip
    bert = BertConfig(vocab_size=len(bert_tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=256)  # fmt: skip
    cfg = GroundingDinoConfig(
        backbone_config=swin, text_config=bert, d_model=32, encoder_layers=1, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        num_queries=10, num_feature_levels=4, encoder_n_points=2, decoder_n_points=2, use_timm_backbone=False,
        max_text_len=256, backbone=None, use_pretrained_backbone=False,
    )  # fmt: skip
    torch.manual_seed(seed)
    GroundingDinoForObjectDetection(cfg).eval().save_pretrained(path)
    images = GroundingDinoImageProcessor(size={"shortest_edge": 256, "longest_edge": 256})
    GroundingDinoProcessor(image_processor=images, tokenizer=bert_tok).save_pretrained(path)
    return path


QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_qwen25vl(path: Path, seed: int = 0) -> Path:
    """A Qwen2.5-VL with a 1-layer vision tower and 1-layer LM (about 100k parameters), byte-level BPE."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )  # fmt: skip

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(["yes no the user assistant picture color red mug FINAL round"] * 5, trainer)
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "bpe.json"))
    ft = PreTrainedTokenizerFast(tokenizer_file=str(path / "bpe.json"), eos_token="<|im_end|>",
                                 pad_token="<|endoftext|>")  # fmt: skip
    ids = {t: ft.convert_tokens_to_ids(t) for t in special}
    text = dict(
        vocab_size=len(ft), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )  # fmt: skip
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[0])  # fmt: skip
    cfg = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(path)
    Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112), tokenizer=ft,
        video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN_TEMPLATE,
    ).save_pretrained(path)  # fmt: skip
    return path


TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def save_tiny_clip(directory: Path, name: str = "tiny-clip-test", seed: int = 0) -> tuple[Path, Path]:
    """A tiny random open_clip model: (architecture JSON, checkpoint file with its state dict)."""
    import json

    import open_clip
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    cfg = directory / f"{name}.json"
    cfg.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg)
    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    ckpt = directory / f"{name}.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    return cfg, ckpt
