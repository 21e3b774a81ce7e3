"""Config layering: defaults < file < environment < CLI, with typed, located errors."""

from __future__ import annotations

import json
import re

import pytest

from searchagent.config import Config, load_config
from searchagent.errors import InputError


def test_layers_override_in_order(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[retrieval]\nk = 7\nmode = "bm25"\n[index]\nfaiss = "HNSW32"\n')
    env = {"SEARCHAGENT__RETRIEVAL__K": "9", "OTHER": "x"}
    config = load_config(path, env=env, cli={"retrieval": {"mode": "dense", "k": None}})
    assert config.retrieval.k == 9            # env beats file; a None flag changes nothing
    assert config.retrieval.mode == "dense"   # CLI beats file
    assert config.index.faiss == "HNSW32"     # file beats default
    assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_errors_name_the_source_and_field(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"retrieval": {"k": "many"}}')
    with pytest.raises(InputError, match=r"c.json.*retrieval.k.*expected int"):
        load_config(path, env={})
    with pytest.raises(InputError, match="environment.*unknown config key"):
        load_config(env={"SEARCHAGENT__INDEX__NOPE": "1"})
    bad = tmp_path / "bad.toml"
    bad.write_text("[index\n")
    with pytest.raises(InputError, match="invalid config file"):
        load_config(bad, env={})


@pytest.mark.parametrize("layer, section, key, value, rule", [
    ("command line", "index", "batch_size", 0, ">= 1"),
    ("command line", "index", "chunk_words", -5, ">= 0"),
    ("command line", "server", "port", 99999, "<= 65535"),
    ("command line", "server", "sessions", 0, ">= 1"),
    ("command line", "server", "request_timeout_s", -1, "> 0"),
    ("environment", "retrieval", "k", "0", ">= 1"),
    ("environment", "agent", "max_hops", "0", ">= 1"),
    ("command line", "agent", "max_hops", 30, "<= 8"),   # its steps overflowed the prompt
    ("environment", "index", "bm25_b", "1.5", "<= 1"),
    ("environment", "generator", "retries", "16", "<= 10"),   # 9 hours of backoff
])
def test_numbers_out_of_range_are_refused_with_their_field(layer, section, key, value, rule):
    overrides = {section: {key: value}}
    with pytest.raises(InputError, match=rf"{layer}, field '{section}\.{key}': must be "
                                         rf"{rule}, got"):
        if layer == "environment":
            load_config(env={f"SEARCHAGENT__{section.upper()}__{key.upper()}": value})
        else:
            load_config(env={}, cli=overrides)
    edge = {"batch_size": 1, "chunk_words": 0, "port": 0, "sessions": 1, "k": 1,
            "max_hops": 1, "bm25_b": 1.0, "request_timeout_s": 0.01, "retries": 10}[key]
    assert getattr(getattr(load_config(env={}, cli={section: {key: edge}}), section), key) == edge


def test_choices_shapes_and_nan_are_refused_where_they_are_read(tmp_path):
    """A misspelt choice surfaced as a traceback deep in a command; a file whose top level
    or section was not a table crashed in ``updated``; NaN passed every range check."""
    bad = {"c1.json": ("[1, 2]", "c1.json: expected a table of"),
           "c2.toml": ("index = 5\n", "c2.toml, field 'index': expected a table of settings"),
           "c3.toml": ('[index]\nverify = "none"\n',
                       "field 'index.verify': must be one of full, size, got 'none'"),
           "c4.toml": ("[agent]\nlam = nan\n", "field 'agent.lam': must be a finite number"),
           "c5.toml": ('[retrieval]\nk = "5"\n', "field 'retrieval.k': expected int, got '5'"),
           # an integer too large for a float was an OverflowError traceback
           "c6.json": ('{"generator": {"timeout_s": 1' + "0" * 400 + '}}',
                       "field 'generator.timeout_s': must be a finite number, got an integer "
                       "of 401 digits")}
    for name, (text, message) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match=re.escape(message)):
            load_config(tmp_path / name, env={})
    with pytest.raises(InputError, match=r"environment.*agent.hop_query.*must be one of"):
        load_config(env={"SEARCHAGENT__AGENT__HOP_QUERY": "bogus"})


def test_config_choices_match_what_the_code_accepts():
    import dataclasses

    from retrievers.encoder_backends import BACKENDS as EMBED_BACKENDS
    from retrievers.searcher import MODES
    from searchagent.generators.factory import BACKENDS
    from searchagent.scheduler.queues import QUEUE_KINDS
    from searchagent.strategies.hop_query import MODES as HOP_QUERIES

    def choices(section, key):
        kinds = {f.name: f.default_factory for f in dataclasses.fields(Config)}
        return set(next(f for f in dataclasses.fields(kinds[section])
                        if f.name == key).metadata["choices"])

    assert choices("index", "embed_backend") == {*EMBED_BACKENDS, "auto"}
    assert choices("retrieval", "mode") == set(MODES)
    assert choices("generator", "backend") == set(BACKENDS)
    assert choices("server", "scheduler") == set(QUEUE_KINDS)
    assert choices("agent", "hop_query") == set(HOP_QUERIES)


def test_the_declared_python_floor_has_the_toml_reader_the_config_uses():
    """pyproject said ``requires-python >=3.10``, but config files are read with ``tomllib``
    (3.11+): on 3.10 pip installed the package and every command died on import."""
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml")
                            .read_text())["project"]
    floor = re.fullmatch(r">=\s*3\.(\d+)", project["requires-python"])
    assert floor and int(floor.group(1)) >= 11, project["requires-python"]
