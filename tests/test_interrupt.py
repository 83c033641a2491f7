"""Ctrl-C on `coherence run` while a local model is generating a batch: the run stops within seconds (the
batch is stopped between decode steps), says in one line what it has and how to go on, exits 130 with no
traceback and loses nothing; run again, it finishes.

The target is a tiny random Llama (1 layer, byte-level tokenizer, made in the child process, no download)
served through the real ``local:`` provider and transformers' ``generate``; a forward hook makes each decode
step take 0.5 s once the test says so, so a batch of 64 tokens takes over 30 s. Before the stop between decode
steps, Ctrl-C here took 31-35 s (the rest of the batch: asyncio.run waits for its executor's threads); now
about 2 s.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from pathlib import Path

from conftest import EN_GB

import coherence

SCRIPT = r"""
import signal, sys, time
from pathlib import Path

# Ctrl-C as a terminal delivers it: a process started from a background job of a non-interactive shell (a CI
# script run with `&`, `nohup`) inherits SIGINT *ignored*, and Python then installs no KeyboardInterrupt handler,
# so the SIGINT below would do nothing. That, not the run, is why this test timed out in some full-suite runs.
signal.signal(signal.SIGINT, signal.default_int_handler)

folder, slow, generating = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
if not (folder / "config.json").is_file():
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    vocab = {"<pad>": 0, "</s>": 1}
    vocab.update({c: i + 2 for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))})
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="</s>")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    tok.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8192,
                         bos_token_id=None, eos_token_id=None, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(folder)

from coherence.models.local import load_local

_, model = load_local(str(folder))


def step(module, args):
    if slow.exists():
        generating.touch()
        time.sleep(0.5)


model.register_forward_pre_hook(step)
from coherence.cli import app

app(sys.argv[4:], prog_name="coherence")
"""


def _start(tmp_path, name, *args):
    """``coherence run ARGS`` in a child process; its output goes to ``<name>.out`` / ``<name>.err``."""
    src = str(Path(coherence.__file__).resolve().parents[1])  # the child imports the coherence under test,
    env = {**os.environ, "COLUMNS": "200", "CI": "1",  # even where PYTHONPATH is relative (cwd is tmp_path)
           "PYTHONPATH": os.pathsep.join([src, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])}
    with open(tmp_path / f"{name}.out", "w") as out, open(tmp_path / f"{name}.err", "w") as err:
        return subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "tiny"), str(tmp_path / "slow"),
                                 str(tmp_path / "generating"), "run", *args], cwd=tmp_path, env=env,
                                stdout=out, stderr=err)


def _output(tmp_path, name):
    return (tmp_path / f"{name}.out").read_text() + (tmp_path / f"{name}.err").read_text()


def _rows(db_path, sql):
    try:
        db = sqlite3.connect(db_path)
        try:
            return sorted(db.execute(sql))
        finally:
            db.close()
    except sqlite3.OperationalError:
        return []


def _attempts(db_path):
    return _rows(db_path, "SELECT seed_id, attempt, strategy, response, score FROM attempts")


def _calls(db_path):
    return _rows(db_path, "SELECT key, response FROM calls")


def test_ctrl_c_stops_a_generating_local_batch_within_seconds_and_resume_finishes(tmp_path):
    runs = tmp_path / "runs"
    args = ["--pack", str(EN_GB), "--runs-dir", str(runs), "--run-id", "victim", "--target-count", "4",
            "--seeds-per-template", "3", "--set", f"roles.target.model=local:{tmp_path / 'tiny'}",
            "--set", "roles.target.max_concurrency=8", "--quiet"]
    db_path = runs / "victim" / "run.db"
    proc = _start(tmp_path, "first", *args)
    deadline = time.time() + 240
    while time.time() < deadline and len(_attempts(db_path)) < 8 and proc.poll() is None:
        time.sleep(0.2)  # some answers committed first (fast batches) ...
    assert proc.poll() is None and len(_attempts(db_path)) >= 8, _output(tmp_path, "first")
    (tmp_path / "slow").touch()  # ... then every decode step takes 0.5 s: a batch takes over 30 s
    while time.time() < deadline and not (tmp_path / "generating").exists():
        time.sleep(0.05)
    time.sleep(1.0)  # well inside a slow batch
    before, calls_before = _attempts(db_path), _calls(db_path)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    took = time.monotonic() - sent
    said = _output(tmp_path, "first")
    assert proc.returncode == 130, (proc.returncode, said)
    assert took < 6, f"took {took:.1f} s to stop"
    assert "Traceback" not in said, said
    said = [line for line in said.splitlines() if line.strip()]
    stop_lines = [line for line in said if line.startswith("interrupted")]
    accepted = len(_rows(db_path, "SELECT seed_id FROM triplets WHERE status = 'accepted'"))
    assert stop_lines == [f"interrupted: {accepted} accepted so far; `coherence run --resume victim` goes on "
                          f"from there"], said
    kept = _attempts(db_path)
    # nothing committed was lost, and the stopped batch stored no (truncated) answer
    assert kept == before and _calls(db_path) == calls_before
    assert not _rows(db_path, "SELECT message FROM call_errors WHERE message LIKE '%stopped%'")

    (tmp_path / "slow").unlink()
    final = _start(tmp_path, "resumed", *args[:-1], "--resume", "victim", "--quiet")
    assert final.wait(timeout=600) == 0, _output(tmp_path, "resumed")
    assert set(kept) <= set(_attempts(db_path))
    summary = json.loads((runs / "victim" / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "finished", summary
