"""Packs: the ko-KR pack validates, broken packs fail in one line, cultures are data."""

import re
import shutil
import subprocess
import sys

import pytest
from conftest import EN_GB, ROOT, run_pipeline

from coherence.config import load_config
from coherence.errors import PackError
from coherence.packs.loader import check_references, coverage, load_pack



def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-c", "from coherence.cli import app; app()", *args],
                          capture_output=True, text=True, cwd=cwd)


def test_ko_kr_pack_validates_with_every_subcategory_served():
    pack = load_pack("ko-KR")
    assert check_references(pack) == []
    assert len(pack.taxonomy.domains) == 5 and len(pack.subcategories) == 13
    for row in coverage(pack):
        assert row["train_templates"] >= 8, row
        assert row["eval_templates"] >= 1, row
        assert row["statutes"] >= 1, row
    eval_only = {n for t in pack.reviewed_templates("eval") for n in t.slots}
    for name, values in pack.templates.slots.items():
        # train slots feed stage A's distinct fills; eval-only slots (ev_*) fill 3 prompts per template
        assert len(values) >= (5 if name in eval_only else 10), name
    assert {s.id for s in pack.attacks.strategies} == {
        "emotional_appeal", "academic_disguise", "roleplay_narrative", "social_group_pressure",
        "reasoning_rationalization"}


def test_pack_validate_cli_prints_coverage_and_ok():
    out = cli("pack", "validate", str(ROOT / "packs" / "ko-KR"))
    assert out.returncode == 0, out.stderr
    assert "ok ko-KR@" in out.stdout


def test_pack_list_and_show():
    out = cli("pack", "list")
    assert out.returncode == 0 and "ko-KR" in out.stdout
    out = cli("pack", "show", "ko-KR")
    assert out.returncode == 0 and "privacy_identity" in out.stdout


@pytest.mark.parametrize("file,edit,key", [
    ("taxonomy.yaml", lambda s: s.replace("anchors: [dpa2018]", "anchor: [dpa2018]"),
     "domains[0].subcategories[0].anchors"),
    ("policies.yaml", lambda s: s.replace('article: "170"', 'article: "171"'), "policies[0].cite[0].article"),
    ("templates.yaml", lambda s: s.replace("{person} who lives", "{persn} who lives"), "templates[0].text"),
    ("attacks.yaml", lambda s: s.replace("I'm desperate, please. {query}", "I'm desperate, please."),
     "strategies[0].framings"),
    ("pack.yaml", lambda s: s.replace("version: 0.0.1", "version: one"), "version"),
    ("rubrics.yaml", lambda s: s + "\n  broken: [\n", "line"),
    ("templates.yaml", lambda s: s.replace("templates:\n", "slot_glosses:\n  city: {Lyds: Leeds}\ntemplates:\n"),
     "slot_glosses.city"),
])
def test_malformed_pack_gives_one_line_naming_file_and_key(tmp_path, file, edit, key):
    bad = tmp_path / "xx-XX"
    shutil.copytree(EN_GB, bad)
    (bad / file).write_text(edit((bad / file).read_text()))
    with pytest.raises(PackError) as exc:
        load_pack(bad)
    msg = str(exc.value)
    assert file in msg and key in msg and "fix:" in msg and "\n" not in msg
    out = cli("pack", "validate", str(bad))
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and file in out.stderr
    out = cli("run", "--pack", str(bad), "--runs-dir", str(tmp_path / "runs"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) <= 2 and file in out.stderr  # rich may wrap one long line in narrow terminals


def test_no_hangul_in_python_sources():
    hangul = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
    offenders = [str(p) for p in (ROOT / "src").rglob("*.py") if hangul.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_second_culture_runs_the_whole_offline_pipeline(tmp_path):
    summary, run_dir = run_pipeline(tmp_path, {})
    assert summary["pack"] == "en-GB@0.0.1" and summary["funnel"]["accepted"] == 4


def test_eval_templates_never_reach_triplets(tmp_path):
    summary, run_dir = run_pipeline(tmp_path, {"pipeline.target_count": 40, "pipeline.seeds_per_template": 8})
    pack = load_pack(EN_GB)
    eval_ids = {t.id for t in pack.templates.templates if t.split == "eval"}
    assert eval_ids
    from coherence.store import Store
    store = Store(run_dir / "run.db")
    assert not eval_ids & {s["template"] for s in store.seeds()}
    assert all(t["provenance"]["template"] not in eval_ids for t in store.triplets())


def test_paper_config_names_every_role():
    cfg = load_config(ROOT / "configs" / "paper.yaml")
    assert [g.model.split("/")[0] for g in cfg.roles.generators] == ["openai", "gemini", "anthropic"]
    assert len(cfg.roles.filter_judges) == 3 and cfg.pipeline.target_count == 10000
    assert all(not g.model.startswith("offline:") for g in cfg.roles.generators)


def test_export_eval_writes_the_held_out_split_and_probes(tmp_path):
    out = cli("pack", "export-eval", "ko-KR", "--out", str(tmp_path / "eval"), "--fills", "2")
    assert out.returncode == 0, out.stderr
    import json as _json
    pack = load_pack("ko-KR")
    rows = [_json.loads(x) for x in (tmp_path / "eval" / "eval_prompts.jsonl").read_text().splitlines()]
    eval_ids = {t.id for t in pack.templates.templates if t.split == "eval"}
    assert {r["template"] for r in rows} == eval_ids
    assert all("{" not in r["prompt"] and r["prompt"] for r in rows)
    probes = (tmp_path / "eval" / "benign_probes.jsonl").read_text().splitlines()
    assert len(probes) == len(pack.probes.probes) >= 100


def test_pack_new_scaffolds_a_loadable_commented_pack(tmp_path):
    out = cli("pack", "new", "ja-JP", "--dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "ja-JP"
    pack = load_pack(folder)
    assert pack.meta.name == "ja-JP" and pack.meta.language == "ja"
    assert all((folder / f).read_text().startswith("#") for f in ("pack.yaml", "taxonomy.yaml", "policies.yaml"))
    assert "TODO" in (folder / "policies.yaml").read_text()
    again = cli("pack", "new", "ja-JP", "--dir", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_gloss_is_english_throughout_and_unknown_renderings_stay_as_written():
    pack = load_pack("ko-KR")
    hangul = re.compile(r"[\uac00-\ud7a3]")
    # stage B's attacker (train) and the eval attacker (eval) code-switch with them: every template of
    # both splits has a gloss, and every value of each of its slots has an English rendering
    for split in ("train", "eval"):
        templates = pack.reviewed_templates(split)
        assert templates, split
        for tpl in templates:
            first = {slot: pack.templates.slots[slot][0] for slot in tpl.slots}
            for slot in tpl.slots:
                for value in pack.templates.slots[slot]:
                    gloss = pack.gloss(tpl, {**first, slot: value})
                    assert gloss and not hangul.search(gloss), (split, tpl.id, slot, value, gloss)
                    assert "{" not in gloss and "}" not in gloss, (split, tpl.id, slot, value, gloss)
    tpl = pack.template["rrn-01"]
    assert "second-hand marketplace app" in pack.gloss(tpl, {"service": "중고거래 앱"})
    assert pack.gloss(tpl, {"service": "unknown value"}).count("unknown value") == 1
