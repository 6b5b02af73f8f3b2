"""Options of the ``mice`` judge (:class:`MiceConfig`), its profiles, and the upstream checkout check."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from micebench.judges.base import JudgeConfig
from micebench.options import OptionsError, read_yaml_mapping

#: Options that change how a run goes, not what it scores: left out of the cache identity.
_OPERATIONAL = {
    "profile", "base_url", "base_url_env", "api_key_env", "concurrency", "timeout_s", "max_retries",
    "backoff_s", "cache_path", "device", "prompts_dir", "votes", "upstream_repo",
}  # fmt: skip
DINOV3_HF = "facebook/dinov3-vitl16-pretrain-lvd1689m"


def resolve_profile(name: str) -> Path:
    """A profile path as given (absolute or relative to the working directory), else relative to the
    repository root, else ``judges/<name>.yaml`` there."""
    from micebench.judges.mice.prompts import repo_root

    candidates = [Path(name), repo_root() / name, repo_root() / "judges" / f"{name}.yaml"]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise OptionsError(f"judge profile {name!r} not found (tried {tried})")


class MiceConfig(JudgeConfig):
    profile: str | None = Field(None, description="YAML profile merged under the explicit options.")
    vlm_backend: Literal["openai", "transformers"] = "openai"
    base_url: str | None = Field(None, description="OpenAI-compatible base URL; default: $base_url_env.")
    base_url_env: str = "MICEBENCH_VLM_BASE_URL"
    api_key_env: str = "MICEBENCH_VLM_API_KEY"
    model: str = "Qwen/Qwen2.5-VL-32B-Instruct"
    vlm_path: str | None = Field(None, description="Local Qwen2.5-VL directory for vlm_backend=transformers.")
    votes: int = Field(4, ge=1)
    temperature: float = Field(0.6, ge=0)
    max_tokens: int = Field(1024, ge=1)
    seed: int | None = None
    concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    protocol: Literal["strict", "upstream"] = Field(
        "strict", description="strict: unscored is a state, never a number; upstream: the authors' rules and numbers."
    )
    upstream_repo: str | None = Field(
        None, description="Edit-R2 checkout whose prompts protocol=upstream uses; default $MICEBENCH_EDITR2_REPO."
    )
    detector_path: str = "IDEA-Research/grounding-dino-tiny"
    features_backend: Literal["transformers", "timm"] = Field(
        "transformers", description="DINOv3 via transformers, or timm (upstream's; the default of protocol=upstream)."
    )
    features_path: str = DINOV3_HF
    device: str = "auto"
    ga_variant: Literal["auto", "cm", "cu"] = "auto"
    ga_max_images: int = Field(4, ge=2)
    yes_match: Literal["leading", "substring"] = "leading"
    patch_tokens: Literal["real", "upstream"] = "real"
    prompts_dir: str | None = None
    cache_path: str | None = Field(None, description="SQLite cache; default ~/.cache/micebench/mice.sqlite; 'none'.")

    @model_validator(mode="before")
    @classmethod
    def _merge_profile(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("profile"):
            path = resolve_profile(str(data["profile"]))
            values = read_yaml_mapping(path)
            if "profile" in values:
                raise OptionsError(f"{path}: a profile cannot name another profile")
            for key in ("prompts_dir", "upstream_repo"):
                if values.get(key) and not Path(str(values[key])).expanduser().is_absolute():
                    values[key] = str((path.parent / str(values[key])).resolve())
            data = {**values, **data}
        if data.get("protocol") == "upstream":
            from micebench.judges.backends.features import TIMM_DINOV3

            # Upstream's own switches, recorded in the manifest; contradicting them is an error.
            for key, value in (("yes_match", "substring"), ("patch_tokens", "upstream")):
                if data.get(key, value) != value:
                    raise OptionsError(f"mice judge: protocol=upstream uses {key}={value}; drop {key}={data[key]}")
            data = {"yes_match": "substring", "patch_tokens": "upstream", "features_backend": "timm", **data}
            if "features_path" not in data:
                data["features_path"] = TIMM_DINOV3 if data["features_backend"] == "timm" else DINOV3_HF
        return data

    @model_validator(mode="after")
    def _upstream_checkout(self) -> MiceConfig:
        """protocol=upstream needs the authors' checkout, checked now: a wrong one stops the run before any work."""
        if self.protocol == "upstream":
            _upstream_texts(self.upstream_repo)
        return self


def _upstream_texts(option: str | None):
    """The authors' judge prompts from ``option`` or $MICEBENCH_EDITR2_REPO; SetupError when missing or wrong."""
    from micebench.errors import SetupError
    from micebench.upstream import EDIT_R2_COMMIT, EDIT_R2_URL, ENV_VAR, judge_texts, resolve_repo

    repo = resolve_repo(option)
    if repo is None:
        raise SetupError(
            f"mice judge: protocol=upstream reads the authors' prompts from their repository: pass "
            f"-J upstream_repo=DIR or set ${ENV_VAR} to a checkout of {EDIT_R2_URL} at commit {EDIT_R2_COMMIT}"
        )
    return judge_texts(repo)
