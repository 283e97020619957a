"""The sweep wing: the Optuna loop behind `python -m vae_sweep --multirun`.

Which study a sweep joins and where it lives (`study`), count-then-ask under a lock (`locks`), the loop itself
(`sweeper`), the search space checked before the first trial (`search_space`), what a job sees of its trial (pruning
handles, artifacts: `trial`), how a trial's end is told to its study (`record`), continuing interrupted trials
(`resumption`), trials as Slurm jobs (`cluster`) and what a sweep leaves at its end (`summary`).

It imports the core (vae_sweep's top-level modules) and, at a sweep's end only, the analysis wing for summary.md.
The core reaches into it in one place: a job with a pruning handle imports `sweep.trial.epoch_reporter` when it runs.
"""
