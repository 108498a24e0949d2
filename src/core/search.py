"""The hyperparameter search behind `hydra/sweeper=optuna`: an Optuna study in a storage that any number of workers
share (a SQLite file, an Optuna journal file, or PostgreSQL), trials drawn under a lock so that the study holds
exactly `n_trials`, launched through whichever Hydra launcher is configured, and told as complete, pruned or failed.
A worker keeps a heartbeat on its running trials; one that stops answering (killed) has its trials failed by the
next worker that asks for a trial. Runs report per-epoch values to their trial through `trial_of_this_run`."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.trial import TrialState

from src.core.errors import Pruned, UserError, reason_of
from src.core.files import replaced_atomically
from src.core.rundirs import CONF_DIR
from src.core.urls import shown

log = logging.getLogger(__name__)

TRIAL_KEY = "search_trial"  # the config key each trial's run gets (conf/train.yaml): its trial number
HEARTBEAT = "heartbeat"  # a running trial's user attr: when its worker last said it is alive (unix seconds)
SEARCH_SPACE = "search_space"  # the study's user attr: the distributions its trials are drawn from
STORAGES = "sqlite:///PATH, postgresql://USER:PASSWORD@HOST:PORT/DB or journal:PATH"
optuna.logging.set_verbosity(optuna.logging.WARNING)  # the search logs its own lines, one per trial


def database_url(storage: str) -> str:
    """SQLAlchemy's URL for the storage: `postgresql://` goes through psycopg (version 3), which the extras install."""
    plain = storage.startswith("postgresql://")
    return storage.replace("postgresql://", "postgresql+psycopg://", 1) if plain else storage


def journal_path(storage: str) -> Path | None:
    """`journal:PATH` (`journal:///abs/path` too) as a path; None for a database URL."""
    if not storage.startswith("journal:"):
        return None
    return Path(storage.removeprefix("journal:").removeprefix("//")).expanduser().resolve()


def check_storage(storage: str) -> None:
    if not storage.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://", "journal:")):
        raise UserError(f"hydra.sweeper.storage={shown(storage)!r} is not one of {STORAGES}")


def open_storage(storage: str, *, read_only: bool = False) -> optuna.storages.BaseStorage:
    """The study's storage, or one line naming the storage setting and what is valid or what failed. `read_only`
    (the dashboard) reads a storage as it is: no folder, file or table is made, and one without Optuna's tables is
    one line."""
    check_storage(storage)
    journal = journal_path(storage)
    try:
        if journal is not None:
            if read_only and not journal.is_file():
                raise UserError(f"{storage}: no such journal file")
            if not read_only:
                journal.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
        if read_only:
            check_tables(storage)
        # SQLite: workers wait for each other's writes instead of failing on a locked database.
        engine = {"connect_args": {"timeout": 60}} if storage.startswith("sqlite") else {"pool_pre_ping": True}
        return optuna.storages.RDBStorage(database_url(storage), engine_kwargs=engine, skip_table_creation=read_only)
    except (sqlalchemy.exc.SQLAlchemyError, RuntimeError, ValueError, ImportError, OSError) as error:
        raise unusable(storage, error, read_only=read_only) from None


def check_tables(storage: str) -> None:
    """A database that Optuna has written to (its `studies` table), checked without creating anything: a SQLite file
    that is not there stays so."""
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).expanduser().is_file():
        raise UserError(f"{storage}: no such SQLite file")
    engine = sqlalchemy.create_engine(database_url(storage), poolclass=sqlalchemy.pool.NullPool)
    try:
        tables = sqlalchemy.inspect(engine).has_table("studies")
    finally:
        engine.dispose()
    if not tables:
        raise UserError(f"{shown(storage)} holds no Optuna study: the database has none of Optuna's tables")


def unusable(storage: str, error: Exception, *, read_only: bool = False) -> UserError:
    """One line for a storage that cannot be opened, named as the search's setting (`read_only`: as given)."""
    named = shown(storage) if read_only else f"hydra.sweeper.storage={shown(storage)}"
    return UserError(f"{named} cannot be opened: {reason_of(error)}")


LOCK_CONNECTION = "optuna-search-lock"  # the PostgreSQL application_name of a worker's study lock connection


class StudyLock:
    """One worker at a time between counting a study's trials and adding one: on a file storage a lock file beside
    it (Optuna's, safe on network file systems; a killed holder's lock expires), on PostgreSQL an advisory lock
    (released when a killed holder's connection drops) on one connection that the worker keeps until `close`."""

    def __init__(self, storage: str, study_name: str) -> None:
        self.storage, self.study_name = storage, study_name
        self.engine: sqlalchemy.engine.Engine | None = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The lock, held while the block runs."""
        journal = journal_path(self.storage)
        if journal is not None or self.storage.startswith("sqlite"):
            path = journal if journal is not None else Path(self.storage.removeprefix("sqlite:///")).expanduser()
            lock = optuna.storages.journal.JournalFileOpenLock(f"{path}.{self.study_name}")  # it adds `.lock`
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                lock.acquire()
            except OSError as error:
                raise unusable(self.storage, error) from None
            try:
                yield
            finally:
                lock.release()
            return
        key = int.from_bytes(hashlib.sha256(self.study_name.encode()).digest()[:8], "big", signed=True)
        if self.engine is None:  # one connection, checked for life before each use (the server may have restarted)
            self.engine = sqlalchemy.create_engine(
                database_url(self.storage), pool_size=1, max_overflow=0, pool_pre_ping=True,
                connect_args={"application_name": LOCK_CONNECTION},
            )  # fmt: skip
        try:
            connection = self.engine.connect()
        except sqlalchemy.exc.SQLAlchemyError as error:
            raise unusable(self.storage, error) from None
        with connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})

    def close(self) -> None:
        """The lock's connection closed (a later `held` opens another)."""
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None


def distribution(override: Override) -> BaseDistribution | None:
    """Optuna's distribution for a sweep override (`choice`, `range` (its end included), `interval`, each optionally
    `tag(log, ...)`), or None for a fixed value."""
    if not override.is_sweep_override():
        return None
    sweep = override.value()
    log_scale = "log" in sweep.tags
    if isinstance(sweep, ChoiceSweep):
        choices = [value if isinstance(value, str | int | float | bool) else str(value) for value in sweep.list]
        return CategoricalDistribution(choices)
    if isinstance(sweep, RangeSweep):
        if all(isinstance(value, int) for value in (sweep.start, sweep.stop, sweep.step)):
            return IntDistribution(sweep.start, sweep.stop, log=log_scale, step=1 if log_scale else sweep.step)
        return FloatDistribution(sweep.start, sweep.stop, log=log_scale, step=None if log_scale else sweep.step)
    if isinstance(sweep, IntervalSweep):
        return FloatDistribution(sweep.start, sweep.end, log=log_scale)
    raise UserError(f"{override.input_line} is a sweep the search cannot draw from; use choice, range or interval")


def search_space(params: dict[str, str], arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The distributions to draw from and the fixed overrides every trial gets: `hydra.sweeper.params`, where the
    command line's arguments re-range a key (a sweep) or fix it (a value)."""
    parser = OverridesParser.create()
    lines = [f"{key}={value}" for key, value in params.items()]
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in parser.parse_overrides([*lines, *arguments]):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        drawn = distribution(override)
        if drawn is None:
            fixed[key] = override.input_line
        else:
            space[key] = drawn
    return space, list(fixed.values())


def encoded(space: dict[str, BaseDistribution]) -> dict[str, str]:
    return {name: distribution_to_json(drawn) for name, drawn in sorted(space.items())}


def trial_counts(trials: Sequence[optuna.trial.FrozenTrial]) -> dict[str, int]:
    """How many trials are in each state (`complete`, `pruned`, `fail`, ...), in Optuna's order of states; a state no
    trial is in is left out."""
    counts = Counter(trial.state for trial in trials)
    return {state.name.lower(): counts[state] for state in TrialState if counts[state]}


def counted(counts: dict[str, int]) -> str:
    """`trial_counts` as a message shows them: `12 complete, 7 pruned, 1 fail` (or `none`)."""
    return ", ".join(f"{count} {state}" for state, count in counts.items()) or "none"


def drawn(trial: optuna.trial.Trial) -> list[str]:
    """The trial's values as overrides."""
    return [f"{name}={value}" for name, value in trial.params.items()]


def running_trial(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int) -> optuna.trial.Trial:
    """The live trial of `number` in `study`, opened from `storage`, to report to from another process (a study
    knows its trials by number, its storage by id)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))


def trial_of_this_run(number: int) -> optuna.trial.Trial:
    """The trial a search's run reports to, from the search's own settings (the job's `hydra.sweeper`), with the
    study's pruner (`hydra.sweeper.pruner`; none: never pruned)."""
    settings = HydraConfig.get().sweeper
    storage = open_storage(settings.storage)
    pruner = built("pruner", settings.get("pruner"))
    study = optuna.load_study(study_name=settings.study_name, storage=storage, pruner=pruner)
    return running_trial(study, storage, number)


BUILT = {"sampler": optuna.samplers.BaseSampler, "pruner": optuna.pruners.BasePruner}
PLAIN_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "None": (type(None),)}


def check_type(setting: str, value: Any, annotation: Any) -> None:
    """A value of a plainly annotated parameter (`int`, `float | None`, `str | int`, ...) of that type, or one line;
    other annotations are left to the class."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    names = [part.strip() for part in text.split("|")]
    if not all(part in PLAIN_TYPES for part in names):
        return
    types = tuple(plain for part in names for plain in PLAIN_TYPES[part])
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):  # a bool is an int too
        raise UserError(f"{setting}={value!r} is not of type {text}")


def builds(config: dict[str, Any]) -> bool:
    """Whether `config` instantiates (a class that needs settings of its own does not, from its defaults alone)."""
    try:
        instantiate(config)
    except Exception:  # whatever the class raises
        return False
    return True


def built(key: str, settings: Mapping[str, Any] | None, **given: Any) -> Any:
    """The sampler or pruner that `hydra.sweeper.<key>` configures (none: TPE, or no pruning), with `given` settings
    on top; a target that is not one, a setting it does not take, a value of another type or one it refuses is one
    line naming the setting and what is valid."""
    if not settings:
        return optuna.samplers.TPESampler() if key == "sampler" else optuna.pruners.NopPruner()
    target = settings.get("_target_")
    options = ", ".join(sorted(path.stem for path in (CONF_DIR / "hydra" / "sweeper" / key).glob("*.yaml")))
    module, _, name = str(target).rpartition(".")
    try:
        kind = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):  # no such module or class
        kind = None
    if not (isinstance(kind, type) and issubclass(kind, BUILT[key])):
        raise UserError(f"hydra.sweeper.{key}._target_={target} is not an Optuna {key}; choose hydra/sweeper/{key}= "
                        f"one of {options}, or name a class of optuna.{key}s")  # fmt: skip
    parameters = inspect.signature(kind).parameters
    takes_any = any(parameter.kind == parameter.VAR_KEYWORD for parameter in parameters.values())
    values = {name: value for name, value in {**settings, **given}.items() if not name.startswith("_")}
    for name, value in values.items():
        if name in parameters:
            check_type(f"hydra.sweeper.{key}.{name}", value, parameters[name].annotation)
        elif not takes_any:
            named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            takes = ", ".join(known for known, parameter in parameters.items() if parameter.kind in named)
            raise UserError(f"hydra.sweeper.{key}.{name} is not a setting of {target}; it takes {takes}")
    try:
        return instantiate({"_target_": target, **values})
    except Exception as error:  # what the class refuses: pinned to the first setting it refuses on its own
        for name, value in values.items() if builds({"_target_": target}) else ():  # alone: beside its defaults
            try:
                instantiate({"_target_": target, name: value})
            except Exception as alone:
                raise UserError(f"hydra.sweeper.{key}.{name}={value!r} is refused by {target}: "
                                f"{reason_of(alone.__cause__ or alone)}") from None  # fmt: skip
        reason = reason_of(error.__cause__ or error)
        raise UserError(f"hydra.sweeper.{key} ({target}) cannot be built from its settings: {reason}") from None


class Heartbeat:
    """Marks this worker's running trials alive every `interval` seconds, from a thread, while their runs go on."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.trials: list[optuna.trial.Trial] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.beat, daemon=True, name="search-heartbeat")

    def beat(self) -> None:
        while not self.stopped.wait(self.interval):
            for trial in list(self.trials):
                with contextlib.suppress(Exception):  # a trial another worker already ended: nothing to keep alive
                    trial.set_user_attr(HEARTBEAT, time.time())

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()


class Search:
    """The sweeper's work (`hydra_plugins.optuna_search.OptunaSearch` holds one); its settings are `hydra.sweeper`."""

    def __init__(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
        storage: str,
        study_name: str,
        direction: str = "maximize",
        n_trials: int = 20,
        n_jobs: int = 1,
        sampler: DictConfig | None = None,
        pruner: DictConfig | None = None,
        params: DictConfig | None = None,
        custom_search_space: str | None = None,
        heartbeat_interval: float = 30.0,
        grace_period: float = 120.0,
    ) -> None:
        self.config = config
        self.hydra_context, self.task_function = hydra_context, task_function
        self.storage, self.study_name, self.direction = storage, study_name, direction
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.sampler_config, self.pruner_config = sampler, pruner
        self.lock = StudyLock(storage, study_name)
        self.params = OmegaConf.to_container(params) if params else {}
        self.custom_search_space = custom_search_space
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period

    def check_settings(self) -> None:
        """Bad settings stop the search before a trial starts or a study is touched."""
        for name, value in (("n_trials", self.n_trials), ("n_jobs", self.n_jobs)):
            if not isinstance(value, int) or value < 1:
                raise UserError(f"hydra.sweeper.{name}={value} must be a whole number >= 1")
        check_storage(self.storage)
        if self.direction not in ("maximize", "minimize"):
            raise UserError(f"hydra.sweeper.direction={self.direction} is not one of maximize, minimize")
        if not 0 < self.heartbeat_interval < self.grace_period:
            raise UserError(
                f"hydra.sweeper.heartbeat_interval={self.heartbeat_interval} must be > 0 and below "
                f"hydra.sweeper.grace_period={self.grace_period}"
            )
        built("sampler", self.sampler_config)  # bad sampler or pruner settings stop here, not in every trial
        built("pruner", self.pruner_config)

    def sampler(self, number: int) -> optuna.samplers.BaseSampler:
        """The sampler for trial `number`: seeded with the configured seed plus the trial number, so that a trial
        draws the same values whichever worker draws it (workers seeded alike would draw the same values)."""
        seed = self.sampler_config.get("seed") if self.sampler_config else None
        return built("sampler", self.sampler_config, **({} if seed is None else {"seed": seed + number}))

    def open_study(self, space: dict[str, BaseDistribution]) -> optuna.Study:
        """The study, made if new (with its search space recorded); refused in one line if it exists with another
        direction or search space, instead of mixing their trials."""
        storage = open_storage(self.storage)
        try:
            study = optuna.load_study(study_name=self.study_name, storage=storage)
        except KeyError:
            study = optuna.create_study(study_name=self.study_name, storage=storage, direction=self.direction)
            study.set_user_attr(SEARCH_SPACE, encoded(space))
            return study
        where = f"study {self.study_name} in {shown(self.storage)}"
        if study.direction.name.lower() != self.direction:
            raise UserError(
                f"{where} was made with direction {study.direction.name.lower()}, not hydra.sweeper.direction="
                f"{self.direction}; give another hydra.sweeper.study_name (or hydra.sweep.dir) for a new study"
            )
        recorded, now = study.user_attrs.get(SEARCH_SPACE, {}), encoded(space)
        if recorded != now:
            differ = sorted(name for name in recorded.keys() | now.keys() if recorded.get(name) != now.get(name))
            raise UserError(
                f"{where} draws {', '.join(differ)} from another search space than this command; continue it with "
                "the same settings, or give another hydra.sweeper.study_name (or hydra.sweep.dir) for a new study"
            )
        return study

    def fail_stale_trials(self, study: optuna.Study) -> None:
        """Trials whose worker stopped answering (no heartbeat for `grace_period` seconds) end as failed."""
        now = time.time()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            last = trial.user_attrs.get(HEARTBEAT, trial.datetime_start.timestamp() if trial.datetime_start else now)
            if now - last > self.grace_period:
                with contextlib.suppress(RuntimeError, ValueError):  # another worker failed it first
                    study.tell(trial.number, state=TrialState.FAIL)
                    log.warning("trial %d failed: its worker stopped answering %.0f s ago", trial.number, now - last)

    def ask(self, study: optuna.Study, space: dict[str, BaseDistribution], extend: Callable | None) -> list:
        """Up to `n_jobs` new trials, none past `n_trials` in the whole study (counted under the study's lock)."""
        with self.lock.held():
            self.fail_stale_trials(study)
            count = len(study.get_trials(deepcopy=False))
            trials = []
            for number in range(count, min(count + self.n_jobs, self.n_trials)):
                study.sampler = self.sampler(number)
                trial = study.ask(space)
                trial.set_user_attr(HEARTBEAT, time.time())
                if extend is not None:
                    extend(self.config, trial)
                trials.append(trial)
            return trials

    def tell(self, study: optuna.Study, trial: optuna.trial.Trial, job: JobReturn) -> TrialState:
        """The run's outcome into the study: its value, pruned, or failed (an error or no finite value)."""
        # A failed job's exception is read without `return_value`, which would print it as an error (pruned is none).
        if job.status != JobStatus.COMPLETED:  # a failed run's own error is in its dir (FAILED) and the log
            state = TrialState.PRUNED if isinstance(job._return_value, Pruned) else TrialState.FAIL
            value = None
        else:  # NaN: a run that failed with raise_failed_jobs=false
            value = job.return_value
            finite = isinstance(value, int | float) and math.isfinite(value)
            state, value = (TrialState.COMPLETE, float(value)) if finite else (TrialState.FAIL, None)
        try:
            study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        except (RuntimeError, ValueError) as error:  # ended meanwhile by another worker (its heartbeat had lapsed)
            log.warning("trial %d could not be told %s: %s", trial.number, state.name, error)
        return state

    def sweep(self, arguments: list[str]) -> list[Any]:
        self.check_settings()
        space, fixed = search_space(self.params, arguments)
        extend = get_method(self.custom_search_space) if self.custom_search_space else None
        with contextlib.closing(self.lock):  # its connection (PostgreSQL) lasts this session, not past it
            with self.lock.held():  # two workers starting together make the study once
                study = self.open_study(space)
            launcher = Plugins.instance().instantiate_launcher(
                hydra_context=self.hydra_context, task_function=self.task_function, config=self.config
            )
            log.info("study %s in %s: %d trials in all", self.study_name, shown(self.storage), self.n_trials)
            returns = []
            with Heartbeat(self.heartbeat_interval) as heartbeat:
                while trials := self.ask(study, space, extend):
                    heartbeat.trials = trials
                    overrides = [[*fixed, *drawn(trial), f"{TRIAL_KEY}={trial.number}"] for trial in trials]
                    try:
                        jobs = launcher.launch(overrides, initial_job_idx=trials[0].number)
                    except BaseException:  # stopped (a signal, Ctrl-C): its trials end now, not after the grace period
                        for trial in trials:
                            with contextlib.suppress(RuntimeError, ValueError):
                                study.tell(trial, state=TrialState.FAIL)
                        raise
                    for trial, job in zip(trials, jobs, strict=True):
                        state = self.tell(study, trial, job)
                        log.info("trial %d %s: %s", trial.number, state.name.lower(), json.dumps(trial.params))
                    returns.append(jobs)
                    heartbeat.trials = []
        self.report(study)
        return returns

    def report(self, study: optuna.Study) -> None:
        """The study's counts, and its best trial as overrides in the sweep dir (`optimization_results.yaml`)."""
        trials = study.get_trials(deepcopy=False)
        counts = trial_counts(trials)
        log.info("study %s: %d trials: %s", self.study_name, len(trials), counted(counts))
        if counts.get("complete"):
            best = study.best_trial
            results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
            sweep_dir = Path(self.config.hydra.sweep.dir)
            sweep_dir.mkdir(parents=True, exist_ok=True)
            with replaced_atomically(sweep_dir / "optimization_results.yaml") as partial:  # workers share the dir
                OmegaConf.save(OmegaConf.create(results), partial)
