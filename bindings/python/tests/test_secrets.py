"""The bearer key and secret headers reach the server and nothing else a user sees: reprs,
exception messages, statistics, health, Prometheus text, Python's ``logging``."""

from __future__ import annotations

import logging

import pytest

import backend_pool
from conftest import config_for

KEY = "sk-python-secret-91b2e7"
HEADER = "hdr-python-secret-3c5d"


@pytest.fixture
def secret_manager(backends):
    config = config_for(backends)
    for service in config["service"]:
        service["bearer_token"] = KEY
        service["secret_headers"] = {"X-Api-Key": HEADER}
    m = backend_pool.PoolManager(config)
    yield m
    m.shutdown(2.0)


def test_secrets_are_sent_but_never_shown(secret_manager, caplog):
    m = secret_manager
    caplog.set_level(1)  # every record of every logger
    texts = [repr(m)]
    echoed = m.request("api", "GET", "/echo").json()["headers"]
    # Sent: the server saw both (the echo body is the server's data, not shown by the pool).
    assert echoed["authorization"] == f"Bearer {KEY}" and echoed["x-api-key"] == HEADER
    r = m.request("api", "GET", "/status/401")
    texts.append(repr(r))
    with pytest.raises(backend_pool.HTTPStatusError) as e:
        r.raise_for_status()
    texts.append(str(e.value))
    with pytest.raises(backend_pool.BackendPoolError) as e:
        m.request("down", "GET", "/ok", timeout=2)
    texts.append(repr(e.value) + str(e.value))
    with m.websocket("comfy", wait_timeout=5) as ws:  # the handshake carries both too
        texts.append(repr(ws))
    with m.stream("api", "GET", "/sse") as s:
        texts.append(repr(s))
        s.read()
    texts += [repr(m.stats()), repr(m.health()), m.prometheus()]
    texts += [r.getMessage() for r in caplog.records]
    for text in texts:
        assert KEY not in text and HEADER not in text, text
    assert "api" in texts[0], texts[0]  # the reprs say something


def test_a_config_error_does_not_echo_a_secret_value(backends):
    config = config_for(backends)
    config["service"][0]["bearer_token"] = KEY
    config["service"][0]["http"]["max_connections"] = 0  # invalid: rejected with a ConfigError
    with pytest.raises(backend_pool.ConfigError) as e:
        backend_pool.PoolManager(config)
    assert "max_connections" in str(e.value) and KEY not in str(e.value), str(e.value)


BASE = '[[service]]\nname = "a"\nurl = "http://127.0.0.1:1"\n'


@pytest.mark.parametrize(
    "config, key",
    [
        # A dict (sent as JSON): wrong types and unknown keys around a secret.
        ({"service": [{"name": "a", "url": "http://127.0.0.1:1", "secret_headers": KEY}]}, "secret_headers"),
        ({"service": [{"name": "a", "url": "http://127.0.0.1:1", "bearer_token": [KEY]}]}, "bearer_token"),
        ({"service": [{"name": "a", "url": "http://127.0.0.1:1", "secret_headers": {"X-Key": {"v": KEY}}}]}, "X-Key"),
        ({"service": [{"name": "a", "url": "http://127.0.0.1:1", "bearer_tokn": KEY}]}, "bearer_tokn"),
        # TOML text: a typo on the token's line.
        (BASE + f'bearer_token = "{KEY}\n', "bearer_token"),
        (BASE + f"bearer_token = {KEY}\n", "bearer_token"),
        (BASE + f'bearer_token = "{KEY}"x\n', "bearer_token"),
        (BASE + f'[service.secret_headers]\nX-Key = "{KEY}\n', "X-Key"),
        (BASE + f'secret_headers = "{KEY}"\n', "secret_headers"),
    ],
)
def test_a_broken_config_names_the_key_but_not_the_secret(config, key):
    with pytest.raises(backend_pool.ConfigError) as e:
        backend_pool.PoolManager(config)
    text = str(e.value) + repr(e.value)
    assert KEY not in text, text
    assert key in str(e.value) and "line" in str(e.value), str(e.value)


def test_a_config_saved_from_a_redacted_dump_is_refused():
    config = {"service": [{"name": "a", "url": "http://127.0.0.1:1", "bearer_token": "<redacted>"}]}
    with pytest.raises(backend_pool.ConfigError, match="bearer_token.*redacted dump"):
        backend_pool.PoolManager(config)
