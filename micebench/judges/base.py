"""The judge protocol.

A judge has a ``Config`` (a :class:`JudgeConfig` subclass), declares the ``metrics`` it
produces as :class:`~micebench.spec.MetricSpec` (name, role if/cc/ga/other, direction, range), and
implements :meth:`Judge.score`: a batch of :class:`JudgeRequest` in, one list
of :class:`Judgement` per request out (one judgement per metric). A judge that cannot score a
turn returns ``Judgement.unscored(metric, reason)``, never a made-up number. Register it under
the ``micebench.judges`` entry-point group.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar

from micebench import registry
from micebench.options import AdapterConfig, build_config
from micebench.spec import Judgement, JudgeRequest, MetricSpec, as_metric_spec


class JudgeConfig(AdapterConfig):
    """Options shared by every judge (none yet); subclass to add an adapter's own."""


class Judge:
    Config: ClassVar[type[JudgeConfig]] = JudgeConfig
    #: What the judge scores. A bare string is accepted (role ``other``, higher is better) for judges
    #: written before metrics declared themselves; a judge whose metrics depend on its config overrides
    #: :meth:`metric_specs`.
    metrics: ClassVar[tuple[MetricSpec | str, ...]] = ()
    name: ClassVar[str] = ""
    #: Bump when the judge's scoring changes, so old cached judgements are not reused.
    version: ClassVar[str] = "1"

    def __init__(self, config: JudgeConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    def score(self, requests: list[JudgeRequest]) -> list[list[Judgement]]:
        raise NotImplementedError(f"{type(self).__name__} must implement score()")

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        """The specs of the metrics this judge (with its config) produces."""
        return declared_metric_specs(type(self))

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.metric_specs())

    def describe(self) -> dict[str, Any]:
        """The judge's identity (its key hashes this). Metric specs are recorded beside it in the
        manifest (see :func:`micebench.evaluate.describe_judge`), not in here, so rewording a
        metric's description does not invalidate stored judgements."""
        return {
            "name": self.name or type(self).__name__,
            "version": self.version,
            "metrics": list(self.metric_names),
            "config": self.config.model_dump(mode="json"),
        }

    @property
    def key(self) -> str:
        """Identifies the judge and its configuration; judgements are stored under it."""
        blob = json.dumps(self.describe(), sort_keys=True).encode()
        return f"{self.name}-{hashlib.sha256(blob).hexdigest()[:12]}"

    def close(self) -> None:
        """Free resources."""


def declared_metric_specs(cls: type) -> tuple[MetricSpec, ...]:
    """The metric specs a judge class declares in ``metrics`` (bare names made into specs)."""
    return tuple(as_metric_spec(m) for m in getattr(cls, "metrics", ()))


def create_judge(name: str, options: dict[str, Any] | None = None) -> Judge:
    cls = registry.load("judges", name)
    config = build_config(cls.Config, options or {}, where=f"judge {name!r}")
    judge = cls(config)
    judge.name = name
    return judge
