"""Hostile or broken suite input stops `micebench run` and `validate` with exit 2 and a message naming
file, line and field: never a traceback, never a run directory."""

from __future__ import annotations

import json
import struct
import time
import zlib

import pytest
from click.testing import CliRunner
from PIL import Image

from micebench.cli import main
from micebench.suites.validate import MAX_DEPTH

ROW = {"image": "a.png", "instruction": ["Change the color of the mug to red"], "task_type": ["color_alter"],
       "formatted_instruction": ["Change the color of [mug] to [red]"], "bg_consistency": [True],
       "unchanged_objects": [["plate"]], "all_objects": [["mug", "plate"]]}  # fmt: skip


def yaml_suite(name="ok", image="a.png", extra=""):
    return (f"name: {name}\nsessions:\n  - id: s1\n    image: {image}\n{extra}    turns:\n"
            "      - instruction: Change the color of the mug to red\n        task_type: color_alter\n")  # fmt: skip


def bomb_png(path, side=14000):
    """A valid 1-bit PNG of side x side pixels (196 million): a few kB on disk, gigabytes decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row * 1000) for _ in range(side // 1000)) + comp.flush()

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def refused(tmp_path, suite, *expect, extra_args=()):
    out = tmp_path / "runs"
    for args in (["run", "--suite", str(suite), "--model", "identity", "--out", str(out), "-q", *extra_args],
                 ["validate", str(suite)]):  # fmt: skip
        r = CliRunner().invoke(main, args)
        assert isinstance(r.exception, SystemExit), f"{args[0]}: traceback: {r.exception!r}\n{r.output}"
        assert r.exit_code == 2, r.output
        for e in expect:
            assert e in r.output, r.output
        if args[0] == "validate":
            break
    assert not out.exists(), "a run directory was left behind"
    return r.output


@pytest.fixture
def folder(tmp_path):
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "a.png")
    return tmp_path


def test_decompression_bomb_source_in_yaml_and_jsonl(folder):
    bomb_png(folder / "bomb.png")
    (folder / "s.yaml").write_text(yaml_suite(image="bomb.png"))
    refused(folder, folder / "s.yaml", "s.yaml:4", "bomb.png", "14000x14000", "decompression bomb")
    d = folder / "mice"
    d.mkdir()
    bomb_png(d / "bomb.png")
    (d / "test_metadata.jsonl").write_text(json.dumps({**ROW, "image": "bomb.png"}) + "\n")
    refused(folder, d, "test_metadata.jsonl:1: field 'image'", "decompression bomb")


def test_unreadable_source_image_is_named(folder):
    (folder / "junk.png").write_bytes(b"not an image at all")
    (folder / "s.yaml").write_text(yaml_suite(image="junk.png"))
    refused(folder, folder / "s.yaml", "s.yaml:4", "cannot read image")


def test_non_utf8_yaml_and_jsonl_name_line_and_column(folder):
    (folder / "s.yaml").write_bytes(yaml_suite().replace("mug to red", "mug to r\xe9d").encode("latin-1"))
    refused(folder, folder / "s.yaml", "s.yaml:6: not UTF-8", "e9")
    d = folder / "mice"
    d.mkdir()
    good = json.dumps(ROW).encode()
    (d / "test_metadata.jsonl").write_bytes(good + b"\n" + good.replace(b"mug to red", b"mug to r\xe9d") + b"\n")
    refused(folder, d, "test_metadata.jsonl:2: not UTF-8", "column")


def test_model_config_not_utf8_is_an_options_error(folder):
    (folder / "s.yaml").write_text(yaml_suite())
    (folder / "m.yaml").write_bytes(b"root: caf\xe9\n")
    r = CliRunner().invoke(main, ["run", "--suite", str(folder / "s.yaml"), "--model", "identity", "--model-config",
                                  str(folder / "m.yaml"), "--out", str(folder / "runs")])  # fmt: skip
    assert isinstance(r.exception, SystemExit) and r.exit_code == 2 and "m.yaml:1: not UTF-8" in r.output, r.output


def test_json_and_yaml_nested_100k_deep(folder):
    d = folder / "mice"
    d.mkdir()
    deep = "[" * 100_000 + "]" * 100_000
    (d / "test_metadata.jsonl").write_text(json.dumps(ROW)[:-1] + f', "extra": {deep}}}\n')
    refused(folder, d, "test_metadata.jsonl:1: JSON nested too deeply")
    (d / "test_metadata.jsonl").write_text(json.dumps(ROW)[:-1] + f', "extra": {"[" * (MAX_DEPTH + 5)}'
                                           f'{"]" * (MAX_DEPTH + 5)}}}\n')  # fmt: skip
    refused(folder, d, "test_metadata.jsonl:1: nested more than")
    (folder / "s.yaml").write_text(yaml_suite(extra=f"    metadata: {{x: {deep}}}\n"))
    refused(folder, folder / "s.yaml", "s.yaml", "nested too deeply")
    (folder / "s.yaml").write_text(yaml_suite(extra=f"    metadata: {{x: {'[' * 100}{']' * 100}}}\n"))
    refused(folder, folder / "s.yaml", "s.yaml", "nested more than")


@pytest.mark.parametrize("name, why", [("x" * 300, "300 characters"), ('"bad\\0name"', "U+0000"),
                                       ('"tab\\there"', "U+0009")])  # fmt: skip
def test_bad_suite_name_in_yaml_names_line_and_field(folder, name, why):
    (folder / "s.yaml").write_text(yaml_suite(name=name))
    refused(folder, folder / "s.yaml", "s.yaml:1: name:", why)


def test_too_long_suite_name_given_to_a_jsonl_suite(folder):
    d = folder / "mice"
    d.mkdir()
    Image.new("RGB", (16, 16)).save(d / "a.png")
    (d / "test_metadata.jsonl").write_text(json.dumps(ROW) + "\n")
    out = folder / "runs"
    r = CliRunner().invoke(main, ["run", "--suite", str(d), "-S", "name=" + "n" * 300, "--model", "identity",
                                  "--out", str(out)])  # fmt: skip
    assert isinstance(r.exception, SystemExit) and r.exit_code == 2 and "300 characters" in r.output, r.output
    assert not out.exists()


@pytest.mark.parametrize(
    "change, expect",
    [
        ({"unchanged_objects": ["plate"]}, "field 'unchanged_objects'[0] must be a list of strings, got a string"),
        ({"all_objects": [["mug", 3]]}, "field 'all_objects'[0] must be a list of strings, got a list"),
        ({"bg_consistency": ["yes"]}, "field 'bg_consistency'[0] must be true or false, got a string ('yes')"),
        ({"instruction": [["x"]]}, "field 'instruction'[0] must be a string, got a list"),
        ({"formatted_instruction": [7]}, "field 'formatted_instruction'[0] must be a string or null, got a number"),
        ({"available_objects": ["plate"]}, "field 'available_objects'[0] must be a list of strings"),
        ({"available_objects": [[], []]}, "field 'available_objects' must be a list with one entry per turn (1)"),
        ({"turns": True}, "field 'turns' must be a whole number, got a boolean"),
        ({"image": "a\u0000.png"}, "field 'image'"),
    ],
)
def test_mice_jsonl_types_are_strict(folder, change, expect):
    d = folder / "mice"
    d.mkdir()
    Image.new("RGB", (16, 16)).save(d / "a.png")
    (d / "test_metadata.jsonl").write_text(json.dumps({**ROW, **change}) + "\n")
    refused(folder, d, "test_metadata.jsonl:1: " + expect)


def alias_bomb() -> str:
    levels = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i, name in enumerate("bcdefgh"):
        prev = "abcdefgh"[i]
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    meta = "      " + "\n      ".join(levels) + "\n"
    return yaml_suite(extra="    metadata:\n" + meta)


def test_yaml_alias_bomb_is_refused_quickly(folder):
    text = alias_bomb()
    assert len(text.encode()) < 600  # 9^8 = 43 million strings once expanded
    (folder / "s.yaml").write_text(text)
    t0 = time.monotonic()
    refused(folder, folder / "s.yaml", "s.yaml", "alias bomb")
    assert time.monotonic() - t0 < 10


def test_recursive_alias_is_refused(folder):
    (folder / "s.yaml").write_text(yaml_suite(extra="    metadata: {loop: &x [1, *x]}\n"))
    refused(folder, folder / "s.yaml", "s.yaml", "recursive")


def test_modest_alias_reuse_still_loads(folder):
    objs = "[mug, plate, cup, fork, knife]"
    turns = "".join(f"      - instruction: Change the color of the mug to c{i}\n        task_type: color_alter\n"
                    f"        all_objects: {'&o ' + objs if i == 0 else '*o'}\n" for i in range(50))  # fmt: skip
    (folder / "s.yaml").write_text(f"name: ok\nsessions:\n  - id: s1\n    image: a.png\n    turns:\n{turns}")
    r = CliRunner().invoke(main, ["validate", str(folder / "s.yaml")])
    assert r.exit_code == 0, r.output


class BombSuite:
    """A third-party suite (loaded as module:Class) whose one session points at :attr:`path`."""

    path = ""
    Config = None  # filled below: a suite needs a Config class

    def __init__(self, config=None):
        self.config = config

    def load(self, image_root=None):
        from micebench.spec import Session, Turn
        from micebench.suites.base import SuiteData

        turn = Turn(instruction="Remove the cup", task_type="subject_remove")
        return SuiteData("third-party", "1", (Session(id="s", suite="third-party", source_image=self.path,
                                                       turns=(turn,)),))  # fmt: skip


def test_registered_suite_images_get_the_same_header_check(tmp_path, monkeypatch):
    from micebench.suites.base import SuiteConfig, SuiteError
    from micebench.suites.resolve import load_suite

    bomb_png(tmp_path / "bomb.png")
    monkeypatch.setattr(BombSuite, "Config", SuiteConfig)
    monkeypatch.setattr(BombSuite, "path", str(tmp_path / "bomb.png"))
    with pytest.raises(SuiteError, match="suite 'test_loud_input_suites:BombSuite': source image: .* decompression"):
        load_suite("test_loud_input_suites:BombSuite")
    assert len(load_suite("test_loud_input_suites:BombSuite", check_images=False).sessions) == 1


def test_load_image_turns_a_bomb_into_a_bad_image_error(tmp_path):
    from micebench.images import BadImageError, load_image

    bomb_png(tmp_path / "bomb.png")
    with pytest.raises(BadImageError, match="replay s1 turn 1: cannot read .*bomb.png"):
        load_image(tmp_path / "bomb.png", "replay s1 turn 1")
