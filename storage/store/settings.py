"""Connection settings for S3 and S3-compatible object stores.

:class:`S3Settings` is the one place where endpoint, region and credentials are decided; it
builds the boto3 client (standard retry mode, checksums only when required so MinIO, Ceph,
R2, moto… work) and the matching :class:`pyarrow.fs.S3FileSystem` (which ignores
``AWS_ENDPOINT_URL``, so the endpoint is always passed explicitly).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from storage.errors import InvalidSettings, register_secret

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow.fs

__all__ = ["S3Settings", "DEFAULT_REGION"]

DEFAULT_REGION = "us-east-1"
_SECRET_FIELDS = ("secret_access_key", "session_token")
_REGION_RE = re.compile(r"^[a-z0-9-]{2,32}$")
_ADDRESSING = ("auto", "path", "virtual")
#: boto3 clients built so far, per process, settings and AWS environment (:meth:`S3Settings.s3_client`)
_CLIENTS: dict[tuple[int, S3Settings, tuple[tuple[str, str], ...]], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _env(environ: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


@dataclass(frozen=True)
class S3Settings:
    """How to reach an S3(-compatible) store.

    Attributes:
        endpoint_url: ``http(s)://host[:port]`` of an S3-compatible endpoint; ``None`` = AWS.
        region: signing region; ``None`` = the profile's region, else ``us-east-1``.
        profile: a named profile of the shared AWS config/credentials files.
        access_key_id, secret_access_key, session_token: explicit credentials; when absent
            the standard AWS chain (environment, profile, instance metadata) is used.
        max_attempts: total attempts per request (botocore standard retry mode and pyarrow's
            ``AwsStandardS3RetryStrategy``).
        connect_timeout, read_timeout: socket timeouts in seconds.
        addressing_style: ``auto``, ``path`` or ``virtual``; ``None`` = ``path`` when an
            endpoint is given (what S3-compatible stores expect), else ``auto``.

    ``repr()`` never shows the secret key or session token.
    """

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    max_attempts: int = 8
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    addressing_style: str | None = None

    def __post_init__(self) -> None:
        if self.endpoint_url is not None:
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise InvalidSettings(
                    f"endpoint_url must look like http(s)://host[:port], got {_safe_url(self.endpoint_url)!r}"
                )
            if parts.username or parts.password:
                raise InvalidSettings("endpoint_url must not contain credentials (user:password@)")
            try:
                parts.port  # noqa: B018 - raises ValueError on a bad port
            except ValueError:
                raise InvalidSettings(f"endpoint_url has an invalid port: {_safe_url(self.endpoint_url)!r}") from None
        if self.region is not None and not _REGION_RE.match(self.region):
            raise InvalidSettings(f"region must look like 'eu-west-1', got {self.region!r}")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise InvalidSettings("access_key_id and secret_access_key must be given together")
        if self.session_token is not None and self.access_key_id is None:
            raise InvalidSettings("session_token requires access_key_id and secret_access_key")
        if (
            not isinstance(self.max_attempts, int)
            or isinstance(self.max_attempts, bool)
            or not 1 <= self.max_attempts <= 20
        ):
            raise InvalidSettings(f"max_attempts must be an integer in 1..20, got {self.max_attempts!r}")
        for name in ("connect_timeout", "read_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise InvalidSettings(f"{name} must be a positive number of seconds, got {value!r}")
        if self.addressing_style is not None and self.addressing_style not in _ADDRESSING:
            raise InvalidSettings(
                f"addressing_style must be one of {', '.join(_ADDRESSING)}, got {self.addressing_style!r}"
            )
        register_secret(self.secret_access_key)
        register_secret(self.session_token)

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS and value is not None:
                shown.append(f"{f.name}='***'")
            else:
                shown.append(f"{f.name}={value!r}")
        return f"S3Settings({', '.join(shown)})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "S3Settings":
        """Settings from the standard AWS variables.

        Reads ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_REGION`` /
        ``AWS_DEFAULT_REGION``, ``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``,
        ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN`` and ``AWS_MAX_ATTEMPTS``;
        ``overrides`` win over the environment.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "endpoint_url": _env(env, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            "region": _env(env, "AWS_REGION", "AWS_DEFAULT_REGION"),
            "profile": _env(env, "AWS_PROFILE"),
            "access_key_id": _env(env, "AWS_ACCESS_KEY_ID"),
            "secret_access_key": _env(env, "AWS_SECRET_ACCESS_KEY"),
            "session_token": _env(env, "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"),
        }
        attempts = _env(env, "AWS_MAX_ATTEMPTS")
        if attempts is not None:
            try:
                values["max_attempts"] = int(attempts)
            except ValueError:
                raise InvalidSettings(f"AWS_MAX_ATTEMPTS must be an integer, got {attempts!r}") from None
        if values["access_key_id"] is None or values["secret_access_key"] is None:
            # partial env credentials: leave them to the SDK's chain rather than fail here
            values["access_key_id"] = values["secret_access_key"] = values["session_token"] = None
        values.update(overrides)
        return cls(**values)

    # -- boto3 -------------------------------------------------------------------------------

    @property
    def effective_addressing_style(self) -> str:
        if self.addressing_style is not None:
            return self.addressing_style
        return "path" if self.endpoint_url else "auto"

    def botocore_config(self) -> Any:
        """The :class:`botocore.config.Config` used for every client."""
        from botocore.config import Config

        return Config(
            retries={"mode": "standard", "max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            s3={"addressing_style": self.effective_addressing_style},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=32,
        )

    def boto3_session(self) -> Any:
        """A new :class:`boto3.session.Session` (sessions are not thread-safe; clients are)."""
        import boto3

        return boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
            region_name=self.region,
            profile_name=self.profile,
        )

    def s3_client(self) -> Any:
        """A thread-safe boto3 S3 client for these settings, shared by every store of this process.

        Building a client reads botocore's service and endpoint files (tens of milliseconds of JSON):
        a run opens a store per concept and per chunk, so one client per process, settings and ``AWS_*``
        environment (what the credential chain reads) is kept and handed out again.
        """
        key = (os.getpid(), self, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))))
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(key)
            if client is None:
                client = _CLIENTS[key] = self._new_s3_client()
            return client

    def _new_s3_client(self) -> Any:
        session = self.boto3_session()
        return session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region or session.region_name or DEFAULT_REGION,
            config=self.botocore_config(),
        )

    # -- pyarrow -----------------------------------------------------------------------------

    def pyarrow_filesystem(self) -> "pyarrow.fs.S3FileSystem":
        """A :class:`pyarrow.fs.S3FileSystem` equivalent to :meth:`s3_client`.

        The endpoint is passed as ``endpoint_override`` (+ ``scheme``) because pyarrow ignores
        ``AWS_ENDPOINT_URL``; credentials resolved by boto3's chain (profile, env, metadata)
        are handed over so both clients always act as the same identity.
        """
        from pyarrow import fs

        kwargs: dict[str, Any] = {
            "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=self.max_attempts),
            "connect_timeout": float(self.connect_timeout),
            "request_timeout": float(self.read_timeout),
        }
        session = self.boto3_session()
        kwargs["region"] = self.region or session.region_name or DEFAULT_REGION
        if self.endpoint_url:
            parts = urlsplit(self.endpoint_url)
            kwargs["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
            kwargs["scheme"] = parts.scheme
        if self.effective_addressing_style == "virtual":
            kwargs["force_virtual_addressing"] = True
        credentials = session.get_credentials()
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            kwargs["access_key"] = frozen.access_key
            kwargs["secret_key"] = frozen.secret_key
            if frozen.token:
                kwargs["session_token"] = frozen.token
            register_secret(frozen.secret_key)
            register_secret(frozen.token)
        return fs.S3FileSystem(**kwargs)


def _safe_url(url: str) -> str:
    """``url`` without any ``user:password@`` part."""
    return re.sub(r"(?i)(://)[^/@]*@", r"\1***@", url)
