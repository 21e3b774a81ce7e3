"""The console script end to end: index build / info / search, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys


def cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "searchagent", *map(str, args)],
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr)
    return result


def test_build_info_search(tmp_path, small_corpus):
    out = tmp_path / "idx"
    built = cli("index", "build", small_corpus, "--out", out, "--bm25")
    assert "400 passages" in built.stdout
    info = cli("index", "info", out)
    assert "passages:   400" in info.stdout and "full check ok" in info.stdout
    found = cli("search", out, "Tinted Windows band first performance", "-k", "3",
                "--mode", "bm25", "--json")
    hits = [json.loads(line) for line in found.stdout.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert "Tinted Windows" in hits[0]["title"]
    default = cli("search", out, "Tinted Windows band first performance", "-k", "3", "--json")
    assert [json.loads(line) for line in default.stdout.splitlines()] == hits   # hybrid of one
    for query, why in (("the of and ?!", "only stopwords, punctuation"),
                       ("zyxwvut quux", "no passage contains any of the query's words")):
        nothing = cli("search", out, query, "--mode", "bm25")      # a bare "(0 hits...)"
        assert nothing.stdout.startswith("(0 hits") and why in nothing.stdout
    config = tmp_path / "c.toml"
    config.write_text('[retrieval]\nmode = "dense"\n')       # refused: a BM25-only index
    late = cli("search", out, "Tinted Windows", "--config", config, check=False)  # after the
    assert late.returncode == 2 and "without dense" in late.stderr   # subcommand, too


def test_errors_exit_nonzero_with_a_located_message(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "ok"}\n{"id": "b", "text": }\n')
    result = cli("index", "build", bad, "--out", tmp_path / "idx", "--bm25", check=False)
    assert result.returncode == 2
    assert f"{bad}, line 2: malformed JSON" in result.stderr
    assert not (tmp_path / "idx").exists()
    result = cli("search", tmp_path / "missing", "q", check=False)
    assert result.returncode == 2 and "index folder not found" in result.stderr
    for target, flags, expected in ((tmp_path / "none.jsonl", [], "cannot open"),
                                    (bad, ["--dense", str(tmp_path / "no-model")],
                                     "embedding model folder not found"),
                                    (bad, ["--dense", str(tmp_path)],     # no model in it
                                     "not a model folder (no config.json)")):
        result = cli("index", "build", target, "--out", tmp_path / "idx", *flags, check=False)
        assert result.returncode == 2 and expected in result.stderr, result.stderr
        assert "reading corpus" not in result.stderr          # refused before any work
        assert not (tmp_path / "idx").exists()


def test_a_build_replaces_only_an_index_and_never_its_own_corpus(tmp_path):
    """``--overwrite`` replaced whatever ``--out`` named: the current folder for ``""``,
    a folder of user files, the corpus's own folder. ``demo --index-dir`` did the same."""
    corpus = tmp_path / "docs" / "corpus.jsonl"
    corpus.parent.mkdir()
    corpus.write_text('{"id": "a", "title": "T", "text": "one passage"}\n')
    (tmp_path / "docs" / "notes.txt").write_text("precious")
    for out, message in (("", "the output folder is empty"),
                         (corpus.parent, "the corpus is inside the output folder"),
                         (tmp_path, "the corpus is inside the output folder")):
        result = cli("index", "build", corpus, "--out", out, "--bm25", "--overwrite",
                     check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    result = cli("index", "build", corpus, "--out", mine, "--bm25", "--overwrite", check=False)
    assert result.returncode == 2 and "not an index folder" in result.stderr
    result = cli("demo", "--index-dir", mine, "-n", "1", "--strategies", "", check=False)
    assert result.returncode == 2 and "remove it or pick another folder" in result.stderr
    assert (mine / "notes.txt").read_text() == "precious"
    assert (tmp_path / "docs" / "notes.txt").read_text() == "precious"
    cli("index", "build", corpus, "--out", tmp_path / "idx", "--bm25")
    cli("index", "build", corpus, "--out", tmp_path / "idx", "--bm25", "--overwrite")
    assert (tmp_path / "idx" / "manifest.json").is_file()


def test_flags_a_build_or_demo_would_ignore_are_refused_up_front(tmp_path, small_corpus):
    """``--chunk-overlap`` without ``--chunk-words``, dense flags on a BM25-only build and
    ``demo -n 0`` all used to run (or build the sample index) and exit 0."""
    out = tmp_path / "idx"
    config = tmp_path / "c.toml"
    config.write_text("[index]\nchunk_overlap = 5\n")
    for flags, expected in ((["--bm25", "--chunk-overlap", "3"],
                             "--chunk-overlap 3 needs --chunk-words N"),
                            (["--bm25", "--faiss", "HNSW32"], "--faiss applies to the dense"),
                            (["--bm25", "--index", "spann"], "--index applies to the dense"),
                            (["--index", "spann", "--faiss", "HNSW32"],
                             "--faiss HNSW32 applies to a FAISS vector index, which --index "
                             "spann replaces"),
                            (["--bm25", "--config", config],
                             "field 'index.chunk_overlap': has no effect without")):
        result = cli("index", "build", small_corpus, "--out", out, *flags, check=False)
        assert result.returncode == 2 and expected in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1 and not out.exists()   # before any work
    for n in ("0", "-1"):
        result = cli("demo", "-n", n, "--index-dir", out, "--strategies", "", check=False)
        assert result.returncode == 2 and f"-n/--questions must be >= 1, got {n}" in result.stderr
        assert not out.exists()
    result = cli("demo", "-k", "0", "--index-dir", out, "--strategies", "", check=False)
    assert result.returncode == 2 and "'retrieval.k': must be >= 1" in result.stderr
    for flags in (["--num-gpus", "1"], ["--num-cpus", "2"], ["--ray-address", "auto"]):
        result = cli("index", "build", small_corpus, "--out", out, "--bm25", *flags,
                     check=False)
        assert result.returncode == 2 and f"{flags[0]} applies to a Ray build only" \
            in result.stderr and not out.exists(), result.stderr


def test_index_flags_beat_the_config_file_and_its_components_count_without_flags(tmp_path):
    """``--index faiss`` with ``index.faiss = "spann"`` in the config file built SPANN: the
    flag was dropped, though flags override the file."""
    corpus = tmp_path / "tiny.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"p{i}", "title": f"T{i}", "text": f"text {i}"})
                              + "\n" for i in range(5)))
    config = tmp_path / "c.toml"
    config.write_text('[index]\nfaiss = "spann"\n')
    out = tmp_path / "idx"
    cli("index", "build", corpus, "--out", out, "--index", "faiss", "--config", config)
    index = json.loads((out / "manifest.json").read_text())["components"]["dense"]["index"]
    assert (index["kind"], index.get("factory")) == ("faiss", "Flat"), index
    config.write_text("[index]\ndense = false\n")     # no --bm25 / --dense flag: the file
    cli("index", "build", corpus, "--out", out, "--overwrite", "--config", config)  # decides
    assert list(json.loads((out / "manifest.json").read_text())["components"]) == ["bm25"]


def test_recover_says_what_it_found_and_fails_on_a_damaged_committed_index(tmp_path,
                                                                          small_corpus):
    """``index recover`` printed ``recovered: null`` and exited 0 on a committed index with a
    corrupted file, which it cannot repair."""
    out = tmp_path / "idx"
    cli("index", "build", small_corpus, "--out", out, "--bm25")
    result = cli("index", "recover", out)
    assert json.loads(result.stdout)["intact"] is True
    assert "nothing to recover (no unfinished update); committed generation 0 is intact " \
        "(full check)" in result.stderr
    (out / "journal.json").write_text('{"generation": 1')             # an update that died
    result = cli("index", "recover", out)
    assert "rolled back an unfinished update to committed generation 0" in result.stderr
    params = out / "bm25" / "params.json"
    params.write_text(params.read_text().replace("1", "2", 1))     # same size, other bytes
    result = cli("index", "recover", out, check=False)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "nothing to recover (no unfinished update), but committed generation 0 is " \
        f"damaged: index file {params} fails its sha256 check" in result.stderr
    assert result.stdout == ""


def test_a_faiss_factory_too_big_for_the_corpus_is_refused_before_embedding(tmp_path):
    """``--faiss IVF256,Flat`` on 5 passages embedded them all, then died in faiss with a
    traceback (faiss needs at least nlist training vectors, 2**nbits for a PQ)."""
    corpus = tmp_path / "tiny.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"p{i}", "title": f"T{i}", "text": f"text {i}"})
                              + "\n" for i in range(5)))
    for factory, part in (("IVF256,Flat", "IVF nlist 256 needs at least 256"),
                          ("IVF4,PQ16", "PQ16 (256 centroids per codebook) needs at least 256")):
        result = cli("index", "build", corpus, "--out", tmp_path / "idx", "--faiss", factory,
                     check=False)
        assert result.returncode == 2 and "embedding" not in result.stderr, result.stderr
        assert f"--faiss {factory}: {part} passages to train on, the corpus has 5 passages" \
            in result.stderr.splitlines()[-1] and not (tmp_path / "idx").exists()
    for factory in ("IVF4,Flatx", "PQ7"):          # a typo; 7 does not divide 384
        result = cli("index", "build", corpus, "--out", tmp_path / "idx", "--faiss", factory,
                     check=False)
        assert result.returncode == 2 and "embedding" not in result.stderr, result.stderr
        assert f"--faiss {factory}: faiss cannot make this index for 384-d vectors (" \
            in result.stderr.splitlines()[-1] and not (tmp_path / "idx").exists()
    import numpy as np
    import pytest

    from index.faiss_index import build_faiss, check_trainable
    from searchagent.errors import InputError, SearchAgentError

    check_trainable("IVF4,PQ2x2", 5)                       # 4 centroids each: trainable
    with pytest.raises(InputError, match="IVF nlist 300000 .* a sample of 200000"):
        check_trainable("IVF300000,Flat", 10**6)             # build_faiss trains on a sample
    with pytest.raises(SearchAgentError, match="faiss could not train 'IVF4,RQ2x4' on 5"):
        build_faiss(np.random.default_rng(0).random((5, 8), dtype=np.float32), "IVF4,RQ2x4")
