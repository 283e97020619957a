"""The sweep wing: the Optuna loop behind `python -m vae_sweep --multirun`.

Which study a sweep joins and where it lives (`study`), count-then-ask under a lock (`locks`), the loop itself
(`sweeper`), what is checked before the first trial (`settings`: the sweeper's settings, sampler and pruner;
`search_space`; `storage`: the URL, a SQLite file's health, a server's answer), what a job sees of its trial (pruning
handles, artifacts: `trial`), how a trial's end is told to its study (`record`), continuing interrupted trials
(`resumption`), trials as Slurm jobs (`cluster`) and what a sweep leaves at its end (`summary`).

It imports the core (vae_sweep's top-level modules) and, at a sweep's end only, the analysis wing for summary.md.
The core reaches into it in two places, each when needed: a job with a pruning handle imports
`sweep.trial.epoch_reporter` when it runs, and `checks.check_argv` imports `sweep.settings.check_sweep` for a
--multirun command line.
"""
