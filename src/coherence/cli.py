"""The ``coherence`` command line. Thin: parses, calls one library function, prints."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from coherence.errors import CoherenceError

app = typer.Typer(help="Cultural-coherence alignment: cultural packs -> DPO triplets.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
pack_app = typer.Typer(help="Author, check and inspect cultural packs.", no_args_is_help=True)
app.add_typer(pack_app, name="pack")
console = Console()
err = Console(stderr=True)


def _setup_logging() -> None:
    """Log records (level from $COHERENCE_LOG, default WARNING) on stderr through rich, so that a
    warning printed while the progress bars are live appears above them instead of garbling them."""
    from rich.logging import RichHandler

    logging.basicConfig(level=os.environ.get("COHERENCE_LOG", "WARNING"), format="%(name)s: %(message)s",
                        handlers=[RichHandler(console=err, show_time=False, show_path=False)])


def _fail(exc: BaseException) -> None:
    # the message may quote a provider or a model (a `[/]` in it must not be read as rich markup)
    err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


STAGES = {"seed": "A seed", "attack": "B attack attempts", "respond": "C respond", "filter": "D filter"}


@app.command()
def run(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Run config YAML (see configs/).")] = None,
    pack: Annotated[Optional[str], typer.Option(help="Pack name or folder (default: ko-KR).")] = None,
    target_count: Annotated[Optional[int], typer.Option(help="Accepted triplets wanted, balanced over domains.")] = None,
    seeds_per_template: Annotated[Optional[int], typer.Option(help="Slot fills per template.")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Run id or folder to continue.")] = None,
    run_id: Annotated[Optional[str], typer.Option(help="Name of a new run (default: from config+pack).")] = None,
    runs_dir: Annotated[Optional[Path], typer.Option(help="Where runs are created (default: ./runs).")] = None,
    max_minutes: Annotated[Optional[float], typer.Option(
        help="Time budget of this invocation (default: none, 12 min for the built-in offline default run); "
             "run again to continue. 0: none.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Estimate calls, tokens and cost per role; spend nothing.")] = False,
    max_cost: Annotated[Optional[float], typer.Option(
        help="USD the run may spend in all (every invocation together); it stops cleanly before a call "
             "would exceed it. Resume with a higher limit.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help=(
        "Any config field: KEY=VALUE with dotted keys (pipeline.target_count=20, pipeline.max_minutes=null). "
        "Repeatable; applied after --config."))] = None,
    retry_refused: Annotated[bool, typer.Option(
        help="Send again the prompts a provider refused (content policy, context length) in an earlier "
             "invocation; without it a resume keeps those refusals.")] = False,
    exclude_rejected: Annotated[bool, typer.Option(
        help="The export leaves out triplets human reviewers rejected (coherence review).")] = False,
) -> None:
    """Run stages A-D and export DPO triplets to runs/<id>/."""
    from coherence.config import given, load_config, parse_set
    from coherence.pipeline.runner import prepare_run, run_async

    _setup_logging()
    run_dir: Path | None = None
    try:
        cfg = load_config(config, given({"pack": pack, "pipeline.target_count": target_count,
                                         "pipeline.seeds_per_template": seeds_per_template,
                                         "runs_dir": str(runs_dir) if runs_dir else None}) | parse_set(set_))
        if dry_run:
            _print_estimate(cfg)
            return
        run_dir, cfg = prepare_run(cfg, resume=resume, run_id=run_id)
        if max_minutes is not None:
            cfg.pipeline.max_minutes = max_minutes or None
        console.print(f"run [bold]{run_dir.name}[/] -> {run_dir}/  (pack {cfg.pack}, target {cfg.roles.target.model})")
        with Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=quiet or not sys.stdout.isatty() and bool(os.environ.get("CI"))) as bar:
            tasks = {k: bar.add_task(v, total=None) for k, v in STAGES.items()}
            limit = f" of {max_cost:g}" if max_cost is not None else ""
            spend = bar.add_task(f"spend USD 0{limit}", total=None, start=False)
            summary = asyncio.run(run_async(
                cfg, run_dir, advance=lambda s, n: bar.advance(tasks[s], n), max_cost=max_cost,
                on_spend=lambda usd: bar.update(spend, description=f"spend USD {usd:.4f}{limit}"),
                retry_refused=retry_refused, exclude_rejected=exclude_rejected))
    except CoherenceError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        # asyncio.run turned Ctrl-C into a cancellation of the run: its commits are in the store, and a local
        # batch that was generating stopped at its next decode step (LocalChat.aclose), so nothing waits for it
        if run_dir is not None:
            from coherence.pipeline.runner import accepted_so_far

            err.print(f"interrupted: {accepted_so_far(run_dir)} accepted so far; `coherence run --resume "
                      f"{run_dir.name}` goes on from there", highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(130) from None
    _print_summary(summary, run_dir)


def _print_estimate(cfg: Any) -> None:
    from coherence.packs.loader import load_pack
    from coherence.pipeline.estimate import estimate

    est = estimate(load_pack(cfg.pack), cfg)
    a = est["assumptions"]
    table = Table(title=f"dry run: {a['seeds']:,} seeds; expected {a['expected_seeds']:,} attacked at jailbreak "
                        f"rate {a['jailbreak_rate_per_attempt']}/attempt, filter pass {a['filter_pass_rate']}")
    for col in ("role", "model"):  # names fold in a narrow terminal; figures never break
        table.add_column(col, overflow="fold")
    for col in ("calls max", "calls exp.", "tokens exp.", "USD max", "USD exp."):
        table.add_column(col, justify="right", no_wrap=True)
    fmt = lambda v: "unknown" if v is None else f"{v:,}"  # noqa: E731
    usd = lambda v: "unknown" if v is None else f"{v:,.2f}"  # noqa: E731
    for r in est["roles"]:
        table.add_row(r["role"], r["model"], fmt(r["calls_max"]), fmt(r["calls_expected"]),
                      fmt(r["tokens_expected"]), usd(r["cost_max_usd"]), usd(r["cost_expected_usd"]))
    console.print(table)
    console.print(f"total USD: expected {est['total_cost_expected_usd']:,}, at most {est['total_cost_max_usd']:,}"
                  + (f"; no price known for {', '.join(est['unpriced_models'])}" if est["unpriced_models"] else ""))
    console.print(f"expected accepted triplets: {est['expected_accepted']:,} of target_count {cfg.pipeline.target_count:,}")
    for warning in est["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    console.print("nothing was called; tokens are UTF-8 bytes / 3 (the estimator of --max-cost); the maximum "
                  "prices every completion at what --max-cost reserves (max_tokens, else the model's maximum output)")


def _print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    f = summary["funnel"]
    table = Table(title=f"funnel ({summary['status']})", show_header=True)
    table.add_column("stage")
    table.add_column("count", justify="right")
    for label, key in (("seeds", "seeds"), ("near-duplicates removed", "duplicates_removed"),
                       ("seeds attacked", "attacked"), ("attack attempts", "attempts"),
                       ("jailbroken", "jailbroken"), ("never jailbroken", "no_jailbreak"),
                       ("query judged harmless", "query_rejected"), ("responded (r+ chosen)", "responded"),
                       ("accepted", "accepted"), ("rejected by filter", "filter_rejected"),
                       ("over domain quota", "over_quota"), ("not attacked", "not_attacked")):
        table.add_row(label, str(f[key]))
    console.print(table)
    per = ", ".join(f"{d} {n}/{summary['quota_per_domain'][d]}" for d, n in summary["accepted_per_domain"].items())
    console.print(f"accepted per domain: {per}")
    for domain, why in summary.get("domains_given_up", {}).items():
        console.print(f"[yellow]domain {domain} given up:[/] {escape(why)}")
    inv = summary["this_invocation"]
    console.print(f"model calls: {inv['model_calls_made']} made, {inv['model_calls_cached']} from cache; "
                  f"tokens {inv['input_tokens']} in / {inv['output_tokens']} out; cost ${inv['cost_usd']:.4f}; "
                  f"{inv['wall_seconds']} s")
    refusals = summary.get("provider_refusals", {})
    if refusals.get("by_slot"):
        per = "; ".join(f"{slot} " + ", ".join(f"{k} {n}" for k, n in kinds.items())
                        for slot, kinds in sorted(refusals["by_slot"].items()))
        stopped = ", ".join(f"{stage} {n}" for stage, n in sorted(refusals.get("seeds_stopped", {}).items()))
        console.print(f"[yellow]provider refusals:[/] {escape(per)}" + (f"; seeds stopped: {stopped}" if stopped else "")
                      + f". They are kept; `coherence run --resume {run_dir.name} --retry-refused` sends them again",
                      highlight=False)
    if summary.get("offline_roles"):
        console.print(f"[yellow]offline (pack-driven, not LLM) roles:[/] {', '.join(summary['offline_roles'])}")
    if summary.get("status") == "cost_budget":
        cb = summary["cost_budget"]
        console.print(f"[yellow]cost budget reached:[/] spent {cb['spent_usd']:.4f} of {cb['max_cost_usd']:g} USD; "
                      f"the run stopped cleanly before the next call. Continue it with "
                      f"`coherence run --resume {run_dir.name} --max-cost <higher USD>`")
    if summary.get("status") == "time_budget":
        finishing = summary.get("finishing")
        early = (f" (from {finishing['seconds_before_deadline']:.0f} s before it no new seed started, so the seeds "
                 f"under attack could finish)" if finishing else "")
        console.print(f"[yellow]time budget reached:[/] the run stopped cleanly{early}; continue it with "
                      f"`coherence run --resume {run_dir.name}` (add --max-minutes N for a longer budget)")
    ex = summary.get("exports", {})
    console.print(f"triplets: {ex.get('triplets_jsonl')} ({ex.get('rows')} rows)\n"
                  f"dataset:  {ex.get('dataset')}  (datasets.load_from_disk)\nsummary:  {run_dir / 'summary.json'}\n"
                  f"report:   coherence report {run_dir}")


@pack_app.command("validate")
def pack_validate(path: Annotated[str, typer.Argument(help="Pack folder or name.")] = "ko-KR") -> None:
    """Check a pack's schema and cross-references; print coverage per sub-category."""
    from coherence.packs.loader import check_references, coverage, load_pack

    try:
        pack = load_pack(path, check=False)
    except CoherenceError as exc:
        _fail(exc)
    problems = check_references(pack)
    table = Table(title=f"{pack.ref} coverage")
    rows = coverage(pack)
    for col in rows[0]:
        table.add_column(col, justify="left" if col in ("domain", "subcategory") else "right", overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)
    for p in problems:
        err.print(f"[red]problem:[/] {escape(str(p))}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    console.print(f"[green]ok[/] {pack.ref} ({pack.path})")


@pack_app.command("list")
def pack_list() -> None:
    """List the packs coherence knows (built in and under $COHERENCE_PACKS_PATH)."""
    from coherence.packs.loader import builtin_packs, load_pack

    for name, path in builtin_packs().items():
        try:
            pack = load_pack(path, check=False)
            console.print(f"{name}\t{pack.meta.version}\t{pack.meta.title}\t{path}")
        except CoherenceError as exc:
            console.print(f"{name}\t(broken: {exc})", markup=False)


@pack_app.command("show")
def pack_show(name: Annotated[str, typer.Argument(help="Pack name or folder.")] = "ko-KR") -> None:
    """Show a pack's scope, authorship and taxonomy."""
    from coherence.packs.loader import load_pack

    try:
        pack = load_pack(name)
    except CoherenceError as exc:
        _fail(exc)
    m = pack.meta
    console.print(f"[bold]{m.title}[/] {pack.ref} ({m.language})  {pack.path}\n{m.scope.statement}")
    console.print("covers: " + "; ".join(m.scope.covers) + "\nexcludes: " + "; ".join(m.scope.excludes))
    console.print("authors: " + ", ".join(a.name for a in m.authorship.authors))
    console.print(f"method: {m.authorship.method}\nreview: {m.authorship.review}")
    for d in pack.taxonomy.domains:
        console.print(f"[bold]{d.id}[/] {d.name} ({d.name_en})")
        for s in d.subcategories:
            laws = ", ".join(pack.statute[a].name for a in s.anchors)
            console.print(f"  {s.id}: {s.name} - {laws}")


@pack_app.command("new")
def pack_new(
    name: Annotated[str, typer.Argument(help="Pack name, a locale such as ja-JP.")],
    dest: Annotated[Path, typer.Option("--dir", help="Folder to create it in.")] = Path("packs"),
    language: Annotated[Optional[str], typer.Option(help="Language of its text (default: from the name).")] = None,
) -> None:
    """Scaffold a commented pack a new author can fill in; then `coherence pack validate`."""
    from coherence.packs.scaffold import new_pack

    try:
        folder = new_pack(name, dest, language=language)
    except CoherenceError as exc:
        _fail(exc)
    console.print(f"created {folder}/ (12 commented files). Fill in the TODOs, then: "
                  f"coherence pack validate {folder}")


@pack_app.command("expand")
def pack_expand(
    name: Annotated[str, typer.Argument(help="Pack name or folder.")],
    kind: Annotated[str, typer.Option(help="slot_value | template | probe")],
    model: Annotated[str, typer.Option(help="Proposing model: a LiteLLM string such as openai/gpt-4.1.")],
    subcategory: Annotated[str, typer.Option(help="Sub-category (templates, probes).")] = "",
    slot: Annotated[str, typer.Option(help="Slot name (slot values).")] = "",
    n: Annotated[int, typer.Option(help="How many to ask for.")] = 10,
    api_base: Annotated[Optional[str], typer.Option(help="OpenAI-compatible server.")] = None,
    api_key_env: Annotated[Optional[str], typer.Option(help="Variable holding the key.")] = None,
) -> None:
    """Ask an LLM for more slot values, templates or probes; they are written as `status: proposed`."""
    from coherence.authoring import expand
    from coherence.config import ModelSpec

    try:
        spec = ModelSpec(model=model, api_base=api_base, api_key_env=api_key_env)
        new = expand(name, kind=kind, spec=spec, n=n, subcategory=subcategory, slot=slot,
                     store_path=Path("runs") / "_authoring" / "calls.db")
    except CoherenceError as exc:
        _fail(exc)
    for p in new:
        console.print(f"{p.id}\t{p.kind}\t{p.text}", highlight=False, markup=False)
    console.print(f"{len(new)} proposals written as status: proposed; review them, then "
                  f"`coherence pack accept {name} --id ID --reviewer NAME`")


@pack_app.command("accept")
def pack_accept(
    name: Annotated[str, typer.Argument(help="Pack name or folder.")],
    ids: Annotated[Optional[list[str]], typer.Option("--id", help="Proposal id ('all' for every pending one).")] = None,
    reviewer: Annotated[str, typer.Option(help="Who reviewed them (kept in proposals.yaml).")] = "",
    reject: Annotated[bool, typer.Option(help="Reject instead of accept.")] = False,
) -> None:
    """Accept (or reject) proposals after reading them; without --id, list the pending ones."""
    import yaml

    from coherence.authoring import review
    from coherence.packs.loader import resolve_pack_path

    try:
        if not ids:
            path = resolve_pack_path(name) / "proposals.yaml"
            data = (yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None) or {}
            pending = [p for p in data.get("proposals", []) if p.get("status") == "proposed"]
            for p in pending:
                console.print(f"{p['id']}\t{p['kind']}\t{p.get('slot') or p.get('subcategory')}\t{p['text']}"
                              f"\t({p['model']})", highlight=False, markup=False)
            console.print(f"{len(pending)} pending")
            return
        if not reviewer:
            raise CoherenceError("--reviewer is required (fix: name the person who read the proposals)")
        done = review(name, ids=ids, reviewer=reviewer, accept=not reject)
    except CoherenceError as exc:
        _fail(exc)
    console.print(f"{'rejected' if reject else 'accepted'} {len(done)}: {', '.join(done)}")


@pack_app.command("export-eval")
def pack_export_eval(
    name: Annotated[str, typer.Argument(help="Pack name or folder.")] = "ko-KR",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("eval"),
    fills: Annotated[int, typer.Option(help="Slot fills per eval template.")] = 3,
) -> None:
    """Export the held-out eval split and the benign probes (JSONL) for evaluation."""
    from coherence.packs.fill import export_eval
    from coherence.packs.loader import load_pack

    try:
        result = export_eval(load_pack(name), out, fills_per_template=fills)
    except CoherenceError as exc:
        _fail(exc)
    console.print(f"{result['eval_rows']} eval prompts -> {result['eval_prompts']}\n"
                  f"{result['probe_rows']} benign probes -> {result['benign_probes']}")


# --- training: `coherence train`, `coherence generate` (coherence.train) ---


@app.command()
def train(
    source: Annotated[str, typer.Argument(help="Run id or folder (runs/<id>), a datasets folder or a JSONL file.")],
    base: Annotated[Optional[str], typer.Option(
        help="Base model: local:smollm2, a Hugging Face id in the local cache, or a folder.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Training config YAML.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Job name: <run>/train/<name>/ (default: <base>-dpo).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder instead of <run>/train/<name>/.")] = None,
    max_triplets: Annotated[Optional[int], typer.Option(help="Triplets sampled, balanced over domains.")] = None,
    eval_size: Annotated[Optional[float], typer.Option(help="Held-out slice: fraction (<1) or count.")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="dpo.num_train_epochs.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="dpo.max_steps (overrides epochs).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="dpo.learning_rate.")] = None,
    beta: Annotated[Optional[float], typer.Option(help="dpo.beta.")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="dpo.max_length (tokens of prompt + answer).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cuda | cpu.")] = None,
    quantization: Annotated[Optional[str], typer.Option(help="auto (4-bit on CUDA) | 4bit | none.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of sampling, split and training.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help=(
        "Any field: dpo.KEY=V (trl.DPOConfig), lora.KEY=V (peft.LoraConfig), quantization_config.KEY=V, "
        "model_init_kwargs.KEY=V. Repeatable."))] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Also write the merged model to merged/.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing job of the same name.")] = False,
    runs_dir: Annotated[Path, typer.Option(help="Where run ids are looked up.")] = Path("runs"),
) -> None:
    """DPO-train a LoRA adapter on a run's triplets (the paper's QLoRA recipe on CUDA, LoRA on CPU)."""
    from coherence.config import given
    from coherence.train.config import load_train_config, parse_set
    from coherence.train.trainer import train as run_training

    _setup_logging()
    try:
        flags = {**given({"base": base, "name": name, "max_triplets": max_triplets, "eval_size": eval_size,
                          "device": device, "quantization": quantization, "seed": seed, "merge": merge or None,
                          "dpo.num_train_epochs": epochs, "dpo.max_steps": max_steps, "dpo.learning_rate": lr,
                          "dpo.beta": beta, "dpo.max_length": max_length}), **parse_set(set_)}
        cfg = load_train_config(config, flags)
        result = run_training(source, cfg=cfg, runs_dir=runs_dir, out=out, overwrite=overwrite,
                              say=lambda s: console.print(s, highlight=False, soft_wrap=True))
    except CoherenceError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        err.print("interrupted; run the same command again to resume from the last checkpoint")
        raise typer.Exit(130) from None
    table = Table(title=f"held-out slice ({result['heldout_triplets']} triplets)")
    for col in ("", "loss", "reward accuracy", "reward margin"):
        table.add_column(col, justify="left" if not col else "right")
    for label, m in (("start", result["heldout_start"]), (f"end (step {result['steps']})", result["heldout_end"])):
        m = m or {}
        table.add_row(label, *(f"{m[k]:.3f}" if isinstance(m.get(k), float) else "-"
                               for k in ("loss", "rewards/accuracies", "rewards/margins")))
    console.print(table)
    console.print(f"{result['steps']} steps in {result['wall_seconds_this_invocation']} s; adapter: "
                  f"{result['adapter']}\nmetrics:  {result['job']}/metrics.json, metrics.png\n"
                  f"card:     {result['job']}/README.md" + (f"\nmerged:   {result['merged']}" if result["merged"] else ""))


@app.command()
def generate(
    model: Annotated[str, typer.Option(help="BASE, BASE+ADAPTER, or a runs/<id>/train/<name> folder.")],
    prompts: Annotated[str, typer.Option(help=(
        "JSONL with a 'prompt' per line, pack:NAME (its eval split), or a train job folder (its held-out slice)."))],
    out: Annotated[Optional[Path], typer.Option(help="Write the answers as JSONL here.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="First N prompts only.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer.")] = 128,
    batch_size: Annotated[int, typer.Option(help="Prompts per batch.")] = 8,
) -> None:
    """Answer prompts with the base and the tuned model side by side."""
    import json

    from coherence.train.generate import generate as run_generate, load_prompts

    try:
        rows = run_generate(model, prompts=load_prompts(prompts, limit=limit), max_new_tokens=max_new_tokens,
                            batch_size=batch_size)
    except CoherenceError as exc:
        _fail(exc)
    for row in rows:
        console.rule(f"{row['id']} {row.get('domain', '')}")
        for key in ("prompt", "base", "tuned"):
            if key in row:
                console.print(f"[bold]{key}:[/] ", end="")
                console.print(row[key], highlight=False, soft_wrap=True, markup=False)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        console.print(f"{len(rows)} answers -> {out}")


# --- evaluation: `coherence eval` (coherence.evaluate) ---


class _EvalGroup(typer.core.TyperGroup):
    """``coherence eval [RUN] [--model ...]`` runs the suites; ``coherence eval <subcommand>`` (such as
    ``score-kobbq``) runs that subcommand: an argument that names no subcommand goes to ``run``."""

    def parse_args(self, ctx: Any, args: list[str]) -> Any:
        if not args or args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(cls=_EvalGroup, help="Measure what training changed (suites on Inspect AI).",
                       no_args_is_help=False)
app.add_typer(eval_app, name="eval")


@eval_app.command("run", hidden=True)
def eval_run(
    run: Annotated[Optional[Path], typer.Argument(help="A run folder: its target vs every adapter trained in it.")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help=(
        "[LABEL=]SPEC[@API_BASE]: local:smollm2, BASE+ADAPTER, a runs/<id>/train/<name> folder, a cached HF id, "
        "a LiteLLM string. Repeatable; the first is the base of every comparison."))] = None,
    out: Annotated[Optional[Path], typer.Option(help="Eval folder (default evals/<eval-id>/; for a run "
                                                     "runs/<id>/evals/<eval-id>/).")] = None,
    pack: Annotated[str, typer.Option(help="Pack name or folder.")] = "ko-KR",
    suite: Annotated[Optional[list[str]], typer.Option(help="Suites to run (default all): safety, over_refusal, "
                                                             "anchoring, thick_thin. Repeatable.")] = None,
    fills: Annotated[int, typer.Option(help="Slot fills per held-out template.")] = 1,
    max_tokens: Annotated[int, typer.Option(help="Longest answer of the evaluated models.")] = 96,
    judge: Annotated[str, typer.Option(help="Response-harm judge (offline:judge* or an LLM spec).")] = "offline:judge",
    quality_judge: Annotated[Optional[str], typer.Option(help="LLM quality judge for P1-P3 (optional).")] = None,
    refusal_judge: Annotated[Optional[str], typer.Option(help="LLM refusal judge, XSTest classes (optional).")] = None,
    pairwise_judge: Annotated[Optional[str], typer.Option(help="LLM thick-vs-thin judge (default heuristic).")] = None,
    attacker: Annotated[str, typer.Option(help="Attacker for the 5 strategies.")] = "offline:attacker",
    anchoring_per_subcategory: Annotated[int, typer.Option(help="Probes per sub-category asked unframed (0: all).")] = 4,
    limit: Annotated[Optional[int], typer.Option(help="At most N items per suite, spread over the sub-categories (quick look).")] = None,
    redteam: Annotated[Optional[Path], typer.Option(help="Red-team file (CSV/JSONL/parquet, a prompt column).")] = None,
    kobbq: Annotated[Optional[Path], typer.Option(help="KoBBQ TSV in KoBBQ's columns (bias suite).")] = None,
    kobbq_prompt: Annotated[Optional[list[int]], typer.Option(help="KoBBQ prompts 1-5 to ask (default all).")] = None,
    capability: Annotated[Optional[list[str]], typer.Option(help=(
        "lm-eval task on the local models (kmmlu, haerae, hrm8k, kobest...), offline. Repeatable."))] = None,
    capability_limit: Annotated[Optional[float], typer.Option(help="Items per capability task (or a fraction).")] = None,
    capability_tasks_dir: Annotated[Optional[list[Path]], typer.Option(help="Folder of extra lm-eval task YAMLs.")] = None,
    evals_dir: Annotated[Path, typer.Option(help="Where eval folders are created.")] = Path("evals"),
) -> None:
    """Evaluate models: safety (plain + 5 attacks), over-refusal, anchoring, thick vs thin, degenerate answers.

    The first model is the base of every comparison. Other eval commands: `coherence eval score-kobbq --help`.
    """
    from coherence.evaluate import EvalOptions, Progress, evaluate, model_args_for
    from coherence.evaluate.table import render

    _setup_logging()
    try:
        models = model_args_for(run, model)
        options = EvalOptions(
            suites=tuple(suite) if suite else EvalOptions().suites, fills=fills, max_tokens=max_tokens, judge=judge,
            quality_judge=quality_judge, refusal_judge=refusal_judge, pairwise_judge=pairwise_judge,
            attacker=attacker, limit=limit, anchoring_per_subcategory=anchoring_per_subcategory or None, redteam=str(redteam) if redteam else None,
            kobbq=str(kobbq) if kobbq else None, kobbq_prompts=tuple(kobbq_prompt or (1, 2, 3, 4, 5)),
            capability=tuple(capability or ()), capability_limit=capability_limit,
            capability_task_dirs=tuple(str(d) for d in capability_tasks_dir or ()))
        if run is not None and evals_dir == Path("evals"):
            evals_dir = run / "evals"  # beside the run, where `coherence report runs/<id>` finds it
        results = evaluate(models, pack=pack, out=out, evals_dir=evals_dir, options=options,
                           progress=Progress(say=lambda s: err.print(s, highlight=False, soft_wrap=True)))
    except CoherenceError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        err.print("interrupted; every answer made so far is stored: run the same command again to resume")
        raise typer.Exit(130) from None
    render(results, console)


# --- KoBBQ scoring and judge calibration (coherence.evaluate.kobbq, .calibrate) ---

judge_app = typer.Typer(help="Measure the judges.", no_args_is_help=True)
app.add_typer(judge_app, name="judge")


def _write_json(data: Any, out: Optional[Path]) -> None:
    import json

    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


@eval_app.command("score-kobbq")
def eval_score_kobbq(
    file: Annotated[Path, typer.Argument(help="KoBBQ TSV (its columns) whose `prediction` column holds raw outputs.")],
    prompt_id: Annotated[Optional[int], typer.Option(help="KoBBQ prompt 1-5 the answers were made with, for rows "
                                                          "without a prompt_id column (default 1).")] = None,
    mode: Annotated[str, typer.Option(help="pooled (KoBBQ's test mode) | template_mean (its all mode).")] = "pooled",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the metrics here.")] = None,
) -> None:
    """Score raw model outputs on KoBBQ exactly as KoBBQ's evaluation code does; print the metrics as JSON."""
    import json

    from coherence.evaluate.kobbq import score_tsv

    try:
        result = score_tsv(file, prompt_id=prompt_id, mode=mode)
    except CoherenceError as exc:
        _fail(exc)
    _write_json(result, json_out)
    print(json.dumps(result, ensure_ascii=False, indent=2))


@judge_app.command("calibrate")
def judge_calibrate(
    judge: Annotated[str, typer.Option(help="offline:judge, offline:judge-morph, offline:judge-strict or an LLM spec.")],
    data: Annotated[Path, typer.Option(help="JSONL: text (or query + response), label harmful/benign or 1/0, "
                                            "optional subcategory.")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Run config (pack, thresholds).")] = None,
    pack: Annotated[Optional[str], typer.Option(help="Pack name or folder instead of the config's.")] = None,
    api_base: Annotated[Optional[str], typer.Option(help="OpenAI-compatible server of an LLM judge.")] = None,
    api_key_env: Annotated[Optional[str], typer.Option(help="Variable holding its key.")] = None,
    store: Annotated[Path, typer.Option(help="SQLite cache of the judge's calls.")] = Path("runs/_calibrate/calls.db"),
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures and rows here.")] = None,
) -> None:
    """Measure a judge against human labels: n, accuracy, Cohen's kappa, F1, confusion matrix."""
    from coherence.evaluate.calibrate import calibrate

    try:
        r = calibrate(judge, data, config=config, pack=pack, store_path=store, api_base=api_base,
                      api_key_env=api_key_env)
    except CoherenceError as exc:
        _fail(exc)
    _write_json(r, json_out)
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    table = Table(title=f"{r['judge']} vs human labels ({r['data']}; thresholds: response harm >= "
                        f"{r['thresholds']['response_harm']}, query harm >= {r['thresholds']['query_harm']})")
    for col in ("rows", "n", "accuracy", "kappa", "precision", "recall", "F1", "tp", "fp", "fn", "tn"):
        table.add_column(col, justify="left" if col == "rows" else "right")
    for name, m in (("all", r), *sorted(r["by_task"].items())):
        c = m["confusion"]
        table.add_row(name, str(m["n"]), fmt(m["accuracy"]), fmt(m["kappa"]), fmt(m["precision"]),
                      fmt(m["recall"]), fmt(m["f1"]), str(c["tp"]), str(c["fp"]), str(c["fn"]), str(c["tn"]))
    console.print(table)
    console.print(f"{r['n_unscored']} of {r['n_rows']} rows unscored (unparseable verdicts); model calls: "
                  f"{r['calls']['made']} made, {r['calls']['cached']} from cache")
    if r["offline_judge"]:
        console.print("[yellow]offline heuristic judge:[/] a stand-in that exercises the pipeline, not a "
                      "measuring instrument; these figures say what it is worth, not how safe anything is")


# --- report: `coherence report` (coherence.report) ---


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="A run folder (runs/<id>/, has run.db) or an eval folder (has results.json).")],
    out: Annotated[Optional[Path], typer.Option(help="HTML file to write (default: <path>/report.html).")] = None,
    eval_: Annotated[Optional[list[Path]], typer.Option("--eval", help=(
        "An eval folder to include in a run's report (its own <run>/evals/*/ are included anyway). Repeatable."))] = None,
) -> None:
    """Write one self-contained HTML report (opens offline) of a run or an eval."""
    from coherence.report import build_report
    from coherence.review.agreement import section_for_run

    try:
        human_review = section_for_run(path)  # the reviewers' agreement (coherence.review); None without ratings
        written = build_report(path, out=out, evals=eval_ or [], human_review=human_review)
    except CoherenceError as exc:
        _fail(exc)
    console.print(f"report: {written}")


# --- human review: `coherence review`, `coherence export` (coherence.review, coherence.export) ---


@app.command()
def review(
    run_dir: Annotated[Path, typer.Argument(help="Run folder (runs/<id>).")],
    add_reviewer: Annotated[Optional[str], typer.Option(help="Create a reviewer; prints their login link.")] = None,
    revoke_reviewer: Annotated[Optional[str], typer.Option(help="Revoke a reviewer's token (ratings stay).")] = None,
    summary: Annotated[bool, typer.Option("--summary", help="Print the reviewers' agreement and exit.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="With --summary: the full summary as JSON.")] = False,
    host: Annotated[str, typer.Option(help="Address to serve on; anything but 127.0.0.1 shares the app.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8765,
) -> None:
    """Serve the review web app where native speakers rate a run's triplets (ratings go into run.db)."""
    from coherence.review import add_reviewer as add, open_run, revoke_reviewer as revoke

    _setup_logging()
    try:
        run = open_run(run_dir)
    except CoherenceError as exc:
        _fail(exc)
    try:
        if add_reviewer or revoke_reviewer or summary:
            if add_reviewer:
                token = add(run, add_reviewer)
                shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
                console.print(f"reviewer {add_reviewer}: http://{shown}:{port}/login?token={token}\n"
                              "(shown once; only its sha256 is stored. Send it privately.)", highlight=False)
            if revoke_reviewer:
                revoke(run, revoke_reviewer)
                console.print(f"revoked {revoke_reviewer}; their ratings stay")
            if summary:
                _print_review_summary(run, json_out)
            return
    except CoherenceError as exc:
        _fail(exc)
    finally:
        run.close()
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/] serving on {host}: anyone who can reach this address gets the login page "
                  "(the run's text stays behind the tokens, but the traffic is plain HTTP: use a trusted network "
                  "or put HTTPS in front)")
    console.print(f"review app for {run_dir} on http://{host}:{port}/  (Ctrl+C stops it)")
    from coherence.review import serve

    try:
        serve(run_dir, host=host, port=port)
    except CoherenceError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _print_review_summary(run: Any, json_out: bool) -> None:
    import json

    from coherence.review import summarize

    s = summarize(run.store)
    if json_out:
        console.print_json(json.dumps(s))
        return
    na = lambda a: "n/a" if a["alpha"] is None else f"{a['alpha']:.3f}"  # noqa: E731
    console.print(f"{s['triplets_rated']} of {s['triplets']} triplets rated, {s['ratings']} ratings")
    table = Table(title="Krippendorff's alpha (nominal; unsure = no answer)")
    for col in ("", "between reviewers", "units", "reviewers vs judges", "units"):
        table.add_column(col, justify="left" if not col else "right")
    b, j = s["between_reviewers"], s["reviewers_vs_judges"]
    table.add_row("all questions", na(b), str(b["units"]), na(j), str(j["units"]))
    for q in s["questions"]:
        table.add_row(q, na(b["per_question"][q]), str(b["per_question"][q]["units"]),
                      na(j["per_question"][q]), str(j["per_question"][q]["units"]))
    console.print(table)
    for name, a in j["per_reviewer"].items():
        pct = "n/a" if a["percent_agreement"] is None else f"{a['percent_agreement']:.0%}"
        console.print(f"{name} vs judge ensemble ({s['ensemble_rule']}): alpha {na(a)}, agreement {pct} "
                      f"over {a['units']} answers")
    for pair, a in s["ab"].items():
        share = "n/a" if a["share_r_plus"] is None else f"{a['share_r_plus']:.0%}"
        console.print(f"{pair}: {a['votes']} votes, r+ preferred in {share}, alpha between reviewers "
                      f"{na(a['between_reviewers'])}")
    console.print(f"rejected by reviewers (left out by --exclude-rejected): {len(s['rejected_by_reviewers'])}")
    if any(why for why in [b.get("why"), j.get("why")]):
        console.print(f"[yellow]n/a:[/] {b.get('why') or j.get('why')}")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run folder (runs/<id>).")],
    exclude_rejected: Annotated[bool, typer.Option(
        help="Leave out triplets human reviewers rejected (coherence review).")] = False,
) -> None:
    """Write a run's triplets.jsonl and dataset/ again (no model call), e.g. after human review."""
    from coherence.export import export_folder

    try:
        ex = export_folder(run_dir, exclude_rejected=exclude_rejected)
    except CoherenceError as exc:
        _fail(exc)
    dropped = f"; {ex['excluded_by_reviewers']} left out (rejected by reviewers)" if exclude_rejected else ""
    console.print(f"triplets: {ex['triplets_jsonl']} ({ex['rows']} rows{dropped})\ndataset:  {ex['dataset']}")


def main() -> None:  # pragma: no cover
    app()
