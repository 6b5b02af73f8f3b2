"""The run loop: an edit phase (turn-synchronous batches), then a judge phase.

Edit phase: for turn t = 1, 2, ..., every session whose turn t-1 succeeded gets turn t, in
batches of ``batch_size``; a session whose earlier turn failed has its later turns recorded
as ``skipped``. Each batch's rows are committed together, so a crash loses at most the batch
in flight and a resumed run skips every finished turn.

Judge phase: each judge scores every successful turn it has not scored yet, in batches. A
judge that raises, times out, returns the wrong shape or a non-finite score gives ``unscored``
judgements naming why. A judge whose failure is about the judge, not the turn (a setup error, a
missing import, or every request failing the same way) is stopped: its failed turns are left
unjudged (a resume or ``micebench score`` does them), the other judges go on, and the phase ends
with :class:`JudgeFailed` (a :class:`SetupError`: exit 2).

An adapter that calls ``sys.exit()`` is treated like one that raised: the run goes on.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from micebench.editors.base import Editor
from micebench.errors import SetupError
from micebench.images import BadImageError, as_rgb_image, load_source
from micebench.judges.base import Judge
from micebench.spec import EditRequest, EditResult, Judgement, JudgeRequest, ScoreStatus, Session
from micebench.store import RunStore, RunStoreError, TurnRecord


class EditorTimeout(TimeoutError):
    """An adapter (editor or judge) did not answer within the batch's time budget."""


class JudgeFailed(SetupError):
    """A judge failed in a way that is about the judge, not about a turn; the run stops with exit 2."""


#: A judge whose requests fail this many times in a row with the same reason (and none succeeds in
#: between) is stopped: it is broken, not the turns.
SAME_FAILURE_LIMIT = 8
#: ... or whose calls time out this many times in a row.
TIMEOUT_LIMIT = 3


@dataclass(frozen=True)
class RunSettings:
    batch_size: int = 8
    turn_timeout: float | None = None  # seconds per turn; a batch gets batch_len * turn_timeout
    progress: bool = True
    judge_timeout: float | None = None  # seconds per judged turn; a judge call gets batch_len * judge_timeout
    isolate: bool = False  # the editor runs in a child process, killed on timeout (micebench.isolate)


@dataclass
class EditSummary:
    done: int = 0
    errors: int = 0
    skipped: int = 0
    pending: int = 0  # turns with no record at all (the run stopped early)

    @classmethod
    def of(cls, records: Iterable[TurnRecord], total: int | None = None) -> EditSummary:
        """Count the turn records by status; with ``total``, the turns without a record are pending."""
        s = cls()
        n = 0
        for r in records:
            n += 1
            if r.status == "ok":
                s.done += 1
            elif r.status == "error":
                s.errors += 1
            elif r.status == "skipped":
                s.skipped += 1
        if total is not None:
            s.pending = max(0, total - n)
        return s


def warn(message: str) -> None:
    """A warning on stderr that does not break progress bars."""
    from tqdm.auto import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def describe_exception(e: BaseException) -> str:
    """ "Type: message" of an adapter's exception (an isolated editor's arrives already described)."""
    if getattr(e, "remote_type", None):
        return str(e)
    if isinstance(e, SystemExit):
        return f"SystemExit({e.code!r}): the adapter called sys.exit()"
    return f"{type(e).__name__}: {e}"


def close_quietly(obj: Any, what: str) -> str | None:
    """Call ``obj.close()``; a failure is reported (and returned), never raised: what was computed is safe
    and the next phase must still run."""
    try:
        obj.close()
    except (Exception, SystemExit) as e:
        msg = f"{what} close() raised {describe_exception(e)}; going on (its memory may not have been freed)"
        warn(msg)
        return msg
    return None


def _chunks(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="turn", disable=not enabled or total == 0, leave=True, dynamic_ncols=True)


def call_with_timeout(fn: Callable[[Any], Any], arg: Any, timeout: float | None) -> Any:
    """Run ``fn(arg)``; raise :class:`EditorTimeout` if it takes longer than ``timeout`` seconds.

    A Python thread cannot be killed: an editor that hangs is left running in a daemon thread
    and its eventual result is discarded. Editors that can hang should be made to time out
    themselves (e.g. a request timeout); this is the harness's last line of defence.
    """
    if timeout is None:
        return fn(arg)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn(arg)
        except BaseException as e:  # handed to the caller below, never swallowed
            box["error"] = e

    th = threading.Thread(target=target, daemon=True, name="micebench-adapter")
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise EditorTimeout(f"did not return within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["result"]


def _normalise_result(obj: Any) -> EditResult:
    """Accept an EditResult (or a bare image, for convenience); anything else is an error."""
    if isinstance(obj, EditResult):
        return obj
    try:
        return EditResult(image=as_rgb_image(obj, "editor output"))
    except BadImageError as e:
        return EditResult(error=f"editor returned an unusable result: {e}")


class Runner:
    """Drives one run directory through the edit and judge phases."""

    def __init__(self, store: RunStore, settings: RunSettings, executor: Any = None) -> None:
        self.store = store
        self.settings = settings
        self.edited = 0  # turn records written by this runner
        if executor is None:
            from micebench.executors.local import LocalExecutor

            executor = LocalExecutor()
        # Where editors and judges run (micebench.executors); this object stays the only writer of the store.
        self.executor = executor

    def edit_todo(self) -> int:
        """Turns without a record yet (0 for a run whose edit phase is complete)."""
        total = sum(len(s.turns) for s in self.store.sessions())
        return total - len(self.store.turn_records())

    def judge_todo(self, judge: Judge) -> int:
        """Successful turns this judge has not scored yet."""
        done = self.store.judged_turns(judge.key)
        return sum(1 for k, r in self.store.turn_records().items() if r.status == "ok" and k not in done)

    # -- edit phase ---------------------------------------------------------------
    def edit(self, editor_factory: Callable[[], Editor]) -> EditSummary:
        """Edit every pending turn. The editor is built only if there is something to edit.

        The executor runs :meth:`edit_sessions` (in this thread, or one lane per worker) and
        hands back each batch's records; they are committed here, as they arrive.
        """
        sessions = self.store.sessions()
        records = self.store.turn_records()
        total = sum(len(s.turns) for s in sessions)
        bar = _progress(total, "edit", self.settings.progress)
        bar.update(len(records))
        stream = self.executor.edit_stream(self, sessions, records, editor_factory)
        try:
            for new in stream:
                self.store.write_turns(new)
                records.update({(r.session_id, r.turn): r for r in new})
                self.edited += len(new)
                bar.update(len(new))
        finally:
            stream.close()  # now, not at garbage collection: this closes the editor
            bar.close()
        return EditSummary.of(records.values(), total)

    def edit_sessions(
        self, sessions: Sequence[Session], records: dict[tuple[str, int], TurnRecord], get_editor: Callable[[], Any]
    ) -> Iterator[list[TurnRecord]]:
        """Turn-synchronous batches over ``sessions``: yields each batch's new records (skipped
        turns included) for the caller to commit. ``records`` is this caller's view of the run
        and is updated here; ``get_editor()`` is called only when there is a batch to edit."""
        for t in range(max((len(s.turns) for s in sessions), default=0)):
            todo: list[Session] = []
            skipped: list[TurnRecord] = []
            for s in sessions:
                if t >= len(s.turns) or (s.id, t) in records:
                    continue
                prev = records.get((s.id, t - 1)) if t else None
                if t == 0 or (prev is not None and prev.status == "ok"):
                    todo.append(s)
                elif prev is not None:
                    why = f"turn {t} {prev.status}" + (f": {prev.error}" if prev.error else "")
                    skipped.append(TurnRecord(s.id, t, "skipped", error=why[:500]))
            if skipped:
                yield skipped
                records.update({(r.session_id, r.turn): r for r in skipped})
            for batch in _chunks(todo, self.settings.batch_size):
                new = self._edit_batch(get_editor(), batch, t, records)
                yield new
                records.update({(r.session_id, r.turn): r for r in new})

    def _edit_batch(
        self, editor: Editor, batch: Sequence[Session], t: int, records: dict[tuple[str, int], TurnRecord]
    ) -> list[TurnRecord]:
        out: list[TurnRecord] = []
        requests: list[EditRequest] = []
        inputs: list[tuple[Session, str]] = []
        for s in batch:
            try:
                req, input_hash = self._request(s, t, records)
            except (BadImageError, OSError, RunStoreError) as e:
                out.append(TurnRecord(s.id, t, "error", error=f"input: {e}"))
                continue
            requests.append(req)
            inputs.append((s, input_hash))
        if not requests:
            return out
        started = time.perf_counter()
        results, batch_error = self._call_editor(editor, requests)
        if batch_error is not None and len(requests) > 1 and not batch_error.startswith("timeout"):
            # One bad request must not take its batch-mates down: retry them one by one.
            singles = [self._call_editor(editor, [r]) for r in requests]
            results = [res[0] if err is None else EditResult(error=err) for res, err in singles]
            batch_error = None
        per_turn = (time.perf_counter() - started) / len(requests)
        for i, (s, input_hash) in enumerate(inputs):
            if batch_error is not None:
                out.append(TurnRecord(s.id, t, "error", error=batch_error[:2000], input_hash=input_hash,
                                      seconds=per_turn))
                continue
            res = _normalise_result(results[i])
            seconds = res.seconds if res.seconds is not None else per_turn
            extra_problem = _unstorable(res.extra)
            if extra_problem:
                why = f"editor returned an extra that cannot be stored as JSON ({extra_problem})"
                out.append(TurnRecord(s.id, t, "error", error=why[:2000], input_hash=input_hash, seconds=seconds))
                continue
            if res.error is not None:
                out.append(TurnRecord(s.id, t, "error", error=str(res.error)[:2000], input_hash=input_hash,
                                      seconds=seconds, extra=res.extra or None))
                continue
            try:
                img = as_rgb_image(res.image, "editor output")
            except BadImageError as e:
                out.append(TurnRecord(s.id, t, "error", error=f"unusable output: {e}", input_hash=input_hash,
                                      seconds=seconds))
                continue
            out.append(
                TurnRecord(
                    s.id,
                    t,
                    "ok",
                    input_hash=input_hash,
                    output_hash=self.store.put_image(img),
                    effective_instruction=res.effective_instruction or s.turns[t].instruction,
                    extra=res.extra or None,
                    seconds=seconds,
                )
            )
        return out

    def _call_editor(self, editor: Editor, requests: list[EditRequest]) -> tuple[list[Any] | None, str | None]:
        """(results, None) or (None, why the whole call failed)."""
        timeout = self.settings.turn_timeout * len(requests) if self.settings.turn_timeout else None
        # An isolated editor (micebench.isolate) enforces the deadline itself, by killing its process.
        with_deadline = getattr(editor, "edit_with_deadline", None)
        try:
            if callable(with_deadline):
                results = with_deadline(requests, timeout)
            else:
                results = call_with_timeout(editor.edit, requests, timeout)
        except EditorTimeout as e:
            return None, f"timeout: editor {e} (turn timeout {self.settings.turn_timeout:g} s x {len(requests)})"
        except (Exception, SystemExit) as e:  # an editor's failure becomes error rows; the run goes on
            return None, f"editor raised {describe_exception(e)}"
        if not isinstance(results, (list, tuple)) or len(results) != len(requests):
            got = len(results) if isinstance(results, (list, tuple)) else type(results).__name__
            return None, f"editor returned {got} results for {len(requests)} requests"
        return list(results), None

    def _request(self, s: Session, t: int, records: dict[tuple[str, int], TurnRecord]) -> tuple[EditRequest, str]:
        if t == 0:
            source = load_source(s)  # resized when the suite says so (MICE-Bench: 512 x 512)
            source_hash = self.store.put_image(source)
        else:
            source_hash = records[(s.id, 0)].input_hash or ""
            source = self.store.get_image(source_hash)
        prev = [records[(s.id, k)] for k in range(t)]
        history_images = tuple(self.store.get_image(r.output_hash or "") for r in prev)
        req = EditRequest(
            session=s,
            turn_index=t,
            source_image=source,
            history_instructions=tuple(turn.instruction for turn in s.turns[:t]),
            history_effective=tuple(r.effective_instruction or s.turns[k].instruction for k, r in enumerate(prev)),
            history_images=history_images,
            instruction=s.turns[t].instruction,
        )
        input_hash = prev[-1].output_hash if prev else source_hash
        return req, input_hash or ""

    # -- judge phase ----------------------------------------------------------------
    def judge(self, judges: Sequence[Judge]) -> dict[str, int]:
        """Score every successful turn each judge has not scored; returns judgements written per judge.

        The executor runs :meth:`_judge_batch` (here, or on workers) and hands back each batch's
        judgements. Raises :class:`JudgeFailed` at the end when a judge was stopped (see the module
        docstring); everything the other judges scored is written first.
        """
        sessions = {s.id: s for s in self.store.sessions()}
        records = self.store.turn_records()
        ok = sorted((k for k, r in records.items() if r.status == "ok"), key=lambda k: (k[1], k[0]))
        written: dict[str, int] = {}
        broken: list[str] = []
        for judge in judges:
            done = self.store.judged_turns(judge.key)
            todo = [k for k in ok if k not in done]
            written[judge.name] = 0
            bar = _progress(len(todo), f"judge {judge.name}", self.settings.progress)
            batches = [[(sessions[sid], t) for sid, t in batch] for batch in _chunks(todo, self.settings.batch_size)]
            streak = _SameFailure(judge.name)
            stream = self.executor.judge_stream(self, judge, batches, records)
            try:
                for n_turns, items in stream:
                    for i, (item, why) in enumerate(_per_turn(items, judge.name)):
                        timed_out = (why or "").startswith("timeout")  # one call for the whole batch
                        streak.add(item, why, 0 if timed_out and i else 1)
                    ready = streak.flush()
                    self.store.write_judgements(judge.key, judge.name, ready)
                    written[judge.name] += len(ready)
                    bar.update(n_turns)
                rest = streak.flush(final=True)  # fewer same failures than the limit: per-turn problems after all
                self.store.write_judgements(judge.key, judge.name, rest)
                written[judge.name] += len(rest)
            except JudgeFailed as e:
                broken.append(str(e))
                warn(str(e))
            finally:
                stream.close()
                bar.close()
        if broken:
            raise JudgeFailed(
                " | ".join(broken) + f". The edit results are stored in {self.store.root}; once the judge works, "
                f"`micebench run --resume {self.store.root}` (or `micebench score`) scores what is missing"
            )
        return written

    def _judge_batch(
        self, judge: Judge, batch: list[tuple[Session, int]], records: dict[tuple[str, int], TurnRecord]
    ) -> list[tuple[str, int, Judgement]]:
        """The batch's judgements (one per metric and turn). A failed call is recorded as unscored with a
        reason :func:`_per_turn` recognises; a failure about the judge itself raises :class:`JudgeFailed`."""
        requests = []
        unreadable: list[tuple[str, int, Judgement]] = []
        kept: list[tuple[Session, int]] = []
        for s, t in batch:
            src_hash = records[(s.id, 0)].input_hash or ""
            out_hashes = tuple(records[(s.id, k)].output_hash or "" for k in range(t + 1))
            try:
                req = JudgeRequest(
                    session=s,
                    turn_index=t,
                    source_image=self.store.get_image(src_hash),
                    outputs=tuple(self.store.get_image(h) for h in out_hashes),
                    effective_instructions=tuple(
                        records[(s.id, k)].effective_instruction or s.turns[k].instruction for k in range(t + 1)
                    ),
                    source_hash=src_hash,
                    output_hashes=out_hashes,
                )
            except RunStoreError as e:
                unreadable += [(s.id, t, Judgement.unscored(m, f"image unreadable: {e}", judge=judge.name))
                               for m in judge.metric_names]  # fmt: skip
                continue
            requests.append(req)
            kept.append((s, t))
        batch = kept
        if not requests:
            return unreadable
        timeout = self.settings.judge_timeout * len(requests) if self.settings.judge_timeout else None
        results, failure = _call_judge(judge, requests, timeout)
        if failure is not None and len(requests) > 1 and not failure.startswith("timeout"):
            # Retry one by one, so a turn the judge chokes on does not leave its batch-mates unscored.
            singles = [_call_judge(judge, [r], timeout / len(requests) if timeout else None) for r in requests]
            results = [res[0] if err is None else err for res, err in singles]
            reasons = {err for _, err in singles}
            if None not in reasons and len(reasons) == 1:
                raise JudgeFailed(f"judge {judge.name} failed on all {len(requests)} turns of a batch the same "
                                  f"way: {failure}")  # fmt: skip
            failure = None
        items: list[tuple[str, int, Judgement]] = []
        for i, (s, t) in enumerate(batch):
            got: dict[str, Judgement] = {}
            why = failure
            if results is not None and isinstance(results[i], str):
                why = results[i]
            elif results is not None and isinstance(results[i], (list, tuple)):
                got = {j.metric: j for j in results[i] if isinstance(j, Judgement)}
            for metric in judge.metric_names or tuple(got):
                j = got.get(metric)
                if j is None:
                    j = Judgement.unscored(metric, why or f"judge {judge.name} returned no judgement for {metric}")
                j = _finite(j)
                if not j.judge:
                    j = j.model_copy(update={"judge": judge.name})
                items.append((s.id, t, j))
        return items + unreadable


def _per_turn(items: list[tuple[str, int, Judgement]], judge_name: str
              ) -> list[tuple[list[tuple[str, int, Judgement]], str | None]]:  # fmt: skip
    """Group a batch's judgements by turn, with the reason the judge *call* failed for that turn (every
    judgement unscored with one reason written by :func:`_call_judge`), else None."""
    turns: dict[tuple[str, int], list[tuple[str, int, Judgement]]] = {}
    for item in items:
        turns.setdefault((item[0], item[1]), []).append(item)
    call_failure = (f"judge {judge_name} failed: ", f"timeout: judge {judge_name} ", f"judge {judge_name} returned ")
    out = []
    for group in turns.values():
        reasons = {j.reason for _, _, j in group if j.status == ScoreStatus.unscored}
        failed = len(reasons) == 1 and all(j.status == ScoreStatus.unscored for _, _, j in group)
        why = next(iter(reasons)) if failed else None
        out.append((group, why if why and why.startswith(call_failure) else None))
    return out


class _SameFailure:
    """Holds back the judgements of turns whose judge call failed, while every failure has the same
    reason and nothing succeeds in between. The judge is broken at :data:`SAME_FAILURE_LIMIT` such
    turns, or at :data:`TIMEOUT_LIMIT` timed-out calls in a row; its held turns are then never written,
    so a resume scores them."""

    def __init__(self, judge_name: str) -> None:
        self.judge_name = judge_name
        self.reason: str | None = None
        self.count = 0
        self.held: list[list[tuple[str, int, Judgement]]] = []
        self.ready: list[tuple[str, int, Judgement]] = []

    def add(self, item: list[tuple[str, int, Judgement]], why: str | None, weight: int = 1) -> None:
        if why is None or (self.reason is not None and why != self.reason):
            self._release()
        if why is None:
            self.ready += item
            return
        self.reason = why
        self.held.append(item)
        self.count += weight
        timeout = why.startswith("timeout")
        if self.count >= (TIMEOUT_LIMIT if timeout else SAME_FAILURE_LIMIT):
            what = f"{self.count} calls in a row timed out" if timeout else f"failed on {self.count} turns in a row"
            raise JudgeFailed(f"judge {self.judge_name} {what} the same way: {why}")

    def _release(self) -> None:
        for item in self.held:
            self.ready += item
        self.held, self.reason, self.count = [], None, 0

    def flush(self, final: bool = False) -> list[tuple[str, int, Judgement]]:
        """Judgements safe to write now (held ones stay held until the streak ends, or ``final``)."""
        if final:
            self._release()
        out, self.ready = self.ready, []
        return out


def _finite(j: Judgement) -> Judgement:
    """A non-finite score (NaN, inf) is not a score: unscored, saying what came back."""
    if j.score is None or math.isfinite(j.score):
        return j
    return Judgement.unscored(j.metric, f"the judge returned a non-finite score ({j.score})", judge=j.judge,
                              model=j.model, revision=j.revision, prompt_hash=j.prompt_hash, raw=j.raw)  # fmt: skip


def _unstorable(extra: Any) -> str | None:
    """Why an EditResult's ``extra`` cannot be stored as JSON (None when it can)."""
    if not extra:
        return None
    try:
        json.dumps(extra, default=str)
    except (TypeError, ValueError, RecursionError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def _call_judge(judge: Judge, requests: list[JudgeRequest], timeout: float | None = None
                ) -> tuple[list[Any] | None, str | None]:  # fmt: skip
    """(results, None) or (None, why the call failed); a failure is recorded as unscored, never a score.

    A failure that is about the judge itself (a setup error, a missing import) raises :class:`JudgeFailed`.
    """
    try:
        results = call_with_timeout(judge.score, requests, timeout)
    except EditorTimeout as e:
        return None, f"timeout: judge {judge.name} {e} (judge timeout {timeout / len(requests):g} s x {len(requests)})"
    except (SetupError, ImportError) as e:
        raise JudgeFailed(f"judge {judge.name} cannot score: {describe_exception(e)}") from e
    except (Exception, SystemExit) as e:  # recorded per metric as the unscored reason
        return None, f"judge {judge.name} failed: {describe_exception(e)}"
    if not isinstance(results, (list, tuple)) or len(results) != len(requests):
        got = len(results) if isinstance(results, (list, tuple)) else type(results).__name__
        return None, f"judge {judge.name} returned {got} results for {len(requests)} requests"
    return list(results), None
