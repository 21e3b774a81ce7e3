"""Secrets never reach the disk: written configs (index and run folders) mark a set API key
without its value; ``serve`` takes the key from a file or the environment, and warns when
it listens beyond loopback without one."""

from __future__ import annotations

import argparse
import json

import duckdb
import pytest

from searchagent.cli import build_parser
from searchagent.cli.serve_cmd import exposure_warning, serve_config
from searchagent.config import SECRET_MARK, Config, load_config
from searchagent.errors import InputError

GEN_KEY, SERVER_KEY = "sk-gen-0123456789", "srv-key-9876543210"
ENV = {"SEARCHAGENT__GENERATOR__API_KEY": GEN_KEY, "SEARCHAGENT__SERVER__API_KEY": SERVER_KEY}


def assert_no_secret(text: str) -> None:
    assert GEN_KEY not in text and SERVER_KEY not in text


def test_written_config_marks_secrets_as_set_without_their_values(tmp_path):
    config = load_config(env=ENV)
    assert config.generator.api_key == GEN_KEY          # in memory the key is real
    config.write(tmp_path / "config.json")
    text = (tmp_path / "config.json").read_text()
    assert_no_secret(text)
    written = json.loads(text)
    assert written["generator"]["api_key"] == written["server"]["api_key"] == SECRET_MARK
    Config().write(tmp_path / "unset.json")                 # an unset key stays empty
    assert json.loads((tmp_path / "unset.json").read_text())["server"]["api_key"] == ""
    with pytest.raises(InputError, match="api_key.*not the key"):
        load_config(tmp_path / "config.json", env={})    # a written config is no key source


def test_index_build_never_writes_the_keys(tmp_path, small_corpus, monkeypatch):
    from index.build import build_index

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "idx"
    build_index(small_corpus, out, load_config(cli={"index": {"dense": False}}))
    for path in out.rglob("*"):
        if path.is_file():
            assert GEN_KEY.encode() not in path.read_bytes(), path
            assert SERVER_KEY.encode() not in path.read_bytes(), path
    assert json.loads((out / "config.json").read_text())["generator"]["api_key"] == SECRET_MARK


def test_eval_run_folder_config_never_holds_the_keys(tmp_path, monkeypatch):
    from searchagent.cli.eval_cmd import _record_run, _setup
    from tests.conftest import SAMPLE

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    args = argparse.Namespace(
        config=None, mode=None, k=None, max_hops=None, max_new_tokens=None, threads=None,
        workers=1, limit=2, seed=0, dataset=[f"sample:{SAMPLE / 'questions.jsonl'}"],
        index=str(tmp_path / "index"), db=str(tmp_path / "runs.duckdb"),
        runs_dir=str(tmp_path / "runs"), run="r", force=False, shard=None)
    config, _, settings = _setup(args, ["parametric"])
    assert config.generator.api_key == GEN_KEY
    from eval.store import RunStore

    with RunStore(args.db, hold=False) as store:
        _record_run(args, settings, store)
        text = (tmp_path / "runs" / "r" / "config.json").read_text()
        assert_no_secret(text)
        assert json.loads(text)["config"]["server"]["api_key"] == SECRET_MARK
        _record_run(args, _setup(args, ["parametric"])[2], store)   # the same run reopens
    with duckdb.connect(args.db, read_only=True) as con:           # the database's record
        recorded = con.execute("SELECT settings FROM run_settings").fetchone()[0]
    assert_no_secret(recorded)


def serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", "some-index", *argv])


def test_serve_takes_the_key_from_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("SEARCHAGENT__SERVER__API_KEY", raising=False)
    key_file = tmp_path / "key"
    key_file.write_text(SERVER_KEY + "\n")
    assert serve_config(serve_args("--api-key-file", str(key_file))).server.api_key == SERVER_KEY
    monkeypatch.setenv("SEARCHAGENT__SERVER__API_KEY", "from-env")
    assert serve_config(serve_args()).server.api_key == "from-env"
    with pytest.raises(InputError, match=r"missing.*--api-key-file"):
        serve_config(serve_args("--api-key-file", str(tmp_path / "missing")))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InputError, match=r"empty.*--api-key-file"):
        serve_config(serve_args("--api-key-file", str(tmp_path / "empty")))
    with pytest.raises(InputError, match="not both"):
        serve_config(serve_args("--api-key", "x", "--api-key-file", str(key_file)))


@pytest.mark.parametrize("host, key, warns", [
    ("0.0.0.0", "", True), ("::", "", True), ("192.168.1.5", "", True),
    ("my-host.example", "", True), ("0.0.0.0", "k", False), ("127.0.0.1", "", False),
    ("::1", "", False), ("localhost", "", False)])
def test_serving_beyond_loopback_without_a_key_warns(host, key, warns):
    config = Config().updated({"server": {"host": host, "api_key": key}}, "test")
    message = exposure_warning(config.server)
    assert bool(message) == warns
    if warns:
        assert "WARNING" in message and host in message and "--api-key-file" in message


def test_cli_serve_warns_on_stderr_before_anything_else(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "searchagent", "serve", str(tmp_path / "nope"),
                             "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True,
                            timeout=120, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2 and "index folder not found" in result.stderr
    assert "WARNING" in result.stderr and "0.0.0.0" in result.stderr


def test_serve_refuses_a_generator_key_no_header_can_carry_before_starting(
        tmp_path, monkeypatch, capsys):
    """It made uvicorn's start-up fail with a traceback (exit 3)."""
    from searchagent.cli import main

    monkeypatch.setenv("SEARCHAGENT__GENERATOR__BACKEND", "openai")
    monkeypatch.setenv("SEARCHAGENT__GENERATOR__BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("SEARCHAGENT__GENERATOR__API_KEY", "sk bad-" + GEN_KEY)
    assert main(["serve", str(tmp_path / "no-index"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "generator.api_key" in err and "cannot carry" in err
    assert_no_secret(err)
