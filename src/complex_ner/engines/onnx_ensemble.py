"""Several taggers' ONNX exports predicting as one model: an ensemble folder.

An ensemble folder holds ``ensemble.json`` (the rule and the member folders) and ``members/<i>/``,
each a tagger folder's served files (:data:`~complex_ner.core.paths.SERVED_FILES`, hard-linked
where the file system allows), so the folder is self-contained and can be copied or logged as a
whole. :class:`OnnxEnsemble` has the :class:`~complex_ner.engines.onnx_tagger.OnnxTagger`'s
prediction API, so ``complex-ner predict``, ``predict-batch`` and the pyfunc model take either.

The rules are those the ensembles were scored with (:mod:`complex_ner.domain.models.ensemble`):
``vote`` keeps the entities most members predict with their own decoding
(:func:`~complex_ner.core.bio.majority_spans`); ``mean`` decodes the averaged marginals
(:func:`~complex_ner.domain.models.numpy_crf.decode_marginals`). Either way an entity's
confidence is read from the members' averaged marginals. Like the single tagger's path, this
module imports neither torch nor transformers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from complex_ner.core.bio import majority_spans
from complex_ner.core.config import ENSEMBLE_RULES as RULES
from complex_ner.core.io import replace_dir, staging_dir, write_json
from complex_ner.core.paths import ENSEMBLE_FILE, ENSEMBLE_MEMBERS_DIR, EXPORT_FILE
from complex_ner.domain.models.numpy_crf import decode_marginals
from complex_ner.domain.models.spec import read_tagger_json
from complex_ner.engines.onnx_tagger import OnnxTagger, copy_served_files, export_key

__all__ = ["ENSEMBLE_FORMAT", "OnnxEnsemble", "ensemble_members", "save_ensemble"]

ENSEMBLE_FORMAT = 1


def save_ensemble(
    out: str | Path,
    folders: Sequence[str | Path],
    rule: str,
    sources: Sequence[str] = (),
    lang: str | None = None,
) -> dict[str, Any]:
    """Write an ensemble folder of saved tagger folders (each with its ONNX export).

    The folder is built beside ``out`` and swapped in whole: a failure leaves ``out`` as it was.

    Args:
        out: The ensemble folder to write (replaced if it exists).
        folders: Two or more tagger folders of one language and one tag list.
        rule: ``vote`` or ``mean``.
        sources: How the user named each member (a registry URI, say), recorded as given.
        lang: The language every member must have been trained on (default: the first's).

    Returns:
        What ``ensemble.json`` records.

    Raises:
        ValueError: Fewer than two members, an unknown rule, members of different languages
            (or not of ``lang``) or tag lists (naming the member).
        FileNotFoundError: A member without ``tagger.json`` or without an ONNX export.
    """
    out = Path(out)
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if len(folders) < 2:
        raise ValueError(f"an ensemble needs two or more models, got {len(folders)}")
    paths = [Path(f) for f in folders]
    specs = [read_tagger_json(p)[0] for p in paths]
    for path in paths:
        if not (path / EXPORT_FILE).is_file():
            raise FileNotFoundError(
                f"{path}: no ONNX export ({EXPORT_FILE}); run `complex-ner export --model {path}`"
            )
    lang = specs[0].lang if lang is None else lang
    for path, spec in zip(paths, specs, strict=True):
        if spec.lang != lang:
            raise ValueError(f"{path}: trained on {spec.lang!r}, not {lang!r}")
        if tuple(spec.tags) != tuple(specs[0].tags):
            raise ValueError(f"{path}: its tags differ from {paths[0]}'s")
    record: dict[str, Any] = {
        "format_version": ENSEMBLE_FORMAT,
        "rule": rule,
        "lang": lang,
        "members": [f"{ENSEMBLE_MEMBERS_DIR}/{i}" for i in range(len(paths))],
        "archs": [spec.arch for spec in specs],
        "sources": [str(s) for s in sources] or [str(p.resolve()) for p in paths],
    }
    with staging_dir(out) as staging:
        for path, member in zip(paths, record["members"], strict=True):
            copy_served_files(path, staging / member)
        write_json(staging / ENSEMBLE_FILE, record)
        replace_dir(staging, out)
    return record


def ensemble_members(folder: str | Path) -> tuple[str, list[Path]]:
    """The rule and member folders an ensemble folder's ``ensemble.json`` names.

    Raises:
        FileNotFoundError: No ``ensemble.json``, or a member folder it names is missing.
        ValueError: A field of ``ensemble.json`` is missing or wrong (the message names it).
    """
    folder = Path(folder)
    path = folder / ENSEMBLE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not an ensemble folder (no {ENSEMBLE_FILE})")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object")
    if record.get("format_version") != ENSEMBLE_FORMAT:
        raise ValueError(f"{path}: unsupported format_version {record.get('format_version')!r}")
    rule = record.get("rule")
    if rule not in RULES:
        raise ValueError(f"{path}: field rule must be one of {', '.join(RULES)}, got {rule!r}")
    members = record.get("members")
    if not isinstance(members, list) or len(members) < 2:
        raise ValueError(f"{path}: field members must list two or more member folders")
    out = []
    for i, member in enumerate(members):
        relative = PurePosixPath(member) if isinstance(member, str) else None
        if relative is None or relative.is_absolute() or ".." in relative.parts:
            raise ValueError(
                f"{path}: field members[{i}] must be a folder inside the ensemble, got {member!r}"
            )
        member_dir = folder / relative
        if not member_dir.is_dir():
            raise FileNotFoundError(f"{path}: members[{i}] {member_dir} does not exist")
        out.append(member_dir)
    return rule, out


def _model_key(rule: str, member_keys: Sequence[str]) -> str:
    """An ensemble's version for chunked prediction: its rule and its members' export keys."""
    return f"ensemble:{rule}:" + "|".join(member_keys)


class OnnxEnsemble:
    """Member taggers of one language combined by ``vote`` or ``mean`` (the tagger's API).

    Args:
        members: Two or more ONNX taggers with the same language and tag list.
        rule: ``vote`` or ``mean``.

    Raises:
        ValueError: An unknown rule, fewer than two members, or members that disagree on the
            language or the tags.
    """

    def __init__(self, members: Sequence[OnnxTagger], rule: str) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        if len(members) < 2:
            raise ValueError(f"an ensemble needs two or more members, got {len(members)}")
        first = members[0]
        for i, member in enumerate(members[1:], start=1):
            if member.spec.lang != first.spec.lang or tuple(member.tags) != tuple(first.tags):
                raise ValueError(f"member {i}: its language or tags differ from member 0's")
        self.members = list(members)
        self.rule = rule
        self.spec = first.spec
        self.tags = first.tags
        self.tag_to_id = first.tag_to_id
        self.model_key = _model_key(rule, [m.model_key for m in members])

    @classmethod
    def load(cls, folder: str | Path, *, int8: bool = False, threads: int = 0) -> OnnxEnsemble:
        """Load an ensemble folder (see :func:`save_ensemble`); each member with ``threads``."""
        rule, members = ensemble_members(folder)
        return cls([OnnxTagger.load(m, int8=int8, threads=threads) for m in members], rule)

    @staticmethod
    def key_of(folder: str | Path, int8: bool = False) -> str:
        """The ``model_key`` :meth:`load` would give, without loading the members.

        Raises:
            FileNotFoundError: A member has no such export.
        """
        rule, members = ensemble_members(folder)
        keys = []
        for member in members:
            path = OnnxTagger.export_path(member, int8)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such export in the ensemble's member")
            keys.append(export_key(path))
        return _model_key(rule, keys)

    def predict_ids(
        self,
        sentences: Sequence[Sequence[str]],
        batch_size: int = 64,
        with_marginals: bool = False,
    ) -> tuple[list[list[int]], list[list[list[float]]] | None]:
        """Tag ids per word (and, optionally, the members' mean marginals) for every sentence."""
        need = with_marginals or self.rule == "mean"
        runs = [m.predict_ids(sentences, batch_size, need) for m in self.members]
        # shape: (words, num_tags) per sentence
        mean: list[np.ndarray] = []
        if need:
            per_member = [probs for _, probs in runs]
            assert all(p is not None for p in per_member)  # asked for
            mean = [
                np.mean([np.asarray(p, dtype=np.float64) for p in rows], axis=0).reshape(
                    -1, len(self.tags)
                )
                for rows in zip(*per_member, strict=True)
            ]
        if self.rule == "mean":
            ids = decode_marginals(mean, self.tags, batch_size)
        else:
            ids = []
            for votes in zip(*(paths for paths, _ in runs), strict=True):
                tags = majority_spans([[self.tags[t] for t in path] for path in votes])
                ids.append([self.tag_to_id[t] for t in tags])
        return ids, ([m.tolist() for m in mean] if with_marginals else None)

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 64) -> list[list[str]]:
        """BIO tags per word for every sentence."""
        ids, _ = self.predict_ids(sentences, batch_size)
        return [[self.tags[i] for i in row] for row in ids]
