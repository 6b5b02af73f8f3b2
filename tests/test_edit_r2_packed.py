"""The packed / batched Edit-R2 path equals the one-at-a-time path (tiny random checkpoint, CPU).

Packed means: the three CFG branches of a turn and the same sampling step of every session in the batch run
as ONE forward, each segment attending only to its own context (SDPA with a block mask here; flash-attn's
varlen kernel on a GPU). fp32 on CPU must agree to rounding; bf16 within the noise two bf16 kernels show
(BAGEL_FACTS section 10: velocities ~0.03, images ~0.06 on a [0, 1] scale).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from edit_r2_tiny import build_tiny_checkpoint, one_torch_thread  # noqa: E402
from PIL import Image  # noqa: E402

from micebench.editors import create_editor  # noqa: E402
from micebench.editors.edit_r2 import attention, batched, generation  # noqa: E402
from micebench.editors.edit_r2.attention import attend  # noqa: E402
from micebench.editors.edit_r2.context import Context  # noqa: E402
from micebench.editors.edit_r2.loading import load_engine  # noqa: E402
from micebench.editors.edit_r2.packed import PackedPlan  # noqa: E402
from micebench.editors.edit_r2.sampler import SamplerSettings, sample, sample_batch  # noqa: E402
from micebench.errors import SetupError  # noqa: E402
from micebench.spec import EditRequest, Session, Turn  # noqa: E402

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)

TEXTS = ("add a red hat to the cat", "make it blue", "remove the dog from the picture")
SIZES = ((64, 64), (48, 80), (80, 48))  # (h, w) of the three sources: contexts of different lengths


def source(i: int) -> Image.Image:
    h, w = SIZES[i]
    return Image.fromarray((np.random.RandomState(i).rand(h, w, 3) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("bagel_tiny_packed"))


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def engine(request, ckpt):
    eng, _ = load_engine(ckpt, "cpu", getattr(torch, request.param))
    eng.vae_resize = (1024, 48, 16)
    return eng


def contexts(engine, n: int):
    """n sessions' (cond, text-uncond, image-uncond) contexts, of different lengths (session 2 has a turn more)."""
    out = []
    for i in range(n):
        ctx = engine.add_image(Context(), source(i))
        cimg = Context()
        if i == 2:  # one earlier turn in the context
            ctx, cimg = engine.add_text(ctx, TEXTS[0]), engine.add_text(cimg, TEXTS[0])
            ctx = engine.add_image(ctx, source(0))
        out.append((engine.add_text(ctx, TEXTS[i]), ctx, engine.add_text(cimg, TEXTS[i])))
    return out


def fake_context(g, kv_len: int, heads: int = 2, d: int = 8) -> Context:
    kv = ((torch.randn(kv_len, heads, d, generator=g), torch.randn(kv_len, heads, d, generator=g)),)
    return Context(kv=kv, kv_len=kv_len, rope=kv_len) if kv_len else Context()


def plan_for(ctxs, q_lens, causal, impl="sdpa", extra=0, loop=None):
    return PackedPlan(ctxs, q_lens, causal=causal, impl=impl, num_layers=1, num_heads=4, kv_heads=2, head_dim=8,
                      dtype=torch.float32, device=torch.device("cpu"), extra=extra, per_segment=loop)  # fmt: skip


def each_alone(ctxs, q, k, v, q_lens, causal):
    """The reference: each segment alone, its cache then its own new keys."""
    outs, row = [], 0
    for ctx, n in zip(ctxs, q_lens, strict=True):
        ks, vs = k[row : row + n], v[row : row + n]
        if ctx.kv:
            ks, vs = torch.cat([ctx.kv[0][0], ks]), torch.cat([ctx.kv[0][1], vs])
        outs.append(attend(q[row : row + n], ks, vs, causal=causal, impl="sdpa"))
        row += n
    return torch.cat(outs)


# -- the plan itself --------------------------------------------------------------------------------
@pytest.mark.parametrize("loop", [False, True])  # one masked call (CPU) / one call per segment (GPU)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("q_lens", [[3, 3, 3], [3, 1, 5]])
def test_packed_attention_equals_each_segment_alone(causal, q_lens, loop):
    g = torch.Generator().manual_seed(0)
    ctxs = [fake_context(g, n) for n in (7, 0, 12)]
    rows = sum(q_lens)
    q, k, v = (
        torch.randn(rows, 4, 8, generator=g),
        torch.randn(rows, 2, 8, generator=g),
        torch.randn(rows, 2, 8, generator=g),
    )
    plan = plan_for(ctxs, q_lens, causal, loop=loop)
    assert plan.per_segment is loop
    want = each_alone(ctxs, q, k, v, q_lens, causal)
    torch.testing.assert_close(plan.attend(0, q, k, v), want, atol=1e-5, rtol=1e-5)
    # a second forward on the same plan (the next sampling step) overwrites the new-key slots
    k2 = torch.randn(rows, 2, 8, generator=g)
    torch.testing.assert_close(
        plan.attend(0, q, k2, v), each_alone(ctxs, q, k2, v, q_lens, causal), atol=1e-5, rtol=1e-5
    )


def test_growable_plan_keeps_keys_and_drops_finished_segments():
    g = torch.Generator().manual_seed(1)
    ctxs = [fake_context(g, n) for n in (5, 9, 2)]
    plan = plan_for(ctxs, [1, 1, 1], causal=True, extra=4)
    grown = list(ctxs)
    for step in range(3):
        n = len(grown)
        q, k, v = (
            torch.randn(n, 4, 8, generator=g),
            torch.randn(n, 2, 8, generator=g),
            torch.randn(n, 2, 8, generator=g),
        )
        want = each_alone(grown, q, k, v, [1] * n, True)
        torch.testing.assert_close(plan.attend(0, q, k, v), want, atol=1e-5, rtol=1e-5)
        grown = [Context(kv=((torch.cat([c.kv[0][0], k[i : i + 1]]), torch.cat([c.kv[0][1], v[i : i + 1]])),),
                         kv_len=c.kv_len + 1) for i, c in enumerate(grown)]  # fmt: skip
        plan.commit()  # keep the keys just written
        if step == 0:  # the middle sequence finished: drop it
            plan.select([0, 2])
            grown = [grown[0], grown[2]]
    assert plan.kv_lens == [c.kv_len for c in grown] == [8, 5]


def emulated_flash_attn_func(q, k, v, causal=False):
    """flash-attn's dense kernel semantics ([B, L, H, d], GQA, bottom-right causal), per sequence."""
    return torch.stack(
        [attend(q[b], k[b], v[b], causal=causal and q.shape[1] > 1, impl="sdpa") for b in range(q.shape[0])]
    )


def emulated_flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, causal=False):
    """flash-attn's varlen kernel semantics: sequence i is rows cu[i]:cu[i+1] of q and of k/v."""
    assert cu_q.dtype == cu_k.dtype == torch.int32 and len(cu_q) == len(cu_k)
    outs = []
    for i in range(len(cu_q) - 1):
        qs, ks, vs = q[cu_q[i] : cu_q[i + 1]], k[cu_k[i] : cu_k[i + 1]], v[cu_k[i] : cu_k[i + 1]]
        assert qs.shape[0] <= max_q and ks.shape[0] <= max_k
        outs.append(attend(qs, ks, vs, causal=causal and qs.shape[0] > 1, impl="sdpa"))
    return torch.cat(outs)


@pytest.fixture
def emulated_flash(monkeypatch):
    """Stand-ins with flash-attn's documented semantics, to test the flash LAYOUT code (cu_seqlens, slots)
    on a machine without the package. The real kernels are checked by the gpu test below."""
    monkeypatch.setattr(attention, "_flash_attn_func", lambda: emulated_flash_attn_func)
    monkeypatch.setattr(attention, "_flash_attn_varlen_func", lambda: emulated_flash_attn_varlen_func)


@pytest.mark.parametrize("causal", [False, True])
def test_flash_layouts_with_emulated_kernels(emulated_flash, causal):
    g = torch.Generator().manual_seed(2)
    ctxs = [fake_context(g, n) for n in (7, 0, 12)]
    q_lens = [3, 1, 5]
    q, k, v = torch.randn(9, 4, 8, generator=g), torch.randn(9, 2, 8, generator=g), torch.randn(9, 2, 8, generator=g)
    flat = plan_for(ctxs, q_lens, causal, impl="flash")
    assert flat.layout == "flat" and flat.cu_k.tolist() == [0, 10, 11, 28]
    want = each_alone(ctxs, q, k, v, q_lens, causal)
    torch.testing.assert_close(flat.attend(0, q, k, v), want, atol=1e-5, rtol=1e-5)
    grow = plan_for(ctxs, q_lens, causal, impl="flash", extra=2)  # decoding on flash: padded, one call per segment
    assert grow.layout == "padded" and grow.per_segment
    torch.testing.assert_close(grow.attend(0, q, k, v), want, atol=1e-5, rtol=1e-5)


# -- the model: velocities, latents, appends, decoding ------------------------------------------------
def tol(engine):
    return {"atol": 1e-5, "rtol": 1e-5} if engine.dtype == torch.float32 else {"atol": 0.03, "rtol": 0}


@pytest.mark.parametrize("b", [1, 3])
def test_packed_velocities_equal_one_forward_per_branch(engine, b):
    ctxs = contexts(engine, b)
    assert len({c[0].kv_len for c in ctxs}) == b  # sessions of different lengths
    x = torch.randn(b, 9, 64, generator=torch.Generator().manual_seed(3))
    got = batched.BranchBatch(engine, ctxs, 3, 3).velocities(x, 0.7, 3)
    want = torch.stack([torch.stack([engine.velocity(c, x[i], 0.7, 3, 3) for c in ctxs[i]]) for i in range(b)])
    assert got.shape == (b, 3, 9, 64) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, **tol(engine))


@pytest.mark.parametrize("b", [1, 3])
def test_packed_sampling_gives_the_same_latents(engine, b):
    ctxs = contexts(engine, b)
    # evaluated at t = 1, 0.857, 0.6: the last one is outside the CFG interval and runs the cond branch only
    settings = SamplerSettings(steps=4, cfg_interval=(0.7, 1.0))
    noise = torch.randn(b, 9, 64, generator=torch.Generator().manual_seed(4))
    branches = batched.BranchBatch(engine, ctxs, 3, 3)
    calls = []

    def spy(x, t, n):
        calls.append(n)
        return branches.velocities(x, t, n)

    got = sample_batch(noise, settings, spy)
    assert calls == [3, 3, 1]  # one packed forward per step, with the branches that step needs
    for i in range(b):
        want = sample(noise[i], settings, *(lambda x, t, c=c: engine.velocity(c, x, t, 3, 3) for c in ctxs[i]))
        if engine.dtype == torch.float32:
            torch.testing.assert_close(got[i], want, atol=1e-4, rtol=1e-4)
        else:  # CFG (x4, x2) amplifies branch noise; a few Euler steps of it
            assert (got[i] - want).abs().max() < 0.25


def test_batched_appends_equal_one_by_one(engine):
    ctxs = [c for c, _, _ in contexts(engine, 3)]
    imgs = [source(2), source(0), source(1)]
    texts = ["make it blue", "x", "remove the dog from the picture, then add a hat"]
    pairs = (
        (
            batched.add_images_batch(engine, ctxs, imgs),
            [engine.add_image(c, i) for c, i in zip(ctxs, imgs, strict=True)],
        ),
        (
            batched.add_texts_batch(engine, ctxs, texts),
            [engine.add_text(c, t) for c, t in zip(ctxs, texts, strict=True)],
        ),
    )
    for got, want in pairs:
        for g, w in zip(got, want, strict=True):
            assert (g.kv_len, g.rope) == (w.kv_len, w.rope)
            for (gk, gv), (wk, wv) in zip(g.kv, w.kv, strict=True):
                torch.testing.assert_close(gk.float(), wk.float(), **tol(engine))
                torch.testing.assert_close(gv.float(), wv.float(), **tol(engine))


def test_batched_greedy_decoding_stops_per_sequence_and_equals_one_by_one(ckpt, monkeypatch):
    eng, _ = load_engine(ckpt, "cpu", torch.float32)
    texts = ["add a red hat to the cat", "make it blue", "remove the dog from the picture", "x",
             "change the sky. Current instruction: replace them with apples.", "the car"]  # fmt: skip
    ctxs = [eng.add_text(Context(), t) for t in texts]
    old = eng.llm.lm_head  # a bias towards <|im_end|> so that some sequences stop early, at different steps
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[eng.tok.eos_id] = 1.0
    monkeypatch.setattr(eng.llm, "lm_head", head)
    one = [generation.greedy_tokens(eng, c, 12) for c in ctxs]
    lengths = [len(t) for t in one]
    assert min(lengths) < 12 and max(lengths) == 12 and len(set(lengths)) >= 3, lengths
    assert generation.greedy_tokens_batch(eng, ctxs, 12) == one
    assert generation.greedy_decode_batch(eng, ctxs, 12) == [generation.greedy_decode(eng, c, 12) for c in ctxs]


def test_flash_engine_path_with_emulated_kernels(ckpt, emulated_flash):
    """attn_impl=flash lays the packed forward out flat (varlen) and decodes on the padded plan."""
    eng, _ = load_engine(ckpt, "cpu", torch.float32, attn_impl="flash")
    eng.vae_resize = (1024, 48, 16)
    ref, _ = load_engine(ckpt, "cpu", torch.float32, attn_impl="sdpa")
    ref.vae_resize = (1024, 48, 16)
    ctxs, ref_ctxs = contexts(eng, 3), contexts(ref, 3)
    x = torch.randn(3, 9, 64, generator=torch.Generator().manual_seed(5))
    got = batched.BranchBatch(eng, ctxs, 3, 3).velocities(x, 0.5, 3)
    want = batched.BranchBatch(ref, ref_ctxs, 3, 3).velocities(x, 0.5, 3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    decode = [c for c, _, _ in ctxs]
    assert generation.greedy_tokens_batch(eng, decode, 6) == [
        generation.greedy_tokens(ref, c, 6) for c, _, _ in ref_ctxs
    ]


# -- the editor ----------------------------------------------------------------------------------------
def sessions():
    """Three sessions of 1, 2 and 3 turns with sources of different sizes."""
    out = []
    for i, n in enumerate((1, 2, 3)):
        turns = tuple(Turn(instruction=t, task_type="subject_add") for t in TEXTS[:n])
        out.append((Session(id=f"s{i}", suite="tiny", subset="cu", source_image="/x.png", turns=turns), source(i)))
    return out


def run_turn_synchronous(editor, batch_size: int) -> dict:
    """What the runner does: turn t of every session that has one, in batches of ``batch_size``."""
    history: dict[str, tuple[list, list]] = {}
    results = {}
    sess = sessions()
    for t in range(3):
        todo = [(s, src) for s, src in sess if t < len(s.turns)]
        for lo in range(0, len(todo), batch_size):
            reqs = []
            for s, src in todo[lo : lo + batch_size]:
                outs, eff = history.setdefault(s.id, ([], []))
                reqs.append(EditRequest(session=s, turn_index=t, source_image=src, instruction=s.turns[t].instruction,
                                        history_instructions=tuple(x.instruction for x in s.turns[:t]),
                                        history_effective=tuple(eff), history_images=tuple(outs)))  # fmt: skip
            for req, res in zip(reqs, editor.edit(reqs), strict=True):
                assert res.error is None, res.error
                history[req.session.id][0].append(res.image)
                history[req.session.id][1].append(res.effective_instruction)
                results[req.session.id, t] = res
    return results


def options(ckpt, **kw):
    base = {"weights": str(ckpt), "resolution": 48, "steps": 4, "max_think_tokens": 8, "device": "cpu",
            "context_min_side": 48, "seed": 3}  # fmt: skip
    return {**base, **kw}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_packed_editor_images_equal_the_reference_path(ckpt, dtype):
    ref = run_turn_synchronous(create_editor("edit-r2", options(ckpt, dtype=dtype, packed=False)), 3)
    for batch_size in (1, 3):
        got = run_turn_synchronous(create_editor("edit-r2", options(ckpt, dtype=dtype)), batch_size)
        assert set(got) == set(ref) and len(got) == 6
        for key, want in ref.items():
            res = got[key]
            assert "batch_retried_after" not in res.extra
            assert res.extra["batch_size"] == min(batch_size, 3 - key[1])  # sessions with a turn t left
            assert res.effective_instruction == want.effective_instruction
            diff = np.abs(np.asarray(res.image, float) - np.asarray(want.image, float)) / 255
            if dtype == "float32":  # the same numbers up to rounding: at most one uint8 step, rarely
                assert diff.max() <= 1 / 255 + 1e-9 and (diff > 0).mean() < 0.01, (key, diff.max())
                assert res.extra.get("ic_cot_trace") == want.extra.get("ic_cot_trace")
            else:
                assert diff.max() < 0.06, (key, diff.max())


def test_a_batch_is_edited_together(ckpt, monkeypatch):
    """--batch-size 3 is real batching: one packed forward per sampling step for the whole batch, one VAE
    decode, one VAE encode and one ViT pass per image size, never the one-at-a-time velocity."""
    ed = create_editor("edit-r2", options(ckpt))
    engine = ed.engine
    counts = {"velocity": 0, "decode": 0, "encode": [], "vit": [], "steps": 0}

    def no_velocity(*a, **k):
        counts["velocity"] += 1
        raise AssertionError("the packed path must not call Engine.velocity")

    real_decode, real_encode, real_vit = engine.vae.decode, engine.vae.encode, engine.model.vit_tokens
    real_velocities = batched.BranchBatch.velocities
    monkeypatch.setattr(engine, "velocity", no_velocity)
    monkeypatch.setattr(
        engine.vae, "decode", lambda z: (counts.__setitem__("decode", counts["decode"] + 1), real_decode(z))[1]
    )
    monkeypatch.setattr(engine.vae, "encode", lambda x: (counts["encode"].append(x.shape[0]), real_encode(x))[1])
    monkeypatch.setattr(
        engine.model, "vit_tokens", lambda p, i: (counts["vit"].append(tuple(p.shape[:-2])), real_vit(p, i))[1]
    )

    def count_steps(self, x, t, n):
        counts["steps"] += 1
        assert x.shape[0] == 3 and n == 3
        return real_velocities(self, x, t, n)

    monkeypatch.setattr(batched.BranchBatch, "velocities", count_steps)
    reqs = [EditRequest(session=s, turn_index=0, source_image=src, instruction=s.turns[0].instruction)
            for s, src in sessions()]  # fmt: skip
    results = ed.edit(reqs)
    assert all(r.error is None for r in results)
    assert counts["velocity"] == 0 and counts["steps"] == 4 - 1 and counts["decode"] == 1
    # sources: 3 sizes -> 3 encoder calls of 1; outputs of the 2 sessions with turns left: one call of 2
    assert sorted(counts["encode"]) == [1, 1, 1, 2]
    assert sorted(counts["vit"]) == [(1,), (1,), (1,), (2,)]
    assert list(ed._sessions) == ["s1", "s2"]


def test_memory_stays_bounded_by_max_cached_sessions(ckpt, monkeypatch):
    ed = create_editor("edit-r2", options(ckpt, max_cached_sessions=1))
    appended = []
    real = batched.add_images_batch

    def spy(engine, ctxs, imgs):
        appended.append(len(ctxs))
        return real(engine, ctxs, imgs)

    monkeypatch.setattr("micebench.editors.edit_r2.batched_editor.add_images_batch", spy)
    reqs = [EditRequest(session=s, turn_index=0, source_image=src, instruction=s.turns[0].instruction)
            for s, src in sessions()]  # fmt: skip
    assert all(r.error is None for r in ed.edit(reqs))
    assert list(ed._sessions) == ["s2"]  # only the most recent session is kept...
    assert appended == [3, 1]  # ...and only its output is appended (the 3 is the sources' rebuild)


def test_a_failing_turn_does_not_fail_its_batch_mates(ckpt, monkeypatch):
    ed = create_editor("edit-r2", options(ckpt))
    reqs = [EditRequest(session=s, turn_index=0, source_image=src, instruction=s.turns[0].instruction)
            for s, src in sessions()]  # fmt: skip
    alone = [ed.edit([r])[0] for r in reqs]
    real = batched.add_images_batch

    def fail_for_s1(engine, ctxs, imgs):
        if any(im.size == (80, 48) for im in imgs):  # session s1's source
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(engine, ctxs, imgs)

    monkeypatch.setattr("micebench.editors.edit_r2.batched_editor.add_images_batch", fail_for_s1)
    out = ed.edit(reqs)
    assert out[1].image is None and "out of memory" in out[1].error
    for i in (0, 2):
        assert out[i].error is None and "out of memory" in out[i].extra["batch_retried_after"]
        assert np.array_equal(np.asarray(out[i].image), np.asarray(alone[i].image))  # alone on retry
    assert "s1" not in ed._sessions


def test_flash_requested_without_flash_attn_is_a_setup_error(ckpt, tmp_path):
    assert not attention.flash_available()  # flash-attn is not installable on the development machines
    ed = create_editor("edit-r2", {"weights": str(tmp_path / "absent"), "device": "cpu", "attn_impl": "flash"})
    with pytest.raises(SetupError, match="flash-attn"):
        ed.preflight()
    with pytest.raises(SetupError, match="flash-attn"):  # before any weight is read (the folder is absent)
        ed.edit([EditRequest(session=sessions()[0][0], turn_index=0, source_image=source(0), instruction="x")])
    with pytest.raises(SetupError, match="absent"):
        create_editor("edit-r2", {"weights": str(tmp_path / "absent")}).preflight()
    create_editor("edit-r2", {"weights": str(ckpt), "attn_impl": "auto"}).preflight()
    eng, _ = load_engine(ckpt, "cpu", torch.float32, attn_impl="flash")
    with pytest.raises(SetupError, match="flash-attn"):
        PackedPlan.for_model(eng.llm, [Context()], [1], causal=False, dtype=torch.float32, device="cpu")


def test_compile_option_wraps_the_decoder_layers(ckpt, monkeypatch):
    """compile=true hands the per-layer work of the packed path to torch.compile, and every packed forward
    then goes through the compiled functions (torch.compile is recorded here, not run: inductor's code
    generation takes minutes on a small CPU; the slow test below runs it)."""
    compiled, calls = [], []

    def record(fn, backend="inductor", **kw):
        compiled.append((fn.__name__, backend))

        def wrapped(*a, **k):
            calls.append(fn.__name__)
            return fn(*a, **k)

        return wrapped

    monkeypatch.setattr(torch, "compile", record)
    ed = create_editor("edit-r2", options(ckpt, compile=True, steps=2))
    assert ed.engine.llm.compiled
    assert compiled == [("_layer_inputs", "inductor"), ("_layer_outputs", "inductor")]
    assert not create_editor("edit-r2", options(ckpt)).engine.llm.compiled
    req = EditRequest(session=sessions()[1][0], turn_index=0, source_image=source(1), instruction=TEXTS[0])
    assert ed.edit([req])[0].error is None
    layers = ed.engine.cfg.llm.num_hidden_layers
    # VAE + ViT chunk of the source, text (one context each: the one-chunk path), 1 sampling step, output
    assert calls.count("_layer_inputs") == calls.count("_layer_outputs") == layers * (2 + 1 + 2)


@pytest.mark.slow
def test_compile_with_inductor_gives_the_same_images(ckpt):
    req = EditRequest(session=sessions()[1][0], turn_index=0, source_image=source(1), instruction=TEXTS[0])
    a = create_editor("edit-r2", options(ckpt, compile=True, steps=3)).edit([req])[0]
    b = create_editor("edit-r2", options(ckpt, steps=3)).edit([req])[0]
    assert a.error is None, a.error
    assert np.abs(np.asarray(a.image, float) - np.asarray(b.image, float)).max() <= 1


@pytest.mark.gpu
def test_flash_varlen_packed_equals_sdpa_on_gpu(ckpt):
    pytest.importorskip("flash_attn")
    flash, _ = load_engine(ckpt, "cuda", torch.bfloat16, attn_impl="flash")
    sdpa, _ = load_engine(ckpt, "cuda", torch.bfloat16, attn_impl="sdpa")
    for e in (flash, sdpa):
        e.vae_resize = (1024, 48, 16)
    x = torch.randn(3, 9, 64, generator=torch.Generator().manual_seed(6))
    got = batched.BranchBatch(flash, contexts(flash, 3), 3, 3).velocities(x, 0.5, 3)
    want = torch.stack([torch.stack([sdpa.velocity(c, x[i].cuda(), 0.5, 3, 3) for c in cs])
                        for i, cs in enumerate(contexts(sdpa, 3))])  # fmt: skip
    assert (got - want).abs().max() < 0.03


def test_use_engine_edits_with_a_prebuilt_engine(ckpt):
    """What bench/edit_r2_gpu.py does with its random full-size model: no checkpoint is read."""
    eng, _ = load_engine(ckpt, "cpu", torch.float32)
    ed = create_editor("edit-r2", {"weights": "/nowhere", "resolution": 48, "steps": 2, "context_min_side": 48,
                                   "attn_impl": "sdpa"})  # fmt: skip
    ed.use_engine(eng)
    assert ed.engine is eng and eng.vae_resize == (1024, 48, 16) and eng.llm.attn_impl == "sdpa"
    req = EditRequest(session=sessions()[0][0], turn_index=0, source_image=source(0), instruction=TEXTS[0])
    assert ed.edit([req])[0].image.size == (48, 48)


def test_the_batched_ic_cot_asks_the_editors_question(ckpt, monkeypatch):
    """The packed path sends the same IC-CoT texts as the one-at-a-time path (paraphrase or the authors')."""
    from micebench.editors.edit_r2 import batched_editor
    from micebench.editors.edit_r2.prompts import IcCotText

    ed = create_editor("edit-r2", options(ckpt, ic_cot="cu"))
    ed.ic_cot_text = IcCotText("upstream", "PH-SYSTEM", lambda h, c, m: f"PH-Q|{'/'.join(h)}|{c}|{m}", "0" * 64)
    calls = []
    real = batched_editor.ic_cot_rewrite_batch

    def spy(engine, items, max_length, system_prompt, questions):
        calls.append((system_prompt, questions))
        return real(engine, items, max_length, system_prompt, questions)

    monkeypatch.setattr(batched_editor, "ic_cot_rewrite_batch", spy)
    results = run_turn_synchronous(ed, 3)
    assert calls == [
        ("PH-SYSTEM", [f"PH-Q|{TEXTS[0]}|{TEXTS[1]}|cu"] * 2),  # turn 2 of s1 and s2, decoded together
        ("PH-SYSTEM", [f"PH-Q|{TEXTS[0]}/{TEXTS[1]}|{TEXTS[2]}|cu"]),  # turn 3 of s2
    ]
    assert results["s2", 2].extra["ic_cot_mode"] == "cu"
