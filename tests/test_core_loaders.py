"""Suite loaders: MICE JSONL counts against PROTOCOL.md, YAML suites, malformed input."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from conftest import MICE_DIR

from micebench.suites.base import SuiteError
from micebench.suites.mice_jsonl import load_mice_jsonl
from micebench.suites.resolve import load_suite
from micebench.suites.yaml_suite import load_yaml_suite

SHORT = {
    "background": "background_change", "add": "subject_add", "text": "text_change", "count": "count_change",
    "remove": "subject_remove", "replace": "subject_replace", "position": "position_change",
    "color": "color_alter", "material": "material_alter",
}

needs_mice = pytest.mark.skipif(not (MICE_DIR / "cm" / "test_metadata.jsonl").is_file(),
                                reason="shared/mice-bench not found beside the checkout")


def protocol_counts(subset: str) -> dict[str, tuple[int, int, int]]:
    """Parse 'cm: background 128/32/32, add 35/61/56, ...' from PROTOCOL.md."""
    text = (MICE_DIR / "PROTOCOL.md").read_text()
    block = re.search(rf"^- {subset}: (.*?)(?=\n- |\n\n)", text, re.M | re.S).group(1)
    out = {}
    for part in " ".join(block.split()).rstrip(".").split(", "):
        name, nums = part.rsplit(" ", 1)
        out[SHORT[name]] = tuple(int(x) for x in nums.split("/"))
    return out


@needs_mice
@pytest.mark.parametrize("subset", ["cm", "cu"])
def test_mice_counts_match_protocol(subset):
    suite = load_mice_jsonl(MICE_DIR / subset, check_images=False)
    assert len(suite.sessions) == 360
    assert all(len(s.turns) == 3 and s.subset == subset for s in suite.sessions)
    expected = protocol_counts(subset)
    for t in range(3):
        got = Counter(s.turns[t].task_type for s in suite.sessions)
        want = {k: v[t] for k, v in expected.items() if v[t]}
        assert dict(got) == want, f"turn {t + 1}"
    empty = [sum(1 for s in suite.sessions if not s.turns[t].unchanged_objects) for t in range(3)]
    want_empty = re.search(rf"{subset} (\d+)/(\d+)/(\d+)", (MICE_DIR / "PROTOCOL.md").read_text().split(
        "empty `unchanged_objects`")[1]).groups()
    assert empty == [int(x) for x in want_empty]


@needs_mice
def test_mice_flags_empty_text_targets():
    suite = load_mice_jsonl(MICE_DIR / "cm", check_images=False)
    flagged = [t for s in suite.sessions for t in s.turns if "invalid" in t.metadata]
    assert len(flagged) == 7 and all(t.task_type == "text_change" for t in flagged)


@needs_mice
def test_missing_images_one_clear_error():
    with pytest.raises(SuiteError) as e:
        load_mice_jsonl(MICE_DIR / "cu")
    msg = str(e.value)
    assert "360 of 360 source images are missing" in msg and "--image-root" in msg
    assert msg.count("source_image/") == 5  # the first few, not all 360


def _write(tmp_path, rows):
    d = tmp_path / "cm"
    d.mkdir()
    (d / "source_image").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(d / "source_image" / "a.jpg")
    (d / "test_metadata.jsonl").write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows))
    return d


GOOD = {
    "image": "source_image/a.jpg", "instruction": ["Remove the cup"], "task_type": ["subject_remove"],
    "formatted_instruction": ["Remove [cup]"], "bg_consistency": [True], "unchanged_objects": [["plate"]],
    "all_objects": [["cup", "plate"]], "turns": 1,
}


def test_good_jsonl_loads_with_images(tmp_path):
    d = _write(tmp_path, [GOOD])
    suite = load_suite(str(d))
    assert suite.sessions[0].id == "cm/a" and suite.sessions[0].turns[0].unchanged_objects == ("plate",)


@pytest.mark.parametrize(
    "row, expect",
    [
        ("{not json", r"test_metadata.jsonl:2: not valid JSON"),
        ({k: v for k, v in GOOD.items() if k != "task_type"}, r":2: missing field 'task_type'"),
        ({**GOOD, "unchanged_objects": [[], []]}, r":2: field 'unchanged_objects' has 2 entries, 'instruction' has 1"),
        ({**GOOD, "task_type": ["subject_teleport"]}, r":2: field 'task_type'\[0\]: unknown task type"),
        ({**GOOD, "image": "../../etc/passwd"}, r":2: field 'image'.*escapes"),
        ({**GOOD, "image": "/etc/passwd"}, r":2: field 'image'.*absolute"),
        ({**GOOD, "turns": 2}, r":2: field 'turns' is 2"),
    ],
)
def test_malformed_jsonl_names_file_line_field(tmp_path, row, expect):
    d = _write(tmp_path, [GOOD, row])
    with pytest.raises(SuiteError, match=expect):
        load_suite(str(d / "test_metadata.jsonl"))


def test_photos_suite_loads_real_photos():
    suite = load_suite("photos")
    assert len(suite.sessions) == 4 and {s.subset for s in suite.sessions} == {"cm", "cu"}
    assert all(len(s.turns) == 3 for s in suite.sessions)
    from PIL import Image

    assert Image.open(suite.sessions[0].source_image).size == (512, 512)  # skimage's astronaut


YAML_OK = """\
name: mine
sessions:
  - id: s1
    image: a.png
    turns:
      - instruction: Remove the cup
        task_type: subject_remove
        formatted_instruction: Remove [cup]
"""


def test_yaml_errors_name_line_and_field(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    f = tmp_path / "s.yaml"
    f.write_text(YAML_OK)
    assert load_yaml_suite(f).sessions[0].id == "s1"
    f.write_text(YAML_OK.replace("subject_remove", "subject_explode"))
    with pytest.raises(SuiteError, match=r"s.yaml:7: sessions\[0\].turns\[0\].task_type: .*unknown task type"):
        load_yaml_suite(f)
    f.write_text(YAML_OK.replace("        formatted_instruction: Remove [cup]\n", "").replace(
        "      - instruction: Remove the cup\n", "      - instruction_typo: Remove the cup\n"))
    with pytest.raises(SuiteError, match=r"s.yaml:6: sessions\[0\].turns\[0\].instruction: Field required"):
        load_yaml_suite(f)
    f.write_text(YAML_OK.replace("a.png", "../a.png"))
    with pytest.raises(SuiteError, match="escapes"):
        load_yaml_suite(f)
    f.write_text("name: [unclosed")
    with pytest.raises(SuiteError, match=r"s.yaml:\d+: not valid YAML"):
        load_yaml_suite(f)


def test_shipped_schema_is_current():
    from conftest import ROOT

    from micebench.suites.yaml_suite import suite_json_schema

    shipped = json.loads((ROOT / "tasks" / "suite.schema.json").read_text())
    assert shipped == suite_json_schema(), "regenerate with: micebench schema > tasks/suite.schema.json"


@needs_mice
def test_real_mice_metadata_runs_end_to_end_with_an_image_root(tmp_path):
    """The real cu metadata, with stand-in images under --image-root, through the runner."""
    import pandas as pd
    from PIL import Image

    from micebench.evaluate import start_run
    from micebench.runner import RunSettings

    rows = [json.loads(line) for line in (MICE_DIR / "cu" / "test_metadata.jsonl").read_text().splitlines()[:3]]
    for i, row in enumerate(rows):
        path = tmp_path / "images" / "cu" / row["image"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (40 * i, 80, 120)).save(path)
    with pytest.raises(SuiteError, match="360 of 360"):
        load_suite(str(MICE_DIR / "cu"))
    with pytest.raises(SuiteError, match="357 of 360"):  # the root holds 3 of them
        load_suite(str(MICE_DIR / "cu"), image_root=tmp_path / "images")
    full = load_mice_jsonl(MICE_DIR / "cu", image_root=tmp_path / "images", check_images=False)
    from micebench.suites.base import SuiteData

    suite = SuiteData(full.name, full.version, full.sessions[:3], full.source)
    res = start_run(suite, "identity", {}, [("pixel", {})], out=tmp_path / "runs", run_name="r",
                    settings=RunSettings(progress=False))
    df = pd.read_parquet(res.run_dir / "turns.parquet")
    assert len(df) == 9 and (df.status == "ok").all() and (df.subset == "cu").all()
    assert list(df.formatted_instruction[:3]) == [t.formatted_instruction for t in suite.sessions[0].turns]


@needs_mice
def test_registered_mice_suite_joins_both_subsets(monkeypatch):
    suite = load_suite("mice", {"root": str(MICE_DIR), "check_images": False})
    assert suite.name == "mice" and len(suite.sessions) == 720
    assert len({s.id for s in suite.sessions}) == 720
    assert {s.subset for s in suite.sessions} == {"cm", "cu"}
    assert len(load_suite("mice", {"root": str(MICE_DIR), "subset": "cu", "check_images": False}).sessions) == 360
    monkeypatch.delenv("MICEBENCH_MICE_ROOT", raising=False)
    with pytest.raises(SuiteError, match="-S root=DIR"):
        load_suite("mice")
