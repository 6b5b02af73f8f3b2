"""DINOv3 through timm (features_backend=timm) on a tiny random DINOv3-style timm model saved in the hub layout,
checked against what the authors' reward server ran: transformers' AutoModel / AutoImageProcessor on the same
folder (the timm wrapper), and torch's pooling and cosine for the upstream CC arithmetic."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
pytest.importorskip("safetensors")

from judge_fixtures import PALETTE  # noqa: E402
from PIL import Image  # noqa: E402

from micebench.judges.backends.detector import Detection  # noqa: E402
from micebench.judges.backends.features import TimmDinov3Features  # noqa: E402
from micebench.judges.mice.cc import crop_box  # noqa: E402
from micebench.judges.mice.upstream_cc import (  # noqa: E402
    _mask,
    background_similarity_upstream,
    compute_cc_upstream,
    pool_mask_upstream,
)
from micebench.judges.mice.upstream_if import jpeg_round_trip  # noqa: E402


def save_tiny_timm_dinov3(path, size: int = 64, seed: int = 0):
    """timm's vit_large_patch16_dinov3 shrunk to width 32, depth 2 (4 registers, RoPE), random weights; written
    as the hub's timm folders are: config.json (architecture, model_args, pretrained_cfg) + model.safetensors."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    args = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": size}
    model = timm.create_model("vit_large_patch16_dinov3", pretrained=False, num_classes=0, **args).eval()
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    cfg = {
        "architecture": "vit_large_patch16_dinov3", "num_classes": 0, "num_features": 32, "global_pool": "avg",
        "model_args": args,
        "pretrained_cfg": {"input_size": [3, size, size], "interpolation": "bicubic", "crop_pct": 1.0,
                           "crop_mode": "center", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                           "num_classes": 0, "fixed_input_size": False},
    }  # fmt: skip
    (path / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_timm_dinov3(tmp_path_factory.mktemp("timm_dinov3"))


def photo(seed: int, w: int = 80, h: int = 50) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8))


def reference(folder, images):
    """The authors' stack: transformers loads the timm folder as TimmWrapperModel + its image processor."""
    from transformers import AutoImageProcessor, AutoModel

    model, proc = AutoModel.from_pretrained(folder).eval(), AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        px = proc(images=images, return_tensors="pt")["pixel_values"]
        return model(pixel_values=px).last_hidden_state.double().numpy(), px


def test_tokens_equal_the_transformers_timm_wrapper(tiny):
    images = [photo(0), photo(1, 30, 30), photo(2, 64, 64)]
    feats = TimmDinov3Features(str(tiny), device="cpu").encode(images)
    want, px = reference(tiny, images)
    assert px.shape[-2:] == (64, 64)
    for f, w in zip(feats, want, strict=True):
        assert f.registers.shape == (4, 32) and f.patches.shape == (4, 4, 32) and f.input_size == (64, 64)
        got = np.concatenate([f.cls[None], f.registers, f.patches.reshape(-1, 32)])
        np.testing.assert_allclose(got, w, atol=1e-5)


def test_loading_errors_name_the_folder(tmp_path, tiny):
    with pytest.raises(OSError, match="not a folder"):
        TimmDinov3Features(str(tmp_path / "missing" / "deep" / "x"), device="cpu")
    with pytest.raises(OSError, match="not in the local Hugging Face cache|huggingface_hub"):
        TimmDinov3Features("nobody/not-a-cached-model", device="cpu")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny / "config.json").read_text())
    with pytest.raises(OSError, match="no model.safetensors"):
        TimmDinov3Features(str(broken), device="cpu")


@pytest.mark.parametrize("size, grid", [(64, (4, 5)), (64, (4, 4)), (256, (13, 20)), (96, (7, 3))])
def test_mask_pooling_equals_torch(size, grid):
    import torch.nn.functional as F

    rng = np.random.RandomState(size + grid[0])
    mask = (rng.rand(size, size) > 0.4).astype(np.float32)
    got = pool_mask_upstream(mask, (size, size), grid)
    t = torch.from_numpy(mask)[None, None]
    kh, kw = size // grid[0], size // grid[1]
    if size % grid[0] == 0 and size % grid[1] == 0:
        want = F.avg_pool2d(t, kernel_size=(kh, kw), stride=(kh, kw))
    else:
        want = F.interpolate(t, size=grid, mode="area")
    np.testing.assert_allclose(got, want[0, 0].numpy(), atol=1e-6)


def test_masked_cosine_equals_torch(tiny):
    import torch.nn.functional as F

    fa, fb = TimmDinov3Features(str(tiny), device="cpu").encode([photo(3, 64, 64), photo(4, 64, 64)])
    mask = _mask((64, 64), [(0.1, 0.2, 0.5, 0.7)])
    got = background_similarity_upstream(fa, fb, mask)
    ta = torch.from_numpy(np.concatenate([fa.registers, fa.patches.reshape(-1, 32)]))
    tb = torch.from_numpy(np.concatenate([fb.registers, fb.patches.reshape(-1, 32)]))
    w = torch.from_numpy(pool_mask_upstream(mask, (64, 64), (4, 5)).reshape(-1)).clamp(0, 1)  # 20 tokens -> 4x5
    w = w * (w >= 0.5)
    f1 = (F.normalize(ta, dim=-1) * w[:, None]).sum(0) / (w.sum() + 1e-6)
    f2 = (F.normalize(tb, dim=-1) * w[:, None]).sum(0) / (w.sum() + 1e-6)
    assert got == pytest.approx(F.cosine_similarity(f1[None], f2[None]).item(), abs=1e-9)


class BoxesFor:
    """Detector stand-in: the same boxes for the source and the output, in query order."""

    name, revision = "boxes", "b0"

    def __init__(self, boxes):
        self.boxes = boxes

    def detect(self, image, phrases, threshold):
        return [Detection(box=b, score=0.9, index=i) for i, b in enumerate(self.boxes)]


def test_upstream_cc_on_the_tiny_model_equals_the_authors_arithmetic(tiny):
    """CC with an object box and the background term, recomputed in torch on the transformers wrapper the way the
    reward server does it (crops of the JPEG'd images, CLS + mean of every token after CLS, masked mean)."""
    import torch.nn.functional as F

    src = Image.new("RGB", (64, 64), PALETTE["src"]).copy()
    src.paste(photo(5, 30, 30), (10, 10))
    out = src.copy()
    out.paste(photo(6, 20, 20), (40, 40))
    boxes = [(0.1, 0.1, 0.6, 0.6)]
    features = TimmDinov3Features(str(tiny), "cpu")
    res = compute_cc_upstream(src, out, ["thing"], ["thing"], True, BoxesFor(boxes), features)
    s1, o1 = jpeg_round_trip(src), jpeg_round_trip(out)
    crops, _ = reference(tiny, [crop_box(s1, boxes[0]), crop_box(o1, boxes[0])])
    c = torch.from_numpy(crops)
    obj = 0.5 * F.cosine_similarity(c[0, :1], c[1, :1]).item() + 0.5 * F.cosine_similarity(
        c[0, 1:].mean(0, keepdim=True), c[1, 1:].mean(0, keepdim=True)).item()  # fmt: skip
    full = torch.from_numpy(reference(tiny, [s1, o1])[0])
    mask = torch.from_numpy(_mask((64, 64), boxes * 2))[None, None]
    w = F.interpolate(mask, size=(4, 5), mode="area").reshape(-1).clamp(0, 1)
    w = w * (w >= 0.5)
    f1 = (F.normalize(full[0, 1:], dim=-1) * w[:, None]).sum(0) / (w.sum() + 1e-6)
    f2 = (F.normalize(full[1, 1:], dim=-1) * w[:, None]).sum(0) / (w.sum() + 1e-6)
    bg = F.cosine_similarity(f1[None], f2[None]).item()
    assert res.score == pytest.approx((obj + bg) / 2, abs=1e-5)
    assert "object" in res.reason and "background" in res.reason and "upstream:" not in res.reason
