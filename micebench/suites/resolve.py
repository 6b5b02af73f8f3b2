"""Turn a ``--suite`` argument into sessions: a registered name, a YAML file, a JSONL file, a
folder holding ``test_metadata.jsonl``, or ``hf:NAME_OR_PATH`` (a Hugging Face dataset)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from micebench import registry
from micebench.options import OptionsError, build_config
from micebench.suites.base import SuiteData, SuiteError


def load_suite(spec: str, options: dict[str, Any] | None = None, image_root: Path | None = None,
               check_images: bool = True, seed: int | None = None) -> SuiteData:
    """Load ``spec``; ``seed`` fills a registered suite's ``seed`` option unless ``options`` sets it."""
    options = dict(options or {})
    if spec.startswith("hf:"):  # a Hugging Face dataset (local folder or hub name); images travel inside it
        from micebench.suites.hf import load_hf_suite

        return load_hf_suite(spec, options)
    path = Path(spec)
    looks_like_path = path.suffix in (".yaml", ".yml", ".jsonl") or "/" in spec or path.exists()
    if looks_like_path:
        if not path.exists():
            raise SuiteError(f"{spec}: no such file or folder")
        if path.suffix in (".yaml", ".yml"):
            _no_options(options, spec)
            from micebench.suites.yaml_suite import load_yaml_suite

            return load_yaml_suite(path, image_root, check_images=check_images)
        from micebench.suites.mice_jsonl import load_mice_jsonl

        subset = options.pop("subset", None)
        name = options.pop("name", "mice")
        _no_options(options, spec)
        return load_mice_jsonl(path, image_root, subset=subset, suite_name=name, check_images=check_images)
    try:
        cls = registry.load("suites", spec)
    except registry.UnknownNameError as e:
        raise SuiteError(f"{e} Or give a .yaml/.jsonl file or a folder with test_metadata.jsonl.") from e
    if seed is not None and "seed" in cls.Config.model_fields and "seed" not in options:
        options["seed"] = seed
    try:
        config = build_config(cls.Config, options, where=f"suite {spec!r}")
    except OptionsError as e:
        raise SuiteError(str(e)) from e
    data = cls(config).load(image_root)
    if check_images:  # a registered suite's images get the file loaders' header checks (missing ones are its call)
        from micebench.suites.validate import check_image_header

        for path in dict.fromkeys(s.source_image for s in data.sessions):
            if Path(path).is_file():
                check_image_header(path, f"suite {spec!r}: source image")
    if not data.options:
        data = SuiteData(data.name, data.version, data.sessions, data.source or f"registered:{spec}",
                         config.model_dump(mode="json"))
    return data


def _no_options(options: dict[str, Any], spec: str) -> None:
    if options:
        raise SuiteError(f"{spec}: suite options {sorted(options)} are not understood by this kind of suite")
