"""Collect a sweep and write its tables and figures.

    python -m vae_sweep.analyze                                       # the newest sweep under ./multirun/
    python -m vae_sweep.analyze multirun/2024-05-01/12-00-00          # one sweep dir
    python -m vae_sweep.analyze multirun/a multirun/b --out results/  # several, analysed together
    python -m vae_sweep.analyze sqlite:///multirun/pareto.db --study pareto --format svg
    python -m vae_sweep.analyze sqlite:///a.db sqlite:///b.db --study pareto --study elbo   # one per storage

The same command is installed as `vae-sweep-analyze`, and a checkout has it as `python scripts/analyze.py`.

Writes trials.csv, summary.md and the figures (vae_sweep.analysis.plots.FIGURES) into --out, by default
`<first sweep dir>/analysis/`, then prints the status counts and where everything went. A figure without
data is skipped with a warning. A wrong source prints `error: ...` and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vae_sweep.analysis import frame
from vae_sweep.analysis.plots import FORMATS, save_figures
from vae_sweep.errors import ConfigError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", help="sweep dirs or study storage URLs (default: newest under multirun/)")
    parser.add_argument(
        "--study",
        action="append",
        help="the study of a storage URL (default: its newest); once for every URL, or once per URL in order",
    )
    parser.add_argument("--out", type=Path, help="output folder (default: <first sweep dir>/analysis)")
    parser.add_argument("--format", choices=FORMATS, default="png", help="figure file format")
    parser.add_argument("--top", type=int, default=5, help="trials listed per objective in summary.md")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress as well as warnings")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        sources = args.sources or [frame.latest_sweep()]
        df = frame.load_sweep(sources, study=args.study)
        out = args.out or frame.default_out_dir(sources, df)
        paths = frame.write_tables(df, out, args.top) | save_figures(df, out, args.format)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(frame.status_line(df))
    print(f"wrote {len(paths)} files to {out}: {', '.join(p.name for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
