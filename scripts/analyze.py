"""The checkout's analysis command, the same as `python -m vae_sweep.analyze` (vae_sweep/analyze.py)."""

import sys

from vae_sweep.analyze import main

if __name__ == "__main__":
    sys.exit(main())
