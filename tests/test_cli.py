"""`parrot serve` as a user starts it: --help, a TOML config file, env vars, an API key."""

from __future__ import annotations

import argparse
import os
import subprocess

import httpx
import pytest

from parrot_server.cli_config import Options
from parrot_server.cli_flags import add_engine_args
from parrot_server.embedding.packaged import packaged_model_dir
from parrot_server.engine.config import EngineConfig
from parrot_server.engine_processes import engine_argv
from parrot_server.spawn import ServerProcess, free_port, parrot_command

CLI = parrot_command()


def test_help_explains_every_flag_and_its_env_var():
    out = subprocess.run([*CLI, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for flag, env in [
        ("--model", "PARROT_MODEL"),
        ("--port", "PARROT_PORT"),
        ("--host", "PARROT_HOST"),
        ("--session-ttl", "PARROT_SESSION_TTL"),
        ("--api-key", "PARROT_API_KEY"),
        ("--max-inflight-calls", "PARROT_MAX_INFLIGHT_CALLS"),
        ("--embedding-model", "PARROT_EMBEDDING_MODEL"),
    ]:
        assert flag in text and env in text
    assert "default: 127.0.0.1" in text and "default: 8000" in text and "--config" in text


def test_bad_config_file_is_refused_without_a_traceback(tmp_path):
    cfg = tmp_path / "parrot.toml"
    cfg.write_text("no-such-flag = 1\nport = 1\n")
    out = subprocess.run(
        [*CLI, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "no-such-flag" in out.stderr and "Traceback" not in out.stderr
    cfg.write_text("port = [")
    out = subprocess.run(
        [*CLI, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0 and "cannot read config file" in out.stderr + out.stdout


def test_bad_embedding_flags_are_refused_at_start(tmp_path):
    out = subprocess.run(
        [*CLI, "serve", "--embedding-model", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"--embedding-model: no model config.json in {tmp_path}" in out.stderr
    out = subprocess.run(
        [*CLI, "serve", "--embedding-threads", "0"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "--embedding-threads must be >= 1, got 0" in out.stderr


def test_engine_flags_out_of_range_are_refused_at_start():
    out = subprocess.run(
        [*CLI, "serve", "--speculative-tokens", "-1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "speculative_tokens must be >= 0, got -1" in out.stderr
    out = subprocess.run(
        [*CLI, "serve", "--gemm-dtype", "float16"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "--gemm-dtype: invalid choice: 'float16'" in out.stderr
    out = subprocess.run(
        [*CLI, "serve", "--dense-weights-mb", "-1"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "dense_weights_mb must be >= 0, got -1" in out.stderr
    with pytest.raises(ValueError, match="gemm_dtype must be one of auto, float32, bfloat16"):
        EngineConfig(gemm_dtype="float16")


@pytest.mark.slow
def test_config_file_env_and_api_key(tmp_path):
    port = free_port()
    cfg = tmp_path / "parrot.toml"
    cfg.write_text(
        f'port = {port}\napi-key = "s3cret"\nkv-pool-tokens = 4096\nmax-context-len = 1024\n'
        'session-ttl = 99\nmax-sessions = 3\nserved-model-name = "smol, tiny"\n'
    )
    env = os.environ | {"PARROT_MAX_SESSIONS": "2"}  # env beats the file
    # The packaged embedding model's folder, given as a path: served under the folder's name.
    embedding_dir = packaged_model_dir()
    env["PARROT_EMBEDDING_MODEL"] = str(embedding_dir)
    command = [*CLI, "serve", "--config", str(cfg), "--log-level", "warning"]
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess.start("parrot serve", command, url, tmp_path / "serve.log", env=env)
    proc = server.proc
    try:
        server.wait_healthy()
        api = url + "/api/v1/sessions"
        denied = httpx.post(api, json={})
        assert denied.status_code == 401 and "API key" in denied.json()["error"]["message"]
        assert (
            httpx.post(api, json={}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
        auth = {"Authorization": "Bearer s3cret"}
        first = httpx.post(api, json={}, headers=auth).json()
        assert first["ttl_seconds"] == 99  # from the file
        assert httpx.post(api, json={}, headers=auth).status_code == 201
        full = httpx.post(api, json={}, headers=auth)
        assert full.status_code == 429 and "at most 2 sessions" in full.json()["error"]["message"]
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/health").status_code == 200  # the one public route
        *cards, embedding_card = httpx.get(url + "/v1/models", headers=auth).json()["data"]
        assert [c["id"] for c in cards] == ["smol", "tiny"]
        assert {c["max_model_len"] for c in cards} == {1024}
        assert all(c["root"].endswith(".gguf") for c in cards)
        # --served-model-name names the chat model only; the key guards /v1/embeddings too.
        assert embedding_card["id"] == embedding_dir.name
        assert embedding_card["root"] == str(embedding_dir)
        embed = {"model": embedding_dir.name, "input": "hi"}
        assert httpx.post(url + "/v1/embeddings", json=embed).status_code == 401
        vectors = httpx.post(url + "/v1/embeddings", json=embed, headers=auth, timeout=60)
        assert vectors.status_code == 200 and len(vectors.json()["data"][0]["embedding"]) == 384
        misnamed = httpx.post(url + "/v1/embeddings", json=embed | {"model": "smol"}, headers=auth)
        assert misnamed.status_code == 404
        body = {"prompt": "Hi", "max_tokens": 1}
        done = httpx.post(url + "/v1/completions", json=body | {"model": "tiny"}, headers=auth)
        assert done.json()["model"] == "tiny"
        unnamed = httpx.post(url + "/v1/completions", json=body, headers=auth, timeout=60)
        assert unnamed.json()["model"] == "smol"
        other = httpx.post(url + "/v1/completions", json=body | {"model": "SmolLM2"}, headers=auth)
        assert other.status_code == 404
        assert httpx.get(url + "/metrics").status_code == 401
        assert httpx.get(url + "/metrics", headers=auth).status_code == 200  # also the operator
    finally:
        proc.terminate()
        # uvicorn shuts down gracefully, then re-raises SIGTERM: -15 is a clean exit here.
        assert proc.wait(30) in (0, -15)
        assert "Traceback" not in server.log.read_text()


def test_serve_passes_every_engine_flag_on_to_its_engines():
    """`parrot serve --engines N` starts `parrot engine` children with the engine flags it was
    given; the ones it keeps for itself are named here."""
    parser = argparse.ArgumentParser()
    add_engine_args(Options(parser, {}))
    flags = {a.option_strings[0] for a in parser._actions if a.option_strings} - {"-h"}
    kept = {
        "--api-key", "--admin-key", "--public-paths",  # children get a key of their own
        "--host", "--port",  # each child binds a free loopback port
        "--chat-template",  # the ServeCore renders chat templates
    }  # fmt: skip
    # Every engine flag set (these have no default: unset, the child's default is the same).
    args = parser.parse_args(["--threads", "1", "--model", "m.gguf", "--max-context-len", "512"])
    argv = engine_argv(args, 2)
    assert {f for f in argv if f.startswith("--")} == flags - kept
    assert argv[argv.index("--gemm-dtype") + 1] == args.gemm_dtype
