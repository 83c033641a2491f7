"""Write docs/cli.md from the `--help` of every `coherence` command (run after changing a command):

    python scripts/gen_cli_docs.py          # rewrite docs/cli.md
    python scripts/gen_cli_docs.py --check  # exit 1 if docs/cli.md is stale (tests/test_cli_docs.py does this)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
ENV = {"TERMINAL_WIDTH": "100", "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb", "_TYPER_FORCE_DISABLE_TERMINAL": "1"}


def _commands(group, path):
    """(command path, click command) depth first, in the order the CLI lists them."""
    yield path, group
    if hasattr(group, "list_commands"):  # a group (typer may carry its own copy of click: no isinstance)
        ctx = group.context_class(group, info_name=path[-1])
        for name in group.list_commands(ctx):
            yield from _commands(group.get_command(ctx, name), [*path, name])


def render() -> str:
    """The Markdown text of docs/cli.md."""
    import typer
    from typer.testing import CliRunner

    from coherence.cli import app

    old = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    try:
        runner = CliRunner()
        parts = ["# CLI reference", "",
                 "Generated from `--help` by `python scripts/gen_cli_docs.py`; do not edit by hand "
                 "(`tests/test_cli_docs.py` fails when it is stale).", ""]
        for path, _ in _commands(typer.main.get_command(app), ["coherence"]):
            result = runner.invoke(app, [*path[1:], "--help"], env=ENV, color=False, prog_name="coherence")
            text = "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())
            parts += [f"{'#' * min(len(path) + 1, 4)} `{' '.join(path)}`", "", "```", text, "```", ""]
        return "\n".join(parts)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOCS.is_file() or DOCS.read_text(encoding="utf-8") != text:
            print(f"{DOCS} is stale: run `python scripts/gen_cli_docs.py`", file=sys.stderr)
            return 1
        return 0
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text, encoding="utf-8")
    print(f"wrote {DOCS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
