"""A real S3 API for tests: moto's server on 127.0.0.1 (or another address of this host that
the test made, e.g. the gateway of its own Docker network), a free port, in this process.

The store under test talks to it over HTTP with boto3, signing with keys from the environment
exactly as in a Job; only the server is a stand-in for AWS or MinIO. Keys are random per
server, so a test can assert that they appear nowhere.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

import boto3
import moto.settings
from botocore.config import Config
from moto.server import ThreadedMotoServer
from mypy_boto3_s3.client import S3Client

REGION: Final = "eu-central-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key_id: str = field(repr=False)  # never in a failure's traceback
    secret_access_key: str = field(repr=False)

    @property
    def env(self) -> dict[str, str]:
        """What a backup Job's environment holds; no shared config files, no instance role."""
        return {
            "SOTADB_S3_ENDPOINT": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    @property
    def secrets(self) -> Mapping[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def client(self) -> S3Client:
        """The test's own view of the bucket (to look, damage and count), not the store's."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(s3={"addressing_style": "path"}),
        )

    def create_bucket(self, prefix: str = "sotadb-test") -> str:
        bucket = f"{prefix}-{secrets.token_hex(4)}"
        self.client().create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        return bucket


@contextlib.contextmanager
def s3_server(host: str = "127.0.0.1") -> Iterator[S3Server]:
    """`host`: an address of this host to listen on; never 0.0.0.0."""
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - refused, not bound
        raise ValueError("the test S3 server listens on one address of this host, not all")
    server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(
            endpoint=f"http://{host}:{port}",
            access_key_id="AKIA" + secrets.token_hex(8).upper(),
            secret_access_key=secrets.token_urlsafe(30),
        )
    finally:
        server.stop()


def with_s3_user(server: S3Server) -> S3Server:
    """The same server, with the keys of a new IAM user allowed every S3 action: under
    `keys_checked` exactly these keys are accepted (the random ones of `s3_server` are not
    known to the server)."""
    iam = boto3.session.Session().client(
        "iam",
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
    )
    user = f"sotadb-test-{secrets.token_hex(4)}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="s3",
        PolicyDocument='{"Version": "2012-10-17", "Statement": '
        '[{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}',
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return replace(
        server, access_key_id=key["AccessKeyId"], secret_access_key=key["SecretAccessKey"]
    )


@contextlib.contextmanager
def keys_checked() -> Iterator[None]:
    """Make the server check keys (moto accepts any by default): unknown keys are refused."""
    before = moto.settings.INITIAL_NO_AUTH_ACTION_COUNT
    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    try:
        yield
    finally:
        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = before
