"""Training metrics: every log line of the trainer appended to ``metrics.jsonl`` (survives a kill),
collected into ``metrics.json`` and plotted to ``metrics.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: DPO metrics we report (TRL's names, ``eval_`` prefixed in evaluation logs).
KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")


def make_callback(path: Path) -> Any:
    """A ``transformers.TrainerCallback`` appending each log dict (with step and epoch) to ``path``."""
    from transformers import TrainerCallback

    class MetricsLog(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if not logs or not state.is_world_process_zero:
                return
            row = {"step": state.global_step, "epoch": state.epoch, **logs}
            with path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")

    return MetricsLog()


def collect(path: Path) -> dict[str, list[dict[str, Any]]]:
    """``metrics.jsonl`` as ``{"train": [...], "eval": [...]}``, one row per step (the last one logged wins:
    a resumed job re-logs the steps after its checkpoint)."""
    train: dict[int, dict[str, Any]] = {}
    evals: dict[int, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            step = int(row["step"])
            if any(k.startswith("eval_") for k in row):
                evals[step] = {"step": step, "epoch": row.get("epoch"),
                               **{k[5:]: v for k, v in row.items() if k.startswith("eval_")}}
            elif "loss" in row:
                train[step] = row
            # the trainer's final summary line (train_runtime...) is neither
    return {"train": [train[s] for s in sorted(train)], "eval": [evals[s] for s in sorted(evals)]}


def plot(metrics: dict[str, list[dict[str, Any]]], *, out: Path, title: str) -> Path:
    """Loss, rewards, reward accuracy and margin over steps (train and held-out) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = [("loss", ["loss"]), ("rewards", ["rewards/chosen", "rewards/rejected"]),
              ("reward accuracy", ["rewards/accuracies"]), ("reward margin", ["rewards/margins"])]
    for ax, (label, keys) in zip(axes.flat, panels):
        for part, style in (("train", "-"), ("eval", "o--")):
            for key in keys:
                pts = [(r["step"], r[key]) for r in metrics[part] if r.get(key) is not None]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, style, label=f"{part} {key}", markersize=4)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
