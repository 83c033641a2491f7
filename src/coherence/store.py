"""The SQLite run store: every seed, attempt, candidate, verdict, triplet and model call of a run.

One file per run (``runs/<id>/run.db``), WAL journal, one transaction per item, so a killed run
loses at most the item in flight and resumes from the rows already written. Rows are never deleted:
a filtered item keeps its stage and reason. The schema changes only through numbered migrations.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from coherence.config import Roles
from coherence.errors import CoherenceError

Migration = str | Callable[[sqlite3.Connection, Path], None]
"""A migration is SQL statements, or a function of (connection, db path) for data that SQL alone
cannot convert; it runs inside one transaction."""


def _legacy_slots(db_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """For ``003_role_slots``: the model -> slot maps of the generators and the filter judges, from the
    run's ``config.yaml`` beside ``run.db`` (the defaults when there is none). The old schema kept one
    row per model, so a model named twice maps to its first slot; a model not in the config keeps
    its model string as its slot."""
    roles: dict[str, Any] = {}
    config = db_path.parent / "config.yaml"
    if config.is_file():
        try:
            roles = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("roles") or {}
        except yaml.YAMLError:
            roles = {}
    defaults = Roles()
    maps: list[dict[str, str]] = []
    for role in ("generators", "filter_judges"):
        specs = roles.get(role) or [s.model_dump() for s in getattr(defaults, role)]
        found: dict[str, str] = {}
        for i, spec in enumerate(specs):
            model = spec.get("model") if isinstance(spec, dict) else str(spec)
            found.setdefault(str(model), f"{role}[{i}]")
        maps.append(found)
    return maps[0], maps[1]


def _role_slots(db: sqlite3.Connection, db_path: Path) -> None:
    """``003_role_slots``: candidates and verdicts keyed by role slot, the model kept as data; calls and
    candidates say when a provider refused (``refusal``: its class); provenance names slots."""
    generators, filters = _legacy_slots(db_path)
    db.execute("""CREATE TABLE candidates_new (
        seed_id TEXT NOT NULL REFERENCES seeds(id), slot TEXT NOT NULL, model TEXT NOT NULL, text TEXT NOT NULL,
        score INTEGER, chosen INTEGER NOT NULL DEFAULT 0, refusal TEXT, PRIMARY KEY (seed_id, slot))""")
    for seed_id, model, text, score, chosen in db.execute(
            "SELECT seed_id, generator, text, score, chosen FROM candidates").fetchall():
        db.execute("INSERT INTO candidates_new (seed_id, slot, model, text, score, chosen) VALUES (?,?,?,?,?,?)",
                   (seed_id, generators.get(model, model), model, text, score, chosen))
    db.execute("DROP TABLE candidates")
    db.execute("ALTER TABLE candidates_new RENAME TO candidates")
    db.execute("""CREATE TABLE verdicts_new (
        id INTEGER PRIMARY KEY, seed_id TEXT NOT NULL, task TEXT NOT NULL, subject TEXT NOT NULL,
        slot TEXT NOT NULL, judge TEXT NOT NULL, score INTEGER, passed INTEGER, reason TEXT NOT NULL,
        raw TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '{}', UNIQUE (seed_id, task, subject, slot))""")
    fixed = {"query_harm": "query_judge", "response_harm": "response_judge", "response_quality": "response_judge"}
    for row in db.execute("SELECT id, seed_id, task, subject, judge, score, passed, reason, raw, detail "
                          "FROM verdicts ORDER BY id").fetchall():
        vid, seed_id, task, subject, judge = row[:5]
        slot = fixed.get(task) or filters.get(judge, judge)
        if subject.startswith("candidate:"):
            model = subject.split(":", 1)[1]
            subject = "candidate:" + generators.get(model, model)
        db.execute("INSERT OR REPLACE INTO verdicts_new VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   (vid, seed_id, task, subject, slot, judge, *row[5:]))
    db.execute("DROP TABLE verdicts")
    db.execute("ALTER TABLE verdicts_new RENAME TO verdicts")
    db.execute("CREATE INDEX verdicts_seed ON verdicts(seed_id, task)")
    db.execute("ALTER TABLE calls ADD COLUMN refusal TEXT")
    db.execute("CREATE INDEX calls_refusal ON calls(refusal)")
    for seed_id, blob in db.execute("SELECT seed_id, provenance FROM triplets").fetchall():
        p = json.loads(blob)
        if "generator_model" in p:
            continue
        model = p.get("generator", "")
        p["generator"], p["generator_model"] = generators.get(model, model), model
        scores = p.get("scores", {})
        scores["query_harm"] = {"query_judge": v for v in scores.get("query_harm", {}).values()}
        scores["rejected_harm"] = {"response_judge": v for v in scores.get("rejected_harm", {}).values()}
        scores["chosen_quality"] = {generators.get(k, k): v for k, v in scores.get("chosen_quality", {}).items()}
        scores["filter"] = {filters.get(k, k): v for k, v in scores.get("filter", {}).items()}
        db.execute("UPDATE triplets SET provenance = ? WHERE seed_id = ?",
                   (json.dumps(p, ensure_ascii=False), seed_id))


MIGRATIONS: list[tuple[str, Migration]] = [
    ("001_initial", """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE calls (
        key TEXT PRIMARY KEY, model TEXT NOT NULL, role TEXT NOT NULL, request TEXT NOT NULL,
        response TEXT NOT NULL, input_tokens INTEGER, output_tokens INTEGER, cost REAL,
        latency REAL, created REAL NOT NULL);
    CREATE TABLE call_errors (
        id INTEGER PRIMARY KEY, key TEXT NOT NULL, model TEXT NOT NULL, role TEXT NOT NULL,
        attempt INTEGER NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL, created REAL NOT NULL);
    CREATE TABLE seeds (
        id TEXT PRIMARY KEY, ord INTEGER NOT NULL, domain TEXT NOT NULL, subcategory TEXT NOT NULL,
        template TEXT NOT NULL, slot_fill TEXT NOT NULL, text TEXT NOT NULL, filler TEXT NOT NULL,
        status TEXT NOT NULL, stage TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', wave INTEGER);
    CREATE INDEX seeds_status ON seeds(status);
    CREATE INDEX seeds_wave ON seeds(wave);
    CREATE TABLE attempts (
        seed_id TEXT NOT NULL REFERENCES seeds(id), attempt INTEGER NOT NULL, strategy TEXT NOT NULL,
        prompt TEXT NOT NULL, response TEXT NOT NULL, score INTEGER, jailbroken INTEGER NOT NULL,
        PRIMARY KEY (seed_id, attempt));
    CREATE TABLE candidates (
        seed_id TEXT NOT NULL REFERENCES seeds(id), generator TEXT NOT NULL, text TEXT NOT NULL,
        score INTEGER, chosen INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (seed_id, generator));
    CREATE TABLE verdicts (
        id INTEGER PRIMARY KEY, seed_id TEXT NOT NULL, task TEXT NOT NULL, subject TEXT NOT NULL,
        judge TEXT NOT NULL, score INTEGER, passed INTEGER, reason TEXT NOT NULL, raw TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}', UNIQUE (seed_id, task, subject, judge));
    CREATE TABLE triplets (
        seed_id TEXT PRIMARY KEY REFERENCES seeds(id), domain TEXT NOT NULL, status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '', prompt TEXT NOT NULL, chosen TEXT NOT NULL,
        rejected TEXT NOT NULL, provenance TEXT NOT NULL);
    CREATE INDEX triplets_status ON triplets(status, domain);
    """),
    ("002_scale_indexes", """
    CREATE INDEX seeds_ord ON seeds(ord);
    CREATE INDEX seeds_domain_status ON seeds(domain, status, ord);
    CREATE INDEX seeds_wave_ord ON seeds(wave, ord);
    CREATE INDEX call_errors_kind ON call_errors(kind);
    """),
    ("003_role_slots", _role_slots),
]

# ---------------------------------------------------------------- 004_reviews (review branch)
# Human review (coherence review): reviewers log in with a token of which only the sha256 is kept;
# every submitted rating is a new row (a re-rating never overwrites one: the latest counts). seed_id has
# no foreign key: the pipeline may rewrite a triplet row (INSERT OR REPLACE) after it was rated;
# add_review checks that the triplet exists.
MIGRATIONS.append(("004_reviews", """
    CREATE TABLE reviewers (
        name TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE, created REAL NOT NULL, revoked REAL);
    CREATE TABLE reviews (
        id INTEGER PRIMARY KEY, seed_id TEXT NOT NULL,
        reviewer TEXT NOT NULL REFERENCES reviewers(name), answers TEXT NOT NULL, comment TEXT NOT NULL,
        ab TEXT NOT NULL, created REAL NOT NULL);
    CREATE INDEX reviews_seed ON reviews(seed_id, reviewer, id);
    """))
# ---------------------------------------------------------------- end 004_reviews


class Store:
    """Typed access to one run's SQLite file. Stages use these methods; nothing else opens SQLite."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise CoherenceError(f"{self.path}: not a coherence run database ({exc}) (fix: give the run "
                                 f"folder that `coherence run` created)") from None

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ plumbing

    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL)")
        done = {r[0] for r in self.db.execute("SELECT name FROM _migrations")}
        newer = sorted(done - {name for name, _ in MIGRATIONS})
        if newer:
            self.db.close()
            raise CoherenceError(f"{self.path}: written by a newer coherence (schema migrations "
                                 f"{', '.join(newer)} unknown to this version) (fix: upgrade coherence, "
                                 f"`pip install -U coherence`, to read it)")
        for name, step in MIGRATIONS:
            if name not in done:
                with self.transaction():
                    if callable(step):
                        step(self.db, self.path)
                    else:
                        for statement in filter(str.strip, step.split(";")):
                            self.db.execute(statement)
                    self.db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes inside land together or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(sql, args)]

    # ------------------------------------------------------------------ meta

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, ensure_ascii=False)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # ------------------------------------------------------------------ call cache

    def cached_call(self, key: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM calls WHERE key = ?", (key,)).fetchone()
        return dict(row) if row else None

    def record_call(self, *, key: str, model: str, role: str, request: dict[str, Any], response: str,
                    input_tokens: int | None, output_tokens: int | None, cost: float | None,
                    latency: float, refusal: str | None = None) -> None:
        """One finished call (``role`` is the role slot that made it). ``refusal``: the class of a
        provider refusal (``content_filter``, ``invalid_prompt``, ``context_length``), kept so a resume
        does not send it again; a retried refusal replaces its row."""
        self.db.execute(
            "INSERT OR REPLACE INTO calls (key, model, role, request, response, input_tokens, output_tokens, cost, "
            "latency, created, refusal) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (key, model, role, json.dumps(request, ensure_ascii=False), response, input_tokens,
             output_tokens, cost, latency, time.time(), refusal))

    def refusal_counts(self) -> dict[str, dict[str, int]]:
        """Provider refusals recorded in the call cache: role slot -> refusal class -> count."""
        out: dict[str, dict[str, int]] = {}
        for role, kind, n in self.db.execute(
                "SELECT role, refusal, COUNT(*) FROM calls WHERE refusal IS NOT NULL GROUP BY role, refusal"):
            out.setdefault(role, {})[kind] = n
        return out

    def record_call_error(self, *, key: str, model: str, role: str, attempt: int, kind: str,
                          message: str) -> None:
        self.db.execute("INSERT INTO call_errors (key, model, role, attempt, kind, message, created) "
                        "VALUES (?,?,?,?,?,?,?)", (key, model, role, attempt, kind, message[:2000], time.time()))

    def call_totals(self) -> dict[str, Any]:
        row = self.db.execute("SELECT COUNT(*), COALESCE(SUM(input_tokens),0), COALESCE(SUM(output_tokens),0), "
                              "COALESCE(SUM(cost),0) FROM calls").fetchone()
        errors = self._rows("SELECT kind, COUNT(*) AS n FROM call_errors GROUP BY kind")
        return {"calls": row[0], "input_tokens": row[1], "output_tokens": row[2], "cost_usd": row[3],
                "errors": {e["kind"]: e["n"] for e in errors}}

    # ------------------------------------------------------------------ seeds

    def add_seeds(self, seeds: list[dict[str, Any]]) -> int:
        """Insert new seeds (existing ids are kept as they are). Returns how many were new."""
        with self.transaction() as db:
            before = db.execute("SELECT COUNT(*) FROM seeds").fetchone()[0]
            db.executemany(
                "INSERT OR IGNORE INTO seeds (id, ord, domain, subcategory, template, slot_fill, text, filler, "
                "status, stage, reason) VALUES (:id, :ord, :domain, :subcategory, :template, :slot_fill, :text, "
                ":filler, :status, :stage, :reason)",
                [{**s, "slot_fill": json.dumps(s["slot_fill"], ensure_ascii=False)} for s in seeds])
            return db.execute("SELECT COUNT(*) FROM seeds").fetchone()[0] - before

    def seeds(self, *, status: str | None = None, stage: str | None = None,
              wave: int | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM seeds WHERE 1=1", []
        if wave is not None:
            sql, args = sql + " AND wave = ?", [*args, wave]
        if status:
            sql, args = sql + " AND status = ?", [*args, status]
        if stage:
            sql, args = sql + " AND stage = ?", [*args, stage]
        rows = self._rows(sql + " ORDER BY ord", *args)
        for r in rows:
            r["slot_fill"] = json.loads(r["slot_fill"])
        return rows

    def seed(self, seed_id: str) -> dict[str, Any]:
        """One seed by id."""
        row = self._rows("SELECT * FROM seeds WHERE id = ?", seed_id)[0]
        row["slot_fill"] = json.loads(row["slot_fill"])
        return row

    def kept_seed_texts(self) -> Iterator[tuple[str, str]]:
        """(sub-category, text) of the seeds stage A kept (not near-duplicates or empty), in seed order."""
        yield from self.db.execute("SELECT subcategory, text FROM seeds WHERE status NOT IN ('duplicate', 'empty', 'provider_refused') "
                                   "ORDER BY ord")

    def active_seeds(self, domain: str, limit: int) -> list[dict[str, Any]]:
        """The first ``limit`` active seeds of a domain not yet in a wave, in seed order."""
        rows = self._rows("SELECT * FROM seeds WHERE domain = ? AND status = 'active' AND wave IS NULL "
                          "ORDER BY ord LIMIT ?", domain, limit)
        for r in rows:
            r["slot_fill"] = json.loads(r["slot_fill"])
        return rows

    def open_waves(self, statuses: tuple[str, ...]) -> list[int]:
        """Numbers of the waves with a seed in one of ``statuses`` (work left), ascending."""
        marks = ",".join("?" * len(statuses))
        return [r[0] for r in self.db.execute(
            f"SELECT DISTINCT wave FROM seeds WHERE wave IS NOT NULL AND status IN ({marks}) ORDER BY wave",
            statuses)]

    def start_wave(self, seed_ids: list[str]) -> int:
        """Assign seeds to the next wave, atomically with the wave counter; returns its number."""
        with self.transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'wave'").fetchone()
            number = (json.loads(row[0]) if row else 0) + 1
            db.executemany("UPDATE seeds SET wave = ? WHERE id = ?", [(number, i) for i in seed_ids])
            db.execute("INSERT OR REPLACE INTO meta VALUES ('wave', ?)", (json.dumps(number),))
        return number

    def reopen_refused(self) -> int:
        """``--retry-refused``: the seeds a provider refusal stopped are open again where it stopped them
        (an attacker's refusal: at that attempt; every generator's: at stage C; the query judge's or a
        filter judge's: that judgement), so their refused calls are sent again. A target's block stays an
        attempt scored as a refusal, and a slot filler's refusal stays as it is. Returns how many."""
        refused_vote = ("SELECT 1 FROM verdicts v WHERE v.seed_id = seeds.id AND v.task = ? AND "
                        "v.detail LIKE '%\"provider_refused\"%'")
        with self.transaction() as db:
            n = db.execute("UPDATE seeds SET status = CASE stage WHEN 'attack' THEN 'active' ELSE 'jailbroken' END, "
                           "reason = '' WHERE status = 'provider_refused' AND stage IN ('attack', 'respond')").rowcount
            n += db.execute(f"UPDATE seeds SET status = 'jailbroken', reason = '' WHERE status = 'query_rejected' "
                            f"AND EXISTS ({refused_vote})", ("query_harm",)).rowcount
            n += db.execute(f"UPDATE seeds SET status = 'responded', stage = 'respond', reason = '' WHERE "
                            f"status = 'rejected' AND EXISTS ({refused_vote})", ("filter",)).rowcount
            return n

    def refused_seeds(self) -> dict[str, int]:
        """Seeds stopped by a provider refusal, per stage (``seed``: slot filler, ``attack``: attacker,
        ``respond``: every generator)."""
        return {r[0]: r[1] for r in self.db.execute(
            "SELECT stage, COUNT(*) FROM seeds WHERE status = 'provider_refused' GROUP BY stage")}

    def set_seed_status(self, seed_id: str, *, status: str, stage: str, reason: str = "") -> None:
        self.db.execute("UPDATE seeds SET status = ?, stage = ?, reason = ? WHERE id = ?",
                        (status, stage, reason, seed_id))

    # ------------------------------------------------------------------ attempts

    def attempts(self, seed_id: str | None = None) -> list[dict[str, Any]]:
        if seed_id is None:
            return self._rows("SELECT * FROM attempts ORDER BY seed_id, attempt")
        return self._rows("SELECT * FROM attempts WHERE seed_id = ? ORDER BY attempt", seed_id)

    def record_attempt(self, *, seed_id: str, attempt: int, strategy: str, prompt: str, response: str,
                       score: int | None, jailbroken: bool, verdict: dict[str, Any],
                       seed_status: tuple[str, str, str] | None) -> None:
        """One attempt, its verdict and (when decided) the seed's new status, in one transaction."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO attempts VALUES (?,?,?,?,?,?,?)",
                       (seed_id, attempt, strategy, prompt, response, score, int(jailbroken)))
            self._put_verdict(db, seed_id, "response_harm", f"attempt:{attempt}", verdict)
            if seed_status:
                status, stage, reason = seed_status
                db.execute("UPDATE seeds SET status = ?, stage = ?, reason = ? WHERE id = ?",
                           (status, stage, reason, seed_id))

    # ------------------------------------------------------------------ verdicts

    @staticmethod
    def _put_verdict(db: sqlite3.Connection, seed_id: str, task: str, subject: str, v: dict[str, Any]) -> None:
        db.execute(
            "INSERT OR REPLACE INTO verdicts (seed_id, task, subject, slot, judge, score, passed, reason, raw, detail) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            (seed_id, task, subject, v.get("slot") or v["judge"], v["judge"], v.get("score"),
             None if v.get("passed") is None else int(v["passed"]), v.get("reason", ""), v.get("raw", ""),
             json.dumps(v.get("detail", {}), ensure_ascii=False)))

    def record_verdict(self, seed_id: str, task: str, subject: str, verdict: dict[str, Any]) -> None:
        with self.transaction() as db:
            self._put_verdict(db, seed_id, task, subject, verdict)

    def verdicts(self, seed_id: str, task: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM verdicts WHERE seed_id = ?", [seed_id]
        if task:
            sql, args = sql + " AND task = ?", [*args, task]
        rows = self._rows(sql + " ORDER BY id", *args)
        for r in rows:
            r["detail"] = json.loads(r["detail"])
        return rows

    # ------------------------------------------------------------------ candidates

    def record_candidates(self, seed_id: str, candidates: list[dict[str, Any]], *, chosen: str | None,
                          seed_status: tuple[str, str, str]) -> None:
        """All of a seed's r+ candidates (each ``slot``, ``model``, ``text``, ``verdict``, optional
        ``refusal``), their verdicts, the chosen slot and the seed's status, together."""
        with self.transaction() as db:
            for c in candidates:
                db.execute("INSERT OR REPLACE INTO candidates (seed_id, slot, model, text, score, chosen, refusal) "
                           "VALUES (?,?,?,?,?,?,?)",
                           (seed_id, c["slot"], c["model"], c["text"], c["verdict"].get("score") if c["verdict"]
                            else None, int(c["slot"] == chosen), c.get("refusal")))
                if c["verdict"]:
                    self._put_verdict(db, seed_id, "response_quality", f"candidate:{c['slot']}", c["verdict"])
            status, stage, reason = seed_status
            db.execute("UPDATE seeds SET status = ?, stage = ?, reason = ? WHERE id = ?",
                       (status, stage, reason, seed_id))

    def candidates(self, seed_id: str) -> list[dict[str, Any]]:
        """A seed's candidates (``slot``, ``model``, ``text``, ``score``, ``chosen``, ``refusal``)."""
        return self._rows("SELECT * FROM candidates WHERE seed_id = ? ORDER BY rowid", seed_id)

    def chosen_slot_counts(self) -> dict[str, int]:
        """How often each generator slot's candidate was chosen so far (the tie-break's usage)."""
        rows = self._rows("SELECT slot, COUNT(*) AS n FROM candidates WHERE chosen = 1 GROUP BY slot")
        return {r["slot"]: r["n"] for r in rows}

    # ------------------------------------------------------------------ triplets

    def record_triplet(self, *, seed_id: str, domain: str, status: str, reason: str, prompt: str,
                       chosen: str, rejected: str, provenance: dict[str, Any],
                       verdicts: list[dict[str, Any]]) -> None:
        with self.transaction() as db:
            for v in verdicts:
                self._put_verdict(db, seed_id, "filter", "triplet", v)
            db.execute("INSERT OR REPLACE INTO triplets VALUES (?,?,?,?,?,?,?,?)",
                       (seed_id, domain, status, reason, prompt, chosen, rejected,
                        json.dumps(provenance, ensure_ascii=False)))
            db.execute("UPDATE seeds SET status = ?, stage = 'filter', reason = ? WHERE id = ?",
                       (status, reason, seed_id))

    def triplets(self, status: str | None = None) -> Iterator[dict[str, Any]]:
        """Stream triplets in seed order (export does not hold them all in memory)."""
        sql = ("SELECT t.* FROM triplets t JOIN seeds s ON s.id = t.seed_id"
               + (" WHERE t.status = ?" if status else "") + " ORDER BY s.ord")
        for row in self.db.execute(sql, (status,) if status else ()):
            r = dict(row)
            r["provenance"] = json.loads(r["provenance"])
            yield r

    def remaining_attempts(self, max_attempts: int) -> int:
        """Attack attempts the seeds under attack (active, with at least one attempt) may still make."""
        row = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(n), 0) FROM (SELECT COUNT(*) AS n FROM attempts a JOIN seeds s "
            "ON s.id = a.seed_id WHERE s.status = 'active' GROUP BY a.seed_id)").fetchone()
        return max(0, row[0] * max_attempts - row[1])

    def count(self, table: str, where: str = "", *args: Any) -> int:
        assert table in {"seeds", "attempts", "candidates", "verdicts", "triplets", "calls", "call_errors"}
        return self.db.execute(f"SELECT COUNT(*) FROM {table}" + (f" WHERE {where}" if where else ""),
                               args).fetchone()[0]

    def group_count(self, table: str, column: str, where: str = "", *args: Any) -> dict[str, int]:
        assert table in {"seeds", "triplets", "attempts"} and column.isidentifier()
        sql = f"SELECT {column}, COUNT(*) FROM {table}" + (f" WHERE {where}" if where else "") + f" GROUP BY {column}"
        return {r[0]: r[1] for r in self.db.execute(sql, args)}

    # ------------------------------------------------------------------ report queries (coherence.report)
    # Read-only aggregates for the HTML report, kept together so that a schema change (e.g. role slots)
    # is made here once. Each returns plain rows; the report does the arithmetic.

    def report_seed_outcomes(self) -> list[dict[str, Any]]:
        """(domain, subcategory, stage, status, n): where every seed stopped."""
        return self._rows("SELECT domain, subcategory, stage, status, COUNT(*) AS n FROM seeds "
                          "GROUP BY domain, subcategory, stage, status ORDER BY domain, subcategory")

    def report_stop_reasons(self) -> list[dict[str, Any]]:
        """(stage, status, reason, n) of the seeds that did not become accepted triplets."""
        return self._rows("SELECT stage, status, reason, COUNT(*) AS n FROM seeds WHERE status != 'accepted' "
                          "GROUP BY stage, status, reason ORDER BY n DESC")

    def report_attempt_outcomes(self) -> list[dict[str, Any]]:
        """(strategy, attempt, n, jailbroken, mean_score) over every stage-B attempt."""
        return self._rows("SELECT strategy, attempt, COUNT(*) AS n, SUM(jailbroken) AS jailbroken, "
                          "AVG(score) AS mean_score FROM attempts GROUP BY strategy, attempt ORDER BY attempt, strategy")

    def report_candidate_scores(self) -> list[dict[str, Any]]:
        """(seed_id, slot, model, score, chosen, refusal) of every stage-C candidate, texts left out."""
        return self._rows("SELECT seed_id, slot, model, score, chosen, refusal FROM candidates ORDER BY seed_id, slot")

    def report_verdict_scores(self) -> list[dict[str, Any]]:
        """(task, slot, judge, score, passed, n): the distribution of every judge slot's verdicts."""
        return self._rows("SELECT task, slot, judge, score, passed, COUNT(*) AS n FROM verdicts "
                          "GROUP BY task, slot, judge, score, passed ORDER BY task, slot, score")

    def report_filter_votes(self) -> list[dict[str, Any]]:
        """(seed_id, slot, judge, passed, reason, detail) of every stage-D vote, in vote order."""
        rows = self._rows("SELECT seed_id, slot, judge, passed, reason, detail FROM verdicts WHERE task = 'filter' "
                          "ORDER BY id")
        for r in rows:
            r["detail"] = json.loads(r["detail"])
        return rows

    def report_call_stats(self) -> list[dict[str, Any]]:
        """(role, model, calls, input_tokens, output_tokens, cost, latency_sum) per role and model."""
        return self._rows("SELECT role, model, COUNT(*) AS calls, COALESCE(SUM(input_tokens), 0) AS input_tokens, "
                          "COALESCE(SUM(output_tokens), 0) AS output_tokens, COALESCE(SUM(cost), 0.0) AS cost, "
                          "COALESCE(SUM(latency), 0) AS latency_sum FROM calls GROUP BY role, model ORDER BY role")

    def report_latency_quantiles(self, quantiles: tuple[float, ...] = (0.5, 0.95)) -> dict[tuple[str, str], list[float]]:
        """(role, model) -> the latency at each quantile (nearest rank), without loading every call."""
        out: dict[tuple[str, str], list[float]] = {}
        groups = self.db.execute("SELECT role, model, COUNT(*) FROM calls WHERE latency IS NOT NULL "
                                 "GROUP BY role, model").fetchall()
        for role, model, n in groups:
            out[(role, model)] = [self.db.execute(
                "SELECT latency FROM calls WHERE role = ? AND model = ? AND latency IS NOT NULL "
                "ORDER BY latency LIMIT 1 OFFSET ?", (role, model, min(n - 1, int(q * n)))).fetchone()[0]
                for q in quantiles]
        return out

    def report_call_errors(self) -> list[dict[str, Any]]:
        """(role, kind, n) of the recorded call errors."""
        return self._rows("SELECT role, kind, COUNT(*) AS n FROM call_errors GROUP BY role, kind ORDER BY role")

    def report_triplet_sample(self, *, per_status: int) -> list[dict[str, Any]]:
        """Up to ``per_status`` triplets of each status, spread over the domains, in seed order."""
        rows = self._rows(
            "SELECT * FROM (SELECT t.*, s.subcategory, s.ord, ROW_NUMBER() OVER (PARTITION BY t.status, t.domain "
            "ORDER BY s.ord) AS k, COUNT(*) OVER (PARTITION BY t.status) AS total FROM triplets t "
            "JOIN seeds s ON s.id = t.seed_id) WHERE k <= ? ORDER BY status, k, ord", per_status)
        out, taken = [], {}
        for r in rows:
            if taken.get(r["status"], 0) < per_status:
                taken[r["status"]] = taken.get(r["status"], 0) + 1
                r["provenance"] = json.loads(r["provenance"])
                out.append(r)
        return out

    # ---------------------------------------------------------------- reviews (004_reviews, review branch)

    def add_reviewer(self, name: str, token_sha256: str) -> None:
        """Add a reviewer, or give a known (or revoked) one a new token: the old token stops working."""
        with self.transaction() as db:
            db.execute("INSERT INTO reviewers (name, token_sha256, created) VALUES (?, ?, ?) "
                       "ON CONFLICT(name) DO UPDATE SET token_sha256 = excluded.token_sha256, "
                       "created = excluded.created, revoked = NULL", (name, token_sha256, time.time()))

    def revoke_reviewer(self, name: str) -> bool:
        """Revoke a reviewer's token (their ratings stay). False when there is no such reviewer."""
        with self.transaction() as db:
            return db.execute("UPDATE reviewers SET revoked = ? WHERE name = ?", (time.time(), name)).rowcount > 0

    def reviewer_by_token(self, token_sha256: str) -> str | None:
        """The name of the active (not revoked) reviewer holding this token hash."""
        row = self.db.execute("SELECT name FROM reviewers WHERE token_sha256 = ? AND revoked IS NULL",
                              (token_sha256,)).fetchone()
        return row[0] if row else None

    def reviewers(self) -> list[dict[str, Any]]:
        """Every reviewer: name, created, revoked (never the token hash)."""
        return self._rows("SELECT name, created, revoked FROM reviewers ORDER BY name")

    def triplet(self, seed_id: str) -> dict[str, Any] | None:
        """One triplet (any status) with its seed's sub-category, or None."""
        rows = self._rows("SELECT t.*, s.subcategory FROM triplets t JOIN seeds s ON s.id = t.seed_id "
                          "WHERE t.seed_id = ?", seed_id)
        if not rows:
            return None
        rows[0]["provenance"] = json.loads(rows[0]["provenance"])
        return rows[0]

    def review_queue(self) -> list[dict[str, Any]]:
        """Every triplet the filter decided (seed order): seed_id, domain, subcategory, status."""
        return self._rows("SELECT t.seed_id, t.domain, s.subcategory, t.status FROM triplets t "
                          "JOIN seeds s ON s.id = t.seed_id ORDER BY s.ord")

    def add_review(self, *, seed_id: str, reviewer: str, answers: dict[str, str], comment: str,
                   ab: dict[str, Any]) -> int:
        """Record one rating in one transaction; returns its id. The triplet and reviewer must exist."""
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM triplets WHERE seed_id = ?", (seed_id,)).fetchone() is None:
                raise CoherenceError(f"no triplet {seed_id!r} in {self.path}")
            cur = db.execute("INSERT INTO reviews (seed_id, reviewer, answers, comment, ab, created) "
                             "VALUES (?,?,?,?,?,?)",
                             (seed_id, reviewer, json.dumps(answers), comment, json.dumps(ab), time.time()))
            return int(cur.lastrowid or 0)

    def latest_reviews(self, reviewer: str | None = None) -> list[dict[str, Any]]:
        """Each reviewer's latest rating of each triplet (earlier ones are kept, not returned)."""
        sql = ("SELECT r.* FROM reviews r JOIN (SELECT MAX(id) AS id FROM reviews GROUP BY seed_id, reviewer) "
               "m ON m.id = r.id" + (" WHERE r.reviewer = ?" if reviewer else "") + " ORDER BY r.id")
        rows = self._rows(sql, *((reviewer,) if reviewer else ()))
        for r in rows:
            r["answers"], r["ab"] = json.loads(r["answers"]), json.loads(r["ab"])
        return rows

    def review_count(self) -> int:
        """All rating rows, re-ratings included."""
        return self.db.execute("SELECT COUNT(*) FROM reviews").fetchone()[0]
    # ---------------------------------------------------------------- end reviews
