"""The ``clip`` judge (open_clip): CLIP-I, CLIP-T and directional CLIP similarity.

Metrics, all cosine similarities of L2-normalised embeddings:

- ``clip_i_src``: output image vs source image.
- ``clip_i_prev``: output image vs previous image (the source at turn 1).
- ``clip_t``: output image vs the turn's target text.
- ``clip_dir``: directional similarity (InstructPix2Pix): cos(E(output) - E(previous),
  E(target text) - E(source text)).

Target / source texts: a turn's ``metadata["target_caption"]`` / ``["source_caption"]`` when the
suite provides them, else phrases built from the bracketed ``formatted_instruction`` (see
:func:`edit_texts`; e.g. ``Change the color of [mug] to [red]`` -> "a photo of a mug" ->
"a photo of a red mug"). A turn with neither is unscored for ``clip_t`` / ``clip_dir``;
``subject_remove`` has only an empty scene as target ("a photo"), so its ``clip_t`` is not
applicable while ``clip_dir`` is scored; an item with an empty target text is not applicable.

Batched: each call encodes the distinct images and texts of the whole batch in chunks of
``batch_size``; images are de-duplicated by object identity and by the hashes the runner passes.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from micebench.judges.base import Judge, JudgeConfig
from micebench.judges.batching import UniqueItems
from micebench.spec import Judgement, JudgeRequest, MetricSpec, Turn


def edit_texts(turn: Turn) -> tuple[str | None, str | None, str]:
    """(source text, target text, why-missing) of a turn; texts are None when not derivable."""
    src, tgt = turn.metadata.get("source_caption"), turn.metadata.get("target_caption")
    if tgt:
        return (src or None), tgt, ""
    from micebench.judges.mice.grammar import GrammarError, parse_instruction

    try:
        p = parse_instruction(turn.task_type, turn.formatted_instruction)
    except GrammarError as e:
        return None, None, f"no target text: {e}"
    f = p.fields
    photo = "a photo of"
    pairs = {
        "subject_add": ("a photo", f"{photo} {f.get('object')}"),
        "subject_remove": (f"{photo} {f.get('object')}", "a photo"),
        "subject_replace": (f"{photo} {f.get('object')}", f"{photo} {f.get('new_object')}"),
        "color_alter": (f"{photo} {f.get('object')}", f"{photo} a {f.get('color')} {f.get('object')}"),
        "material_alter": (f"{photo} {f.get('object')}", f"{photo} {f.get('object')} made of {f.get('material')}"),
        "text_change": ("a photo", f"a photo with the text \"{f.get('new_text')}\""),
        "position_change": (
            f"{photo} {f.get('object')} and {f.get('reference')}",
            f"{photo} {f.get('object')} {f.get('direction')} of {f.get('reference')}",
        ),
        "count_change": (f"{photo} {f.get('object')}", f"{photo} {f.get('count')} {f.get('object')}"),
        "background_change": ("a photo", f"{photo} something in front of a {f.get('background')} background"),
    }
    s, t = pairs[turn.task_type]
    if src:
        s = src
    if turn.task_type == "text_change" and not f.get("new_text"):
        return s, None, "invalid item: the target text is empty"
    return s, t, ""


class ClipConfig(JudgeConfig):
    model_name: str = Field("ViT-B-32", description="open_clip architecture name.")
    checkpoint: str | None = Field(
        None, description="Weights: a local file, or an open_clip pretrained tag; none = random (tests only)."
    )
    model_config_file: str | None = Field(None, description="JSON architecture to register with open_clip.")
    device: str = "auto"
    batch_size: int = Field(16, ge=1)


class ClipJudge(Judge):
    """CLIP-I / CLIP-T / directional CLIP on open_clip; model and checkpoint configurable."""

    Config: ClassVar[type[JudgeConfig]] = ClipConfig
    metrics: ClassVar[tuple[MetricSpec, ...]] = (
        MetricSpec(name="clip_i_src", role="cc", range=(-1.0, 1.0), description="CLIP image similarity to the source"),
        MetricSpec(name="clip_i_prev", role="other", range=(-1.0, 1.0),
                   description="CLIP image similarity to the previous image"),
        MetricSpec(name="clip_t", role="if", range=(-1.0, 1.0), description="CLIP similarity to the target text"),
        MetricSpec(name="clip_dir", role="if", range=(-1.0, 1.0),
                   description="directional CLIP: image change against text change"),
    )
    name: ClassVar[str] = "clip"
    version: ClassVar[str] = "1"

    def __init__(self, config: ClipConfig | None = None) -> None:
        super().__init__(config)
        self._model = None

    def _load(self) -> None:
        if self._model is not None:
            return
        import open_clip
        import torch

        c = self.config
        if c.model_config_file:
            open_clip.add_model_config(c.model_config_file)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if c.device == "auto" else c.device
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                c.model_name, pretrained=c.checkpoint, device=self.device
            )
        except (RuntimeError, FileNotFoundError, OSError) as e:
            raise RuntimeError(f"clip judge: cannot load {c.model_name!r} with checkpoint {c.checkpoint!r}: {e}") from e
        self._model = model.eval()
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(c.model_name)

    def encode_images(self, images: list[Any]):
        """L2-normalised embeddings (n, d) of PIL images, in chunks of ``batch_size``."""
        import torch

        self._load()
        from micebench.images import as_rgb_image

        chunks = []
        for start in range(0, len(images), self.config.batch_size):
            batch = images[start : start + self.config.batch_size]
            x = torch.stack([self._preprocess(as_rgb_image(im, "clip input")) for im in batch]).to(self.device)
            with torch.no_grad():
                chunks.append(torch.nn.functional.normalize(self._model.encode_image(x).float(), dim=-1))
        return torch.cat(chunks) if chunks else torch.empty(0)

    def encode_texts(self, texts: list[str]):
        import torch

        self._load()
        chunks = []
        for start in range(0, len(texts), self.config.batch_size):
            tokens = self._tokenizer(texts[start : start + self.config.batch_size]).to(self.device)
            with torch.no_grad():
                chunks.append(torch.nn.functional.normalize(self._model.encode_text(tokens).float(), dim=-1))
        return torch.cat(chunks) if chunks else torch.empty(0)

    @staticmethod
    def _text_metric(metric: str, r: JudgeRequest, tt: int | None, why: str, meta: dict, value) -> Judgement:
        if metric == "clip_t" and r.turn.task_type == "subject_remove":
            return Judgement.not_applicable(metric, "a removal has no target text", **meta)
        if tt is None:
            make = Judgement.not_applicable if why.startswith("invalid item") else Judgement.unscored
            return make(metric, why or "no target text", **meta)
        return Judgement(metric=metric, score=value(), **meta)

    def score(self, requests: list[JudgeRequest]) -> list[list[Judgement]]:
        import torch

        self._load()
        unique_images = UniqueItems()
        slot = unique_images.slot

        plans = []
        texts: list[str] = []
        tindex: dict[str, int] = {}

        def tslot(t: str) -> int:
            if t not in tindex:
                tindex[t] = len(texts)
                texts.append(t)
            return tindex[t]

        for r in requests:
            hashes = [r.source_hash, *r.output_hashes] if r.output_hashes else [""] * (len(r.outputs) + 1)
            s = slot(r.source_image, hashes[0])
            o = slot(r.output, hashes[r.turn_index + 1])
            p = slot(r.previous, hashes[r.turn_index])
            src_text, tgt_text, why = edit_texts(r.turn)
            plans.append((s, o, p, tslot(src_text) if src_text else None, tslot(tgt_text) if tgt_text else None, why))
        img_emb = self.encode_images(unique_images.items)
        txt_emb = self.encode_texts(texts) if texts else None
        meta = {"judge": "clip", "model": self.config.model_name, "revision": self.config.checkpoint or "random"}
        out = []
        for r, (s, o, p, ts, tt, why) in zip(requests, plans, strict=True):
            e_out = img_emb[o]
            row = [
                Judgement(metric="clip_i_src", score=float(e_out @ img_emb[s]), **meta),
                Judgement(metric="clip_i_prev", score=float(e_out @ img_emb[p]), **meta),
            ]
            row.append(self._text_metric("clip_t", r, tt, why, meta, lambda e=e_out, t=tt: float(e @ txt_emb[t])))
            if ts is None and tt is not None:
                why = why or "no source text"
                tt = None

            def direction(o=o, p=p, tt=tt, ts=ts) -> float:
                d_img, d_txt = img_emb[o] - img_emb[p], txt_emb[tt] - txt_emb[ts]
                return float(torch.nn.functional.cosine_similarity(d_img, d_txt, dim=0, eps=1e-12))

            if tt is not None and float((e_out - img_emb[p]).norm()) < 1e-6:
                row.append(Judgement.unscored("clip_dir", "the output embeds exactly as the previous image", **meta))
            elif tt is not None and float((txt_emb[tt] - txt_emb[ts]).norm()) < 1e-6:
                row.append(Judgement.unscored("clip_dir", "source and target texts embed identically", **meta))
            else:
                row.append(self._text_metric("clip_dir", r, tt, why, meta, direction))
            out.append(row)
        return out
