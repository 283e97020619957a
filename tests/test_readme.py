"""The README's commands, run as written from an empty folder, made smaller but otherwise unchanged.

Every line of a ```bash block that starts with `python -m vae_sweep` (the analysis, `python -m vae_sweep.analyze`,
included), `vae-sweep` or `python scripts/analyze.py` is one test, named `<section>-<n>`, so a command added to the
README is tested without a line here. Other lines (the install one-liner, pytest) are not commands of vae_sweep.

- One folder for the whole README, as a user who reads it through has: every command runs there in README order, so
  a later one sees what the earlier ones wrote (the analysis reads the sweeps above it, a sweep may top up a study
  made above). A test run alone first runs every command before it. Each Optuna sweep must run at least one trial.
- `# comments` are dropped and the line is split as the shell would (shlex). `python` becomes this interpreter;
  `python scripts/analyze.py` is the checkout's script. Placeholder: `<sweep dir>` becomes the newest sweep dir
  under the folder's multirun/; any other `<...>` fails the test.
- Appended, and only these: SHRINK to every vae_sweep command (but `eval.pictures=false` where the line says
  `debug=tiny` itself: those are small already, and their pictures are checked), and to Optuna sweeps
  `hydra.sweeper.n_trials=2` per 30 the line asks for (a README top-up to 60 becomes 4; the last value wins in
  Hydra). Never a storage or an output dir: the commands write where a user's would.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from helpers import CONF, REPO

SHRINK = [
    "epochs=1",
    "max_batches=2",
    "eval.iwae_k=2",
    "eval.pictures=false",
    "eval.disentanglement.samples=200",
    "eval.disentanglement.batch_points=20",
]  # only where factors exist
N_TRIALS = 2  # trials in every Optuna study the README's sweeps make here
PREFIXES = ("python -m vae_sweep", "vae-sweep", "python scripts/analyze.py")
PLACEHOLDER = "<sweep dir>"
NO_WORK = ("--cfg", "-c", "--help", "-h", "--info", "-i", "--hydra-help")  # Hydra flags that print and exit


@dataclasses.dataclass(frozen=True)
class Command:
    section: str  # slug of the README section, e.g. `sweeps`
    index: int  # position among the section's commands, from 0
    line: str  # as written in the README

    @property
    def id(self) -> str:
        return f"{self.section}-{self.index}"


@dataclasses.dataclass
class Outcome:
    argv: list[str]
    proc: subprocess.CompletedProcess
    new_runs: list[Path]  # run dirs whose metrics.json this command wrote
    started: float  # time.time() when the command started

    def explain(self) -> str:
        return f"{shlex.join(self.argv[1:])}\nexit {self.proc.returncode}; output ends:\n{self.output[-3000:]}"

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr


def slug(heading: str) -> str:
    return re.sub(r"\W+", "-", heading.split("(")[0].strip().lower()).strip("-")


def readme_commands(text: str) -> list[Command]:
    commands, section, fence = [], "top", None
    for line in text.splitlines():
        if line.startswith("```"):
            fence = line[3:].strip() if fence is None else None
        elif fence is None and line.startswith("## "):
            section = slug(line[3:])
        elif fence == "bash" and line.startswith(PREFIXES):
            index = sum(c.section == section for c in commands)
            commands.append(Command(section, index, line))
    return commands


COMMANDS = readme_commands((REPO / "README.md").read_text())


def _last(args: list[str], key: str) -> str | None:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{key}=")]
    return values[-1] if values else None


def _sweep_node(args: list[str]) -> tuple[str, DictConfig]:
    """The sweeper the command selects (`vae_optuna` or `basic`) and its `sweep=` option's yaml."""
    from vae_sweep.__main__ import DEFAULT_SWEEP  # what --multirun composes when no sweep= is given

    node = OmegaConf.load(CONF / "sweep" / f"{_last(args, 'sweep') or DEFAULT_SWEEP}.yaml")
    chosen = next(
        (d["override /hydra/sweeper"] for d in node.get("defaults", []) if "override /hydra/sweeper" in d), "basic"
    )
    return _last(args, "hydra/sweeper") or chosen, node


def study_of(outcome: Outcome) -> tuple[str, str]:
    """(storage URL, study name) of an Optuna sweep, as its first log line names them: the name is derived from
    the command's defining overrides (vae_sweep/sweep/study.py), the shrinking ones included."""
    found = re.search(r"study '(.+)' in (\S+): \d+ trials already", outcome.output)
    assert found, f"the sweep did not name its study\n{outcome.explain()}"
    return found.group(2), found.group(1)


def is_multirun(args: list[str]) -> bool:
    return "--multirun" in args or "-m" in args


def is_optuna(args: list[str]) -> bool:
    return is_multirun(args) and _sweep_node(args)[0] == "vae_optuna"


def to_argv(command: Command, folder: Path) -> list[str]:
    line = command.line
    if PLACEHOLDER in line:
        from vae_sweep.analysis.frame import latest_sweep

        line = line.replace(PLACEHOLDER, str(latest_sweep(folder / "multirun").relative_to(folder)))
    words = shlex.split(line, comments=True)
    unknown = [w for w in words if re.search(r"<[^<>]+>", w)]
    assert not unknown, f"{command.id}: placeholder(s) {unknown} in `{command.line}`: only {PLACEHOLDER} is known"
    if words[0] == "vae-sweep":  # the console script runs what `python -m vae_sweep` runs
        words = ["python", "-m", "vae_sweep", *words[1:]]
    if words[1] == "scripts/analyze.py":
        words[1] = str(REPO / "scripts" / "analyze.py")
    elif words[1:3] == ["-m", "vae_sweep"]:
        shrink = [s for s in SHRINK if not ("debug=tiny" in words and s == "eval.pictures=false")]
        asked = int(_last(words, "hydra.sweeper.n_trials") or 30)
        words += shrink + ([f"hydra.sweeper.n_trials={trials_for(asked)}"] if is_optuna(words[3:]) else [])
    return [sys.executable, *words[1:]]


def trials_for(asked: int) -> int:
    """The trials a README sweep that asks for `asked` runs here: N_TRIALS per 30 (a top-up stays a top-up)."""
    return N_TRIALS * -(-asked // 30)


def run_command(command: Command, folder: Path) -> Outcome:
    argv = to_argv(command, folder)
    before, started = set(folder.rglob("metrics.json")), time.time()
    proc = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=600)
    new = sorted(p.parent for p in set(folder.rglob("metrics.json")) - before)
    return Outcome(argv, proc, new, started)


class SectionRuns:
    """The one folder the whole README runs in, and the outcome of each command (each runs at most once)."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.folder, self.outcomes = tmp_path_factory.mktemp("readme"), {}

    def outcome(self, command: Command) -> Outcome:
        for earlier in COMMANDS[: COMMANDS.index(command) + 1]:
            if earlier.id not in self.outcomes:
                self.outcomes[earlier.id] = run_command(earlier, self.folder)
        return self.outcomes[command.id]


@pytest.fixture(scope="module")
def section_runs(tmp_path_factory) -> SectionRuns:
    return SectionRuns(tmp_path_factory)


def metrics_status(run_dir: Path) -> str:
    return json.loads((run_dir / "metrics.json").read_text()).get("status")


def check_study(folder: Path, outcome: Outcome, why: str) -> None:
    import optuna

    url, name = study_of(outcome)
    assert Path(folder, url.removeprefix("sqlite:///")).is_file(), f"no study database {url}\n{why}"
    study = optuna.load_study(study_name=name, storage=url.replace("sqlite:///", f"sqlite:///{folder}/", 1))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    wanted = int(_last(outcome.argv, "hydra.sweeper.n_trials"))
    assert len(done) == wanted, f"study {name} holds {len(done)} completed trials, not {wanted}\n{why}"
    before = int(re.search(r"study '.+' in \S+: (\d+) trials already", outcome.output).group(1))
    assert len(study.trials) > before, f"study {name}: the command ran no trial (it held {before})\n{why}"
    for t in done:
        run_dir = Path(folder, t.user_attrs["metrics"]["run_dir"])
        assert metrics_status(run_dir) == "completed", f"trial {t.number}: {run_dir}\n{why}"


def check_analysis(folder: Path, outcome: Outcome, why: str) -> None:
    wrote = re.search(r"^wrote \d+ files to (.+?): ", outcome.proc.stdout, re.M)
    assert wrote, f"the analysis did not say where it wrote\n{why}"
    table = Path(folder, wrote.group(1)) / "trials.csv"
    assert table.is_file() and table.stat().st_mtime >= outcome.started - 1, f"{table} not written\n{why}"
    assert len(table.read_text().splitlines()) >= 2, f"{table} has no trial\n{why}"
    assert (table.parent / "summary.md").is_file(), why


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_readme_command(command: Command, section_runs: SectionRuns) -> None:
    outcome = section_runs.outcome(command)
    folder, why = section_runs.folder, outcome.explain()
    exit_code, traceback = outcome.proc.returncode, "Traceback" in outcome.output
    assert exit_code == 0, why
    assert not traceback, why
    if outcome.argv[1:3] != ["-m", "vae_sweep"]:  # the analysis
        check_analysis(folder, outcome, why)
        return
    args = outcome.argv[3:]
    for run_dir in outcome.new_runs:
        assert metrics_status(run_dir) == "completed", f"{run_dir}\n{why}"
    if any(a in NO_WORK for a in args):
        assert outcome.new_runs == [], why
    elif is_optuna(args):
        check_study(folder, outcome, why)
    else:  # one job, or Hydra's basic sweeper (one job per combination)
        assert outcome.new_runs, f"no run dir with metrics.json\n{why}"
        assert is_multirun(args) or len(outcome.new_runs) == 1, why
    if "eval.pictures=false" not in args and outcome.new_runs:  # the labelled pictures, drawn for real
        for run_dir in outcome.new_runs:
            assert {"reconstructions.png", "samples.png", "traversals.png"} <= {p.name for p in run_dir.glob("*.png")}


def test_readme_has_commands_in_each_section() -> None:
    """The extraction above finds the README's commands, so the tests above are not silently empty."""
    sections = {c.section for c in COMMANDS}
    assert {"usage", "one-job", "sweeps", "analysis"} <= sections, sections
    assert any("vae_sweep.analyze" in c.line for c in COMMANDS if c.section == "analysis")
    assert sum("--multirun" in shlex.split(c.line, comments=True) for c in COMMANDS) >= 5
    assert any("debug=tiny" in c.line and "--multirun" not in c.line for c in COMMANDS)  # one job draws its pictures
    assert trials_for(30) == N_TRIALS and trials_for(60) == 2 * N_TRIALS and trials_for(20) == N_TRIALS
