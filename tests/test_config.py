"""Config layering: defaults < file < environment < CLI, with typed, located errors."""

from __future__ import annotations

import json

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
