"""Fixtures shared by every test module. Helpers live in tests/helpers/ (importable as `helpers`: pyproject.toml
puts tests/ on pytest's python path, so this works under every import mode)."""

pytest_plugins = ["helpers.services"]  # postgres_url, postgres_db_url, slurm_cluster: real services on 127.0.0.1
