"""Read an MLflow run back with MLflow's own client (run inside build/mlflow-venv by test_mlflow.py).

Usage: python mlflow_readback.py TRACKING_URI MLFLOW_RUN_ID...  → one JSON object per run id on stdout.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator

from mlflow import MlflowClient


def read(client: MlflowClient, run_id: str) -> dict[str, object]:
    run = client.get_run(run_id)
    out = {
        "params": run.data.params, "metrics": run.data.metrics, "tags": run.data.tags,
        "status": run.info.status, "experiment_id": run.info.experiment_id,
        "experiment_name": client.get_experiment(run.info.experiment_id).name,
        "loss": [[m.step, m.value, m.timestamp] for m in client.get_metric_history(run_id, "loss")],
        "history_steps": {k: sorted(m.step for m in client.get_metric_history(run_id, k)) for k in run.data.metrics},
    }

    def walk(path: str | None = None) -> Iterator[str]:
        for f in client.list_artifacts(run_id, path):
            if f.is_dir:
                yield from walk(f.path)
            else:
                yield f.path

    out["artifacts"] = sorted(walk())
    if "model/model.pt" in out["artifacts"]:
        with tempfile.TemporaryDirectory() as d, open(client.download_artifacts(run_id, "model/model.pt", d), "rb") as f:
            out["model_bytes"] = f.read().decode()
    traces = client.search_traces(locations=[run.info.experiment_id], run_id=run_id)
    out["traces"] = [{"trace_id": t.info.trace_id, "spans": sorted(s.name for s in t.data.spans),
                      "root_attributes": {k: v for s in t.data.spans if s.parent_id is None
                                          for k, v in s.attributes.items() if k.startswith("runtel.run.")}}
                     for t in traces]
    return out


if __name__ == "__main__":
    mlflow_client = MlflowClient(tracking_uri=sys.argv[1])
    sys.stdout.write(json.dumps({r: read(mlflow_client, r) for r in sys.argv[2:]}, default=str) + "\n")
