"""What the config is made of: its groups (one folder of conf/ each), and where conf/ lives."""

from __future__ import annotations

JOB_GROUPS = ("model", "loss", "likelihood", "optimizer", "scheduler", "dataset")  # each makes part of a job
GROUPS = (*JOB_GROUPS, "sweep")  # every group a command line may choose an option of
