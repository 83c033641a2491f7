"""Output paths: `--name ..`, `--run-id ../x` and `--out .` are refused in one line with nothing written or
deleted; `--overwrite` deletes only a folder coherence created."""

import json
import os

import pytest
from typer.testing import CliRunner

from coherence.cli import app
from coherence.errors import CoherenceError
from coherence.paths import MARKER, check_output, mark, remove_owned, safe_name


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def run_folder(tmp_path, monkeypatch):
    """A finished run's folder (run.db, config, triplets) in a working folder of its own."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "run.db").write_bytes(b"")
    (run / "config.yaml").write_text("pack: ko-KR\n")
    rows = [{"prompt": f"q{i}", "chosen": f"c{i}", "rejected": f"r{i}", "domain": "d"} for i in range(4)]
    (run / "triplets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "precious.txt").write_text("mine")
    return tmp_path


@pytest.mark.parametrize("args", [
    ["train", "runs/r1", "--name", "..", "--overwrite"],
    ["train", "runs/r1", "--name", "../../x"],
    ["train", "runs/r1", "--out", ".", "--overwrite"],
    ["train", "runs/r1", "--out", "..", "--overwrite"],
    ["run", "--run-id", "../x", "--quiet"],
    ["run", "--run-id", "/tmp/abs", "--quiet"],
])
def test_bad_output_paths_are_refused_in_one_line_and_touch_nothing(run_folder, args):
    before = _tree(run_folder)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "fix:" in lines[0], result.output
    assert _tree(run_folder) == before
    assert (run_folder / "runs" / "r1" / "run.db").is_file() and (run_folder / "precious.txt").read_text() == "mine"


def test_overwrite_deletes_only_what_coherence_created(tmp_path):
    mine = tmp_path / "job"
    mark(mine, "train")
    (mine / "adapter").mkdir()
    remove_owned(mine, "train", what="--out")
    assert not mine.exists()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("x")
    with pytest.raises(CoherenceError, match=f"no {MARKER}"):
        remove_owned(theirs, "train", what="--out")
    assert (theirs / "notes.txt").is_file()
    run = tmp_path / "run"
    mark(run, "run")
    (run / "run.db").write_bytes(b"")
    with pytest.raises(CoherenceError, match="did not create as a train output"):
        remove_owned(run, "train", what="--out")  # a run folder is not a training job
    assert (run / "run.db").is_file()
    check_output(tmp_path / "new", "train", what="--out")  # a new folder is fine


def test_names_are_one_path_component():
    for bad in ("..", ".", "a/b", "/abs", "", "~x", "a\\b"):
        with pytest.raises(CoherenceError, match="not a plain name"):
            safe_name(bad, what="--name", fix="f")
    assert safe_name("smollm2-dpo", what="--name", fix="f") == "smollm2-dpo"


def test_run_id_is_the_packs_identity_not_its_spelling(tmp_path, en_gb, monkeypatch):
    from coherence.config import load_config
    from coherence.packs.loader import load_pack
    from coherence.pipeline.runner import run_id_for

    monkeypatch.chdir(en_gb.parent)
    pack = load_pack(en_gb)
    by_path = run_id_for(load_config(None, {"pack": str(en_gb)}), pack.digest, pack_name=pack.meta.name)
    by_rel = run_id_for(load_config(None, {"pack": os.path.relpath(en_gb) + "/"}), pack.digest,
                        pack_name=pack.meta.name)
    assert by_path == by_rel and by_path.startswith(pack.meta.name + "-")
