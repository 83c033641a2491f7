"""docs/cli.md is generated from `--help`; this fails when a command changed and the file did not."""

import importlib.util

from conftest import ROOT


def test_cli_reference_is_current():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    current = gen.DOCS.read_text(encoding="utf-8") if gen.DOCS.is_file() else ""
    assert current == gen.render(), ("docs/cli.md is stale (a command or its --help changed): regenerate it with "
                                     "`python scripts/gen_cli_docs.py` and commit the result")
