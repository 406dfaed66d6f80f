"""Production transport settings: Kafka SASL (PLAIN, SCRAM) and TLS for aiokafka and faust,
Redis URLs with a password, TLS and a CA. Tansu has no SASL, so the Kafka side is checked
here, as the arguments the clients get; the Redis password is tested for real in
tests/integration/test_redis_password.py."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from coordinator import topics
from coordinator.broker import faust_credentials, kafka_security
from coordinator.errors import ConfigError
from coordinator.settings import Settings
from coordinator.state import redacted, redis_problem

CA = "/etc/ssl/certs/ca-certificates.crt"


def kafka(**options: Any) -> Settings:
    return Settings(kafka_url="kafka://broker-1:9093", **options)


def plain(security: dict[str, Any]) -> dict[str, Any]:
    """The arguments with the TLS context reduced to whether there is one."""
    return {k: (type(v).__name__ if k == "ssl_context" else v) for k, v in security.items()}


def test_without_sasl_or_tls_the_clients_speak_plaintext() -> None:
    """No settings: PLAINTEXT for aiokafka, no credentials for faust."""
    assert kafka_security(kafka()) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(kafka()) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_tls_gives_aiokafka_its_arguments(mechanism: str) -> None:
    """SASL with TLS: SASL_SSL, the mechanism, the user and password, a TLS context."""
    settings = kafka(kafka_sasl_mechanism=mechanism, kafka_sasl_username="loa",
                     kafka_sasl_password="s3cret", kafka_tls=True)
    assert plain(kafka_security(settings)) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": mechanism,
        "sasl_plain_username": "loa", "sasl_plain_password": "s3cret",
        "ssl_context": "SSLContext"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_faust_gets_the_same_arguments_as_our_producer(mechanism: str) -> None:
    """faust turns its broker_credentials into exactly what our aiokafka clients get."""
    for tls in (False, True):
        settings = kafka(kafka_sasl_mechanism=mechanism, kafka_sasl_username="loa",
                         kafka_sasl_password="s3cret", kafka_tls=tls)
        ours = plain(kafka_security(settings))
        assert plain(credentials_to_aiokafka_auth(faust_credentials(settings))) == ours
        assert ours["security_protocol"] == ("SASL_SSL" if tls else "SASL_PLAINTEXT")


def test_a_ca_file_turns_tls_on_and_is_trusted() -> None:
    """LOA_KAFKA_CA_FILE alone means TLS (SSL), with that CA loaded, for both clients."""
    settings = kafka(kafka_ca_file=CA)
    security = kafka_security(settings)
    assert plain(security) == {"security_protocol": "SSL", "ssl_context": "SSLContext"}
    context: ssl.SSLContext = security["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0
    assert plain(credentials_to_aiokafka_auth(faust_credentials(settings))) == plain(security)


def test_an_incomplete_sasl_setup_is_refused_by_name() -> None:
    """A mechanism without a password names the missing settings."""
    with pytest.raises(ConfigError, match="LOA_KAFKA_SASL_USERNAME and LOA_KAFKA_SASL_PASSWORD"):
        kafka_security(kafka(kafka_sasl_mechanism="PLAIN", kafka_sasl_username="loa"))


def test_an_unreadable_ca_file_is_refused_by_name(tmp_path: Path) -> None:
    """A CA file that is not there names LOA_KAFKA_CA_FILE."""
    with pytest.raises(ConfigError, match="LOA_KAFKA_CA_FILE"):
        kafka_security(kafka(kafka_ca_file=tmp_path / "missing.pem"))


def test_an_unknown_sasl_mechanism_is_refused() -> None:
    """Only PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512."""
    with pytest.raises(ValueError, match="kafka_sasl_mechanism"):
        kafka(kafka_sasl_mechanism="GSSAPI")


def test_the_redis_ca_file_rides_in_a_rediss_url() -> None:
    """LOA_REDIS_CA_FILE becomes redis-py's ssl_ca_certs in a rediss:// URL, not in redis://."""
    tls = Settings(redis_url="rediss://:pw@redis.example:6380/0",
                   redis_ca_file="/etc/loa/redis ca.pem")  # type: ignore[arg-type]
    assert tls.redis_url == "rediss://:pw@redis.example:6380/0?ssl_ca_certs=/etc/loa/redis%20ca.pem"
    given = Settings(redis_url="rediss://h:6380/0?ssl_ca_certs=/x.pem",
                     redis_ca_file="/y.pem")  # type: ignore[arg-type]
    assert given.redis_url == "rediss://h:6380/0?ssl_ca_certs=/x.pem"
    assert Settings(redis_url="redis://h:6379/0",
                    redis_ca_file="/y.pem").redis_url == "redis://h:6379/0"  # type: ignore[arg-type]


def test_a_redis_password_is_never_printed() -> None:
    """URLs in messages show *** for the password, and say plainly when it was refused."""
    assert redacted("redis://:p%40ss@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redacted("rediss://loa:pw@redis.example/1") == "rediss://loa:***@redis.example/1"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    from redis.exceptions import AuthenticationError

    said = redis_problem("redis://:pw@127.0.0.1:1/0", AuthenticationError("WRONGPASS"))
    assert said == ("Redis at redis://:***@127.0.0.1:1/0 refused to let us in (WRONGPASS): the "
                    "password in LOA_REDIS_URL is wrong or missing "
                    "(redis://:PASSWORD@host:port/0)")


def test_only_the_busy_topics_get_the_configured_partitions() -> None:
    """Reports and a statement's batches carry the volume and are shared by the workers;
    every other topic is one partition (each costs a fetch every few ms, busy or not)."""
    assert {spec.name: spec.partitions(3) for spec in topics.ALL} == {
        "reports": 3, "incident-events": 1, "approval-events": 1, "decisions": 1,
        "statements": 1, "deliveries.sms": 1, "deliveries.email": 1, "dispatch.sms": 3,
        "dispatch.email": 3, "dead-letters": 1}
    assert topics.REPORTS.partitions(8) == 8
