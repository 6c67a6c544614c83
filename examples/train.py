"""A small training job recorded with runtel (used by `make demo`).

Run it under the CLI (`runtel run -- python examples/train.py`) or on its own: either way it records
a run with its config, seed, per-epoch blocks, traced sync/async functions, resource usage and an
output artifact, then `runtel show latest` displays it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from pathlib import Path

import runtel


@runtel.trace(capture=["batch_size"], capture_return=True, stage="data")
async def load_batch(index: int, batch_size: int) -> list[float]:
    """Pretend to fetch a batch over the network."""
    await asyncio.sleep(0.01)
    return [random.random() for _ in range(batch_size)]


@runtel.trace(stage="train")
def train_step(batch: list[float], weights: list[float], lr: float) -> float:
    """One step of a toy model (fit each weight to sin of the inputs): burn some CPU, return the loss."""
    loss = 0.0
    for _ in range(50):
        for i, x in enumerate(batch):
            k = i % len(weights)
            error = weights[k] - math.sin(x)
            weights[k] -= lr * error
            loss += error * error
    return loss / (50 * len(batch))


async def epoch(index: int, cfg: argparse.Namespace, weights: list[float]) -> float:
    """Load batches concurrently, then train on them."""
    batches = await asyncio.gather(*(load_batch(i, cfg.batch_size) for i in range(cfg.batches)))
    return sum(train_step(b, weights, cfg.lr) for b in batches) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=Path("runs/demo-outputs"))
    cfg = parser.parse_args()

    with runtel.run_span("train", config=cfg, seed=True, tags={"example": "demo"}) as run:
        weights = [random.random() for _ in range(16)]
        buffer = bytearray(64 * 2**20)  # hold some memory so the usage summary has something to show
        buffer[::4096] = b"x" * len(buffer[::4096])  # touch every page so it is resident
        for e in range(cfg.epochs):
            with runtel.block("epoch", index=e) as blk:
                loss = asyncio.run(epoch(e, cfg, weights))
                blk.set_attributes(loss=loss)
        with runtel.block("save"):
            cfg.out.mkdir(parents=True, exist_ok=True)
            model = cfg.out / "model.json"
            model.write_text(json.dumps({"weights": weights, "loss": loss}))
            if hasattr(run, "add_artifact"):
                run.add_artifact("model", model)
        del buffer
        time.sleep(0.2)
    print(f"trained {cfg.epochs} epochs, final loss {loss:.4f}; run {run.id}")


if __name__ == "__main__":
    main()
