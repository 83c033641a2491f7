"""``--set`` on a key inside a section the config does not give starts from that section's defaults."""

from coherence.config import DEFAULT_RUN_MINUTES, load_config


def test_set_inside_a_default_role_keeps_its_model_and_the_default_budget():
    cfg = load_config(None, {"roles.target.timeout": 900})
    assert cfg.roles.target.model == "local:smollm2"
    assert cfg.roles.target.timeout == 900
    # an operational field does not make it another run: still the built-in default run's budget
    assert cfg.pipeline.max_minutes == DEFAULT_RUN_MINUTES


def test_another_target_is_not_the_default_run():
    cfg = load_config(None, {"roles.target.model": "mock:always"})
    assert cfg.pipeline.max_minutes is None


def test_set_inside_a_file_section_keeps_the_file_values(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("roles:\n  target: {model: 'mock:a', max_concurrency: 3}\npipeline: {target_count: 7}\n")
    cfg = load_config(path, {"roles.target.timeout": 5, "pipeline.max_attempts": 2})
    assert (cfg.roles.target.model, cfg.roles.target.max_concurrency, cfg.roles.target.timeout) == ("mock:a", 3, 5)
    assert (cfg.pipeline.target_count, cfg.pipeline.max_attempts) == (7, 2)
