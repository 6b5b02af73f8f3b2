"""The data model shared by suites, editors, judges and the run store.

Every object here is a frozen pydantic model: what a suite loader produces is what the
runner stores, what an editor receives is what a judge later sees. Images travel as
PIL images inside requests (built batch by batch, never for a whole suite at once) and
as sha256 hashes inside stored records.
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TASK_TYPES: tuple[str, ...] = (
    "subject_add",
    "subject_remove",
    "subject_replace",
    "color_alter",
    "material_alter",
    "text_change",
    "position_change",
    "count_change",
    "background_change",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Turn(_Frozen):
    """One instruction of a session, with what the judges need to score it."""

    instruction: str = Field(min_length=1, description="What the editor receives.")
    task_type: str = Field(description=f"One of: {', '.join(TASK_TYPES)}.")
    formatted_instruction: str | None = Field(
        default=None, description="The instruction with targets in [brackets], pronouns resolved."
    )
    unchanged_objects: tuple[str, ...] = Field(
        default=(), description="Objects that must look as in the SOURCE image (CC)."
    )
    all_objects: tuple[str, ...] = Field(
        default=(), description="Every object present; masked out for the CC background term."
    )
    bg_consistency: bool = Field(default=True, description="Whether CC includes the background term.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free per-turn data (ground truth).")

    @field_validator("task_type")
    @classmethod
    def _known_task(cls, v: str) -> str:
        if v not in TASK_TYPES:
            raise ValueError(f"unknown task type {v!r}; expected one of {', '.join(TASK_TYPES)}")
        return v


class Session(_Frozen):
    """A source image and the ordered instructions applied to it."""

    id: str = Field(min_length=1)
    suite: str = Field(min_length=1)
    subset: str = ""
    source_image: str = Field(min_length=1, description="Absolute path of the source image.")
    turns: tuple[Turn, ...] = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)
    version: str = Field(default="1", description="Suite item version; a change invalidates old numbers.")

    def digest(self) -> str:
        """A stable hash of the session's content (its image path excluded: images are hashed by bytes)."""
        payload = self.model_dump(mode="json", exclude={"source_image"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class EditRequest(BaseModel):
    """What an editor gets for one turn: the whole history up to the current instruction.

    ``history_instructions[i]`` and ``history_images[i]`` are turn i+1's raw instruction and the
    editor's own output for it; ``history_effective`` holds the instruction the editor actually
    used (e.g. rewritten by intent reconstruction), or the raw one.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    session: Session
    turn_index: int = Field(ge=0, description="0-based index of the current turn.")
    source_image: Any = Field(description="PIL.Image of the source.")
    history_instructions: tuple[str, ...] = ()
    history_effective: tuple[str, ...] = ()
    history_images: tuple[Any, ...] = ()
    instruction: str

    @property
    def turn(self) -> Turn:
        return self.session.turns[self.turn_index]

    @property
    def previous_image(self) -> Any:
        """The image this turn edits by default: the last output, or the source at turn 1."""
        return self.history_images[-1] if self.history_images else self.source_image

    @model_validator(mode="after")
    def _consistent_history(self) -> EditRequest:
        n = self.turn_index
        if len(self.history_instructions) != n or len(self.history_images) != n:
            raise ValueError(
                f"turn {n + 1} needs {n} earlier instructions and images, got "
                f"{len(self.history_instructions)} and {len(self.history_images)}"
            )
        if self.history_effective and len(self.history_effective) != n:
            raise ValueError("history_effective must be empty or as long as history_instructions")
        return self


class EditResult(BaseModel):
    """What an editor returns for one request: an image, or an error saying why not."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    image: Any = None
    error: str | None = None
    effective_instruction: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict, description="E.g. a reasoning trace.")
    seconds: float | None = None

    @model_validator(mode="after")
    def _image_or_error(self) -> EditResult:
        if (self.image is None) == (self.error is None):
            raise ValueError("an EditResult carries exactly one of image or error")
        return self


MetricRole = Literal["if", "cc", "ga", "other"]


class MetricSpec(_Frozen):
    """What one metric of a judge means, declared by the judge and recorded in the run's manifest.

    Tables, summaries, the leaderboard, the gate and the report read these specs; nothing guesses a
    metric's direction or role from its name. ``role`` says which MICE axis the metric measures:
    instruction following (``if``), content consistency (``cc``), global awareness (``ga``), or none
    of them (``other``, e.g. similarity to the previous image).
    """

    name: str = Field(min_length=1, description="The metric's name as the judge writes it in Judgement.metric.")
    role: MetricRole = "other"
    higher_is_better: bool = True
    range: tuple[float | None, float | None] = Field(
        default=(None, None), description="(low, high) bounds of the score; None where unbounded."
    )
    description: str = ""


def as_metric_spec(value: MetricSpec | str | dict[str, Any]) -> MetricSpec:
    """A MetricSpec from a spec, a mapping of its fields, or a bare name.

    A bare name (judges written before metrics declared themselves) means role ``other``,
    higher is better, unbounded.
    """
    if isinstance(value, MetricSpec):
        return value
    if isinstance(value, str):
        return MetricSpec(name=value, description="declared by name only (role other, higher is better)")
    return MetricSpec.model_validate(value)


class ScoreStatus(str, Enum):
    ok = "ok"
    unscored = "unscored"  # the judge tried and could not score: reason says why
    not_applicable = "not_applicable"  # the metric does not apply to this turn


class Judgement(_Frozen):
    """One metric's verdict on one turn, traceable to the model, prompt and votes behind it."""

    metric: str = Field(min_length=1)
    score: float | None = None
    status: ScoreStatus = ScoreStatus.ok
    votes: tuple[float | None, ...] = ()
    reason: str = ""
    raw: str = ""
    judge: str = ""
    model: str = ""
    revision: str = ""
    prompt_hash: str = ""
    protocol: str = Field(default="", description="Scoring protocol, e.g. the mice judge's strict or upstream.")

    @model_validator(mode="after")
    def _score_iff_ok(self) -> Judgement:
        if self.status == ScoreStatus.ok and self.score is None:
            raise ValueError(f"{self.metric}: status ok needs a score")
        if self.status != ScoreStatus.ok and self.score is not None:
            raise ValueError(f"{self.metric}: an {self.status.value} judgement carries no score")
        if self.status != ScoreStatus.ok and not self.reason:
            raise ValueError(f"{self.metric}: an {self.status.value} judgement must say why")
        return self

    @classmethod
    def unscored(cls, metric: str, reason: str, **kw: Any) -> Judgement:
        return cls(metric=metric, status=ScoreStatus.unscored, reason=reason, **kw)

    @classmethod
    def not_applicable(cls, metric: str, reason: str, **kw: Any) -> Judgement:
        return cls(metric=metric, status=ScoreStatus.not_applicable, reason=reason, **kw)


class JudgeRequest(BaseModel):
    """What a judge gets for one turn: the images of the session so far and the turn's spec.

    ``outputs[i]`` is the editor's image for turn i+1, up to and including the current turn.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    session: Session
    turn_index: int = Field(ge=0)
    source_image: Any
    outputs: tuple[Any, ...]
    effective_instructions: tuple[str, ...] = ()
    source_hash: str = ""
    output_hashes: tuple[str, ...] = ()

    @property
    def turn(self) -> Turn:
        return self.session.turns[self.turn_index]

    @property
    def output(self) -> Any:
        return self.outputs[self.turn_index]

    @property
    def previous(self) -> Any:
        return self.outputs[self.turn_index - 1] if self.turn_index else self.source_image

    @model_validator(mode="after")
    def _outputs_up_to_turn(self) -> JudgeRequest:
        if len(self.outputs) != self.turn_index + 1:
            raise ValueError(f"turn {self.turn_index + 1} needs {self.turn_index + 1} outputs, got {len(self.outputs)}")
        return self


class TurnStatus(str, Enum):
    ok = "ok"
    error = "error"  # the editor raised, timed out, or returned no usable image
    skipped = "skipped"  # an earlier turn of the session failed
    pending = "pending"
