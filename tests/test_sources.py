import hashlib
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

import imdb_torch.data.corpus as corpus_module
from imdb_torch.data.corpus import ACLIMDB, KERAS_NPZ, load_corpus, resolve_source
from imdb_torch.data.download import RemoteFile, fetch
from imdb_torch.data.keras_npz import KERAS_SHUFFLE_SEED, load_keras_imdb
from imdb_torch.data.text import OOV, START, tokenize
from imdb_torch.errors import UserError

from .conftest import make_reviews, write_tarball, write_tree


def test_source_type_is_detected_from_content(tiny_tarball, tiny_tree, tiny_npz, tmp_path):
    assert resolve_source(str(tiny_tarball)).kind == ACLIMDB
    assert resolve_source(str(tiny_tree)).kind == ACLIMDB
    assert resolve_source(str(tiny_tree.parent)).path == tiny_tree  # folder holding aclImdb/
    renamed = tmp_path / "data.bin"
    renamed.write_bytes(tiny_npz.read_bytes())
    assert resolve_source(str(renamed)).kind == KERAS_NPZ


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.tar.gz", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "not an aclImdb directory"),
        (lambda p: (p / "notes.txt").write_text("hello") and p / "notes.txt", "neither"),
    ],
)
def test_bad_paths_are_refused(tmp_path, make, message):
    with pytest.raises(UserError, match=message):
        resolve_source(str(make(tmp_path)))


def test_archive_and_directory_give_the_same_corpus(tiny_tarball, tiny_tree, tmp_path):
    from_tar = load_corpus(resolve_source(str(tiny_tarball)), tmp_path / "a")
    from_dir = load_corpus(resolve_source(str(tiny_tree)), tmp_path / "b")
    assert from_tar.words == from_dir.words
    assert np.array_equal(from_tar.train.values, from_dir.train.values)
    assert np.array_equal(from_tar.test_labels, from_dir.test_labels)
    assert len(from_tar.train) == len(from_tar.test) == 80  # train/unsup is ignored
    assert sorted(set(from_tar.train_labels.tolist())) == [0, 1]
    assert all(from_tar.train[i][0] == START for i in range(len(from_tar.train)))


def test_reviews_of_ones_own_in_aclimdbs_layout_are_read_whatever_their_names(tmp_path):
    """One review per .txt file in train/pos, train/neg, test/pos, test/neg, named as one
    likes; hidden files (a macOS archive's ._ copies) and other files are not reviews."""
    from imdb_torch.data.imdb_archive import read_reviews

    files = {
        "mine/train/pos/battery-lasts.txt": "great battery",
        "mine/train/pos/3_10.txt": "loved it",
        "mine/train/pos/12_8.txt": "superb screen",
        "mine/train/pos/._battery-lasts.txt": "\x00\x05binary",
        "mine/train/neg/a.txt": "awful",
        "mine/train/neg/notes.md": "not a review",
        "mine/test/pos/x.txt": "wonderful",
        "mine/test/neg/y.txt": "dull",
        # Deeper than the four folders: not reviews, whatever their path ends with.
        "mine/backup/train/pos/old.txt": "an old backup",
        "mine/train/pos/drafts/test/neg/draft.txt": "a draft",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    # Broken links, and a name that is not UTF-8, in the folder only.
    (tmp_path / "mine/train/neg/loop.txt").symlink_to("loop.txt")
    (tmp_path / "mine/train/neg/gone.txt").symlink_to(tmp_path / "nowhere.txt")
    (tmp_path / "mine/train/neg").joinpath(os.fsdecode(b"\xff latin.txt")).write_text("hated")
    archive = write_tarball({**files, "mine/train/neg/h.txt": "hated"}, tmp_path / "mine.tar.gz")
    for data in (tmp_path / "mine", archive):
        splits = read_reviews(data)
        # Negatives first; aclImdb's numbers in order, then the other names.
        assert [r.text for r in splits["train"]] == [
            "awful", "hated", "loved it", "superb screen", "great battery"
        ]  # fmt: skip
        assert [r.label for r in splits["train"]] == [0, 0, 1, 1, 1]
        assert [(r.text, r.label) for r in splits["test"]] == [("dull", 0), ("wonderful", 1)]
    corpus = load_corpus(resolve_source(str(tmp_path / "mine")), tmp_path / "cache")
    assert len(corpus.train) == 5 and "battery" in corpus.words


def test_a_review_appended_again_to_an_archive_replaces_the_first(tmp_path):
    import tarfile

    from imdb_torch.data.imdb_archive import read_reviews

    def add(tar, name, text):
        member = tarfile.TarInfo(name)
        member.size = len(text.encode())
        tar.addfile(member, io.BytesIO(text.encode()))

    reviews = make_reviews(per_folder=3)
    archive = tmp_path / "reviews.tar"  # uncompressed, as tar -r needs
    with tarfile.open(archive, "w") as tar:
        for name, text in reviews.items():
            add(tar, name, text)
    name = next(name for name in reviews if "/train/pos/" in name)
    rewritten = "rewritten: a much better film than I first said"
    with tarfile.open(archive, "a") as tar:  # what `tar -rf reviews.tar <name>` does
        add(tar, name, rewritten)
    texts = [r.text for r in read_reviews(archive)["train"]]
    assert len(texts) == sum("/train/pos/" in n or "/train/neg/" in n for n in reviews)  # once
    assert rewritten in texts and reviews[name] not in texts  # the later copy, as tar -x


def test_review_files_that_are_not_utf8_are_read_with_a_warning(tmp_path):
    from imdb_torch.data.imdb_archive import read_reviews

    tree = write_tree(make_reviews(per_folder=3), tmp_path)
    (tree / "train/pos/café.txt").write_bytes("un café superbe".encode("latin-1"))
    with pytest.warns(UserWarning, match=r"1 review file\(s\) in aclImdb are not UTF-8 text "
                      r"\(the first: train/pos/café.txt\)"):  # fmt: skip
        splits = read_reviews(tree)
    assert "un caf\ufffd superbe" in [r.text for r in splits["train"]]


def test_vocabulary_comes_from_training_reviews_only(tmp_path):
    files = make_reviews(seed=1, per_folder=5)
    files["aclImdb/test/pos/99_10.txt"] = "zyzzyva zyzzyva zyzzyva"
    corpus = load_corpus(resolve_source(str(write_tarball(files, tmp_path / "t.tar.gz"))))
    assert "zyzzyva" not in corpus.words
    last = corpus.test[len(corpus.test) - 1].tolist()  # test/pos sorts last, id 99 last of them
    assert last == [START, OOV, OOV, OOV]


def test_words_are_ranked_by_training_frequency(tiny_tarball, review_files):
    corpus = load_corpus(resolve_source(str(tiny_tarball)))
    counts = {}
    for name, text in review_files.items():
        if "/train/pos/" in name or "/train/neg/" in name:
            for word in tokenize(text):
                counts[word] = counts.get(word, 0) + 1
    expected = sorted(counts, key=lambda w: (-counts[w], w))
    assert corpus.words == expected


def test_cache_is_reused_without_tokenising_again(tiny_tarball, isolated_cache, monkeypatch):
    first = load_corpus(resolve_source(str(tiny_tarball)))
    cached = list(isolated_cache.glob("corpus-aclimdb-*.npz"))
    assert len(cached) == 1
    np.load(cached[0], allow_pickle=False).close()  # plain arrays only

    def refuse(text):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(corpus_module, "tokenize", refuse)
    second = load_corpus(resolve_source(str(tiny_tarball)))
    assert second.words == first.words
    assert np.array_equal(second.test.values, first.test.values)


def test_keras_npz_matches_keras_load_data(tiny_npz):
    loaded = load_keras_imdb(tiny_npz)
    # Keras's own steps, done here with np.load on the file the test wrote itself.
    with np.load(tiny_npz, allow_pickle=True) as f:
        x_train, y_train, x_test = f["x_train"], f["y_train"], f["x_test"]
    rng = np.random.RandomState(KERAS_SHUFFLE_SEED)
    order = np.arange(len(x_train))
    rng.shuffle(order)
    expected = [[1] + [w + 3 for w in x] for x in x_train[order]]
    train, labels = loaded["train"]
    assert [train[i].tolist() for i in range(len(train))] == expected
    assert labels.tolist() == y_train[order].tolist()
    test_order = np.arange(len(x_test))
    rng.shuffle(test_order)  # the same generator continues for the test split
    assert loaded["test"][0][0].tolist() == [1] + [w + 3 for w in x_test[test_order[0]]]


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_npz_with_code_in_its_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = np.empty(1, dtype=object)
    payload[0] = _Exploit(marker)
    path = tmp_path / "evil.npz"
    np.savez(path, x_train=payload, y_train=np.array([1]), x_test=payload, y_test=np.array([0]))
    with pytest.raises(UserError, match="other than arrays"):
        load_corpus(resolve_source(str(path)))
    assert not marker.exists()


def test_npz_with_wrong_arrays_is_refused(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, images=np.zeros((2, 2)))
    with pytest.raises(UserError, match="not Keras's imdb.npz"):
        load_corpus(resolve_source(str(path)))


def test_truncated_archive_is_refused(tiny_tarball, tmp_path):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tiny_tarball.read_bytes()[: tiny_tarball.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated"):
        load_corpus(resolve_source(str(cut)))


@pytest.mark.parametrize("compress", ["gzip", "bz2"])
def test_a_compressed_file_that_is_not_a_tar_archive_is_one_line(tmp_path, compress):
    import bz2
    import gzip

    path = tmp_path / f"notes.tar.{'gz' if compress == 'gzip' else 'bz2'}"
    path.write_bytes((gzip if compress == "gzip" else bz2).compress(b"just some notes\n" * 50))
    with pytest.raises(UserError, match="not a readable tar archive") as refused:
        load_corpus(resolve_source(str(path)))
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("index", [2**31, -(2**40)])
def test_npz_word_indices_out_of_range_are_refused(tmp_path, index):
    reviews = np.empty(2, dtype=object)
    reviews[:] = [[1, index, 7], [4, 5]]
    path = tmp_path / "imdb.npz"
    np.savez(path, x_train=reviews, y_train=np.array([1, 0]), x_test=reviews,
             y_test=np.array([0, 1]))  # fmt: skip
    with pytest.raises(UserError, match="word indices must be non-negative"):
        load_corpus(resolve_source(str(path)))


def test_archive_without_reviews_is_refused(tmp_path):
    path = write_tarball({"photos/cat.txt": "meow"}, tmp_path / "photos.tar.gz")
    with pytest.raises(UserError, match="expected aclImdb.s layout"):
        load_corpus(resolve_source(str(path)))


def test_a_class_without_reviews_is_named(tmp_path):
    files = {name: text for name, text in make_reviews().items() if "train/neg/" not in name}
    path = write_tarball(files, tmp_path / "positive_only.tar.gz")
    with pytest.raises(UserError, match="no review in train/neg: expected"):
        load_corpus(resolve_source(str(path)))


def _remote(tmp_path, content: bytes, digest: str | None = None) -> RemoteFile:
    served = tmp_path / "served.bin"
    served.write_bytes(content)
    digest = digest or hashlib.sha256(content).hexdigest()
    return RemoteFile("imdb.npz", served.as_uri(), digest)


def test_download_is_verified_and_cached(tmp_path):
    remote = _remote(tmp_path, b"payload")
    path = fetch(remote, tmp_path / "cache")
    assert path.read_bytes() == b"payload"
    (tmp_path / "served.bin").unlink()  # a second call must not need the network
    assert fetch(remote, tmp_path / "cache") == path


def test_download_with_wrong_checksum_leaves_nothing(tmp_path):
    remote = _remote(tmp_path, b"tampered", digest="0" * 64)
    with pytest.raises(UserError, match="expected"):
        fetch(remote, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_no_network_explains_how_to_use_local_data(tmp_path):
    remote = RemoteFile("imdb.npz", "http://127.0.0.1:9/imdb.npz", "0" * 64)
    with pytest.raises(UserError, match="--data PATH"):
        fetch(remote, tmp_path / "cache", timeout=2)


def test_a_verified_copy_in_keras_home_is_reused(tmp_path, monkeypatch):
    remote = _remote(tmp_path, b"from keras")
    keras_copy = tmp_path / "keras_home" / "datasets" / "imdb.npz"
    keras_copy.parent.mkdir(parents=True)
    keras_copy.write_bytes(b"from keras")
    (tmp_path / "served.bin").unlink()
    assert fetch(remote, tmp_path / "cache") == keras_copy


def test_zip_that_is_not_npz(tmp_path):
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", b"garbage")
        for name in ("y_train", "x_test", "y_test"):
            buffer = io.BytesIO()
            np.save(buffer, np.zeros(2))
            archive.writestr(f"{name}.npy", buffer.getvalue())
    with pytest.raises(UserError, match="not a readable .npz"):
        load_corpus(resolve_source(str(path)))


def test_pickle_module_is_not_used_for_cache(tiny_npz, isolated_cache, monkeypatch):
    load_corpus(resolve_source(str(tiny_npz)))

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    assert len(load_corpus(resolve_source(str(tiny_npz))).train) == 60
