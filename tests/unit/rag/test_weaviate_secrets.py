"""The Weaviate API key stays a secret: masked in task logs, absent from errors and reprs (a canary key)."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback

import pytest

from pipelines.core.settings import REPO_ROOT
from pipelines.rag.stores.base import StoreError
from pipelines.rag.stores.weaviate_store import WeaviateStore, connect

pytestmark = pytest.mark.unit

CANARY = "canary-wv-key-7f3a9c1e5b"


def test_the_api_key_is_masked_in_task_logs():
    """Inside a task process, reading the key registers it with Airflow's secrets masker (as URL passwords are)."""
    script = (
        "import airflow.sdk.execution_time.task_runner\n"
        "from airflow.sdk._shared.secrets_masker import redact\n"
        "from pipelines.rag.stores.weaviate_store import weaviate_api_key\n"
        f"print(redact('before: api key {CANARY}'))\n"
        "key = weaviate_api_key()\n"
        "print(redact('after: api key ' + key))\n"
        "print(redact({'headers': {'Authorization': 'Bearer ' + key}}))\n"
    )
    env = {**os.environ, "LOOPLINE_WEAVIATE_API_KEY": CANARY}
    shown = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                           check=True).stdout
    before, after, headers = shown.splitlines()
    assert before == f"before: api key {CANARY}"  # Airflow alone does not know it is a secret
    assert after == "after: api key ***"
    assert CANARY not in headers and "***" in headers


def test_a_failed_connection_names_the_server_but_not_the_key(monkeypatch):
    """A real connection attempt to a closed port, with the canary as the key and in the URL's user info."""
    monkeypatch.setenv("LOOPLINE_WEAVIATE_API_KEY", CANARY)
    monkeypatch.setenv("LOOPLINE_WEAVIATE_GRPC_PORT", "10")
    with pytest.raises(StoreError) as caught:
        connect(f"http://loopline:{CANARY}@127.0.0.1:9")
    message = str(caught.value)
    assert message.startswith("cannot connect to Weaviate at http://loopline:***@127.0.0.1:9 (gRPC 127.0.0.1:10): "
                              "WeaviateStartUpError: ")  # the client tried, and failed
    assert "LOOPLINE_WEAVIATE_API_KEY" in message
    shown = "".join(traceback.format_exception(caught.value)) + repr(caught.value)
    assert CANARY not in shown
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_malformed_url_is_quoted_without_its_password(monkeypatch):
    monkeypatch.delenv("LOOPLINE_WEAVIATE_API_KEY", raising=False)
    monkeypatch.delenv("WEAVIATE_API_KEY", raising=False)
    with pytest.raises(StoreError, match=r"Weaviate URL 'ftp://user:\*\*\*@host' is not an http\(s\) URL") as caught:
        connect(f"ftp://user:{CANARY}@host")
    assert CANARY not in str(caught.value)


def test_the_store_repr_shows_the_index_only():
    """A store over a real (unconnected) client that holds the canary key: its repr shows the index only."""
    import weaviate
    from weaviate.classes.init import Auth
    from weaviate.connect import ConnectionParams

    client = weaviate.WeaviateClient(
        connection_params=ConnectionParams.from_params(http_host="127.0.0.1", http_port=9, http_secure=False,
                                                       grpc_host="127.0.0.1", grpc_port=10, grpc_secure=False),
        auth_client_secret=Auth.api_key(CANARY), skip_init_checks=True)
    store = WeaviateStore("docs", client=client)
    assert repr(store) == "WeaviateStore(index='docs')" and CANARY not in repr(store) + str(store)
