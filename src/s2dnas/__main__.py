"""``python -m s2dnas`` runs the CLI (also what torchrun launches)."""
import sys

from s2dnas.cli.main import main

sys.exit(main())
