"""The study store: one directory, and the only module that touches it.

    STUDY/
      study.toml      the config (copied in when the study is created; the study's own from then on)
      runs.db         SQLite, WAL mode: every proposal, its status, spec, result, timestamps, attempts
      priors.json     the study's priors (bayes_epm.priors): methods, level priors, a previous
                      posterior's joint prior, whether the literature table is used, every file imported
      posterior/      the latest fit (posterior.nc, runs.csv, fit.json; see posterior_store)

A run moves ``proposed -> running -> done | failed | diverged``. Every change is one SQLite
transaction, so a driver killed at any moment (even ``kill -9``) leaves each run either before or
after a change, never half-written. :meth:`Study.requeue_running` puts the runs that were in flight
back to ``proposed`` (their attempt count says how often they were started).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pandas as pd

from bayes_epm.config import StudyConfig, load_config
from bayes_epm.errors import InvalidInputError
from bayes_epm.priors import PriorSet, register
from bayes_epm.runs import validate_runs

STATUSES = ("proposed", "running", "done", "failed", "diverged")
CONFIG, DB, POSTERIOR_DIR, PRIORS = "study.toml", "runs.db", "posterior", "priors.json"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    status    TEXT NOT NULL CHECK (status IN ('proposed', 'running', 'done', 'failed', 'diverged')),
    params    REAL NOT NULL,
    tokens    REAL NOT NULL,
    format    TEXT NOT NULL,
    seed      INTEGER NOT NULL,
    source    TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    score     REAL,
    cost      REAL NOT NULL,
    spec      TEXT NOT NULL,
    result    TEXT,
    loss      REAL,
    flops     REAL,
    error     TEXT NOT NULL DEFAULT '',
    attempts  INTEGER NOT NULL DEFAULT 0,
    created   REAL NOT NULL,
    updated   REAL NOT NULL
);
"""


class Study:
    """A study directory. Open with :meth:`create` or :meth:`open`."""

    def __init__(self, path: Path, config: StudyConfig) -> None:
        self.path = path
        self.config = config
        self._db = sqlite3.connect(path / DB, isolation_level=None, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, config_file: str | Path) -> "Study":
        """Create a study from a config file (checked first: a bad one creates nothing)."""
        path = Path(path)
        config = load_config(config_file)
        if (path / CONFIG).exists():
            raise InvalidInputError(f"{str(path)!r} already holds a study; continue it with `bayes-epm sweep resume`")
        if config.backend.kind == "simulate":  # the study keeps its own copy of the truth file
            truth = Path(config.base_dir) / config.backend.truth
        path.mkdir(parents=True, exist_ok=True)
        text = Path(config_file).read_text()
        if config.backend.kind == "simulate":
            shutil.copyfile(truth, path / truth.name)
            text = text.replace(f'"{config.backend.truth}"', f'"{truth.name}"').replace(
                f"'{config.backend.truth}'", f"'{truth.name}'")
        (path / CONFIG).write_text(text)
        _write_priors(path, config.priors)
        return cls(path, load_config(path / CONFIG, priors=config.priors))

    @classmethod
    def open(cls, path: str | Path) -> "Study":
        path = Path(path)
        if not (path / CONFIG).is_file():
            raise InvalidInputError(f"no study in {str(path)!r} (no {CONFIG}); create one with "
                                    "`bayes-epm sweep run STUDY --config FILE`")
        return cls(path, load_config(path / CONFIG, priors=_read_priors(path)))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Study":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def posterior_dir(self) -> Path:
        return self.path / POSTERIOR_DIR

    @property
    def priors(self):
        """The model's :class:`~bayes_epm.model.Priors` for this study: the defaults, with the study's prior set."""
        from bayes_epm.model import Priors  # imports PyMC: only when a fit or query needs it

        return Priors(methods=self.config.priors)

    def import_priors(self, new: PriorSet, replace: bool = False) -> PriorSet:
        """Add a checked prior set's methods to the study's (:meth:`PriorSet.merge`) and save them."""
        merged = self.config.priors.merge(new, replace=replace)
        self.set_priors(merged)
        return merged

    def last_update(self) -> float | None:
        """When a run last changed (seconds since the epoch), None for a study without runs."""
        row = self._db.execute("SELECT MAX(updated) FROM runs").fetchone()
        return row[0]

    def set_priors(self, prior_set: PriorSet) -> None:
        """Replace the study's prior set (checked by the caller; written atomically)."""
        if prior_set.joint is not None and Path(prior_set.joint.study).resolve() == self.path.resolve():
            raise InvalidInputError(f"from_posterior names this study ({str(self.path)!r}): its own posterior as "
                                    "its prior would count its runs twice; name a previous study")
        register(prior_set)
        _write_priors(self.path, prior_set)
        self.config = load_config(self.path / CONFIG, priors=prior_set)

    # -- writing -------------------------------------------------------------------------------
    def propose(self, specs: list[dict], iteration: int, scores: list[float | None], costs: list[float],
                source: str = "sweep") -> list[int]:
        """Store new proposals (one transaction); returns their ids."""
        now = time.time()
        ids = []
        with self._tx() as db:
            for spec, score, cost in zip(specs, scores, costs, strict=True):
                cur = db.execute(
                    "INSERT INTO runs (status, params, tokens, format, seed, source, iteration, score, cost, spec,"
                    " created, updated) VALUES ('proposed', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (spec["params"], spec["tokens"], spec["format"], spec.get("seed", 0), source, iteration,
                     score, cost, json.dumps(spec), now, now))
                ids.append(int(cur.lastrowid))
        return ids

    def mark_running(self, run_id: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET status='running', attempts=attempts+1, updated=? WHERE id=?",
                       (time.time(), run_id))

    def record(self, run_id: int, result: dict) -> str:
        """Store a finished run's result; its status follows the result (ok -> done)."""
        status = {"ok": "done", "failed": "failed", "diverged": "diverged"}.get(result.get("status", ""))
        if status is None:
            raise ValueError(f"result of run {run_id} has status {result.get('status')!r}; expected ok/failed/diverged")
        loss = result.get("loss") if status == "done" else None
        with self._tx() as db:
            db.execute("UPDATE runs SET status=?, result=?, loss=?, flops=?, error=?, updated=? WHERE id=?",
                       (status, json.dumps(result), loss, result.get("flops"), result.get("error", ""),
                        time.time(), run_id))
        return status

    def requeue_running(self) -> int:
        """Runs left ``running`` by a driver that died go back to ``proposed``; returns how many."""
        with self._tx() as db:
            return db.execute("UPDATE runs SET status='proposed', updated=? WHERE status='running'",
                              (time.time(),)).rowcount

    def import_runs(self, table: pd.DataFrame, source: str) -> int:
        """Add runs trained elsewhere (a canonical run table) as evidence; returns how many."""
        table = validate_runs(table)
        now = time.time()
        with self._tx() as db:
            for r in table.to_dict("records"):
                spec = {"params": r["params"], "tokens": r["tokens"], "format": r["format"]}
                src = str(r.get("source") or source)
                db.execute(
                    "INSERT INTO runs (status, params, tokens, format, seed, source, iteration, score, cost, spec,"
                    " result, loss, flops, created, updated) VALUES ('done', ?, ?, ?, 0, ?, -1, NULL, 1.0, ?, ?, ?,"
                    " ?, ?, ?)",
                    (r["params"], r["tokens"], r["format"], src, json.dumps(spec),
                     json.dumps({"status": "ok", "loss": r["loss"], "imported": True}), r["loss"],
                     6 * r["params"] * r["tokens"], now, now))
        return len(table)

    def _tx(self):
        return _Transaction(self._db)

    # -- reading -------------------------------------------------------------------------------
    def runs(self, status: str | None = None) -> pd.DataFrame:
        """Every run of the study (or those of one status) as a DataFrame, in id order."""
        if status is not None and status not in STATUSES:
            raise InvalidInputError(f"status {status!r} is not valid; valid: {', '.join(STATUSES)}")
        query = "SELECT * FROM runs" + (" WHERE status=?" if status else "") + " ORDER BY id"
        return pd.read_sql_query(query, self._db, params=(status,) if status else ())

    def fit_table(self) -> pd.DataFrame:
        """The canonical run table of the finished runs (diverged and failed runs are not evidence)."""
        done = self.runs("done")
        return done[["params", "tokens", "loss", "format", "source"]].reset_index(drop=True)

    def spec(self, run_id: int) -> dict:
        row = self._db.execute("SELECT spec FROM runs WHERE id=?", (run_id,)).fetchone()
        return json.loads(row["spec"])

    def flops_spent(self) -> float:
        """Training FLOPs of the study's own runs (imported runs cost it nothing), cost factors included."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(COALESCE(flops, 6 * params * tokens) * cost), 0) FROM runs "
            "WHERE iteration >= 0 AND status IN ('done', 'failed', 'diverged')").fetchone()
        return float(row[0])

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()
        return {s: 0 for s in STATUSES} | {r[0]: int(r[1]) for r in rows}

    def last_iteration(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(iteration), -1) FROM runs").fetchone()
        return int(row[0])


def _read_priors(path: Path) -> PriorSet | None:
    """The study's prior set, or None for a study made before priors.json existed (its config's
    [priors] table then stands)."""
    file = path / PRIORS
    if not file.is_file():
        return None
    try:
        prior_set = PriorSet.from_dict(json.loads(file.read_text()))
    except (ValueError, KeyError, TypeError) as err:
        raise InvalidInputError(f"{file}: not a valid priors file ({type(err).__name__}: {err})") from None
    register(prior_set)
    return prior_set


def _write_priors(path: Path, prior_set: PriorSet) -> None:
    tmp = path / f".{PRIORS}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(prior_set.to_dict(), indent=2))
    os.replace(tmp, path / PRIORS)


class _Transaction:
    """``BEGIN IMMEDIATE ... COMMIT`` (or ROLLBACK on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, *_) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
