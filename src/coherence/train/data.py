"""Training data: a run's triplets (or any preference dataset), sampled balanced across domains and
split into train and a held-out slice, with the triplet ids of each part saved for traceability."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coherence.errors import CoherenceError

TRAIN_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class Source:
    """Where the triplets come from."""

    rows: list[dict[str, Any]]
    """Every triplet, each with ``id``, ``domain``, ``prompt``, ``chosen``, ``rejected`` (+ provenance)."""
    path: Path
    """The run folder, dataset folder or JSONL file given."""
    run_dir: Path | None
    """The run folder when the source is a run (outputs go under ``<run>/train/``)."""
    packs: list[str] = field(default_factory=list)
    """``name@version`` of the packs the triplets were made from."""


@dataclass
class Split:
    """The sampled triplets: ``train`` and ``heldout`` rows and the sampling report."""

    train: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    per_domain: dict[str, dict[str, int]]
    """Available / train / held-out count per domain."""

    def ids(self) -> dict[str, Any]:
        return {"train": [r["id"] for r in self.train], "heldout": [r["id"] for r in self.heldout],
                "per_domain": self.per_domain}


def _row_id(row: dict[str, Any]) -> str:
    for key in ("id", "triplet_id", "seed_id"):
        if row.get(key) not in (None, ""):
            return str(row[key])
    blob = json.dumps([row.get(c) for c in TRAIN_COLUMNS], ensure_ascii=False, sort_keys=True)
    return "sha256:" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise CoherenceError(f"{path}:{n}: not JSON ({exc}) (fix: one JSON object per line)") from None
    return rows


def _normalise(rows: list[dict[str, Any]], where: Path) -> list[dict[str, Any]]:
    out, seen = [], set()
    for n, row in enumerate(rows):
        missing = [c for c in TRAIN_COLUMNS if not row.get(c)]
        if missing:
            raise CoherenceError(f"{where}: row {n}: no {missing[0]!r} (fix: rows need prompt/chosen/rejected, "
                                 f"as text or as message lists, as `coherence run` exports them)")
        row = dict(row)
        row["id"] = _row_id(row)
        if row["id"] in seen:
            raise CoherenceError(f"{where}: row {n}: duplicate id {row['id']!r} (fix: ids must be unique)")
        seen.add(row["id"])
        row["domain"] = str(row.get("domain") or "unknown")
        out.append(row)
    return out


def load_source(path: str | Path, *, runs_dir: Path = Path("runs")) -> Source:
    """Read the triplets of a run (id or folder), a ``datasets`` folder or a JSONL file.

    A run folder is read from ``dataset/`` (``datasets.load_from_disk``), else from ``triplets.jsonl``.

    Args:
        path: Run id, run folder, dataset folder or ``.jsonl`` file.
        runs_dir: Where run ids are looked up.

    Returns:
        The rows with ids and domains.

    Raises:
        CoherenceError: Nothing usable is there.
    """
    p = Path(path)
    if not p.exists() and (runs_dir / str(path)).exists():
        p = runs_dir / str(path)
    if not p.exists():
        raise CoherenceError(f"{path}: no such run, dataset folder or JSONL file (fix: give runs/<id> as "
                             f"`coherence run` printed it, or a folder saved with save_to_disk)")
    run_dir = None
    if p.is_dir() and ((p / "run.db").is_file() or (p / "triplets.jsonl").is_file()):
        run_dir = p
    if p.is_file():
        rows = _read_jsonl(p)
    elif (p / "dataset" / "dataset_info.json").is_file() or (p / "dataset_info.json").is_file():
        from datasets import load_from_disk

        folder = p / "dataset" if (p / "dataset" / "dataset_info.json").is_file() else p
        ds = load_from_disk(str(folder))
        if hasattr(ds, "keys"):  # a DatasetDict: use its train split
            if "train" not in ds:
                raise CoherenceError(f"{folder}: a DatasetDict without a 'train' split (fix: save one split)")
            ds = ds["train"]
        rows = ds.to_list()
    elif (p / "triplets.jsonl").is_file():
        rows = _read_jsonl(p / "triplets.jsonl")
    else:
        raise CoherenceError(f"{p}: holds neither dataset/ nor triplets.jsonl (fix: finish the run with "
                             f"`coherence run --resume {p.name}`, or point at the dataset folder)")
    rows = _normalise(rows, p)
    packs = sorted({str(r["pack"]) for r in rows if r.get("pack")})
    return Source(rows=rows, path=p, run_dir=run_dir, packs=packs)


def balanced_sample(rows: list[dict[str, Any]], *, limit: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``limit`` rows, balanced across ``domain``: shuffle each domain (fixed seed) and deal them out
    round-robin, so every domain gets an equal share and a short domain's share goes to the others.

    Args:
        rows: Rows with a ``domain``.
        limit: Most rows returned.
        seed: Seed of the shuffles.

    Returns:
        The sample, in round-robin order (domains interleaved).
    """
    by_domain: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: r["id"]):
        by_domain.setdefault(row["domain"], []).append(row)
    for domain, items in by_domain.items():
        random.Random(f"{seed}:{domain}").shuffle(items)
    out: list[dict[str, Any]] = []
    queues = [by_domain[d] for d in sorted(by_domain)]
    for i in range(max((len(q) for q in queues), default=0)):
        for q in queues:
            if i < len(q) and len(out) < limit:
                out.append(q[i])
    return out


def split(rows: list[dict[str, Any]], *, max_triplets: int, eval_size: float, seed: int) -> Split:
    """Balanced sample, then a held-out slice spread over the domains.

    Args:
        rows: All triplets.
        max_triplets: Most triplets sampled (train + held-out).
        eval_size: Fraction (< 1) or count (>= 1) held out; at least one when two or more are sampled.
        seed: Seed of the sampling.

    Returns:
        Train and held-out rows.

    Raises:
        CoherenceError: Fewer than two triplets.
    """
    sample = balanced_sample(rows, limit=max_triplets, seed=seed)
    if len(sample) < 2:
        raise CoherenceError(f"{len(sample)} triplet(s): DPO needs at least 2 (one to train on, one held out) "
                             f"(fix: run `coherence run` longer, e.g. --seeds-per-template 4 --max-minutes 0)")
    n_eval = int(eval_size) if eval_size >= 1 else round(eval_size * len(sample))
    n_eval = min(max(n_eval, 1 if eval_size > 0 else 0), len(sample) - 1)
    # the sample is interleaved by domain, so its head is the most domain-balanced slice
    heldout, train = sample[:n_eval], sample[n_eval:]
    per_domain: dict[str, dict[str, int]] = {}
    for row in rows:
        per_domain.setdefault(row["domain"], {"available": 0, "train": 0, "heldout": 0})["available"] += 1
    for part, items in (("train", train), ("heldout", heldout)):
        for row in items:
            per_domain[row["domain"]][part] += 1
    return Split(train=train, heldout=heldout, per_domain=dict(sorted(per_domain.items())))


def from_ids(rows: list[dict[str, Any]], *, ids: dict[str, Any], where: Path) -> Split:
    """The split saved by an earlier (killed) invocation, so a resumed job trains on the same rows."""
    index = {r["id"]: r for r in rows}
    missing = [i for i in ids["train"] + ids["heldout"] if i not in index]
    if missing:
        raise CoherenceError(f"{where}: triplet {missing[0]!r} of the saved split is no longer in the data "
                             f"(fix: train under another --name, or --overwrite)")
    return Split(train=[index[i] for i in ids["train"]], heldout=[index[i] for i in ids["heldout"]],
                 per_domain=ids.get("per_domain", {}))


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    """A ``datasets.Dataset`` with TRL's preference columns only (text or conversational)."""
    from datasets import Dataset

    return Dataset.from_list([{c: r[c] for c in TRAIN_COLUMNS} for r in rows])


def prompt_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """The prompt of a row as a message list."""
    p = row["prompt"]
    return p if isinstance(p, list) else [{"role": "user", "content": str(p)}]
