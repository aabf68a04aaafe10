"""``python -m textvae`` (and ``torchrun -m textvae``) is the ``textvae`` command."""
import sys

from .cli import main

sys.exit(main())
