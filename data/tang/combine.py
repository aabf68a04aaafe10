"""Write the tang5 + tang7 corpus with the form as each poem's label, for a conditional VAE.

    python data/tang/combine.py --out ~/data/tang57            # from ../shared/data/tang5 and tang7
    python data/tang/combine.py --tang5 DIR --tang7 DIR --out DIR

For each split it writes ``{split}.txt`` (the tang5 poems, then the tang7 poems, each corpus's own
order; training shuffles) and ``{split}.labels.txt`` with one label per line: ``5x4`` or ``7x4``, the
poem's form, so that ``textvae sample --label 7x4`` names what it asks for and ``textvae evaluate``
can check it. Then:

    textvae train --preset tang7 --data-dir ~/data/tang57 --out runs/tang57 model.conditional=true train.max_epochs=12

Every poem is checked to have its corpus's form. Standard library only. The corpora are read from
where they are and never copied into the repository (see ../shared/data/tang5/README.md: licence).
"""

import argparse
import re
import sys
from pathlib import Path

SPLITS = ("train", "valid", "test")
HERE = Path(__file__).resolve().parent


def form_regex(chars: int) -> re.Pattern:
    line = f"[^，。\\s]{{{chars}}}"
    return re.compile(f"({line}，{line}。){{2}}")


def read(corpus: Path, split: str, chars: int) -> list[str]:
    path = corpus / f"{split}.txt"
    if not path.is_file():
        sys.exit(f"combine.py: {path} does not exist; pass --tang{chars} pointing at the tang{chars} folder")
    poems = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    check = form_regex(chars)
    for i, poem in enumerate(poems, 1):
        if not check.fullmatch(poem):
            sys.exit(f"combine.py: {path}:{i} is not a {chars}x4 quatrain: {poem!r}")
    return poems


def main(argv: list[str] | None = None) -> int:
    default = HERE.parents[2] / "shared" / "data"  # the checkout's sibling ../shared/data
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tang5", type=Path, default=default / "tang5")
    parser.add_argument("--tang7", type=Path, default=default / "tang7")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (outside the repository)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        poems = [(p, "5x4") for p in read(args.tang5, split, 5)] + [(p, "7x4") for p in read(args.tang7, split, 7)]
        (args.out / f"{split}.txt").write_text("".join(p + "\n" for p, _ in poems), encoding="utf-8")
        (args.out / f"{split}.labels.txt").write_text("".join(l + "\n" for _, l in poems), encoding="utf-8")
        counts = {label: sum(l == label for _, l in poems) for label in ("5x4", "7x4")}
        print(f"{split}: {len(poems)} poems ({counts['5x4']} 5x4, {counts['7x4']} 7x4) -> {args.out / split}.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
