"""A lean stand-in for a transformers fast tokenizer, over the raw ``tokenizers.Tokenizer``.

Prediction needs only what :mod:`complex_ner.domain.alignment` and the tagger use: ``__call__`` with
offsets and special-token masks, ``convert_ids_to_tokens``, the special-token ids, and for
``join="char"`` ``convert_tokens_to_ids`` and ``backend_tokenizer.normalizer``. Loading a
folder through ``transformers.AutoTokenizer`` costs about 5 s more than
``tokenizers.Tokenizer.from_file`` on the 17 MB XLM-R ``tokenizer.json`` (transformers also
parses the JSON in Python and rebuilds the vocabulary), and it imports transformers.

Folders written by ``save_pretrained`` under transformers 5 hold the pipeline transformers itself
runs (it serialises its backend tokenizer), so reading that ``tokenizer.json`` directly gives the
same pieces and offsets; ``tests/unit/test_lean_load.py`` checks this on real Spanish and Chinese
sentences. Training keeps ``transformers.AutoTokenizer``
(:func:`complex_ner.domain.encoders.load_tokenizer`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["TOKENIZER_JSON", "RawTokenizer", "load_raw_tokenizer"]

TOKENIZER_JSON = "tokenizer.json"
_CONFIG_FILES = ("special_tokens_map.json", "tokenizer_config.json")  # later files win
# The order transformers lists special tokens in (``all_special_tokens``).
_SPECIAL_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
_EXTRA_KEYS = ("additional_special_tokens", "extra_special_tokens")


def _token_text(value: Any) -> str | None:
    """A special token as written in a config: a string, or ``{"content": ...}`` (older files)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


class RawTokenizer:
    """The slice of a transformers fast tokenizer that alignment and prediction use.

    Attributes:
        backend_tokenizer: The ``tokenizers.Tokenizer`` doing the work (same name as in
            transformers).
        model_max_length: From ``tokenizer_config.json`` (informational; nothing truncates).
    """

    is_fast = True

    def __init__(self, tokenizer: Any, config: dict[str, Any], folder: Path | None = None) -> None:
        """Wrap ``tokenizer``.

        Args:
            tokenizer: A ``tokenizers.Tokenizer``.
            config: The merged special-tokens map and tokenizer config.
            folder: Where the files came from (:meth:`save_pretrained` copies them).
        """
        # transformers switches these off unless a call asks for them; so must we, whatever the
        # JSON says.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.backend_tokenizer = tokenizer
        self._folder = folder
        self._special: dict[str, str | None] = {
            k: _token_text(config.get(k)) for k in _SPECIAL_KEYS
        }
        extra: list[str] = []
        for key in _EXTRA_KEYS:
            values = config.get(key) or []
            if isinstance(values, dict):  # transformers 5 may store a name -> token mapping
                values = list(values.values())
            extra += [t for t in (_token_text(v) for v in values) if t is not None]
        self._extra = extra
        self.model_max_length = int(config.get("model_max_length") or 1_000_000_000_000)

    # ------------------------------------------------------------------ special tokens

    def _id(self, key: str) -> int | None:
        token = self._special[key]
        return None if token is None else self.backend_tokenizer.token_to_id(token)

    @property
    def unk_token_id(self) -> int | None:
        return self._id("unk_token")

    @property
    def pad_token_id(self) -> int | None:
        return self._id("pad_token")

    @property
    def cls_token_id(self) -> int | None:
        return self._id("cls_token")

    @property
    def sep_token_id(self) -> int | None:
        return self._id("sep_token")

    @property
    def mask_token_id(self) -> int | None:
        return self._id("mask_token")

    @property
    def all_special_tokens(self) -> list[str]:
        """Special tokens in transformers' order, without duplicates."""
        tokens = [t for t in (self._special[k] for k in _SPECIAL_KEYS) if t is not None]
        return list(dict.fromkeys(tokens + self._extra))

    @property
    def all_special_ids(self) -> list[int]:
        ids = (self.backend_tokenizer.token_to_id(t) for t in self.all_special_tokens)
        return [i for i in ids if i is not None]

    def __len__(self) -> int:
        return int(self.backend_tokenizer.get_vocab_size(with_added_tokens=True))

    # ------------------------------------------------------------------ encoding

    def __call__(
        self,
        text: str | Sequence[str],
        add_special_tokens: bool = True,
        return_offsets_mapping: bool = False,
        return_special_tokens_mask: bool = False,
        return_attention_mask: bool = True,
        truncation: bool = False,
        padding: bool = False,
        verbose: bool = True,
    ) -> dict[str, Any]:
        """Encode one text or a batch, shaped like transformers' ``BatchEncoding`` (lists).

        Raises:
            NotImplementedError: ``truncation`` or ``padding`` asked for (prediction windows
                long sentences itself and pads in :func:`complex_ner.domain.alignment.collate`).
        """
        del verbose  # nothing is truncated, so there is no max-length warning to silence
        if truncation or padding:
            raise NotImplementedError("RawTokenizer neither truncates nor pads")
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        encodings = self.backend_tokenizer.encode_batch(
            texts, add_special_tokens=add_special_tokens
        )
        out: dict[str, Any] = {"input_ids": [e.ids for e in encodings]}
        if return_attention_mask:
            out["attention_mask"] = [e.attention_mask for e in encodings]
        if return_special_tokens_mask:
            out["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encodings]
        if single:
            out = {key: value[0] for key, value in out.items()}
        return out

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> Any:
        """Piece strings of ids (one string for one id); ``None`` for an id out of range."""
        if isinstance(ids, int):
            return self.backend_tokenizer.id_to_token(ids)
        return [self.backend_tokenizer.id_to_token(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> Any:
        """Ids of pieces (one id for one piece); a piece not in the vocabulary gets the unknown
        token's id (None without one), as in transformers."""
        if isinstance(tokens, str):
            found = self.backend_tokenizer.token_to_id(tokens)
            return self.unk_token_id if found is None else found
        return [self.convert_tokens_to_ids(t) for t in tokens]

    # ------------------------------------------------------------------ files

    def save_pretrained(self, folder: str | Path) -> tuple[str, ...]:
        """Write the tokenizer files, so a loaded tagger can be saved again unchanged.

        The source files are copied as they are (not re-serialised), keeping the folder
        byte-identical to the one this tokenizer was loaded from.
        """
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        written = []
        if self._folder is None:
            self.backend_tokenizer.save(str(target / TOKENIZER_JSON))
            written.append(str(target / TOKENIZER_JSON))
        else:
            for name in (TOKENIZER_JSON, *_CONFIG_FILES):
                if (self._folder / name).is_file():
                    shutil.copyfile(self._folder / name, target / name)
                    written.append(str(target / name))
        return tuple(written)


def load_raw_tokenizer(folder: str | Path) -> RawTokenizer | None:
    """A :class:`RawTokenizer` for ``folder``, or None if it has no ``tokenizer.json``.

    Special tokens come from ``special_tokens_map.json`` and ``tokenizer_config.json`` (the
    latter wins where both name one, as in transformers 5).
    """
    from tokenizers import Tokenizer

    folder = Path(folder)
    path = folder / TOKENIZER_JSON
    if not path.is_file():
        return None
    config: dict[str, Any] = {}
    for name in _CONFIG_FILES:
        if (folder / name).is_file():
            config.update(json.loads((folder / name).read_text(encoding="utf-8")))
    return RawTokenizer(Tokenizer.from_file(str(path)), config, folder)
