"""Security rules, checked on the source: nothing unpickled, servers on loopback, secrets masked.

The end-to-end checks (a tracking server reached with a password in its URI, the logged model's
files) are in tests/integration/test_security.py.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from complex_ner.core.secrets import MASK, redact, redact_mapping, secret_values

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sorted(
    p for d in ("src", "flows", "benchmarks") for p in (ROOT / d).rglob("*.py") if p.is_file()
)
#: Modules that deserialise arbitrary Python objects.
PICKLERS = {"pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal", "_pickle"}


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """``(dotted name, call)`` of every call, e.g. ``("torch.load", ...)``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                parts.append(func.id)
            out.append((".".join(reversed(parts)), node))
    return out


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_the_scan_covers_the_code() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PYTHON}
    assert {"src/complex_ner/engines/train.py", "flows/pipeline.py"} <= names
    assert len(PYTHON) > 50


def test_nothing_is_unpickled() -> None:
    """No pickle-family import, ``torch.load`` only with ``weights_only=True``, no pickle
    readers of numpy, pandas or MLflow's pickling flavors."""
    problems = []
    for path in PYTHON:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names]
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    if name.split(".")[0] in PICKLERS:
                        problems.append(f"{where}:{node.lineno}: imports {name}")
        for name, call in _calls(tree):
            line = f"{where}:{call.lineno}: {name}"
            if name.endswith("torch.load") and _keyword(call, "weights_only") is not True:
                problems.append(f"{line} without weights_only=True")
            if name.endswith(("np.load", "numpy.load")) and _keyword(call, "allow_pickle"):
                problems.append(f"{line} with allow_pickle")
            if name.endswith(("read_pickle", "to_pickle")) or re.search(
                r"mlflow\.(pytorch|sklearn|transformers)\.(load_model|log_model)$", name
            ):
                problems.append(f"{line} (pickles)")
            if name.endswith("from_pretrained") and _keyword(call, "use_safetensors") is False:
                problems.append(f"{line} with use_safetensors=False")
    assert problems == []


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    bad = "import pickle\nimport torch\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
    tree = ast.parse(bad)
    loads = [c for n, c in _calls(tree) if n == "torch.load"]
    assert [_keyword(c, "weights_only") for c in loads] == [None, False]
    assert any(isinstance(n, ast.Import) and n.names[0].name == "pickle" for n in ast.walk(tree))


# --------------------------------------------------------------------------- loopback only

#: Everything that starts or documents a server.
DOCUMENTS = sorted(
    [
        ROOT / "Makefile",
        ROOT / "README.md",
        ROOT / "prefect.yaml",
        ROOT / "dvc.yaml",
        *(ROOT / "docs").rglob("*.md"),
        *(ROOT / ".ci").iterdir(),
        *(ROOT / "benchmarks").glob("*.sh"),
        *PYTHON,
    ]
)
#: A command line that starts a server.
SERVER = re.compile(
    r"mlflow (ui|server|models serve)|prefect server start|complex-ner serve|uvicorn\b|gunicorn\b"
    r"|http\.server"
)
#: Any-address binds.
ANY_ADDRESS = re.compile(r"0\.0\.0\.0|\[::\]|(--host|-h)[ =]+(::|\*)(\s|$)")
HOST_VALUE = re.compile(r"""(?:--host|\s-h|["']-h["'],?|host=)[ =]*["']?([\w.:\[\]-]+)""")


def _server_lines(text: str) -> list[tuple[int, str]]:
    """Lines that start a server, with their shell continuation lines joined."""
    out, joined, first = [], "", 0
    for i, line in enumerate(text.splitlines(), start=1):
        joined, first = (joined + " " + line, first) if joined else (line, i)
        if line.rstrip().endswith("\\"):
            continue
        if SERVER.search(joined) and "import" not in joined:
            out.append((first, joined))
        joined = ""
    return out


def _commands(path: Path, text: str) -> list[tuple[int, str]]:
    """The command lines of a file that start a server: in Markdown its code (fenced blocks and
    inline spans, prose is not a command), in Python its string literals, elsewhere every line."""
    if path.suffix == ".md":
        out = []
        for m in re.finditer(r"```.*?```|`[^`]+`", text, re.DOTALL):
            start = text.count("\n", 0, m.start())
            code = m.group().strip("`")
            if not m.group().startswith("```") and " -" not in code:
                continue  # an inline name (`mlflow models serve`), not a command line
            lines = code.split("\n") if m.group().startswith("```") else [code.replace("\n", " ")]
            joined = "\n".join(lines)
            out += [(start + line, cmd) for line, cmd in _server_lines(joined)]
        return out
    if path.suffix == ".py":
        tree = ast.parse(text)
        strings = [
            (n.lineno, n.value)
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        ]
        # A label or help text names a server; a command line passes it options.
        return [(line, s) for line, s in strings if _server_lines(s) and " -" in s]
    return _server_lines(text)


def _server_argv(tree: ast.AST) -> list[tuple[int, list[str]]]:
    """Python list/tuple literals that look like a server command (``mlflow models serve``,
    ``mlflow server``, ``prefect server start``, ``uvicorn``)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple):
            words = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            words = [w for w in words if isinstance(w, str)]
            if {"serve", "server", "ui", "uvicorn"} & set(words) and (
                {"models", "start", "mlflow", "prefect", "uvicorn"} & set(words) or "ui" in words
            ):
                out.append((node.lineno, words))
    return out


def test_every_server_binds_loopback() -> None:
    problems = []
    for path in PYTHON:
        for line, argv in _server_argv(ast.parse(path.read_text(encoding="utf-8"))):
            if "127.0.0.1" not in argv:
                problems.append(f"{path.relative_to(ROOT)}:{line}: {argv} without 127.0.0.1")
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8", errors="replace")
        where = path.relative_to(ROOT)
        for m in ANY_ADDRESS.finditer(text):
            problems.append(f"{where}:{text.count(chr(10), 0, m.start()) + 1}: {m.group()}")
        for m in HOST_VALUE.finditer(text):
            if m.group(1) not in ("127.0.0.1", "localhost", "host") and not m.group(1).isupper():
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f"{where}:{line}: host {m.group(1)}")
        for line, command in _commands(path, text):
            if "127.0.0.1" not in command:
                problems.append(f"{where}:{line}: a server without 127.0.0.1: {command.strip()}")
    assert problems == []


def test_the_loopback_scan_catches_open_binds() -> None:
    code = 'subprocess.Popen([mlflow, "models", "serve", "-m", uri, "-p", "5001"])'
    assert _server_argv(ast.parse(code)) == [(1, ["models", "serve", "-m", "-p", "5001"])]
    text = (
        "mlflow server --port 5000\nuvicorn app:app --host 0.0.0.0\n"
        "prefect server start \\\n  --host 127.0.0.1\n"
    )
    assert [line for line, _ in _server_lines(text)] == [1, 2, 3]
    assert ["127.0.0.1" in c for _, c in _server_lines(text)] == [False, False, True]
    assert ANY_ADDRESS.search(text) is not None
    assert [m.group(1) for m in HOST_VALUE.finditer(text)] == ["0.0.0.0", "127.0.0.1"]
    doc = "Prose about uvicorn is no command.\n\n```bash\nmlflow ui --port 5000\n```\n"
    assert _commands(Path("x.md"), doc) == [(4, "mlflow ui --port 5000")]
    code = '# uvicorn in a comment\nrun("uvicorn app:app --port 1")\nlabel = "uvicorn"\n'
    assert _commands(Path("x.py"), code) == [(2, "uvicorn app:app --port 1")]


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("http://alice:s3cr3t@mlflow.example.com:5000", "http://alice:***@mlflow.example.com:5000"),
        ("postgresql+psycopg://u:p@ss@db:5432/mlflow", "postgresql+psycopg://u:***@db:5432/mlflow"),
        (
            "run at https://u:pw@h/#/x and https://v:pw2@h2/",
            "run at https://u:***@h/#/x and https://v:***@h2/",
        ),
        ("https://h/api?token=abc123&x=1", "https://h/api?token=***&x=1"),
        ("s3://b/k?X-Amz-Signature=zz", "s3://b/k?X-Amz-Signature=***"),
        ("sqlite:////tmp/mlruns/mlflow.db", "sqlite:////tmp/mlruns/mlflow.db"),
        ("http://user@host/no-password", "http://user@host/no-password"),
    ],
)
def test_uri_passwords_and_tokens_are_masked(text: str, masked: str) -> None:
    assert redact(text, []) == masked


def test_values_of_credential_variables_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-9f8e7d")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "AKIAxyz/secret")
    monkeypatch.setenv("SHORT_TOKEN", "1")  # too short to mask wherever it occurs
    monkeypatch.setenv("PLAIN_SETTING", "tok-9f8e7d-not-a-secret-name")
    assert {"tok-9f8e7d", "AKIAxyz/secret"} <= set(secret_values())
    assert "1" not in secret_values()
    logged = redact_mapping({"a": "key tok-9f8e7d in a log line", "b": "AKIAxyz/secret", "c": "1"})
    assert logged == {"a": f"key {MASK} in a log line", "b": MASK, "c": "1"}


def test_the_projects_own_server_defaults_to_loopback() -> None:
    """``complex-ner serve`` binds 127.0.0.1 unless ``--host`` says otherwise."""
    import inspect

    from complex_ner.adapters import http_serving
    from complex_ner.app import serve
    from complex_ner.cli import serve_cmd

    for fn in (serve_cmd, serve.serve_http, http_serving.serve):
        assert inspect.signature(fn).parameters["host"].default == "127.0.0.1", fn
