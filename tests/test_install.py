"""`pip install .` without -e: the wheel holds the package, its configs and the sweeper plugin, and the
installed copy runs a job, a sweep and the analysis from an empty folder, with the checkout nowhere on sys.path.

The wheel is built from a copy of the checkout (building in place would leave build/ and *.egg-info in it) and
installed with `pip install --target SITE`; the commands then run with PYTHONPATH=SITE alone, which comes before
the editable finder that a development install puts in site-packages (the probe below checks it does).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from helpers import REPO

SHRINK = ["epochs=1", "max_batches=2", "eval.iwae_k=2", "eval.pictures=false"]
N_TRIALS = 2
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "outputs", "multirun", "data"
)
PROBE = """import json, sys, hydra_plugins.vae_sweep_sweeper as plugin, vae_sweep, vae_sweep.__main__ as entry
print(json.dumps({"package": vae_sweep.__file__, "plugin": plugin.__file__, "conf": str(entry.CONF_DIR),
                  "sys_path": sys.path}))"""

pytestmark = pytest.mark.slow


def pip(*args: str, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"pip {' '.join(args)}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    shutil.copytree(REPO, tmp / "src", ignore=NOT_SOURCES)
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(tmp / "src"), cwd=tmp)
    (found,) = (tmp / "dist").glob("vae_sweep-*.whl")
    return found


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    pip("install", "--no-deps", "--target", str(target), str(wheel), cwd=target)
    return target


@pytest.fixture(scope="module")
def empty(tmp_path_factory) -> Path:
    """The empty folder every installed command runs in, as a user's would be."""
    return tmp_path_factory.mktemp("user")


def run(argv: list[str], site: Path, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "HYDRA_FULL_ERROR": "0", **(env or {})}
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stdout + proc.stderr, (
        f"{' '.join(argv[1:])}: exit {proc.returncode}\n{(proc.stdout + proc.stderr)[-3000:]}"
    )
    return proc


def config_source(run_dir: Path) -> Path:
    """The folder Hydra composed the run's config from, as its .hydra/hydra.yaml records it."""
    sources = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["config_sources"]
    return Path(next(s["path"] for s in sources if s["provider"] == "main"))


def test_wheel_holds_every_module_config_and_the_plugin(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {f"vae_sweep/{p.relative_to(REPO / 'vae_sweep').as_posix()}" for p in (REPO / "vae_sweep").rglob("*.py")}
    wanted |= {f"vae_sweep/conf/{p.relative_to(REPO / 'conf').as_posix()}" for p in (REPO / "conf").rglob("*.yaml")}
    plugin = REPO / "hydra_plugins" / "vae_sweep_sweeper"
    wanted |= {f"hydra_plugins/vae_sweep_sweeper/{p.name}" for p in plugin.glob("*.py")}
    assert wanted - names == set()
    assert "hydra_plugins/__init__.py" not in names  # a namespace shared with Hydra's other plugins
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "vae-sweep-analyze = vae_sweep.analyze:main" in scripts and "vae-sweep = vae_sweep.__main__:main" in scripts


def test_installed_copy_is_the_one_imported(site, empty):
    probe = json.loads(run([sys.executable, "-c", PROBE], site, empty).stdout)
    for key in ("package", "plugin", "conf"):
        assert Path(probe[key]).is_relative_to(site), (key, probe[key])
    assert Path(probe["conf"]) == site / "vae_sweep" / "conf"
    on_path = [Path(p).resolve() for p in probe["sys_path"] if Path(p).is_absolute()]  # '' is the empty folder
    venv = Path(sys.prefix).resolve()  # the environment may live inside the checkout (.venv): its packages are fine
    assert not any(p.is_relative_to(REPO) and not p.is_relative_to(venv) for p in on_path), probe["sys_path"]


@pytest.fixture(scope="module")
def job(site, empty) -> Path:
    """The run dir of a tiny default job, run by the installed copy."""
    run([sys.executable, "-m", "vae_sweep", *SHRINK], site, empty)
    (metrics,) = empty.glob("outputs/*/*/metrics.json")
    return metrics.parent


@pytest.fixture(scope="module")
def sweep(site, empty) -> Path:
    """The sweep dir of a two-trial default sweep, run by the installed copy."""
    run([sys.executable, "-m", "vae_sweep", "--multirun", *SHRINK, f"hydra.sweeper.n_trials={N_TRIALS}"], site, empty)
    (sweep_dir,) = empty.glob("multirun/*/*")
    return sweep_dir


def test_installed_job(job, site):
    assert json.loads((job / "metrics.json").read_text())["status"] == "completed"
    assert config_source(job) == site / "vae_sweep" / "conf"


def test_installed_default_sweep(sweep, site, empty):
    import optuna

    study = optuna.load_study(study_name=None, storage=f"sqlite:///{empty}/multirun/pareto.db")  # the one it holds
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * N_TRIALS
    runs = sorted(sweep.glob("*/metrics.json"))
    assert [json.loads(m.read_text())["status"] for m in runs] == ["completed"] * N_TRIALS
    assert {config_source(m.parent) for m in runs} == {site / "vae_sweep" / "conf"}


def test_installed_analysis_of_the_newest_sweep(sweep, site, empty):
    run([sys.executable, "-m", "vae_sweep.analyze"], site, empty)
    rows = (sweep / "analysis" / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + N_TRIALS, rows
    assert (sweep / "analysis" / "summary.md").is_file()


def test_installed_command(site, empty):
    out = run([str(site / "bin" / "vae-sweep"), "--version"], site, empty).stdout
    assert out.startswith("vae_sweep ") and "torch " in out and "hydra-core " in out and "optuna " in out


def test_installed_analysis_console_script(sweep, site, empty):
    script = site / "bin" / "vae-sweep-analyze"
    run([str(script), str(sweep.relative_to(empty)), "--out", "report"], site, empty)
    assert len((empty / "report" / "trials.csv").read_text().splitlines()) == 1 + N_TRIALS


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """The worked example of a user's own model and data (scripts/example_user/), copied into a fresh folder."""
    folder = tmp_path_factory.mktemp("example") / "example_user"
    shutil.copytree(REPO / "scripts" / "example_user", folder, ignore=NOT_SOURCES)
    return folder


def run_example(args: list[str], site: Path, example: Path) -> None:
    """`python -m vae_sweep --config-dir my_conf ARGS` in the example's folder, its package on the path and trusted."""
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(example)]), "VAE_SWEEP_TRUSTED_TARGETS": "my_vae.*"}
    argv = [sys.executable, "-m", "vae_sweep", "--config-dir", "my_conf", "experiment=blobs", *SHRINK, *args]
    run(argv, site, example, env)


def test_installed_copy_runs_the_users_own_model_job_resume_sweep_analysis_and_multirate(site, example):
    run_example(["eval.disentanglement.samples=40", "eval.disentanglement.batch_points=20"], site, example)
    (job_metrics,) = example.glob("outputs/*/*/metrics.json")
    metrics = json.loads(job_metrics.read_text())
    assert metrics["status"] == "completed" and metrics["model"] == "my_vae" and "mig" in metrics
    run_example(["epochs=2", "eval.disentanglement=null", f"resume={job_metrics.parent}"], site, example)
    (resumed,) = (m for m in example.glob("outputs/*/*/metrics.json") if m != job_metrics)
    assert json.loads(resumed.read_text())["epochs"] == 2
    run_example(["--multirun", f"hydra.sweeper.n_trials={N_TRIALS}", "eval.disentanglement=null"], site, example)
    runs = sorted(example.glob("multirun/*/*/*/metrics.json"))
    assert [json.loads(m.read_text())["status"] for m in runs] == ["completed"] * N_TRIALS
    run([sys.executable, "-m", "vae_sweep.analyze"], site, example)
    assert len((runs[0].parents[1] / "analysis" / "trials.csv").read_text().splitlines()) == 1 + N_TRIALS
    run_example(["loss=multirate", "eval.disentanglement=null", "hydra.run.dir=multirate"], site, example)
    assert (example / "multirate" / "curve.csv").is_file()
