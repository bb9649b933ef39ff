"""The document encoder: item metadata tables, item texts, encoding with its cache and hash check, embedding
files, vocabulary alignment and the embed command. The real MiniLM is loaded in one test; the rest use a tiny
randomly initialised sentence-transformers model built once per session."""

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from circuits import embed
from circuits.cli import run_cli
from circuits.data.readers import LogSpec, item_table, read_item_table
from circuits.errors import UserError
from circuits.text import (
    ItemEmbeddings,
    align,
    embeddings_for,
    encode_items,
    item_texts,
    read_embeddings,
    resolve_model,
    write_embeddings,
)
from circuits.text import encoder as enc

WORDS = "toy story jumanji heat the a of and cat dog sat on mat film about space war love drama comedy".split()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A sentence-transformers folder: 1-layer BERT (hidden 16) over a 100-token vocabulary, mean pooling, no
    Normalize module (so normalisation is visible), saved as SentenceTransformer.save writes it."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny-st")
    hf = root / "hf"
    hf.mkdir()
    letters = list("abcdefghijklmnopqrstuvwxyz")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *("##" + c for c in letters), *".,!?'"]
    (hf / "vocab.txt").write_text("\n".join(vocab) + "\n")
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    with torch.random.fork_rng():  # the random weights must not disturb other tests' global RNG
        torch.manual_seed(0)
        BertModel(cfg).save_pretrained(hf)
    BertTokenizerFast(vocab_file=str(hf / "vocab.txt")).save_pretrained(hf)
    st = root / "st"
    SentenceTransformer(modules=[Transformer(str(hf), max_seq_length=64), Pooling(16, "mean")], device="cpu").save(
        str(st))
    return st


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh embedding cache for this test; returns its folder."""
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "embeddings"


@pytest.fixture
def count_loads(monkeypatch):
    """Counts model loads; `fail()` makes every further load raise."""
    real = enc.load_model
    state = {"n": 0, "fail": False}

    def load(folder, progress=True):
        if state["fail"]:
            raise AssertionError("the model was loaded")
        state["n"] += 1
        return real(folder, progress)

    monkeypatch.setattr(enc, "load_model", load)
    state["fail_now"] = lambda: state.update(fail=True)
    return state


def items_tsv(path, rows=None):
    rows = rows or [("d1", "Toy Story", "Animation|Comedy"), ("d2", "Heat", "Action"), ("d3", "Jumanji", "")]
    path.write_text("item_id\ttitle\tgenres\n" + "".join(f"{i}\t{t}\t{g}\n" for i, t, g in rows))
    return path


def emb(ids=("a", "b", "c"), d=4, seed=0, meta=None):
    rng = np.random.default_rng(seed)
    return ItemEmbeddings(np.array(ids), rng.normal(size=(len(ids), d)).astype(np.float32), meta or {"model": "x"})


# --- item metadata tables -----------------------------------------------------------------------------------

def test_read_item_table_keeps_every_column_with_string_ids(tmp_path):
    p = tmp_path / "docs.jsonl"
    p.write_text('{"doc_id": 7, "name": "A", "text": "Body.", "year": 1999}\n'
                 '{"doc_id": 12, "name": "B", "text": null, "year": 2001}\n')
    t = read_item_table(p)
    assert list(t.columns) == ["item_id", "name", "text", "year"] and t["item_id"].tolist() == ["7", "12"]
    with pytest.raises(UserError, match=r"no column 'nope' for id"):
        read_item_table(p, id_col="nope")
    (tmp_path / "dup.csv").write_text("item_id,title\n1,A\n1,B\n2,C\n")
    with pytest.raises(UserError, match="1 duplicate item ids \\(e.g. 1\\)"):
        read_item_table(tmp_path / "dup.csv")
    (tmp_path / "noid.csv").write_text("what,title\n1,A\n")
    with pytest.raises(UserError, match="no id column .*--id-col"):
        read_item_table(tmp_path / "noid.csv")


def write_sasrec_like(root):
    """A tiny copy of the SASRec ML-1M layout: movies.dat with original ids, years and genres (latin-1); the
    kept movies renumbered from 100 in MovieID order with year-stripped titles read as UTF-8 with
    replacement; two films of one title, only the later one kept; one film dropped."""
    movies = [
        (1, "Toy Story (1995)", "Animation|Children's|Comedy"),
        (2, "Misérables, Les (1995)", "Drama|Musical"),
        (5, "Hamlet (1948)", "Drama"),  # dropped by the 5-core filter
        (9, "Dropped Film (1990)", "Horror"),  # dropped
        (11, "Hamlet (1996)", "Crime|Drama|Romance"),  # kept: the later Hamlet
        (20, "Heat (1995)", "Action|Crime|Thriller"),
    ]
    lines = "".join(f"{i}::{t}::{g}\n" for i, t, g in movies)
    (root / "movies.dat").write_bytes(lines.encode("latin-1"))
    (root / "derived").mkdir()
    kept = ["Toy Story", "Mis\ufffdrables, Les", "Hamlet", "Heat"]
    items = [{"item_id": 100 + k, "title": t} for k, t in enumerate(kept)]
    with gzip.open(root / "derived" / "items.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in items))
    with gzip.open(root / "derived" / "interactions.tsv.gz", "wt") as f:
        f.write("user_id\titem_id\ttimestamp\n100\t100\t1\n100\t101\t2\n")
    return root


def test_sasrec_ml1m_copy_gets_genres_by_an_in_order_title_match(tmp_path):
    root = write_sasrec_like(tmp_path)
    for source in (root, root / "derived" / "interactions.tsv.gz"):
        t = item_table(LogSpec(str(source))).set_index("item_id")
        assert t.loc["100", "genres"] == "Animation, Children's, Comedy"
        assert t.loc["101", "genres"] == "Drama, Musical"  # matched through the U+FFFD title
        # "Hamlet" could be 1948 or 1996 by title alone: it is the earliest after Misérables, i.e. 1948 (Drama).
        # The real copy has no such case where the genres differ; this pins the documented greedy rule.
        assert t.loc["102", "genres"] == "Drama"
        assert t.loc["103", "genres"] == "Action, Crime, Thriller"
        assert t.loc["103", "title"] == "Heat"  # titles stay the copy's (the log's titles)
    # a title missing from movies.dat (ids not ranks of MovieIDs): an error, not silently shifted genres
    with gzip.open(root / "derived" / "items.jsonl.gz", "at") as f:
        f.write(json.dumps({"item_id": 104, "title": "Not A Movie"}) + "\n")
    with pytest.raises(UserError, match="no movie titled 'Not A Movie' \\(item 104\\)"):
        item_table(LogSpec(str(root)))


def test_movielens_folders_give_titles_and_genres(tmp_path):
    ml1m = tmp_path / "ml-1m"
    ml1m.mkdir()
    (ml1m / "ratings.dat").write_text("1::1::5::10\n")
    (ml1m / "movies.dat").write_bytes("1::Toy Story (1995)::Animation|Comedy\n2::Café (2001)::Drama\n"
                                      .encode("latin-1"))
    t = item_table(LogSpec(str(ml1m)))
    assert t.values.tolist() == [["1", "Toy Story (1995)", "Animation, Comedy"], ["2", "Café (2001)", "Drama"]]

    latest = tmp_path / "ml-latest"
    latest.mkdir()
    (latest / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,5,10\n")
    (latest / "movies.csv").write_text('movieId,title,genres\n1,"Toy Story (1995)",Animation|Comedy\n'
                                       "2,Nothing (2000),(no genres listed)\n")
    assert item_table(LogSpec(str(latest)))["genres"].tolist() == ["Animation, Comedy", ""]

    ml100k = tmp_path / "ml-100k"
    ml100k.mkdir()
    (ml100k / "u.data").write_text("1\t1\t5\t10\n")
    names = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
             "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
             "War", "Western"]
    (ml100k / "u.genre").write_text("".join(f"{n}|{k}\n" for k, n in enumerate(names)) + "\n")

    def flags(*on):
        return "|".join("1" if n in on else "0" for n in names)

    toy = flags("Animation", "Children's", "Comedy")
    (ml100k / "u.item").write_bytes(
        (f"1|Toy Story (1995)|01-Jan-1995||http://x|{toy}\n"
         f"2|Unknown Film|||http://y|{flags('unknown')}\n"
         f"3|Western Noir (1950)|01-Jan-1950||http://z|{flags('Film-Noir', 'Western')}\n").encode("latin-1"))
    t = item_table(LogSpec(str(ml100k)))
    assert t["genres"].tolist() == ["Animation, Children's, Comedy", "", "Film-Noir, Western"]
    assert t["title"].tolist()[0] == "Toy Story (1995)" and "imdb_url" in t.columns


def test_a_log_folder_gives_its_items_file_and_the_title_column_is_called_title(tmp_path):
    (tmp_path / "interactions.tsv").write_text("user_id\titem_id\ttimestamp\nu\td1\t1\n")
    (tmp_path / "items.tsv").write_text("item_id\tname\ttopic\ttext\nd1\tChess\tGames\tHow to play.\n")
    t = item_table(LogSpec(str(tmp_path)))
    assert list(t.columns) == ["item_id", "title", "topic", "text"]  # `name` is where read_log finds titles
    t = item_table(LogSpec(str(tmp_path), title_col="topic"))
    assert t["title"].tolist() == ["Games"]
    (tmp_path / "items.tsv").unlink()
    with pytest.raises(UserError, match="no item metadata"):
        item_table(LogSpec(str(tmp_path)))


# --- texts --------------------------------------------------------------------------------------------------

def test_item_texts_join_columns_readably():
    table = pd.DataFrame({"item_id": [1, 2, 3, 4], "title": ["Toy Story", "Who?", "", "Heat"],
                          "genres": ["Animation, Children's, Comedy", "Drama", "Comedy", None],
                          "topic": ["x", "y", "z", "w"], "text": ["", "A film.", "Only text", float("nan")]})
    ids, texts = item_texts(table)
    assert ids.tolist() == ["1", "2", "3", "4"]
    assert texts == ["Toy Story. Animation, Children's, Comedy", "Who? Drama. A film.", "Comedy. Only text", "Heat"]
    assert item_texts(table, ["topic", "title"])[1] == ["x. Toy Story", "y. Who?", "z", "w. Heat"]
    lists = pd.DataFrame({"item_id": ["a"], "name": ["T"], "genres": [["A", "B"]], "year": [1995.0]})
    assert item_texts(lists, ["name", "genres", "year"])[1] == ["T. A, B. 1995"]
    assert item_texts(lists)[1] == ["T. A, B"]  # `name` is a title column
    with pytest.raises(UserError, match=r"no column 'nope' for the item text \(columns: item_id, title, genres"):
        item_texts(table, ["title", "nope"])
    with pytest.raises(UserError, match="no text columns .*--text-cols"):
        item_texts(table[["item_id", "topic"]])


# --- embedding files and alignment --------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".parquet", ".npy", ".npz"])
def test_embedding_files_round_trip(suffix, tmp_path):
    e = emb(ids=("d1", "élan vital", "3"), meta={"model": "m", "model_sha256": "ab", "dim": 4})
    path = write_embeddings(e, tmp_path / f"e{suffix}")
    back = read_embeddings(path)
    assert back.ids.tolist() == ["d1", "élan vital", "3"] and back.vectors.dtype == np.float32
    np.testing.assert_array_equal(back.vectors, e.vectors)
    assert back.meta["model"] == "m" and back.meta["model_sha256"] == "ab" and back.meta["count"] == 3
    expected = {".parquet": ["e.parquet"], ".npy": ["e.ids.txt", "e.meta.json", "e.npy"], ".npz": ["e.npz"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == expected[suffix]  # no temp files left
    if suffix == ".npy":
        assert (tmp_path / "e.ids.txt").read_text() == "d1\nélan vital\n3\n"


def test_files_written_elsewhere_are_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"doc_id": [5, 6], "vector": [[1.0, 2.0], [3.0, 4.0]]}), tmp_path / "f.parquet")
    e = read_embeddings(tmp_path / "f.parquet")  # float64 lists, integer ids, another column name
    assert e.ids.tolist() == ["5", "6"] and e.vectors.dtype == np.float32 and e.vectors.tolist()[1] == [3, 4]
    np.save(tmp_path / "g.npy", np.eye(2))
    (tmp_path / "g.ids.txt").write_text("x\r\ny\r\n")  # Windows line ends
    assert read_embeddings(tmp_path / "g.npy").ids.tolist() == ["x", "y"]
    np.savez(tmp_path / "h.npz", ids=np.array([1, 2]), vectors=np.ones((2, 3), np.int64))
    assert read_embeddings(tmp_path / "h.npz").meta == {"file": str(tmp_path / "h.npz"), "dim": 3, "count": 2}


def bad_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"item_id": ["a", "b"], "embedding": [[1.0, 2.0], [1.0]]}), tmp_path / "ragged.parquet")
    pq.write_table(pa.table({"item_id": ["a"], "embedding": [["x", "y"]]}), tmp_path / "strings.parquet")
    pq.write_table(pa.table({"item_id": ["a"], "emb": [[1.0]]}), tmp_path / "nocol.parquet")
    np.save(tmp_path / "count.npy", np.ones((3, 2)))
    (tmp_path / "count.ids.txt").write_text("a\nb\n")
    np.save(tmp_path / "noids.npy", np.ones((3, 2)))
    np.save(tmp_path / "object.npy", np.array([[1.0], "x"], dtype=object), allow_pickle=True)
    (tmp_path / "object.ids.txt").write_text("a\nb\n")
    np.savez(tmp_path / "dup.npz", ids=np.array(["a", "b", "a"]), vectors=np.ones((3, 2)))
    np.savez(tmp_path / "nan.npz", ids=np.array(["a", "b"]), vectors=np.array([[1.0, np.nan], [0, 0]]))
    np.savez(tmp_path / "inf.npz", ids=np.array(["a", "b"]), vectors=np.array([[1.0, 0], [1e300, 0]]))
    np.savez(tmp_path / "flat.npz", ids=np.array(["a", "b"]), vectors=np.ones(2))
    np.savez(tmp_path / "noarrays.npz", x=np.ones(2))
    (tmp_path / "junk.parquet").write_text("not parquet")
    return {
        "ragged.parquet": "ragged vectors: item a has 2 values, item b 1",
        "strings.parquet": "holds string, not numbers",
        "nocol.parquet": "needs an item_id and an embedding column",
        "count.npy": "2 item ids but 3 vectors",
        "noids.npy": "its ids file noids.ids.txt is missing",
        "object.npy": "cannot read",
        "dup.npz": "1 duplicate item ids \\(e.g. a\\)",
        "nan.npz": "1 vectors hold NaN or infinite values \\(e.g. item a\\)",
        "inf.npz": "NaN or infinite values \\(e.g. item b\\)",  # beyond float32's range
        "flat.npz": "must be a 2-D array",
        "noarrays.npz": "needs arrays 'ids' and 'vectors' \\(found: x\\)",
        "junk.parquet": "cannot read",
        "none.npz": "embedding file not found",
        "e.csv": "unknown embedding file type",
    }


def test_bad_embedding_files_are_one_line_errors(tmp_path):
    for name, message in bad_files(tmp_path).items():
        with pytest.raises(UserError, match=message) as e:
            read_embeddings(tmp_path / name)
        assert "\n" not in str(e.value), name


def test_align_orders_rows_by_the_vocabulary_with_a_zero_padding_row():
    e = emb(ids=("a", "b", "c"))
    out = align(e, ["<pad>", "c", "a"])
    assert out.shape == (3, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], 0)
    np.testing.assert_array_equal(out[1:], e.vectors[[2, 0]])
    many = emb(ids=[f"i{k}" for k in range(3400)], d=2)
    vocab = ["<pad>"] + [f"i{k}" for k in range(3416)]
    with pytest.raises(UserError, match=r"^the items of X: the embeddings cover 3,400 of 3,416 items; missing "
                                        r"e.g. i3400, i3401, i3402$"):
        align(many, vocab, what="the items of X")
    with pytest.raises(UserError, match="the embeddings have 4 dimensions, the run's model reads 384"):
        align(e, ["<pad>", "a"], dim=384)
    with pytest.raises(ValueError, match="padding id"):
        align(e, ["a", "b"])


# --- models and the cache -----------------------------------------------------------------------------------

def test_encoding_is_cached_and_a_hit_never_loads_the_model(tiny_model, cache, count_loads):
    texts = ["toy story", "the cat sat on the mat", "heat"]
    first = encode_items(["a", "b", "c"], texts, model=tiny_model, progress=False)
    assert first.vectors.shape == (3, 16) and not first.cached and count_loads["n"] == 1
    np.testing.assert_allclose(np.linalg.norm(first.vectors, axis=1), 1, atol=1e-5)
    assert first.meta["model_sha256"] == enc._sha256(tiny_model / "model.safetensors")
    assert first.meta["unit_norm"] and first.meta["dim"] == 16 and first.meta["count"] == 3
    assert [p.suffix for p in cache.iterdir()] == [".npy"]  # one entry, no temp file left

    count_loads["fail_now"]()
    again = encode_items(["x", "y", "z"], texts, model=tiny_model, progress=False)  # other ids, same texts
    assert again.cached and again.ids.tolist() == ["x", "y", "z"]
    np.testing.assert_array_equal(again.vectors, first.vectors)


def test_other_texts_normalisation_or_model_are_other_cache_entries(tiny_model, cache, count_loads, tmp_path):
    texts = ["toy story", "heat"]
    a = encode_items(["a", "b"], texts, model=tiny_model, progress=False)
    b = encode_items(["a", "b"], ["toy story", "heat "], model=tiny_model, progress=False)
    c = encode_items(["a", "b"], texts, model=tiny_model, progress=False, normalize=False)
    assert count_loads["n"] == 3 and not (a.cached or b.cached or c.cached)
    assert not c.meta["unit_norm"]  # the tiny model's pipeline has no Normalize module
    swapped = encode_items(["b", "a"], texts[::-1], model=tiny_model, progress=False)  # the same texts, reordered
    assert not swapped.cached and count_loads["n"] == 4
    np.testing.assert_allclose(swapped.vectors, a.vectors[::-1], atol=1e-6)
    np.testing.assert_allclose(c.vectors / np.linalg.norm(c.vectors, axis=1, keepdims=True), a.vectors, atol=1e-5)
    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    tok = json.loads((other / "tokenizer_config.json").read_text())
    (other / "tokenizer_config.json").write_text(json.dumps({**tok, "model_max_length": 63}))  # not the weights
    d = encode_items(["a", "b"], texts, model=other, progress=False)
    assert count_loads["n"] == 5 and not d.cached and d.meta["model_sha256"] == a.meta["model_sha256"]
    retrained = tmp_path / "retrained"
    shutil.copytree(tiny_model, retrained)
    with open(retrained / "model.safetensors", "r+b") as f:  # one weight changed (the last bytes are data)
        f.seek(-2, 2)
        byte = f.read(1)
        f.seek(-2, 2)
        f.write(bytes([byte[0] ^ 1]))
    r = encode_items(["a", "b"], texts, model=retrained, progress=False)
    assert count_loads["n"] == 6 and not r.cached and r.meta["model_sha256"] != a.meta["model_sha256"]
    assert len(list(cache.iterdir())) == 6


def test_bad_ids_fail_before_the_model_loads(cache, count_loads, tiny_model):
    count_loads["fail_now"]()
    with pytest.raises(UserError, match="1 duplicate item ids \\(e.g. a\\)"):
        encode_items(["a", "a"], ["x", "y"], model=tiny_model)
    with pytest.raises(UserError, match="2 item ids but 1 texts"):
        encode_items(["a", "b"], ["x"], model=tiny_model)


def test_a_damaged_cache_entry_is_recomputed(tiny_model, cache, count_loads):
    a = encode_items(["a"], ["heat"], model=tiny_model, progress=False)
    (entry,) = cache.iterdir()
    entry.write_bytes(entry.read_bytes()[:40])  # truncated
    b = encode_items(["a"], ["heat"], model=tiny_model, progress=False)
    assert not b.cached and count_loads["n"] == 2
    np.testing.assert_allclose(b.vectors, a.vectors, atol=1e-6)


def test_the_packaged_minilm_is_hash_checked_before_loading(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(enc, "load_model", lambda *a, **k: pytest.fail("loaded a model that failed its check"))
    with monkeypatch.context() as m:  # a wrong pin
        m.setattr(enc, "MINILM_SHA256", "0" * 64)
        with pytest.raises(UserError, match=r"sha256 53aa51172d142c89… is not the pinned 0000000000000000… of "
                                            r"all-MiniLM-L6-v2"):
            encode_items(["a"], ["heat"])
    copy = tmp_path / "minilm"  # the right pin, one flipped bit in the middle of the weights
    shutil.copytree(enc._packaged_minilm(), copy)
    with open(copy / "model.safetensors", "r+b") as f:
        f.seek(50_000_000)
        byte = f.read(1)
        f.seek(50_000_000)
        f.write(bytes([byte[0] ^ 1]))
    monkeypatch.setattr(enc, "_packaged_minilm", lambda: copy)
    with pytest.raises(UserError, match="is not the pinned 53aa51172d142c89") as e:
        embeddings_for("minilm", pd.DataFrame({"item_id": ["a"], "title": ["Heat"]}))
    assert "\n" not in str(e.value) and not cache.exists()


def test_folders_that_are_not_sentence_transformers_models(tmp_path, tiny_model):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty is not a sentence-transformers model folder: no modules.json"):
        resolve_model(tmp_path / "empty")
    noweights = tmp_path / "noweights"
    shutil.copytree(tiny_model, noweights)
    (noweights / "model.safetensors").unlink()
    with pytest.raises(UserError, match="is not a sentence-transformers model folder: no weights"):
        resolve_model(noweights)
    table = pd.DataFrame({"item_id": ["a"], "title": ["Heat"]})
    with pytest.raises(UserError, match="empty is not a sentence-transformers model folder"):
        embeddings_for(str(tmp_path / "empty"), table)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="neither an embedding file .* nor a sentence-transformers model folder"):
        embeddings_for(str(tmp_path / "notes.txt"), table)
    with pytest.raises(UserError, match="text embeddings not found: .*nowhere \\(give 'minilm'"):
        embeddings_for(str(tmp_path / "nowhere"), table)
    with pytest.raises(UserError, match="needs their metadata"):
        embeddings_for(str(tiny_model), None)


def test_embeddings_for_tells_model_folders_from_files(tiny_model, cache, tmp_path):
    table = pd.DataFrame({"item_id": ["a", "b"], "title": ["Toy Story", "Heat"], "genres": ["Comedy", "Drama"]})
    encoded = embeddings_for(str(tiny_model), table, progress=False)
    assert encoded.meta["columns"] == ["title", "genres"] and encoded.meta["model"] == str(tiny_model)
    path = write_embeddings(encoded, tmp_path / "e.npz")
    read = embeddings_for(str(path), None)
    np.testing.assert_array_equal(read.vectors, encoded.vectors)
    assert read.meta["model_sha256"] == encoded.meta["model_sha256"]
    with pytest.raises(UserError, match="text columns are for encoding"):
        embeddings_for(str(path), None, columns=["title"])


def test_the_real_minilm_offline(cache, count_loads, monkeypatch):
    """all-MiniLM-L6-v2 from its package, with every network connection refused."""
    def no_network(*args, **kwargs):
        raise AssertionError("network access")

    import huggingface_hub.constants
    import sentence_transformers

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    offline_before = huggingface_hub.constants.HF_HUB_OFFLINE
    seen = []

    class Recording(sentence_transformers.SentenceTransformer):
        def __init__(self, *args, **kwargs):
            seen.append((os.environ.get("HF_HUB_OFFLINE"), huggingface_hub.constants.HF_HUB_OFFLINE, kwargs))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", Recording)
    texts = ["A cat is sitting on the mat.", "A kitten rests on a rug.", "The stock market fell sharply today.",
             "Toy Story. Animation, Children's, Comedy", "Heat. Action, Crime, Thriller"]
    e = encode_items(list("abcde"), texts, progress=False)
    assert e.vectors.shape == (5, 384) and e.meta["model"] == "minilm" and e.meta["model_sha256"] == enc.MINILM_SHA256
    np.testing.assert_allclose(np.linalg.norm(e.vectors, axis=1), 1, atol=1e-5)
    cos = e.vectors @ e.vectors.T
    assert cos[0, 1] > cos[0, 2] + 0.3  # a paraphrase is much closer than an unrelated sentence
    raw = encode_items(list("abcde"), texts, progress=False, normalize=False)  # the pipeline normalises itself
    np.testing.assert_allclose(np.linalg.norm(raw.vectors, axis=1), 1, atol=1e-5)
    assert [(env, const, kw["device"]) for env, const, kw in seen] == [("1", True, "cpu")] * 2  # offline, on CPU
    assert "HF_HUB_OFFLINE" not in os.environ and huggingface_hub.constants.HF_HUB_OFFLINE == offline_before
    count_loads["fail_now"]()
    assert encode_items(list("abcde"), texts, progress=False).cached


def test_without_sentence_transformers_everything_imports_and_encoding_says_what_to_install():
    code = ("import sys; sys.modules['sentence_transformers'] = None\n"
            "import circuits.text, circuits.embed\n"
            "from circuits.errors import UserError\n"
            "from circuits.text.encoder import load_model\n"
            "try:\n    load_model(None)\nexcept UserError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "sentence-transformers is not installed: pip install -e '.[text]'", proc.stderr


# --- the command --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".parquet", ".npy", ".npz"])
def test_the_command_writes_every_format(suffix, tiny_model, cache, tmp_path, capsys):
    items = items_tsv(tmp_path / "items.tsv")
    out = tmp_path / "out" / f"emb{suffix}"
    assert embed.main([str(items), "--out", str(out), "--model", str(tiny_model), "--quiet"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {out}: 3 items × 16 dimensions in ") and "(encoded; model" in line
    e = read_embeddings(out)
    assert e.ids.tolist() == ["d1", "d2", "d3"] and e.meta["columns"] == ["title", "genres"]
    embed.main([str(items), "--out", str(out), "--model", str(tiny_model), "--quiet"])
    assert "(from the cache; model" in capsys.readouterr().out


def test_the_command_reads_data_folders_and_text_columns(tiny_model, cache, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    root = write_sasrec_like(tmp_path / "data")
    out = tmp_path / "e"  # no suffix: Parquet
    embed.main([str(root), "--out", str(out), "--model", str(tiny_model), "--text-cols", "genres", "title",
                "--quiet"])
    e = read_embeddings(tmp_path / "e.parquet")
    assert e.ids.tolist() == ["100", "101", "102", "103"] and e.meta["columns"] == ["genres", "title"]
    direct = encode_items(e.ids, ["Animation, Children's, Comedy. Toy Story", "Drama, Musical. Mis\ufffdrables, Les",
                                  "Drama. Hamlet", "Action, Crime, Thriller. Heat"], model=tiny_model, progress=False)
    assert direct.cached  # the command encoded exactly these texts
    embed.main([str(root / "derived" / "interactions.tsv.gz"), "--out", str(tmp_path / "f.npz"), "--model",
                str(tiny_model), "--quiet"])  # the log file stands for its data source
    assert read_embeddings(tmp_path / "f.npz").meta["columns"] == ["title", "genres"]


def test_the_command_writes_nothing_on_bad_input(tiny_model, cache, count_loads, tmp_path, monkeypatch):
    """Bad input fails before the model is loaded, and nothing is written."""
    items = items_tsv(tmp_path / "items.tsv")
    out = tmp_path / "out.parquet"
    model = ["--model", str(tiny_model), "--quiet"]
    cases = [([str(items), "--out", str(out), "--text-cols", "nope", *model], "no column 'nope'"),
             ([str(items), "--out", str(tmp_path / "x.csv"), *model], "unknown embedding file type '.csv'"),
             ([str(tmp_path / "none.tsv"), "--out", str(out), *model], "not found"),
             ([str(items), "--out", str(out), "--model", str(tmp_path)], "not a sentence-transformers model folder"),
             ([str(items), "--out", str(out), "--id-col", "doc", *model], "no column 'doc' for id"),
             ([str(items), "--out", str(out), "--batch-size", "0", *model], "--batch-size must be positive")]
    count_loads["fail_now"]()
    for argv, message in cases:
        with pytest.raises(UserError, match=message):
            embed.main(argv)
    assert {p.name for p in tmp_path.iterdir()} - {"cache"} == {"items.tsv"}
    count_loads["fail"] = False

    import pyarrow.parquet as pq

    def broken(table, where, **kw):
        open(where, "wb").write(b"PAR1 half")
        raise OSError("disk full")

    embed.main([str(items), "--out", str(out), *model])
    before = out.read_bytes()
    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        embed.main([str(items), "--out", str(out), *model])
    assert out.read_bytes() == before  # the old file intact, no temp file left
    assert {p.name for p in tmp_path.iterdir()} == {"cache", "items.tsv", "out.parquet"}


def test_the_command_from_the_shell_is_one_error_line(tmp_path, capsys):
    items = items_tsv(tmp_path / "items.tsv")
    with pytest.raises(SystemExit) as e:
        run_cli(embed.main, [str(items), "--out", str(tmp_path / "e.parquet"), "--text-cols", "title", "plot"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and "'plot'" in err[0]
    proc = subprocess.run([sys.executable, "-m", "circuits.embed", str(items), "--out", str(tmp_path / "e.npz"),
                           "--model", str(tmp_path / "missing")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: text model not found: {tmp_path / 'missing'} (give "
                                                "'minilm' or a sentence-transformers model folder)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.tsv"]


def test_ids_in_object_arrays_are_strings_too(tmp_path):
    """pandas (and the project's vocabularies) hold string ids in object arrays; mixed objects are still refused."""
    ids = np.array(["a", "b", 3], dtype=object)
    e = ItemEmbeddings(ids, np.eye(3, dtype=np.float32), {})
    back = read_embeddings(write_embeddings(e, tmp_path / "o.npz"))
    assert back.ids.tolist() == ["a", "b", "3"]
    with pytest.raises(UserError, match="strings or integers"):
        write_embeddings(ItemEmbeddings(np.array(["a", None, 2.5], dtype=object), np.eye(3, dtype=np.float32), {}),
                         tmp_path / "bad.npz")
