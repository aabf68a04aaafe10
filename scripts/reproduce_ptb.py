"""Renamed: the PTB rows are YAML files in experiments/ptb/, run by scripts/run_experiments.py.

    python scripts/reproduce_ptb.py --rows bn-vae ...   # still works, with a deprecation message;
    python scripts/run_experiments.py experiments/ptb --rows bn-vae ...   # the same run

Every flag is the runner's. The runner keeps run R of table T in ``--runs-dir/T/R``; this script kept
it in ``--runs-dir/R`` with ``runs/ptb`` as the default, so ``--runs-dir runs/ptb`` (or any folder
named ``ptb``) is passed on as its parent and old runs resume where they are.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_experiments  # noqa: E402


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    print("scripts/reproduce_ptb.py is deprecated: use python scripts/run_experiments.py experiments/ptb "
          f"{' '.join(argv)}".rstrip(), file=sys.stderr)
    if "--runs-dir" in argv:  # old layout: DIR/ROW; the runner's: DIR/TABLE/ROW
        i = argv.index("--runs-dir") + 1
        argv[i] = str(Path(argv[i]).parent) if Path(argv[i]).name == "ptb" else argv[i]
    return run_experiments.main([str(run_experiments.REPO / "experiments" / "ptb"), *argv])


if __name__ == "__main__":
    sys.exit(main())
