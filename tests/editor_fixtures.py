"""Small sessions, requests and a fake OpenAI-compatible chat server for the editor tests."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from micebench.spec import EditRequest, Session, Turn
from micebench.suites.base import SuiteData

INSTRUCTIONS = [
    ("Add a red hat to the cat", "subject_add"),
    ("Make it blue", "color_alter"),
    ("Remove the sofa but keep the hat", "subject_remove"),
]


def picture(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A random but reproducible RGB picture (width, height)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def suite(folder: Path, n_sessions: int = 2, n_turns: int = 2, size: tuple[int, int] = (64, 64)) -> SuiteData:
    folder.mkdir(parents=True, exist_ok=True)
    sessions = []
    for k in range(n_sessions):
        path = folder / f"s{k}.png"
        picture(k, size).save(path)
        turns = tuple(Turn(instruction=f"{text} (session {k})", task_type=task)
                      for text, task in INSTRUCTIONS[:n_turns])  # fmt: skip
        sessions.append(Session(id=f"s{k}", suite="tiny", source_image=str(path), turns=turns))
    return SuiteData("tiny", "1", tuple(sessions), str(folder))


def request(turn_index: int, sid: str = "s0", n_turns: int = 3, size: tuple[int, int] = (64, 64)) -> EditRequest:
    """An EditRequest at ``turn_index`` whose history images are distinct pictures."""
    turns = tuple(Turn(instruction=text, task_type=task) for text, task in INSTRUCTIONS[:n_turns])
    sess = Session(id=sid, suite="tiny", source_image="/nonexistent.png", turns=turns)
    return EditRequest(
        session=sess,
        turn_index=turn_index,
        source_image=picture(100, size),
        history_instructions=tuple(t.instruction for t in turns[:turn_index]),
        history_images=tuple(picture(101 + k, size) for k in range(turn_index)),
        instruction=turns[turn_index].instruction,
    )


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


def completion(text: str, finish: str = "stop") -> str:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": finish}]})  # fmt: skip


class ChatScript:
    """A pytest-httpserver handler for /chat/completions: answers with ``answer(prompt)`` and records
    every request body; ``status`` other than 200 answers with that error instead."""

    def __init__(self, answer: Any = "Rewritten instruction.", status: int = 200, finish: str = "stop") -> None:
        self.answer, self.status, self.finish = answer, status, finish
        self.bodies: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, request):
        from werkzeug import Response

        body = json.loads(request.get_data())
        with self.lock:
            self.bodies.append(body)
        if self.status != 200:
            return Response('{"error": "down"}', status=self.status, content_type="application/json")
        prompt = body["messages"][0]["content"][-1]["text"]
        text = self.answer(prompt) if callable(self.answer) else self.answer
        return Response(completion(text, self.finish), content_type="application/json")

    def prompts(self) -> list[str]:
        return [b["messages"][0]["content"][-1]["text"] for b in self.bodies]
