from pathlib import Path

import pytest

from complex_ner.core.config import ConfigError, load_params


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_project_params_load(root: Path) -> None:
    p = load_params(root / "params.yaml")
    assert p.data.languages == ("es", "zh")
    assert len(p.data.tags) == 13 and p.data.tags[0] == "O"
    assert p.root == root
    with pytest.raises(AttributeError):
        p.data.languages = ("es",)  # type: ignore[misc]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data: {languagez: [es]}", r"data\.languagez: unknown field"),
        ("split: {val_fraction: 1.5}", r"split\.val_fraction: must be in \(0, 1\)"),
        ("split: {seed: abc}", r"split\.seed: expected an integer"),
        ("data: {languages: es}", r"data\.languages: expected a list"),
        ("data: {entity_types: [PER, I-LOC]}", r"data\.entity_types: 'I-LOC'"),
        ("validate: {min_sentence_length: 5, max_sentence_length: 2}", "max_sentence_length"),
        ("nonsense: 1", r"nonsense: unknown field"),
        ("data: [1, 2", "not valid YAML"),
    ],
)
def test_invalid_fields_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_params(write(tmp_path, text))


def test_overrides(tmp_path: Path) -> None:
    p = load_params(write(tmp_path, "split: {seed: 1}"), ["split.seed=7", "data.languages=[es]"])
    assert p.split.seed == 7 and p.data.languages == ("es",)
    with pytest.raises(ConfigError, match="section.key=value"):
        load_params(write(tmp_path, ""), ["seed7"])


def test_source_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = load_params(write(tmp_path, "data: {source_dir: somewhere}"))
    assert p.source_dir == tmp_path / "somewhere"
    monkeypatch.setenv("COMPLEX_NER_DATA_SOURCE", "/elsewhere")
    assert p.source_dir == Path("/elsewhere")
