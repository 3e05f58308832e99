"""S3Settings validation, environment parsing, client configuration — and no leaked secrets."""

from __future__ import annotations

import logging
import socket

import pytest

from storage.errors import BackendError, InvalidSettings, NotFound, StorageError, redact
from storage.store.open import open_store
from storage.store.settings import S3Settings

from .helpers import BUCKET, SECRET_KEY, make_settings


def test_from_env_reads_the_standard_variables() -> None:
    env = {
        "AWS_ENDPOINT_URL": "http://generic:9000",
        "AWS_ENDPOINT_URL_S3": "https://s3.example.test:9443",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_PROFILE": "batch",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "shh-env-secret",
        "AWS_SESSION_TOKEN": "tok-env-secret",
        "AWS_MAX_ATTEMPTS": "5",
    }
    settings = S3Settings.from_env(env)
    assert settings.endpoint_url == "https://s3.example.test:9443"  # the S3-specific one wins
    assert settings.region == "eu-west-1"
    assert settings.profile == "batch"
    assert (settings.access_key_id, settings.secret_access_key, settings.session_token) == (
        "AKIDEXAMPLE",
        "shh-env-secret",
        "tok-env-secret",
    )
    assert settings.max_attempts == 5
    assert S3Settings.from_env({"AWS_ENDPOINT_URL": "http://generic:9000"}).endpoint_url == "http://generic:9000"
    assert S3Settings.from_env({"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "x"}).region == "ap-south-1"
    assert S3Settings.from_env({}, region="us-west-2").region == "us-west-2"


def test_from_env_ignores_partial_credentials_and_rejects_bad_attempts() -> None:
    assert S3Settings.from_env({"AWS_ACCESS_KEY_ID": "only-id"}).access_key_id is None
    with pytest.raises(InvalidSettings, match="AWS_MAX_ATTEMPTS must be an integer, got 'many'"):
        S3Settings.from_env({"AWS_MAX_ATTEMPTS": "many"})


def test_repr_never_shows_secrets() -> None:
    settings = S3Settings(access_key_id="id", secret_access_key="repr-secret-1", session_token="repr-token-2")
    for text in (repr(settings), str(settings), f"{settings}"):
        assert "repr-secret-1" not in text and "repr-token-2" not in text
        assert "secret_access_key='***'" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"endpoint_url": "ftp://host"}, "endpoint_url must look like http"),
        ({"endpoint_url": "http://user:pw-secret@host:9000"}, "must not contain credentials"),
        ({"endpoint_url": "http://host:notaport"}, "invalid port"),
        ({"region": "EU WEST"}, "region must look like"),
        ({"access_key_id": "id"}, "must be given together"),
        ({"session_token": "t"}, "session_token requires"),
        ({"max_attempts": 0}, "max_attempts must be an integer in 1..20, got 0"),
        ({"connect_timeout": -1}, "connect_timeout must be a positive number"),
        ({"addressing_style": "weird"}, "addressing_style must be one of"),
    ],
)
def test_invalid_settings_have_one_line_messages(kwargs, message) -> None:
    with pytest.raises(InvalidSettings, match=message) as info:
        S3Settings(**kwargs)
    assert "\n" not in str(info.value)
    assert "pw-secret" not in str(info.value)


def test_botocore_config_is_standard_retries_and_lenient_checksums() -> None:
    config = S3Settings(endpoint_url="http://127.0.0.1:9", max_attempts=8).botocore_config()
    assert config.retries == {"mode": "standard", "max_attempts": 8}
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.s3 == {"addressing_style": "path"}
    assert S3Settings().botocore_config().s3 == {"addressing_style": "auto"}


def test_stores_of_one_process_share_one_client_until_the_aws_environment_changes(monkeypatch) -> None:
    """A run opens a store per concept and per chunk: building a boto3 client for each cost ~40 ms of
    botocore JSON every time (the first-night profile's largest item), so equal settings share a client."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFIRST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "first-secret")
    settings = S3Settings(endpoint_url="http://127.0.0.1:9", region="us-east-1")
    first = open_store("s3://bucket-a/one", settings)
    second = open_store("s3://bucket-b/two", S3Settings(endpoint_url="http://127.0.0.1:9", region="us-east-1"))
    assert first.client is second.client
    assert S3Settings(endpoint_url="http://127.0.0.1:9", region="eu-west-1").s3_client() is not first.client
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDROTATED")  # what the credential chain reads has changed
    assert settings.s3_client() is not first.client


def test_pyarrow_filesystem_gets_explicit_endpoint(s3_client, s3_settings: S3Settings) -> None:
    filesystem = s3_settings.pyarrow_filesystem()
    assert filesystem.region == "us-east-1"
    # pyarrow does not expose endpoint_override; a round trip against moto proves it is used
    assert filesystem.get_file_info(BUCKET).type.name == "Directory"


def test_redact_scrubs_common_secret_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-session-token-value")
    text = (
        "key AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnFEMI/K7MDENG "
        "token env-session-token-value url https://bob:hunter22@host/x?X-Amz-Signature=abcdef&a=1"
    )
    cleaned = redact(text)
    for secret in ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG", "env-session-token-value", "hunter22", "abcdef"):
        assert secret not in cleaned
    assert StorageError(f"boom {SECRET_KEY}").args[0] == "boom ***"


def test_errors_and_logs_do_not_contain_credentials(s3_client, s3_settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="storage")
    store = open_store(f"s3://{BUCKET}/leak-check", s3_settings)
    with pytest.raises(NotFound) as missing:
        store.get("nope")
    with pytest.raises(NotFound) as no_bucket:
        open_store("s3://no-such-bucket-here/x", s3_settings).get("k")
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    dead = make_settings(f"http://127.0.0.1:{dead_port}", max_attempts=1, connect_timeout=1)
    with pytest.raises(BackendError) as unreachable:
        open_store(f"s3://{BUCKET}/x", dead).put("k", b"v")
    for info in (missing, no_bucket, unreachable):
        text = str(info.value) + repr(info.value)
        assert SECRET_KEY not in text
    assert "127.0.0.1" in str(unreachable.value)
    assert SECRET_KEY not in caplog.text
