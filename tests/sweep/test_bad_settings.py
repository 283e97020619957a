"""Every bad setting ends in one line before any work: a table of them, each through the real command line
(`python -m vae_sweep ...` in a folder of its own), asserting the line, a non-zero exit, no traceback, and that the
folder is as it was (no run or sweep folder, no study database, a damaged one byte for byte the same). The sweep
cases cover the search space (keys, syntax, ranges), the sweeper's settings, the storage, the study name, the
artifact dir and a user's --config-dir or hydra.searchpath. Unit tests below check the storage checks alone: three
kinds of damaged SQLite file, left unchanged, and a PostgreSQL port that does not answer, named within seconds."""

from __future__ import annotations

import hashlib
import pickle
import shutil
import socket
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import cli
from vae_sweep.errors import ConfigError
from vae_sweep.sweep import storage
from vae_sweep.sweep.storage import check_storage

NO_ROOT_DIR = "/vae_sweep_no_such_dir"  # the case of a SQLite file in a folder that does not exist must not make it
UNREACHABLE = "postgresql+psycopg://u:secret@127.0.0.1:1/vae"  # port 1: nothing listens


def make_study_db(path: Path, journal: str = "wal") -> None:
    """A SQLite file of the size and shape of a small study: a few tables of a few hundred rows, in write-ahead
    logging as the sweep's studies are (or another journal mode), closed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA journal_mode={journal}")
        for table in ("studies", "trials", "trial_params"):
            db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT, value REAL)")
            db.executemany(f"INSERT INTO {table} (name, value) VALUES (?, ?)", [(f"n{i}" * 20, i) for i in range(400)])
    db.close()


def damage(path: Path, kind: str) -> None:
    """Damage the SQLite file at `path`: cut it short, overwrite bytes inside it, or replace it with text."""
    data = bytearray(path.read_bytes())
    if kind == "truncated":
        data = data[: len(data) // 2 + 100]
    elif kind == "overwritten":
        data[4096:8096] = bytes(range(256)) * 15 + bytes(160)  # the second page onwards
    else:
        data = bytearray(b"not a database\n")
    path.write_bytes(bytes(data))


def a_file(tmp: Path) -> None:
    (tmp / "a_file").write_text("")


def damaged_study(kind: str):
    def setup(tmp: Path) -> None:
        make_study_db(tmp / "multirun" / "pareto.db")
        damage(tmp / "multirun" / "pareto.db", kind)

    return setup


def config_dir(tmp: Path) -> None:
    """A user's config folder: a sweep whose searched key is misspelt, and a model option with a bad setting."""
    (tmp / "cd" / "sweep").mkdir(parents=True)
    (tmp / "cd" / "model").mkdir()
    (tmp / "cd" / "sweep" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /hydra/sweeper: vae_optuna\nobjectives: [neg_elbo]\n"
        "hydra:\n  sweeper:\n    study_name: mine\n    params:\n      latnt_dim: choice(2,4)\n"
    )
    (tmp / "cd" / "model" / "mine.yaml").write_text(
        "_target_: vae_sweep.models.mlp_vae\nlatent_dim: ${latent_dim}\nhidden: [0]\nsplit_heads: false\n"
    )


@dataclass(frozen=True)
class Case:
    args: str  # the command line after `python -m vae_sweep`; {tmp} is the folder it runs in
    line: str  # how its one line on stderr begins, after "error: "
    setup: object = None  # makes what the case needs in {tmp} before it runs
    label: str = ""  # tells apart cases of the same command line

    @property
    def sweep(self) -> bool:
        return self.args == "-m" or self.args.startswith("-m ")

    @property
    def name(self) -> str:
        return f"{self.args} ({self.label})" if self.label else self.args


DAMAGED = "hydra.sweeper.storage=sqlite:///multirun/pareto.db: multirun/pareto.db"
KEY_TYPO = "the config has no setting 'latnt_dim'; did you mean latent_dim?"
SWEEP_CASES = [
    # the search space: keys, syntax and ranges, as the schema and Optuna accept them
    Case("-m latnt_dim=choice(8,16)", f"latnt_dim: {KEY_TYPO}"),
    Case("-m beta=interval(1,0.1)", "beta=interval(1,0.1): interval(low, high) needs low <= high"),
    Case("-m lr=tag(log,interval(-1,1))", "lr=tag(log,interval(-1,1)): a log interval needs low > 0"),
    Case("-m latent_dim=range(10,2)", "latent_dim=range(10,2): holds no value"),
    Case(
        "-m model=choice(mlp,cnv)",
        "model=choice(mlp,cnv) reaches cnv: model=cnv: no such option; did you mean conv? model accepts conv, conv64, "
        "locatello, mlp",
    ),
    Case("-m latent_dim=choice(0,8)", "latent_dim=choice(0,8) reaches 0: latent_dim=0: must be an integer >= 1"),
    Case("-m lr=interval(-0.1,0.1)", "lr=interval(-0.1,0.1) reaches -0.1: lr=-0.1: must be a number > 0"),
    Case("-m beta=tag(lg,interval(0.1,1))", "beta=tag(lg,interval(0.1,1)): unknown tag lg"),
    Case("-m beta=tag(log,choice(1,2))", "beta=tag(log,choice(1,2)): tag log applies to interval(low, high) only"),
    Case("-m beta=choice()", "beta=choice(): cannot be parsed"),
    Case("-m beta=choice([1,2],3)", "beta=choice([1,2],3) reaches [1,2]: beta=[1,2]: must be a number >= 0"),
    Case(
        "-m eval.iwae_k=choice(1,1000000000)",
        "eval.iwae_k=choice(1,1000000000) reaches 1000000000: eval.iwae_k=1000000000: must be an integer from 0 to",
    ),
    Case(  # a search of the sweep config that a fixed value replaces is still made by the sweeper, so checked
        '-m hydra.sweeper.params.beta="interval(1,0.1)" beta=0.3',
        "hydra.sweeper.params.beta=interval(1,0.1): interval(low, high) needs low <= high",
    ),
    Case("-m hydra.sweeper.params.latnt_dim=choice(8,16)", "hydra.sweeper.params.latnt_dim=choice(8,16): Hydra "),
    Case("-m hydra/sweeper/sampler=grid", "hydra.sweeper.params.beta=tag(log, interval(1e-3, 10.0)): hydra/sweeper/"),
    Case("-m sweep=grid latnt_dim=1,2", f"latnt_dim: {KEY_TYPO}"),
    Case("-m sweep=grid beta=interval(0,1)", "beta=interval(0,1): Hydra's basic sweeper (sweep=grid) runs lists"),
    Case("-m sweep=grid beta=-1,2", "beta=-1,2 reaches -1: beta=-1: must be a number >= 0"),
    # the sweeper's settings
    Case("-m hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0: must be an integer >= 1"),
    Case("-m hydra.sweeper.n_jobs=0", "hydra.sweeper.n_jobs=0: must be an integer >= 1, or -1 for one per core"),
    Case("-m hydra.sweeper.heartbeat_interval=0", "hydra.sweeper.heartbeat_interval=0: must be an integer >= 1"),
    Case("-m hydra.sweeper.grace_period=-1", "hydra.sweeper.grace_period=-1: must be an integer >= 1"),
    Case("-m hydra.sweeper.grace_period=5", "hydra.sweeper.grace_period=5: must be above hydra.sweeper.heartbeat"),
    Case("-m hydra.sweeper.max_failure_rate=2", "hydra.sweeper.max_failure_rate=2: must be a number from 0 to 1"),
    Case("-m hydra.sweeper.direction=up", "hydra.sweeper.direction=up: must be minimize or maximize"),
    Case("-m hydra.sweeper.ntrials=3", "hydra.sweeper.ntrials: hydra.sweeper has no setting 'ntrials'; did you mean"),
    Case("-m hydra.sweeper.n_trials=1,2", "hydra.sweeper.n_trials=1,2: Hydra searches no hydra.* setting"),
    Case("-m hydra/sweeper/sampler=motpe", "hydra/sweeper/sampler=motpe: removed in optuna 4 (TPE handles several"),
    Case(
        "-m hydra/sweeper/sampler=tpee",
        "hydra/sweeper/sampler=tpee: no such option; did you mean tpe? hydra/sweeper/sampler accepts cmaes, gp, grid, "
        "nsgaii, nsgaiii, qmc, random, tpe",
    ),
    Case("-m hydra.sweeper.sampler.seed=-1", "hydra.sweeper.sampler.seed=-1: must be an integer >= 0 or null"),
    Case("-m hydra/sweeper/pruner=median", "hydra/sweeper/pruner=median: Optuna prunes single-objective studies"),
    Case(
        "-m hydra/sweeper/pruner=medain",
        "hydra/sweeper/pruner=medain: no such option; did you mean median? hydra/sweeper/pruner accepts",
    ),
    Case(
        "-m sweep=elbo hydra/sweeper/pruner=median hydra.sweeper.storage=null",
        "hydra/sweeper/pruner=median: jobs reach their trial through the study's storage",
    ),
    Case("-m objectives=[neg_elbo]", "objectives=[neg_elbo]: hydra.sweeper.direction=[minimize,minimize] asks for 2"),
    Case("-m sweep=elbo objectives=[iwae_nll] eval.iwae_k=0", "eval.iwae_k=0: objective iwae_nll needs"),
    Case("-m sweep=nope", "sweep=nope: no such option; sweep accepts curve, disentangle, elbo, families, grid, pareto"),
    # the storage, the study name, the artifact dir
    Case(f"-m hydra.sweeper.storage={UNREACHABLE}", "hydra.sweeper.storage=postgresql+psycopg://u:***@127.0.0.1:1/"),
    Case("-m hydra.sweeper.storage=nosuch://x", "hydra.sweeper.storage=nosuch://x: SQLAlchemy knows no such database"),
    Case("-m hydra.sweeper.storage=notaurl", "hydra.sweeper.storage=notaurl: not a database URL"),
    Case(
        f"-m hydra.sweeper.storage=sqlite:///{NO_ROOT_DIR}/x.db",
        f"hydra.sweeper.storage=sqlite:///{NO_ROOT_DIR}/x.db: folder {NO_ROOT_DIR} does not exist",
    ),
    Case("-m hydra.sweeper.storage=sqlite:///{tmp}", "hydra.sweeper.storage=sqlite:///{tmp}: {tmp} is a folder"),
    Case(
        "-m",
        "hydra.sweeper.storage=sqlite:///multirun/pareto.db: multirun/pareto.db is not an SQLite database",
        damaged_study("text"),
        "a text file",
    ),
    Case("-m", f"{DAMAGED} is damaged (", damaged_study("truncated"), "a truncated study"),
    Case("-m", f"{DAMAGED} is damaged (", damaged_study("overwritten"), "a study with bytes overwritten"),
    Case(
        "-m hydra.sweeper.study_name=../../escape", "hydra.sweeper.study_name=../../escape: must be a plain file name"
    ),
    Case("-m hydra.sweeper.artifact_dir=/proc/forbidden", "hydra.sweeper.artifact_dir=/proc/forbidden: cannot write"),
    # the checks hold for a user's config folder
    Case("-m --config-dir cd sweep=mine", f"latnt_dim: {KEY_TYPO}", config_dir),
    Case("-m hydra.searchpath=[file://{tmp}/cd] sweep=mine", f"latnt_dim: {KEY_TYPO}", config_dir),
    Case("-m --config-dir nodir", "--config-dir=nodir: no such folder"),
]
JOB_CASES = [
    Case("beta=-1", "beta=-1: must be a number >= 0"),
    Case("latent_dim=abc", "latent_dim=abc: must be an integer >= 1"),
    Case("lr=0", "lr=0: must be a number > 0"),
    Case("epochs=0", "epochs=0: must be an integer >= 1"),
    Case("seed=-1", "seed=-1: must be an integer >= 0"),
    Case("threads=0", "threads=0: must be an integer >= 1 or null"),
    Case("progress=1", "progress=1: must be true or false"),
    Case("device=tpu", "device=tpu: must be auto, cpu, cuda, cuda:N or mps"),
    Case("lattent_dim=3", "lattent_dim: the config has no setting 'lattent_dim'; did you mean latent_dim?"),
    Case("latent_dim=???", "latent_dim=???: must be an integer >= 1"),
    Case("model.latent_dim=${nope}", "model.latent_dim=${nope}: Interpolation key 'nope' not found"),
    Case("model.hidden=[1,", "model.hidden=[1,: cannot be parsed"),
    Case("~nope", "~nope: Could not delete from config. 'nope' does not exist."),
    Case("model=null", "model=null: choose an option; model accepts conv, conv64, locatello, mlp"),
    Case("model=transformer", "model=transformer: no such option; model accepts conv, conv64, locatello, mlp"),
    Case("model=conv model.channels=[]", "model.channels=[]: must be a non-empty list of integers >= 1"),
    Case("model.hiden=[3]", "model.hiden: model=mlp has no setting 'hiden'; did you mean hidden?"),
    Case("model=conv model.activation=gelu", "model.activation=gelu: must be relu or leaky_relu"),
    Case("loss=capacity loss.c_steps=1.5", "loss.c_steps=1.5: must be an integer >= 0"),
    Case("loss=multirate loss.beta_min=2 loss.beta_max=1", "loss.beta_max=1: must be above loss.beta_min=2"),
    Case("likelihood=gaussian likelihood.sigma=0", "likelihood.sigma=0: must be a number > 0"),
    Case("optimizer.weight_decay=-1", "optimizer.weight_decay=-1: must be a number >= 0"),
    Case("+optimizer.betas=[0.9]", "optimizer.betas=[0.9]: must be a list of 2 numbers >= 0 and < 1"),
    Case("optimizer=adamw optimizer.fused=maybe", "optimizer.fused=maybe: must be true or false or null"),
    Case("scheduler=step scheduler.step_size=0", "scheduler.step_size=0: must be an integer >= 1"),
    Case("dataset.val_size=0", "dataset.val_size=0: must be an integer >= 1"),
    Case("dataset=mnist dataset.variant=KMNIST", "dataset.variant=KMNIST: must be MNIST or FashionMNIST"),
    Case("eval.batch_size=0", "eval.batch_size=0: must be an integer >= 1"),
    Case("eval.iwae_k=1000000000", "eval.iwae_k=1000000000: must be an integer from 0 to 100000"),
    Case("eval.batchsize=3", "eval.batchsize: eval has no setting 'batchsize'; did you mean batch_size?"),
    Case("beta=0.1,1", "beta=0.1,1: a sweep over values runs only with --multirun"),
    Case("hydra.run.dir={tmp}/a_file/run", "hydra.run.dir={tmp}/a_file/run: cannot write there (Not a", a_file),
    Case("--config-dir cd model=mine", "model.hidden=[0]: must be a list of integers >= 1", config_dir),
]
CASES = {c.name: c for c in [*SWEEP_CASES, *JOB_CASES]}


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder`, with a hash of each file's bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in sorted(folder.rglob("*"))
    }


def run_case(case: Case, tmp: Path) -> dict:
    if case.setup:
        case.setup(tmp)
    before = snapshot(tmp)
    args = [a.replace("{tmp}", str(tmp)) for a in case.args.split()]
    args = ["--multirun", *args[1:]] if case.sweep else args
    start = time.perf_counter()
    res = cli(args, cwd=tmp, timeout=60)
    return {"res": res, "seconds": time.perf_counter() - start, "before": before, "after": snapshot(tmp)}


@pytest.fixture(scope="module")
def results(request, tmp_path_factory) -> dict:
    """Every selected case, run three at a time (each in its own folder): the table takes a third of the time."""
    test = test_bad_setting_is_one_line_before_any_work.__name__
    mine = [i for i in request.session.items if i.path == request.path and getattr(i, "originalname", "") == test]
    names = [i.callspec.params["name"] for i in mine]
    folders = {name: tmp_path_factory.mktemp("case") for name in names}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(run_case, CASES[name], folders[name]) for name in names}
        done = {name: {**f.result(), "tmp": folders[name]} for name, f in futures.items()}
    slowest = sorted(done, key=lambda n: -done[n]["seconds"])[:3]
    print("slowest cases:", ", ".join(f"{n} {done[n]['seconds']:.1f} s" for n in slowest))
    return done


def test_the_table_is_wide():
    sweep = [c for c in CASES.values() if c.sweep]
    assert len(CASES) == len(SWEEP_CASES) + len(JOB_CASES) >= 60 and len(sweep) >= 20
    assert len({c.line.split(":")[0] for c in CASES.values()}) >= 50  # distinct settings named, not permutations


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_bad_setting_is_one_line_before_any_work(results, name):
    case, got = CASES[name], results[name]
    res, tmp = got["res"], got["tmp"]
    lines = res.stderr.strip().splitlines()
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: " + case.line.replace("{tmp}", str(tmp))), res.stderr
    assert "secret" not in res.stderr and not res.stdout
    assert got["after"] == got["before"]  # no run or sweep folder, no study database; a damaged one left as it was
    assert not Path(NO_ROOT_DIR).exists()
    assert got["seconds"] < 30


@pytest.mark.parametrize(
    "argv",
    [
        ["-m"],
        ["-m", "beta=0.5", "lr=1e-3", "latent_dim=choice(2,4)", "hydra/sweeper/sampler=grid"],  # fixed values win
        ["-m", "model=choice(mlp,conv)", "+extra=choice(1,2)", "latent_dim=range(2,10,2)"],
        ["-m", "sweep=elbo", "hydra/sweeper/pruner=median", "hydra.sweeper.grace_period=11"],
        ["-m", "sweep=grid", "beta=0.1,1", "latent_dim=range(2,4)"],
        ["-m", "--config-dir", "cd", "sweep=mine", "~hydra.sweeper.params.latnt_dim", "latent_dim=choice(2,4)"],
        ["-m", "hydra.searchpath=[file://{tmp}/cd]", "sweep=mine", "~hydra.sweeper.params.latnt_dim"],
        ["-m", "hydra.sweeper.storage=sqlite:///{tmp}/healthy.db", "hydra.sweeper.artifact_dir=null"],
        ["--config-dir", "cd", "model=mine", "model.hidden=[8]"],
    ],
)
def test_good_command_lines_pass_and_make_nothing(argv, tmp_path, monkeypatch):
    from vae_sweep.__main__ import CONF_DIR, with_default_sweep
    from vae_sweep.checks import check_argv

    monkeypatch.chdir(tmp_path)
    config_dir(tmp_path)
    make_study_db(tmp_path / "healthy.db")
    before = snapshot(tmp_path)
    check_argv(with_default_sweep([a.replace("{tmp}", str(tmp_path)) for a in argv]), CONF_DIR)
    assert snapshot(tmp_path) == before


# --- the storage checks alone ------------------------------------------------------------------------------------


@pytest.mark.parametrize("journal", ["wal", "delete"])
@pytest.mark.parametrize("kind", ["truncated", "overwritten", "text"])
def test_a_damaged_sqlite_file_is_named_and_left_as_it_is(tmp_path, monkeypatch, kind, journal):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "multirun" / "pareto.db"
    make_study_db(path, journal)
    assert sorted(p.name for p in path.parent.iterdir()) == ["pareto.db"]
    check_storage("sqlite:///multirun/pareto.db")  # healthy: passes, and makes no file beside it
    assert sorted(p.name for p in path.parent.iterdir()) == ["pareto.db"]
    damage(path, kind)
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as e:
        check_storage("sqlite:///multirun/pareto.db")
    said = str(e.value)
    assert said.startswith("hydra.sweeper.storage=sqlite:///multirun/pareto.db: multirun/pareto.db ")
    assert ("is not an SQLite database" if kind == "text" else "is damaged") in said
    assert "move it aside" in said and "\n" not in said
    assert snapshot(tmp_path) == before  # not a byte changed, no -wal or -shm file made beside it


def test_a_study_in_use_is_read_without_waiting_or_refusing(tmp_path, monkeypatch):
    """A study that another process holds open in WAL mode (its -wal file exists) is checked on a shared read."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.db"
    make_study_db(path)
    other = sqlite3.connect(path)
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("INSERT INTO trials (name, value) VALUES ('x', 1)")
    other.commit()
    assert path.with_name("s.db-wal").exists()
    check_storage(f"sqlite:///{path}")
    other.close()


def test_a_sqlite_file_is_created_only_where_its_folder_exists_or_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_storage("sqlite:///multirun/new/study.db")  # inside the working folder: the sweep creates it
    check_storage(f"sqlite:///{tmp_path}/study.db")  # its folder exists
    outside = tmp_path.parent / f"{tmp_path.name}-outside" / "deeper"
    with pytest.raises(ConfigError, match=f"folder {outside} does not exist; create it first"):
        check_storage(f"sqlite:///{outside}/study.db")
    assert list(tmp_path.iterdir()) == [] and not outside.parent.exists()


def test_an_unreachable_server_is_one_line_naming_host_and_port_not_the_password():
    pytest.importorskip("psycopg")
    start = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        check_storage(UNREACHABLE)
    assert time.perf_counter() - start < storage.CONNECT_TIMEOUT_S
    said = str(e.value)
    assert said.startswith("hydra.sweeper.storage=postgresql+psycopg://u:***@127.0.0.1:1/vae: cannot connect to ")
    assert "127.0.0.1:1 (" in said and "secret" not in said and "\n" not in said


def test_a_server_that_never_answers_is_given_up_after_the_connect_timeout(monkeypatch):
    """A port that accepts the connection but never speaks (a hung server, a firewall's black hole)."""
    pytest.importorskip("psycopg")
    monkeypatch.setattr(storage, "CONNECT_TIMEOUT_S", 2)  # libpq's least
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        start = time.perf_counter()
        with pytest.raises(ConfigError, match=rf"cannot connect to 127\.0\.0\.1:{port} \("):
            check_storage(f"postgresql+psycopg://u:secret@127.0.0.1:{port}/vae")
        assert 1.5 < time.perf_counter() - start < 10


@pytest.mark.slow  # the fixture may start a server
def test_a_reachable_server_passes(postgres_url):
    check_storage(postgres_url)


@pytest.mark.slow
def test_a_pickle_protocol_checkpoint_is_refused_without_torchs_warning(tmp_path):
    (tmp_path / "old.pt").write_bytes(pickle.dumps({"model": 1}, protocol=4))
    res = cli(["debug=tiny", "resume=old.pt", "hydra.run.dir=run"], cwd=tmp_path, timeout=120)
    assert res.returncode != 0 and "Traceback" not in res.stderr and "Warning" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "error: resume=old.pt: cannot read old.pt as a vae_sweep checkpoint (UnpicklingError)"
    )
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.fixture(autouse=True)
def _no_root_dir_left():
    yield
    if Path(NO_ROOT_DIR).exists():  # a failing run made it: do not leave it for the next test or user
        shutil.rmtree(NO_ROOT_DIR)
        pytest.fail(f"{NO_ROOT_DIR} was created")
