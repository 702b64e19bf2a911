"""Open-domain text through a trimmed vocabulary: unknown pieces and changed tokenizations.

The trim stage keeps the pieces of the training text (train + val). Text the tagger later sees
may hold words the corpus never had; they segment differently, and a character without a piece
becomes ``<unk>``. This script trims the encoder twice, with and without
``trim.keep_char_pieces`` (every single-character piece of the languages' scripts), and
tokenizes, per language:

- held-out text: the ``heldout`` split when the processed data has one (the encoder is then
  trimmed over train + val, as the stage does); otherwise the ``val`` split, and the encoder is
  trimmed over train alone so that val stays outside its corpus;
- a built-in list of open-domain sentences (:data:`OPEN_DOMAIN`) with words and characters the
  corpus lacks.

It reports pieces that become ``<unk>`` with the full and each trimmed vocabulary, the share of
sentences whose pieces differ from the full encoder's, and parameters and folder size of each
encoder. It does not train (tokenization and one weight slice per variant only).

    python -m benchmarks.trim_open_domain [--quick] [--json PATH] [--max-sentences N]
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_trim import folder_mb
from benchmarks.harness import (
    base_parser,
    emit,
    parse,
    pick_encoder,
    project_params,
    result,
    target,
    toy_sentences,
)
from complex_ner.core.config import Params
from complex_ner.core.paths import HELDOUT_SPLIT, TRAIN_SPLIT, VAL_SPLIT, split_file
from complex_ner.domain.alignment import join_words
from complex_ner.domain.data import read_conll
from complex_ner.domain.vocab import TOKENIZER_FILE, corpus_texts, trim_encoder, trim_languages
from complex_ner.engines.predict import as_sentences

#: Open-domain sentences with words (and, for zh, characters) outside MultiCoNER's training text:
#: recent products and companies, rare diacritics, rare and traditional characters.
OPEN_DOMAIN: dict[str, tuple[str, ...]] = {
    "es": (
        "La startup uruguaya Kreditfy lanzó una criptomoneda respaldada por yerba mate.",
        "El ñandú y el guanaco pastaban cerca de la mina de Chuquicamata.",
        "Şükrü Saracoğlu recibió a Novak Đoković en Liubliana.",
        "La vacuna de ARNm de Moderna llegó a Tegucigalpa en 2021.",
        "Descargué el pódcast «Desenchufados» en mi teléfono Xiaomi.",
        "La exposición sobre Ægir y los Æsir en Reikiavik costó 1.250 €.",
        "El primer ministro vietnamita Nguyễn Xuân Phúc visitó Hội An.",
        "El ciclista esloveno Tadej Pogačar ganó en el Mont Ventoux.",
    ),
    "zh": (
        "小米发布了新款折叠屏手机，售价九千九百九十九元。",
        "饕餮和貔貅是中国古代神话中的瑞兽。",
        "他在鄂尔多斯的煤矿工作了十年。",
        "抖音和快手在短视频市场竞争激烈。",
        "ChatGPT在2023年引发了人工智能热潮。",
        "她在鬱金香花園裡讀《紅樓夢》。",
        "魑魅魍魉的传说在闽南一带流传甚广。",
        "网友用“囧”和“槑”表达无奈的心情。",
    ),
}

COLUMNS = [
    "lang",
    "text",
    "sentences",
    "words outside corpus %",
    "encoder",
    "vocab rows",
    "params (M)",
    "folder MB",
    "pieces",
    "<unk> pieces",
    "<unk> %",
    "pieces ≠ full %",
]

# The --quick corpus's Chinese half (the toy sentences are Spanish).
_QUICK_ZH = ("北京大学位于海淀区。", "他们喜欢上海的音乐。", "长江是中国最长的河流。")


def _words(params: Params, lang: str, split: str, limit: int) -> list[list[str]]:
    sentences = read_conll(split_file(params, lang, split))
    return [list(s.tokens) for s in sentences[: limit or None]]


def texts_and_corpus(
    params: Params, languages: Sequence[str], limit: int, quick: bool
) -> tuple[dict[str, dict[str, list[list[str]]]], list[str], str]:
    """Per language, the word lists of each measured text; the trim corpus; its description."""
    measured: dict[str, dict[str, list[list[str]]]] = {}
    open_domain = {lang: as_sentences(OPEN_DOMAIN[lang], lang) for lang in languages}
    if quick:
        corpus = {
            "es": [list(s.tokens) for s in toy_sentences(16)],
            "zh": [list(s.tokens) for s in as_sentences(_QUICK_ZH, "zh")],
        }
        held = {"es": [list(s.tokens) for s in toy_sentences(4, 16)], "zh": corpus["zh"]}
        for lang in languages:
            measured[lang] = {
                "toy held-out": held[lang],
                "open-domain": [list(s.tokens) for s in open_domain[lang]],
            }
        texts = [join_words(w, params.model.join)[0] for lang in languages for w in corpus[lang]]
        return measured, texts, "--quick: 16 toy es sentences and 3 zh sentences"
    has_heldout = all(split_file(params, lang, HELDOUT_SPLIT).is_file() for lang in languages)
    held, splits = (
        (HELDOUT_SPLIT, (TRAIN_SPLIT, VAL_SPLIT))
        if has_heldout
        else (
            VAL_SPLIT,
            (TRAIN_SPLIT,),
        )
    )
    for lang in languages:
        measured[lang] = {
            held: _words(params, lang, held, limit),
            "open-domain": [list(s.tokens) for s in open_domain[lang]],
        }
    texts = corpus_texts(params, languages, splits)
    return measured, texts, f"the {' + '.join(splits)} splits of {', '.join(languages)}"


def _unk_token(folder: Path) -> str:
    spec = json.loads((folder / TOKENIZER_FILE).read_text(encoding="utf-8"))
    model = spec["model"]
    if model["type"] == "Unigram":
        return model["vocab"][model["unk_id"]][0]
    return model["unk_token"]


class Pieces:
    """One encoder folder's tokenizer (``tokenizers``, loaded once) and its unknown piece."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        # Every piece of every text counts: no padding to a batch length, no truncation.
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.unk = _unk_token(folder)

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        """The pieces of every text, without special tokens."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        # From the ids: for an unknown character `Encoding.tokens` holds the text, not "<unk>".
        return [[self.tokenizer.id_to_token(i) for i in e.ids] for e in encodings]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = base_parser("trim_open_domain", __doc__, threads=None, module="trim_open_domain")
    parser.add_argument(
        "--max-sentences", type=int, default=0, help="held-out sentences per language (0: all)"
    )
    args = parse(parser, argv)
    params = project_params()
    languages = ("es", "zh") if args.quick else trim_languages(params)
    measured, corpus, corpus_source = texts_and_corpus(
        params, languages, args.max_sentences, args.quick
    )
    corpus_words = {w for text in corpus for w in text.split()}
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="trim-open-domain-") as tmp:
        full = pick_encoder(args, Path(tmp))
        plain = trim_encoder(full, corpus, Path(tmp) / "trimmed")
        chars = trim_encoder(full, corpus, Path(tmp) / "chars", char_languages=languages)
        encoders = {
            "full": (full, plain.vocab_before, plain.params_before),
            "trimmed": (Path(plain.output), plain.vocab_after, plain.params_after),
            "trimmed + char pieces": (Path(chars.output), chars.vocab_after, chars.params_after),
        }
        sizes = {name: folder_mb(folder) for name, (folder, _, _) in encoders.items()}
        split = {name: Pieces(folder) for name, (folder, _, _) in encoders.items()}
        for lang, sets in measured.items():
            for text_name, word_lists in sets.items():
                texts = [join_words(w, params.model.join)[0] for w in word_lists]
                words = [w for ws in word_lists for w in ws]
                outside = sum(w not in corpus_words for w in words) / max(1, len(words))
                reference = split["full"](texts)
                for name, (_, rows, n_params) in encoders.items():
                    pieces, unk = split[name](texts), split[name].unk
                    total = sum(map(len, pieces))
                    unknown = sum(p == unk for ps in pieces for p in ps)
                    differ = sum(a != b for a, b in zip(pieces, reference, strict=True))
                    records.append(
                        {
                            "lang": lang,
                            "text": text_name,
                            "sentences": len(texts),
                            "outside_share": outside,
                            "encoder": name,
                            "vocab_rows": rows,
                            "params": n_params,
                            "folder_mb": sizes[name],
                            "pieces": total,
                            "unk_pieces": unknown,
                            "unk_share": unknown / max(1, total),
                            "differ_share": differ / max(1, len(texts)),
                        }
                    )
    rows = [
        [
            r["lang"],
            r["text"],
            r["sentences"],
            100 * r["outside_share"],
            r["encoder"],
            r["vocab_rows"],
            r["params"] / 1e6,
            r["folder_mb"],
            r["pieces"],
            r["unk_pieces"],
            100 * r["unk_share"],
            100 * r["differ_share"],
        ]
        for r in records
    ]

    def unk(encoder: str) -> int:
        return sum(r["unk_pieces"] for r in records if r["encoder"] == encoder)

    added = unk("trimmed + char pieces") - unk("full")
    summary = [
        target("<unk> pieces, all measured text: full / trimmed / trimmed + char pieces",
               f"{unk('full')} / {unk('trimmed')} / {unk('trimmed + char pieces')}"),
        target("<unk> pieces trimming adds with char pieces", added, "0", added == 0),
        target(
            "vocab rows / folder MB: full / trimmed / trimmed + char pieces",
            " / ".join(f"{encoders[n][1]:,} / {sizes[n]:.0f}" for n in encoders),
        ),
    ]  # fmt: skip
    notes = [
        f"Trimmed over {corpus_source} ({len(corpus):,} texts), words joined with "
        f"model.join={params.model.join!r}; char pieces for the scripts of "
        f"{', '.join(languages)} ({chars.script_pieces:,} pieces the corpus does not use).",
        "words outside corpus: the text's words (lowercased as the tagger sees them) that no "
        "corpus text holds; pieces ≠ full: sentences whose pieces differ from the full "
        "encoder's.",
        f"Encoder: {full}.",
    ]
    record = result(
        args,
        "Open-domain text through the trimmed vocabulary",
        COLUMNS,
        rows,
        summary=summary,
        notes=notes,
        records=records,
    )
    return emit(record, args.json)


if __name__ == "__main__":
    main()
