"""The registered champion served by `mlflow models serve` over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from complex_ner.adapters.registry import alias_file, resolve_tagger_dir
from complex_ner.cli import app
from complex_ner.core.config import load_params
from complex_ner.core.paths import CHAMPION, ENCODER_DIR, ONNX_FILE, champion_uri

pytestmark = pytest.mark.integration


def post(url: str, payload: object) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_the_served_model_carries_the_export_and_no_torch(registry: Path) -> None:
    folder = resolve_tagger_dir(champion_uri("es"), load_params(registry / "params.yaml"))
    assert (folder / ONNX_FILE).is_file() and not (folder / ENCODER_DIR).exists()
    model_dir = next(p for p in folder.parents if (p / "MLmodel").is_file())
    names = {
        line.split("==")[0].strip().lower()
        for line in (model_dir / "requirements.txt").read_text(encoding="utf-8").splitlines()
    }
    assert {"onnxruntime", "tokenizers"} <= names
    assert not names & {"torch", "transformers", "numba", "pytorch-crf"}


def test_the_champion_resolves_through_the_alias_file_without_mlflow(registry: Path) -> None:
    params = load_params(registry / "params.yaml")
    recorded = json.loads(alias_file(params).read_text(encoding="utf-8"))
    entry = recorded["models"]["complex-ner-es"][CHAMPION]
    assert Path(entry["tagger_dir"]) == resolve_tagger_dir(champion_uri("es"), params)
    code = (
        "import sys\n"
        "from complex_ner.cli import app\n"
        f"app(['predict', '-p', {str(registry / 'params.yaml')!r}, 'Luis vive en Quito'],"
        " standalone_mode=False)\n"
        "print('MLFLOW', 'mlflow' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "MLFLOW False"
    assert [e["type"] for e in json.loads(lines[-2])["entities"]] == ["PER", "LOC"]


def test_serve_champion_over_http(champion_url: str) -> None:
    base = champion_url
    text = "Ana vive en Lima y escucha Soda Stereo"
    status, body = post(f"{base}/invocations", {"dataframe_records": [{"text": text}]})
    assert status == 200, body
    ents = body["predictions"][0]["entities"]
    assert [(e["text"], e["type"]) for e in ents][:2] == [("Ana", "PER"), ("Lima", "LOC")]
    assert all(text[e["start"] : e["end"]] == e["text"] for e in ents)
    # Token lists, an empty string and whitespace: correct (possibly empty) results.
    tokens = {"dataframe_records": [{"tokens": ["marta", "vive", "en", "quito"]}]}
    status, body = post(f"{base}/invocations", tokens)
    assert status == 200, body
    assert [e["type"] for e in body["predictions"][0]["entities"]] == ["PER", "LOC"]
    blank = {"dataframe_records": [{"text": ""}, {"text": "   "}]}
    status, body = post(f"{base}/invocations", blank)
    assert status == 200, body
    assert [p["entities"] for p in body["predictions"]] == [[], []]
    # A non-string value is a clear client error, and the server keeps serving.
    status, body = post(f"{base}/invocations", {"dataframe_records": [{"text": 42}]})
    assert status == 400 and "text" in json.dumps(body)
    status, body = post(f"{base}/invocations", {"dataframe_records": [{"text": "hola"}]})
    assert status == 200


def test_unknown_alias_is_a_clear_error(registry: Path) -> None:
    res = CliRunner().invoke(
        app,
        [
            "predict",
            "-m",
            "models:/complex-ner-es@nope",
            "-p",
            str(registry / "params.yaml"),
            "hola",
        ],
    )
    assert res.exit_code == 1
    assert "models:/complex-ner-es@nope: no such registered model" in res.output


def test_cli_predicts_with_the_registered_champion(registry: Path) -> None:
    text = "Luis vive en Quito"
    res = CliRunner().invoke(
        app, ["predict", "--lang", "es", "-p", str(registry / "params.yaml"), text]
    )
    assert res.exit_code == 0, res.output
    ents = json.loads(res.stdout.strip().splitlines()[-1])["entities"]
    assert [(e["text"], e["type"]) for e in ents] == [("Luis", "PER"), ("Quito", "LOC")]
    assert all(text[e["start"] : e["end"]] == e["text"] for e in ents)
