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


def main() -> None:  # pragma: no cover - console entry point
    """Entry point that never prints a traceback for expected errors."""
    sys.exit(app())
