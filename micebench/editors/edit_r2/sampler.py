"""Flow-matching sampling as BAGEL edits: shifted schedule, Euler steps, three-branch CFG with renorm.

Convention: x_t = (1 - t) x0 + t eps and the model predicts v = eps - x0, so integrating from t = 1
(noise) to t = 0 (data) is x <- x + v (t_next - t). The shift s maps t -> s t / (1 + (s - 1) t);
the model is evaluated at t_0 .. t_{N-2} (N - 1 evaluations for N timesteps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

RENORM_MODES = ("text_channel", "global", "channel", "none")


def shifted_timesteps(num_steps: int, shift: float) -> torch.Tensor:
    """The N timesteps linspace(1, 0, N) warped by ``shift``, fp32. N - 1 of them are evaluated."""
    if num_steps < 2:
        raise ValueError(f"need at least 2 timesteps (one model evaluation), got {num_steps}")
    t = torch.linspace(1.0, 0.0, num_steps)
    return shift * t / (1.0 + (shift - 1.0) * t)


def combine_cfg(
    v_cond: torch.Tensor,
    v_text_uncond: torch.Tensor | None,
    v_img_uncond: torch.Tensor | None,
    cfg_text: float,
    cfg_img: float,
    renorm: str = "text_channel",
    renorm_min: float = 0.0,
) -> torch.Tensor:
    """Combine the three branch velocities [N, C] (N tokens, C = 64 latent channels), or [B, N, C] for B
    turns at once (``global`` then takes its norms per turn).

    - ``text_channel`` (BAGEL's editing default): text guidance, rescaled per token so its norm does
      not exceed the conditional one, then image guidance on top.
    - ``global`` / ``channel``: text then image guidance, then one rescale by the norm ratio taken
      over the whole tensor / per token.
    - ``none``: plain two-stage guidance with no rescale.
    Guidance is off (v = v_cond) when ``cfg_text <= 1``; the image stage is skipped when ``cfg_img <= 1``.
    """
    if renorm not in RENORM_MODES:
        raise ValueError(f"unknown CFG renorm {renorm!r}; expected one of {', '.join(RENORM_MODES)}")
    if cfg_text <= 1.0:
        return v_cond
    if v_text_uncond is None or (cfg_img > 1.0 and v_img_uncond is None):
        raise ValueError("guidance needs the unconditional branch velocities")
    v_text = v_text_uncond + cfg_text * (v_cond - v_text_uncond)
    if renorm == "text_channel":
        ratio = v_cond.norm(dim=-1, keepdim=True) / (v_text.norm(dim=-1, keepdim=True) + 1e-8)
        v_text = v_text * ratio.clamp(min=renorm_min, max=1.0)
    v = v_img_uncond + cfg_img * (v_text - v_img_uncond) if cfg_img > 1.0 else v_text
    if renorm in ("global", "channel"):
        dim = None if renorm == "global" else -1
        if dim is None and v.ndim == 3:  # a batch of turns: one global ratio per turn
            ratio = v_cond.norm(dim=(-2, -1), keepdim=True) / (v.norm(dim=(-2, -1), keepdim=True) + 1e-8)
        elif dim is None:
            ratio = v_cond.norm() / (v.norm() + 1e-8)
        else:
            ratio = v_cond.norm(dim=-1, keepdim=True) / (v.norm(dim=-1, keepdim=True) + 1e-8)
        v = v * ratio.clamp(min=renorm_min, max=1.0)
    return v


@dataclass(frozen=True)
class SamplerSettings:
    steps: int = 50
    shift: float = 3.0
    cfg_text: float = 4.0
    cfg_img: float = 2.0
    cfg_interval: tuple[float, float] = (0.0, 1.0)
    renorm: str = "text_channel"
    renorm_min: float = 0.0


Velocity = Callable[[torch.Tensor, float], torch.Tensor]


def sample(
    x: torch.Tensor,
    settings: SamplerSettings,
    v_cond: Velocity,
    v_text_uncond: Velocity,
    v_img_uncond: Velocity,
) -> torch.Tensor:
    """Integrate noise ``x`` [N, 64] (fp32) to t = 0 with Euler steps; each ``v_*(x, t)`` returns [N, 64].

    Guidance branches run only inside the CFG interval (lo < t <= hi) and only when their scale is > 1.
    """
    ts = shifted_timesteps(settings.steps, settings.shift)
    lo, hi = settings.cfg_interval
    x = x.float()
    for i in range(settings.steps - 1):
        t, t_next = float(ts[i]), float(ts[i + 1])
        inside = lo < t <= hi
        s_txt = settings.cfg_text if inside else 1.0
        s_img = settings.cfg_img if inside else 1.0
        vc = v_cond(x, t).float()
        vt = v_text_uncond(x, t).float() if s_txt > 1.0 else None
        vi = v_img_uncond(x, t).float() if s_txt > 1.0 and s_img > 1.0 else None
        v = combine_cfg(vc, vt, vi, s_txt, s_img, settings.renorm, settings.renorm_min)
        x = x + v * (t_next - t)
    return x


BranchVelocities = Callable[[torch.Tensor, float, int], torch.Tensor]


def branches_needed(settings: SamplerSettings, t: float) -> tuple[int, float, float]:
    """(number of branches to run, text scale, image scale) at time t: cond only outside the CFG interval
    or without text guidance; cond + text-uncond without image guidance; all three otherwise."""
    lo, hi = settings.cfg_interval
    inside = lo < t <= hi
    s_txt = settings.cfg_text if inside else 1.0
    s_img = settings.cfg_img if inside else 1.0
    return (1 if s_txt <= 1.0 else 2 if s_img <= 1.0 else 3), s_txt, s_img


def sample_batch(x: torch.Tensor, settings: SamplerSettings, velocities: BranchVelocities) -> torch.Tensor:
    """:func:`sample` for B turns at once: ``x`` [B, N, 64]; ``velocities(x, t, n)`` returns the first ``n``
    branch velocities (cond, text-uncond, image-uncond) of every turn as [B, n, N, 64], from ONE forward."""
    ts = shifted_timesteps(settings.steps, settings.shift)
    x = x.float()
    for i in range(settings.steps - 1):
        t, t_next = float(ts[i]), float(ts[i + 1])
        n, s_txt, s_img = branches_needed(settings, t)
        v = velocities(x, t, n).float()
        vt = v[:, 1] if n > 1 else None
        vi = v[:, 2] if n > 2 else None
        v = combine_cfg(v[:, 0], vt, vi, s_txt, s_img, settings.renorm, settings.renorm_min)
        x = x + v * (t_next - t)
    return x
