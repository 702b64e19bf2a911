"""The data gate: a Great Expectations 1.x suite, defined in code, over every split.

Three tables per language are checked: one row per token (tags, BIO, token text), one row per
sentence (length, ids, Chinese script) and one row per entity of the training file (every type
present).
Each row carries the file and line it came from, so a failure names where to look.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from complex_ner.core.bio import entity_spans, transition_table
from complex_ner.core.config import Params
from complex_ner.core.io import atomic_write_text, replace_dir, sha256_file, staging_dir
from complex_ner.core.lang import CJK_IDEOGRAPH_REGEX, IDEOGRAPHIC_LANGUAGES
from complex_ner.core.paths import (
    TRAIN_SPLIT,
    VALIDATION_RESULTS_FILE,
    data_docs_dir,
    validation_results,
)
from complex_ner.domain.data import Sentence, load_splits, raw_files

#: The previous tag of a sentence's first token in the ``transition`` column.
START = "<START>"


class ValidationFailed(RuntimeError):
    """The data did not pass the gate; ``summary`` is the readable report."""

    def __init__(self, summary: str) -> None:
        super().__init__(summary)
        self.summary = summary


@dataclass
class ExpectationOutcome:
    """One expectation's verdict with a few located examples."""

    table: str
    expectation: str
    column: str
    success: bool
    unexpected_count: int
    element_count: int
    examples: list[dict[str, Any]] = field(default_factory=list)


def allowed_bio_transitions(tags: Sequence[str]) -> list[str]:
    """Every ``"<previous tag> <tag>"`` that strict IOB2 allows; ``<START>`` opens a sentence.

    One string column instead of GX's column-pair expectation, which iterates rows in Python
    (100 s on the Spanish train split against under a second for a set lookup).
    """
    table = transition_table(tags)
    rows = [(START, table.start), *zip(tags, table.pairs, strict=True)]
    return [f"{prev} {tag}" for prev, row in rows for tag, ok in zip(tags, row, strict=True) if ok]


def build_tables(splits: dict[str, list[Sentence]], lang: str) -> dict[str, Any]:
    """Token, sentence and train-entity tables (pandas) for one language.

    The entity table holds every entity of the file ``train`` was drawn from (``val`` and, without
    an official dev file, ``heldout`` are seeded hold-outs of it), so "every type present" judges
    the file and not which sentences the hold-outs happened to take.
    """
    import pandas as pd

    tokens: dict[str, list[Any]] = {
        k: [] for k in ("split", "sentence_id", "token", "tag", "transition", "file", "line")
    }
    sents: dict[str, list[Any]] = {
        k: [] for k in ("split", "sentence_id", "length", "text", "file", "line")
    }
    ents: dict[str, list[Any]] = {k: [] for k in ("entity_type", "text", "file", "line")}
    train_files = {s.source for s in splits.get(TRAIN_SPLIT, [])}
    for name, sentences in splits.items():
        for s in sentences:
            base = s.line or 0
            sents["split"].append(name)
            sents["sentence_id"].append(s.id)
            sents["length"].append(len(s.tokens))
            sents["text"].append(" ".join(s.tokens))
            sents["file"].append(s.source)
            sents["line"].append(base)
            if s.tags is None:
                continue  # unlabelled test data: only sentence-level checks apply
            prev = START
            for i, (tok, tag) in enumerate(zip(s.tokens, s.tags, strict=True)):
                tokens["split"].append(name)
                tokens["sentence_id"].append(s.id)
                tokens["token"].append(tok)
                tokens["tag"].append(tag)
                tokens["transition"].append(f"{prev} {tag}")
                tokens["file"].append(s.source)
                tokens["line"].append(base + i)
                prev = tag
            if name == TRAIN_SPLIT or s.source in train_files:
                for kind, start, end in entity_spans(s.tags):
                    ents["entity_type"].append(kind)
                    ents["text"].append(" ".join(s.tokens[start:end]))
                    ents["file"].append(s.source)
                    ents["line"].append(base + start)
    return {
        "tokens": pd.DataFrame(tokens),
        "sentences": pd.DataFrame(sents),
        "train_entities": pd.DataFrame(ents),
    }


def build_suites(params: Params, lang: str) -> dict[str, list[Any]]:
    """The expectations per table, as Great Expectations objects."""
    import great_expectations.expectations as gxe

    tags = list(params.data.tags)
    v = params.validate
    sentence_checks: list[Any] = [
        gxe.ExpectColumnValuesToBeBetween(
            column="length", min_value=v.min_sentence_length, max_value=v.max_sentence_length
        ),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["split", "sentence_id"]),
        gxe.ExpectColumnValuesToBeUnique(column="sentence_id"),  # across splits
    ]
    if lang in IDEOGRAPHIC_LANGUAGES:
        sentence_checks.append(
            gxe.ExpectColumnValuesToMatchRegex(
                column="text", regex=CJK_IDEOGRAPH_REGEX, mostly=v.min_ideographic_share
            )
        )
    return {
        "tokens": [
            gxe.ExpectColumnValuesToBeInSet(column="tag", value_set=tags),
            gxe.ExpectColumnValuesToBeInSet(
                column="transition", value_set=allowed_bio_transitions(tags)
            ),
            gxe.ExpectColumnValuesToMatchRegex(column="token", regex=r"^\S+$"),
        ],
        "sentences": sentence_checks,
        "train_entities": [
            gxe.ExpectColumnDistinctValuesToContainSet(
                column="entity_type", value_set=list(params.data.entity_types)
            )
        ],
    }


_DESCRIPTIONS = {
    "expect_column_values_to_be_in_set": "tags in the tag set",
    "expect_column_values_to_match_regex": "values match the pattern",
    "expect_column_values_to_be_between": "sentence length within bounds",
    "expect_compound_columns_to_be_unique": "sentence ids unique within a split",
    "expect_column_values_to_be_unique": "no sentence id shared between splits",
    "expect_column_distinct_values_to_contain_set": "every entity type present in train",
}


def _describe(expectation: str, column: str) -> str:
    if column == "transition":
        return "BIO well-formed (no I-X after O, at the start or after another type)"
    if expectation == "expect_column_values_to_match_regex":
        return (
            "Chinese sentences contain CJK characters (validate.min_ideographic_share of them)"
            if column == "text"
            else ("tokens non-empty and without whitespace")
        )
    return _DESCRIPTIONS.get(expectation, expectation)


def _outcomes(table: str, df: Any, result: Any, max_examples: int) -> list[ExpectationOutcome]:
    outcomes = []
    for er in result.results:
        cfg = er.expectation_config
        kwargs = cfg.kwargs
        column = kwargs.get("column") or "+".join(kwargs.get("column_list") or [])
        res = er.result or {}
        examples: list[dict[str, Any]] = []
        for idx in (res.get("unexpected_index_list") or [])[:max_examples]:
            row = df.loc[idx] if not isinstance(idx, dict) else df.loc[idx.get("index", 0)]
            examples.append(
                {
                    "file": row["file"],
                    "line": int(row["line"]),
                    "value": {c: row[c] for c in column.split("+") if c in row},
                }
            )
        if not examples and not er.success and table == "train_entities":
            present = set(df["entity_type"]) if len(df) else set()
            missing = sorted(set(kwargs.get("value_set", [])) - present)
            examples.append({"missing": missing})
        unexpected = res.get("unexpected_count")
        if unexpected is None and not er.success:
            unexpected = len(examples[0].get("missing", [])) if examples else 1
        outcomes.append(
            ExpectationOutcome(
                table=table,
                expectation=cfg.type,
                column=column,
                success=bool(er.success),
                unexpected_count=int(unexpected or 0),
                element_count=int(res.get("element_count", len(df))),
                examples=examples,
            )
        )
    return outcomes


def import_gx() -> Any:
    """``great_expectations``, imported lazily (2.4 s; analytics are off: core/env.py)."""
    import great_expectations

    return great_expectations


def _run_gx(
    params: Params, tables_by_lang: dict[str, dict[str, Any]], docs_dir: Path
) -> dict[str, list[ExpectationOutcome]]:
    """Run every suite through its checkpoint, then render Data Docs into ``docs_dir`` once.

    (An ``UpdateDataDocsAction`` per checkpoint would rebuild the whole site six times: GX
    recompiles its templates on every build, 7 of the gate's 12 s.)
    """
    gx = import_gx()
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
    ctx.add_data_docs_site(
        "reports",
        {
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
        },
    )
    source = ctx.data_sources.add_pandas("multiconer")
    out: dict[str, list[ExpectationOutcome]] = {}
    for lang, tables in tables_by_lang.items():
        out[lang] = []
        for table, expectations in build_suites(params, lang).items():
            name = f"{lang}_{table}"
            batch_def = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
            suite = ctx.suites.add(gx.ExpectationSuite(name=name))
            for e in expectations:
                suite.add_expectation(e)
            vd = ctx.validation_definitions.add(
                gx.ValidationDefinition(name=name, data=batch_def, suite=suite)
            )
            checkpoint = ctx.checkpoints.add(
                gx.Checkpoint(
                    name=name,
                    validation_definitions=[vd],
                    result_format={"result_format": "COMPLETE"},
                )
            )
            df = tables[table]
            result = checkpoint.run(batch_parameters={"dataframe": df})
            for run_result in result.run_results.values():
                out[lang].extend(_outcomes(table, df, run_result, params.validate.max_examples))
    ctx.build_data_docs(site_names=["reports"])
    return out


def summarize(report: dict[str, Any]) -> str:
    """Readable summary: which expectation failed, how many rows, a few located examples."""
    lines = []
    for lang, lr in report["languages"].items():
        verdict = "passed" if lr["success"] else "FAILED"
        sizes = ", ".join(f"{k} {v:,}" for k, v in lr["splits"].items())
        lines.append(f"[{lang}] {verdict} ({sizes} sentences)")
        for e in lr["expectations"]:
            if e["success"]:
                continue
            lines.append(
                f"  x {e['description']} ({e['expectation']} on {e['table']}.{e['column']}): "
                f"{e['unexpected_count']:,} of {e['element_count']:,} rows"
            )
            for ex in e["examples"]:
                if "missing" in ex:
                    lines.append(f"      missing: {', '.join(ex['missing'])}")
                else:
                    lines.append(f"      {ex['file']}:{ex['line']}: {ex['value']}")
    return "\n".join(lines)


def _split_settings(params: Params) -> dict[str, Any]:
    """The split params the gate's verdict holds for (the splits it checked depend on them)."""
    return {
        "val_fraction": params.split.val_fraction,
        "heldout_fraction": params.split.heldout_fraction,
        "seed": params.split.seed,
    }


def validate_data(params: Params) -> dict[str, Any]:
    """Validate every language's splits; write ``results.json`` and Data Docs.

    Returns:
        The report written to ``<validate.report_dir>/results.json``.

    Raises:
        ValidationFailed: when any expectation fails (the report is written first).
        DataFormatError: when a file cannot even be read.
    """
    report_dir = params.path(params.validate.report_dir)
    tables: dict[str, dict[str, Any]] = {}
    report: dict[str, Any] = {"success": True, "languages": {}, "files": {}}
    for lang in params.data.languages:
        splits = load_splits(params, lang)
        tables[lang] = build_tables(splits, lang)
        report["languages"][lang] = {"splits": {k: len(v) for k, v in splits.items()}}
        for name, path in raw_files(params, lang).items():
            report["files"][f"{lang}/{name}"] = sha256_file(path)
    with staging_dir(data_docs_dir(params)) as tmp_docs:
        outcomes = _run_gx(params, tables, tmp_docs)
        replace_dir(tmp_docs, data_docs_dir(params))
    for lang, items in outcomes.items():
        lr = report["languages"][lang]
        lr["expectations"] = [
            {**vars(o), "description": _describe(o.expectation, o.column)} for o in items
        ]
        lr["success"] = all(o.success for o in items)
        report["success"] = report["success"] and lr["success"]
    report["split"] = _split_settings(params)
    text = json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n"
    atomic_write_text(report_dir / VALIDATION_RESULTS_FILE, text)
    if not report["success"]:
        raise ValidationFailed(summarize(report))
    return report


def require_validated(params: Params) -> None:
    """Refuse to go on unless the current raw files passed validation with these split params.

    Raises:
        ValidationFailed: no report, a failed report, or one made for other data.
    """
    path = validation_results(params)
    if not path.is_file():
        raise ValidationFailed(f"{path}: no validation report; run `complex-ner validate` first")
    report = json.loads(path.read_text(encoding="utf-8"))
    if not report.get("success"):
        raise ValidationFailed(f"{path}: the data failed validation\n{summarize(report)}")
    for lang in params.data.languages:
        for name, raw in raw_files(params, lang).items():
            if report.get("files", {}).get(f"{lang}/{name}") != sha256_file(raw):
                raise ValidationFailed(
                    f"{path}: {raw} changed since it was validated; run `complex-ner validate`"
                )
    expected = _split_settings(params)
    if report.get("split") != expected:
        raise ValidationFailed(
            f"{path}: validated with split {report.get('split')}, not {expected}"
        )
