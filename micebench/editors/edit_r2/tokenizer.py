"""The Qwen2 byte-level BPE tokenizer of the checkpoint, with BAGEL's four marker tokens resolved by name."""

from __future__ import annotations

from pathlib import Path

from .config import CheckpointError

BOS, EOS, VISION_START, VISION_END = "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"


class BagelTokenizer:
    """``encode`` adds no special tokens; ``decode`` keeps them (BAGEL's text extraction relies on that)."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        tok_json = folder / "tokenizer.json"
        if tok_json.is_file():
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_file(str(tok_json))
            self._encode = lambda text: self._tok.encode(text, add_special_tokens=False).ids
            self._decode = lambda ids: self._tok.decode(ids, skip_special_tokens=False)
            self._id = self._tok.token_to_id
        elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            from transformers import Qwen2Tokenizer

            self._tok = Qwen2Tokenizer.from_pretrained(str(folder))
            self._encode = lambda text: self._tok.encode(text, add_special_tokens=False)
            self._decode = lambda ids: self._tok.decode(ids, skip_special_tokens=False)
            self._id = lambda tok: self._tok.convert_tokens_to_ids(tok)
        else:
            raise CheckpointError(f"{folder}: no tokenizer.json (or vocab.json + merges.txt) for the Qwen2 tokenizer")
        ids = {}
        for name in (BOS, EOS, VISION_START, VISION_END):
            i = self._id(name)
            if i is None or (isinstance(i, int) and i < 0):
                raise CheckpointError(f"{folder}: tokenizer lacks the special token {name}")
            ids[name] = int(i)
        self.bos_id, self.eos_id = ids[BOS], ids[EOS]
        self.vision_start_id, self.vision_end_id = ids[VISION_START], ids[VISION_END]
        self.folder = folder

    def encode(self, text: str) -> list[int]:
        return list(self._encode(text))

    def decode(self, ids: list[int]) -> str:
        return self._decode(list(ids))

    def max_id(self) -> int:
        return max(self.bos_id, self.eos_id, self.vision_start_id, self.vision_end_id)
