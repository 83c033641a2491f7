"""Red-team prompt sets from local files (``coherence eval --redteam FILE``).

CSV, JSONL (or JSON: a list of objects) and parquet files with one prompt per row, such as KorSET
(``prompt``, ``lv1_name``, ``lv2_name``). The prompt column is the first of :data:`PROMPT_COLUMNS` the file
has (or the one named); the category and sub-category columns are read the same way, and every other
column is kept in ``meta``. Nothing is downloaded: the file is read as it is.

API: ``load(path) -> list[RedTeamItem]``; group the safe rate by ``item.category`` / ``item.subcategory``.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coherence.errors import CoherenceError

PROMPT_COLUMNS = ("prompt", "query", "question", "instruction", "text", "input")
CATEGORY_COLUMNS = ("lv1_name", "category", "lv1", "domain")
SUBCATEGORY_COLUMNS = ("lv2_name", "subcategory", "lv2", "sub_category")
ID_COLUMNS = ("id", "sample_id", "prompt_id", "uid")
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet",
           ".pq": "parquet"}


@dataclass(frozen=True)
class RedTeamItem:
    """One red-team prompt; ``meta`` keeps the file's other columns (``lv3_name``, sources, ...)."""

    id: str
    prompt: str
    category: str = ""
    subcategory: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def _read_rows(file: Path, kind: str) -> list[dict[str, Any]]:
    if kind in ("csv", "tsv"):
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        with file.open(encoding="utf-8-sig", newline="") as fh:
            return [dict(r) for r in csv.DictReader(fh, delimiter="\t" if kind == "tsv" else ",")]
    if kind == "parquet":
        import pyarrow.parquet as pq  # datasets brings pyarrow

        try:
            return pq.read_table(file).to_pylist()
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
            raise CoherenceError(f"{file}: not a readable parquet file ({exc}) (fix: write it with pandas or "
                                 f"datasets .to_parquet)") from None
    text = file.read_text(encoding="utf-8-sig")
    if kind == "json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CoherenceError(f"{file}: invalid JSON ({exc.msg} at line {exc.lineno}) (fix: a list of objects, "
                                 f"or JSONL: one object per line)") from None
        rows = data
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise CoherenceError(f"{file}:{n}: invalid JSON ({exc.msg}) (fix: one JSON object per line)") from None
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise CoherenceError(f"{file}: row {bad + 1} is not an object (fix: one object with a prompt per row)")
    return rows


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], file: Path, what: str) -> str | None:
    if wanted:
        if wanted not in columns:
            raise CoherenceError(f"{file}: no column {wanted!r} for the {what} (fix: one of {', '.join(columns)})")
        return wanted
    lower = {c.lower(): c for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


def load(path: str | Path, *, prompt_column: str | None = None, category_column: str | None = None,
         subcategory_column: str | None = None, limit: int | None = None) -> list[RedTeamItem]:
    """Read a red-team file.

    Args:
        path: A ``.csv``, ``.tsv``, ``.jsonl``, ``.json`` or ``.parquet`` file.
        prompt_column: The prompt's column (default: the first of :data:`PROMPT_COLUMNS`).
        category_column: Default: the first of :data:`CATEGORY_COLUMNS` (KorSET's ``lv1_name``), if any.
        subcategory_column: Default: the first of :data:`SUBCATEGORY_COLUMNS` (``lv2_name``), if any.
        limit: Keep the first ``limit`` prompts.

    Returns:
        The items in file order; rows with an empty prompt are skipped.

    Raises:
        CoherenceError: The file is missing, of an unknown kind, unreadable, or has no prompt column.
    """
    file = Path(path)
    if not file.is_file():
        raise CoherenceError(f"{file}: no such red-team file (fix: a CSV, JSONL or parquet file with a prompt "
                             f"column, such as KorSET's)")
    kind = FORMATS.get(file.suffix.lower())
    if kind is None:
        raise CoherenceError(f"{file}: unknown red-team file type {file.suffix!r} (fix: .csv, .tsv, .jsonl, .json "
                             f"or .parquet)")
    rows = _read_rows(file, kind)
    if not rows:
        raise CoherenceError(f"{file}: no rows (fix: one prompt per row)")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    pcol = _pick(columns, prompt_column, PROMPT_COLUMNS, file, "prompt")
    if pcol is None:
        raise CoherenceError(f"{file}: no prompt column (has {', '.join(columns)}) (fix: name one of "
                             f"{', '.join(PROMPT_COLUMNS)}, or pass its name as the prompt column)")
    ccol = _pick(columns, category_column, CATEGORY_COLUMNS, file, "category")
    scol = _pick(columns, subcategory_column, SUBCATEGORY_COLUMNS, file, "sub-category")
    icol = _pick(columns, None, ID_COLUMNS, file, "id")
    items: list[RedTeamItem] = []
    for n, row in enumerate(rows):
        prompt = row.get(pcol)
        if not isinstance(prompt, str) or not prompt.strip():
            continue
        used = {pcol, ccol, scol, icol}
        items.append(RedTeamItem(
            id=str(row.get(icol)) if icol and row.get(icol) not in (None, "") else f"{file.stem}-{n}",
            prompt=prompt.strip(), category=str(row.get(ccol) or "") if ccol else "",
            subcategory=str(row.get(scol) or "") if scol else "",
            meta={k: v for k, v in row.items() if k not in used}))
        if limit and len(items) >= limit:
            break
    if not items:
        raise CoherenceError(f"{file}: every {pcol!r} is empty (fix: one non-empty prompt per row)")
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise CoherenceError(f"{file}: id {dup!r} appears twice in column {icol!r} (fix: unique ids, or drop the "
                             f"column and rows are numbered)")
    return items
