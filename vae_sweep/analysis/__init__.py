"""The analysis wing: sweep folders, run folders or Optuna studies -> one frame of trials -> tables and figures.

`sources` reads run dirs and studies into rows, `frame` turns them into the trials frame and its tables, `curves`
reads the curves of a sweep of whole curves, `importance` measures parameter importance, and `plots` draws (it only
draws frames computed here). The command is `python -m vae_sweep.analyze` (`vae_sweep/analyze.py`).

It imports the core (the registry of metrics, the config's groups, the Pareto front), never the training or the
sweep. The frame's functions are importable from here: `vae_sweep.analysis.load_sweep(path_or_url)`.
"""

from vae_sweep.analysis.frame import (
    completed,
    history_table,
    latest_sweep,
    load_sweep,
    searched_params,
    status_counts,
    status_line,
    study_frame,
    summary_markdown,
    trials_table,
    write_summary_md,
    write_tables,
)

__all__ = [
    "completed",
    "history_table",
    "latest_sweep",
    "load_sweep",
    "searched_params",
    "status_counts",
    "status_line",
    "study_frame",
    "summary_markdown",
    "trials_table",
    "write_summary_md",
    "write_tables",
]
