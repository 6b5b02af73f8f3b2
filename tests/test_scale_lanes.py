"""The pieces of the Ray executor that need no Ray: lanes, the session partition, executor options."""

from __future__ import annotations

import threading
import time

import pytest
from click.testing import CliRunner

from micebench.cli import main
from micebench.executors import ExecutorSpec
from micebench.executors.lanes import partition, run_lanes


def test_lanes_run_concurrently_and_hand_over_everything():
    started = threading.Barrier(2, timeout=5)  # both lanes must be running at once to pass it

    def lane(name):
        def gen():
            started.wait()
            for i in range(5):
                yield (name, i)
        return gen

    got = list(run_lanes([lane("a"), lane("b")]))
    assert sorted(got) == [(n, i) for n in "ab" for i in range(5)]
    assert [i for n, i in got if n == "a"] == list(range(5))  # each lane's items in its own order


def test_a_lane_never_runs_more_than_one_item_ahead_of_the_consumer():
    produced = []

    def gen():
        for i in range(10):
            produced.append(i)
            yield i

    feed = run_lanes([gen])
    assert next(feed) == 0
    time.sleep(0.2)
    assert len(produced) <= 3  # 0 consumed, 1 handed over, 2 at most being computed
    feed.close()
    time.sleep(0.1)
    assert len(produced) <= 3  # closing stops the lane


def test_a_failing_lane_raises_in_the_consumer():
    def good():
        yield from range(100)

    def bad():
        yield "x"
        raise RuntimeError("lane broke")

    with pytest.raises(RuntimeError, match="lane broke"):
        list(run_lanes([good, bad]))


def test_partition_balances_turns_deterministically():
    weights = [10, 3, 3, 3, 3, 3, 3, 1]
    parts = partition(list(range(len(weights))), 3, weight=lambda i: weights[i])
    assert parts == partition(list(range(len(weights))), 3, weight=lambda i: weights[i])
    assert sorted(i for p in parts for i in p) == list(range(len(weights)))
    loads = sorted(sum(weights[i] for i in p) for p in parts)
    assert loads[-1] - loads[0] <= 3 and all(p == sorted(p) for p in parts)
    assert len(partition([1, 2], 8)) == 2  # never an empty lane


def test_executor_options_are_checked():
    with pytest.raises(ValueError, match="need --executor ray"):
        ExecutorSpec("local", workers=2)
    assert ExecutorSpec.from_manifest(None) == ExecutorSpec()
    assert ExecutorSpec.from_manifest({"name": "ray", "workers": 3, "ray_version": "x"}).workers == 3
    r = CliRunner().invoke(main, ["run", "--suite", "synth", "--model", "identity", "--workers", "2"])
    assert r.exit_code == 2 and "need --executor ray" in r.output
    r = CliRunner().invoke(main, ["run", "--suite", "synth", "--model", "identity", "--shard", "4/3"])
    assert r.exit_code == 2 and "between 1 and N" in r.output
