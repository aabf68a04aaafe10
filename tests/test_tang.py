"""data/tang/prepare.py: the data card's rules on a tiny local copy of chinese-poetry's JSON, and the
offline error (no network in the tests: the download is made to fail)."""
import importlib.util
import json
import urllib.error
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "data" / "tang" / "prepare.py"


@pytest.fixture(scope="module")
def prepare():
    spec = importlib.util.spec_from_file_location("tang_prepare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIVE = ["白日依山盡，黃河入海流。", "欲窮千里目，更上一層樓。"]
SEVEN = ["朝辭白帝彩雲間，千里江陵一日還。", "兩岸猿聲啼不住，輕舟已過萬重山。"]


def poem(paragraphs, title="題"):
    return {"author": "某", "title": title, "paragraphs": paragraphs, "id": "x"}


def five(i: int) -> list[str]:
    """A distinct clean five-character quatrain (two paragraphs of two verses)."""
    c = "一二三四五六七八九十"
    return [f"{c[i % 10]}山{c[i // 10 % 10]}水月，春風入夜來。", f"花{c[i % 10]}開{c[i // 10]}處，人去不知回。"]


def source_files() -> dict[str, list]:
    """Two of the 58 files: 24 clean five-character quatrains, one seven-character one, and a poem for
    each rule that drops one."""
    first = [poem(five(i)) for i in range(12)] + [
        poem(SEVEN),
        poem(["白日依山盡？黃河入海流！欲窮千里目；更上一層樓。"]),  # one paragraph, other punctuation: kept
        poem(["白日依□盡，黃河入海流。", "欲窮千里目，更上一層樓。"]),  # a missing character: dropped
        poem(["白日依山盡，黃河入海流（注）。", "欲窮千里目，更上一層樓。"]),  # a note: dropped
        poem(["白日依山盡，黃河入海流。"]),  # two verses: dropped
        poem(["白日依山盡，黃河入海流。", "欲窮千里目，更上一層樓。", "登樓望遠，"]),  # five verses: dropped
        poem([]),  # empty: dropped
    ]
    second = [poem(five(i)) for i in range(12, 24)] + [poem(five(3))]  # a duplicate of an earlier poem
    return {"chinese-poetry-abc/全唐诗/poet.tang.0.json": first,
            "chinese-poetry-abc/全唐诗/poet.tang.1000.json": second,
            "chinese-poetry-abc/全唐诗/error/poet.tang.0.json": [poem(five(99))],  # not a source file
            "chinese-poetry-abc/README.md": "not json"}


def make_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, content in source_files().items():
            z.writestr(name, content if isinstance(content, str) else json.dumps(content, ensure_ascii=False))
    return path


def test_build_from_a_local_archive_follows_the_data_card(prepare, tmp_path, capsys):
    archive = make_zip(tmp_path / "chinese-poetry.zip")
    assert prepare.main(["--archive", str(archive), "--out", str(tmp_path / "out")]) == 0
    assert "lacks 56 of the 58 source files" in capsys.readouterr().err
    five_poems = {s: (tmp_path / "out" / "tang5" / f"{s}.txt").read_text(encoding="utf-8").splitlines()
                  for s in ("train", "valid", "test")}
    # 24 generated + the one-paragraph quatrain = 25 kept; the duplicate and the bad ones dropped
    assert {s: len(v) for s, v in five_poems.items()} == {"train": 23, "valid": 1, "test": 1}
    everything = [p for v in five_poems.values() for p in v]
    assert len(set(everything)) == 25
    assert "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。" in everything  # punctuation normalised
    assert all(len(p) == 24 and p[5] == "，" and p[11] == "。" and p[17] == "，" and p[23] == "。" for p in everything)
    assert "九山九水月" not in "".join(everything)  # the error/ folder is not a source
    # the split is the data card's: source order, Random(13).shuffle, train then valid then test
    order = [prepare.quatrain(p["paragraphs"], 5) for f in list(source_files().values())[:2] for p in f]
    expected = list(dict.fromkeys(q for q in order if q))
    prepare.random.Random(13).shuffle(expected)
    assert five_poems["train"] + five_poems["valid"] + five_poems["test"] == expected
    seven = (tmp_path / "out" / "tang7" / "train.txt").read_text(encoding="utf-8")
    assert seven == "".join(SEVEN) + "\n"


def test_a_folder_and_a_tarball_give_the_same_corpus(prepare, tmp_path):
    import tarfile

    folder = tmp_path / "clone"
    for name, content in source_files().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    tgz = tmp_path / "copy.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(folder / "chinese-poetry-abc", arcname="chinese-poetry-abc")
    outs = []
    for i, source in enumerate((folder, tgz, make_zip(tmp_path / "c.zip"))):
        assert prepare.main(["--archive", str(source), "--out", str(tmp_path / f"o{i}"), "--forms", "tang5"]) == 0
        outs.append((tmp_path / f"o{i}" / "tang5" / "train.txt").read_bytes())
    assert outs[0] == outs[1] == outs[2] and outs[0]


def test_offline_error_names_the_url_and_the_archive_option(prepare, tmp_path, monkeypatch, capsys):
    def offline(request, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(prepare.urllib.request, "urlopen", offline)
    assert prepare.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "could not download https://raw.githubusercontent.com/chinese-poetry/chinese-poetry/" in err
    assert "name resolution" in err and "--archive" in err and prepare.ARCHIVE_URL in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.zip", "does not exist"),
    (lambda p: make_bad(p / "bad.zip", b"PK\x03\x04 not a zip"), "not a readable"),
    (lambda p: make_empty_zip(p / "other.zip"), "has no 全唐诗/poet.tang.N.json files"),
])
def test_unusable_archives_are_clear_errors(prepare, tmp_path, capsys, make, message):
    assert prepare.main(["--archive", str(make(tmp_path)), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def make_bad(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def make_empty_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("something/else.json", "[]")
    return path


def test_the_shared_copy_matches_the_checksums_the_script_checks(prepare):
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (shared / "tang5" / "train.txt").is_file():
        pytest.skip(f"no shared tang corpora at {shared}")
    import hashlib

    for name, digests in prepare.MD5.items():
        for split, md5 in digests.items():
            assert hashlib.md5((shared / name / f"{split}.txt").read_bytes()).hexdigest() == md5
