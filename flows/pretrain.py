"""Prefect 3 flow ``pretrain``: whole-word-masking continued pre-training, one task per language.

A thin wrapper over :func:`complex_ner.engines.pretrain.run_pretrain` (the function ``complex-ner
pretrain`` calls): with ``pretrain.enabled`` false each task only writes the ``SKIPPED`` marker.
Inside the ``pipeline`` flow's MLflow parent run the ``pretrain-<lang>`` runs nest under it.
One worker: on a CPU concurrent runs would only compete for cores. No retries: a failure here is
not transient.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.task_runners import ThreadPoolTaskRunner

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # deployments run from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))

from complex_ner.core.config import Params, load_params  # noqa: E402

DEFAULT_PARAMS = str(ROOT / "params.yaml")


def _params(params_path: str, overrides: list[str] | None) -> Params:
    return load_params(params_path, overrides or [])


@task(name="pretrain", task_run_name="pretrain-{lang}", timeout_seconds=12 * 3600)
def pretrain_task(
    params_path: str, lang: str, overrides: list[str] | None = None
) -> dict[str, Any]:
    from complex_ner.engines.pretrain import run_pretrain

    out = run_pretrain(_params(params_path, overrides), lang, progress=False)
    if out["status"] == "skipped":
        get_run_logger().info(
            "%s: pretrain.enabled is false; marker in %s", lang, out["output_dir"]
        )
    else:
        get_run_logger().info(
            "%s: %d steps in %.0fs, final MLM loss %.4f -> %s",
            lang,
            out["steps"],
            out["seconds"],
            out["final_loss"],
            out["output_dir"],
        )
    return out


@flow(name="pretrain", task_runner=ThreadPoolTaskRunner(max_workers=1), log_prints=True)
def pretrain(params_path: str = DEFAULT_PARAMS, overrides: list[str] | None = None) -> list[dict]:
    """One WWM pretraining task per ``pretrain.languages`` entry (the encoder must be provisioned:
    ``complex-ner encoder provision``, or the ``train`` flow's first task)."""
    p = _params(params_path, overrides)
    futures = [pretrain_task.submit(params_path, lang, overrides) for lang in p.pretrain.languages]
    return [f.result() for f in futures]


if __name__ == "__main__":
    import json

    args = sys.argv[1:]
    print(json.dumps(pretrain(DEFAULT_PARAMS, args or None), indent=2))
