"""Build the Tang quatrain corpora tang5 and tang7 from chinese-poetry's 全唐诗 JSON files.

    python data/tang/prepare.py                        # downloads, writes ~/.cache/textvae/tang5 and tang7
    python data/tang/prepare.py --out DIR              # DIR/tang5, DIR/tang7
    python data/tang/prepare.py --archive chinese-poetry-COMMIT.zip   # offline, from a local copy

The source is https://github.com/chinese-poetry/chinese-poetry (MIT License) at the commit the data
card names (COMMIT below): the 58 files 全唐诗/poet.tang.0.json ... poet.tang.57000.json, each a JSON
list of poems with ``paragraphs``. ``--archive`` takes GitHub's .zip or .tar.gz of the repository, a
git clone, or a folder holding the poet.tang.*.json files. The rules are the data card's
(../shared/data/tang5/README.md): drop a poem with any character that is not a CJK ideograph or verse
punctuation; keep it when it has exactly 4 verses of 5 (tang5) or 7 (tang7) characters; write it as
``v1，v2。v3，v4。``; drop exact duplicates (first kept, source order); shuffle with
``random.Random(13)``; valid and test are round(5%) each, train the rest. One poem per line. Then:

    textvae train --preset tang5 --data-dir ~/.cache/textvae/tang5 --out runs/tang5

Standard library only. The corpora are never copied into the repository (licence: the data card).
"""

import argparse
import hashlib
import json
import os
import random
import re
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

SPLITS = ("train", "valid", "test")
FORMS = {"tang5": 5, "tang7": 7}
COMMIT = "99ebbef7e1345c0985c44b9fd96a3f9e776f117b"  # the data card's snapshot (2026-05-06)
FOLDER = "全唐诗"
FILE_NUMBERS = range(0, 58000, 1000)  # poet.tang.0.json ... poet.tang.57000.json
RAW_URL = "https://raw.githubusercontent.com/chinese-poetry/chinese-poetry/{commit}/{path}"
ARCHIVE_URL = f"https://github.com/chinese-poetry/chinese-poetry/archive/{COMMIT}.zip"
SEED, HELD_OUT = 13, 0.05
FILE_NAME = re.compile(r"(?:^|/)" + FOLDER + r"/poet\.tang\.(\d+)\.json$")
VERSE_END = re.compile("[，。？！；：、]")
# CJK ideographs: the unified block, Ext A, Ext B-H and the two compatibility blocks
IDEOGRAPH = "\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U000323af\uf900-\ufaff\U0002f800-\U0002fa1f"
ALLOWED = re.compile(f"[{IDEOGRAPH}，。？！；：、]*")
# MD5 of the files built from COMMIT (the shared copies the repository's tests read)
MD5 = {"tang5": {"train": "3348ba5f65fb7408e54d4b43c1684037", "valid": "436e9ba5734a491fac363cc8afe92ccf",
                 "test": "df1dd18f77b03b1afa90d4f76eeb58c1"},
       "tang7": {"train": "ced72fa2f081bed3395afaf421570296", "valid": "687da0830c0f9fdd9ea3ab22e2ec37f7",
                 "test": "625831e92f8dcf72ea9a1d23bc43c714"}}


class PrepareError(Exception):
    """Something the user has to fix; printed without a traceback."""


# ----------------------------------------------------------------------------- the source files

def fetch(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "textvae-prepare-tang"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def download(timeout: float) -> dict[int, bytes]:
    """The 58 JSON files from raw.githubusercontent.com at COMMIT; the first failure stops with advice."""
    files = {}
    for n in FILE_NUMBERS:
        url = RAW_URL.format(commit=COMMIT, path=urllib.parse.quote(f"{FOLDER}/poet.tang.{n}.json"))
        print(f"downloading {FOLDER}/poet.tang.{n}.json ({len(files) + 1}/{len(FILE_NUMBERS)}) ...", file=sys.stderr)
        try:
            files[n] = fetch(url, timeout)
        except (urllib.error.URLError, OSError) as e:  # HTTPError and timeouts are URLError/OSError
            raise PrepareError(
                f"could not download {url}: {getattr(e, 'reason', e)}.\nIf this machine is offline, download "
                f"{ARCHIVE_URL} (the repository at the data card's commit, about 100 MB) on one that is "
                f"online, copy it here and run: python data/tang/prepare.py --archive {COMMIT}.zip "
                f"(a git clone of the repository works too)") from None
    return files


def from_archive(path: Path) -> dict[int, bytes]:
    """The poet.tang.N.json files out of a .zip, a .tar(.gz) or a folder, by their number N."""
    if not path.exists():
        raise PrepareError(f"--archive {path} does not exist; give the .zip or .tar.gz GitHub serves for "
                           f"{ARCHIVE_URL.rsplit('/archive', 1)[0]}, or a clone of it")
    try:
        if path.is_dir():
            found = {m.as_posix(): m for m in path.rglob("poet.tang.*.json")}
            files = {int(k.group(1)): found[name].read_bytes() for name in found if (k := FILE_NAME.search(name))}
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                files = {int(k.group(1)): z.read(name) for name in z.namelist() if (k := FILE_NAME.search(name))}
        else:
            with tarfile.open(path, mode="r:*") as tar:
                files = {int(k.group(1)): tar.extractfile(m).read() for m in tar.getmembers()
                         if m.isfile() and (k := FILE_NAME.search(m.name))}
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise PrepareError(f"--archive {path} is not a readable .zip, .tar.gz or folder ({e}); download it again")
    if not files:
        raise PrepareError(f"--archive {path} has no {FOLDER}/poet.tang.N.json files; is it the chinese-poetry "
                           f"repository ({ARCHIVE_URL})?")
    missing = [n for n in FILE_NUMBERS if n not in files]
    if missing:
        print(f"warning: {path} lacks {len(missing)} of the {len(FILE_NUMBERS)} source files (first: "
              f"poet.tang.{missing[0]}.json); the corpora will be smaller than the data card's", file=sys.stderr)
    return files


def poems_in(files: dict[int, bytes]) -> list[list[str]]:
    """Every poem's ``paragraphs``, in source order (files by number, then position in the file)."""
    poems = []
    for n in sorted(files):
        try:
            records = json.loads(files[n].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PrepareError(f"poet.tang.{n}.json is not UTF-8 JSON ({e}); the download may be truncated")
        if not isinstance(records, list):
            raise PrepareError(f"poet.tang.{n}.json is not a JSON list of poems")
        poems.extend([str(p) for p in r.get("paragraphs") or []] for r in records if isinstance(r, dict))
    return poems


# ----------------------------------------------------------------------------- the data card's rules

def quatrain(paragraphs: list[str], chars: int) -> str | None:
    """The poem as ``v1，v2。v3，v4。`` when it is a clean quatrain of ``chars``-character verses, else None."""
    if not "".join(paragraphs) or not ALLOWED.fullmatch("".join(paragraphs)):
        return None  # empty, or a character outside CJK ideographs and verse punctuation
    verses = [v for p in paragraphs for v in VERSE_END.split(p) if v]  # a paragraph end also ends a verse
    if len(verses) != 4 or any(len(v) != chars for v in verses):
        return None
    return f"{verses[0]}，{verses[1]}。{verses[2]}，{verses[3]}。"


def build(poems: list[list[str]], chars: int) -> dict[str, list[str]]:
    """The deduplicated quatrains, shuffled with Random(13), split train / valid / test."""
    kept = list(dict.fromkeys(q for p in poems if (q := quatrain(p, chars)) is not None))
    random.Random(SEED).shuffle(kept)
    held = round(HELD_OUT * len(kept))
    train_end = len(kept) - 2 * held
    return {"train": kept[:train_end], "valid": kept[train_end:train_end + held], "test": kept[train_end + held:]}


def write(splits: dict[str, list[str]], out: Path) -> dict[str, str]:
    """Write {split}.txt (one poem per line) atomically; returns each file's MD5."""
    out.mkdir(parents=True, exist_ok=True)
    digests = {}
    for split, lines in splits.items():
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        tmp = out / f".{split}.txt.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, out / f"{split}.txt")  # never a half-written file
        digests[split] = hashlib.md5(data).hexdigest()
    return digests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="~/.cache/textvae",
                        help="folder that receives tang5/ and tang7/ (default: %(default)s)")
    parser.add_argument("--archive", help="build from this local copy of chinese-poetry (.zip, .tar.gz or "
                        "folder) instead of downloading")
    parser.add_argument("--forms", nargs="+", choices=sorted(FORMS), default=sorted(FORMS),
                        help="which corpora to build (default: both)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per download (default: %(default)s)")
    args = parser.parse_args(argv)
    out = Path(args.out).expanduser()
    try:
        files = from_archive(Path(args.archive).expanduser()) if args.archive else download(args.timeout)
        poems = poems_in(files)
        for name in args.forms:
            splits = build(poems, FORMS[name])
            digests = write(splits, out / name)
            sizes = ", ".join(f"{s} {len(splits[s])}" for s in SPLITS)
            print(f"{out / name}: {sizes} poems")
            if len(files) == len(FILE_NUMBERS) and digests != MD5[name]:
                print(f"warning: {name} differs from the data card's build of commit {COMMIT[:12]} (MD5 "
                      f"mismatch); the source copy is probably another version", file=sys.stderr)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"next: textvae train --preset tang5 --data-dir {out / 'tang5'} --out runs/tang5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
