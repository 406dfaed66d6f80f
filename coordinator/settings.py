"""Settings: built once from ``LOA_*`` environment variables and passed in.

Nothing here is read at import time; call :func:`load_settings`.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Everything Loa can be told from the outside."""

    model_config = SettingsConfigDict(env_prefix="LOA_", extra="ignore")

    kafka_url: str | None = Field(
        default=None, description="kafka://host:port[,host:port]; unset = embedded Tansu"
    )
    redis_url: str | None = Field(
        default=None, description="redis://host:port/db (rediss:// for TLS, "
        "unix:///path/redis.sock?db=0 for a socket); unset = embedded redis-server"
    )
    redis_prefix: str = Field(default="loa", description="prefix of every Redis key")
    redis_ca_file: Path | None = Field(
        default=None, description="CA bundle that signed the Redis server's certificate "
        "(rediss:// URLs); unset = the system's trusted CAs")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism; unset = no SASL")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_tls: bool = Field(default=False, description="TLS to the brokers (on when a CA is set)")
    kafka_ca_file: Path | None = Field(
        default=None, description="CA bundle of the brokers' certificates; unset = system CAs")
    topic_prefix: str = Field(default="", description="prefix of every Kafka topic name")
    topic_partitions: int = Field(
        default=3, ge=1, description="partitions of the busy topics (reports, dispatch.*) "
                                     "when Loa creates them; the others get one")
    dispatch_batch_size: int = Field(
        default=500, ge=1, le=10_000,
        description="subscribers a chunk of a fan-out's audience holds (the last one "
                    "fewer): one event on dispatch.* per chunk and channel")
    broker_fetch_wait_ms: int = Field(
        default=10, ge=0, le=1500,
        description="the longest a worker's fetch waits at the broker while records flow: "
                    "on Tansu, about what a new record waits before it is fetched")
    broker_idle_fetch_wait_ms: int = Field(
        default=50, ge=0, le=1500,
        description="the same once no record has come for a second and no approval "
                    "request is pending: fewer empty fetches, a longer wait for the first "
                    "record after a quiet second on Tansu; never below "
                    "broker_fetch_wait_ms (raised to it)")
    data_dir: Path = Field(default=REPO_ROOT / ".loa", description="embedded state and run file")
    playbooks_dir: Path = REPO_ROOT / "playbooks"
    config_dir: Path = REPO_ROOT / "config"
    area_map: str | None = Field(
        default=None, description="the area map in force (config/maps/NAME.yaml); unset: "
                                  "the one config/areas.yaml names")
    embedded_broker_port: int = Field(default=0, description="`loa up`: 0 = a free port")
    embedded_redis_port: int = Field(default=0, description="`loa up`: 0 = a free port")
    max_body_bytes: int = Field(default=256 * 1024, ge=1024,
                                description="the largest request body the web app reads")
    public_api_docs: bool = Field(default=False,
                                  description="serve /docs and /openapi.json to anyone")
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    public_base_url: str | None = None
    worker_metrics_port: int = Field(default=0, description="0 = no metrics endpoint")
    scheduler_metrics_port: int = Field(default=0, description="`loa scheduler`'s; 0 = none")
    correlation_window_s: float = Field(
        default=3600.0, gt=0, description="reports of the same kind and area join within this"
    )
    claim_similarity: float = Field(
        default=0.4, gt=0, le=1,
        description="a false claim joins the open rumour whose wording it shares this much "
                    "of (Jaccard similarity of 3-character shingles, diacritics folded)")
    correction_goal_s: float = Field(
        default=3600.0, gt=0, description="false information: the correction should be "
                                          "public this long after the first report")
    promise_remind_before_s: float = Field(
        default=600.0, ge=0, description="a promised update: the duty officers are reminded "
                                         "this long before it is due")
    promise_escalate_before_s: float = Field(
        default=120.0, ge=0, description="a promised update about to be broken: the duty "
                                         "supervisors hear of it this long before it is due")
    cap_valid_for_s: float = Field(
        default=86400.0, gt=0, description="CAP <expires> of a statement that promises no "
                                           "update: this long after it was sent")
    surge_window_s: float = Field(
        default=600.0, ge=60, description="the surge detector counts reports and tips per "
                                          "kind and area over this window")
    surge_threshold: int = Field(
        default=10, ge=2, description="this many reports and tips of one kind in one area "
                                      "within the window alert the duty officers")
    public_cache_s: float = Field(
        default=5.0, ge=0, description="a public page or feed is rendered at most once "
        "this often (a publication shows at once); also its HTTP max-age")
    web_max_in_flight: int = Field(
        default=256, ge=1, description="requests one web process handles at once; more get "
                                       "503 with Retry-After at once instead of queuing")
    trend_window_s: float = Field(
        default=600.0, gt=0, description="an incident's reports are rising or falling: "
                                         "this window against the one before it")
    audit_checkpoint_s: float = Field(
        default=60.0, gt=0,
        description="a signed checkpoint of the audit chain at most this often (while "
                    "something is audited), published at /audit/head")
    outbox_resend_after_s: float = Field(
        default=10.0, gt=0, description="an outboxed report not taken in by then is sent "
        "again, once the workers have read the reports before it (coordinator/reports/resend.py)"
    )
    resend_kept_after_s: float = Field(
        default=30.0, gt=0, description="a prompt, decision or statement kept for its "
        "consumer, or a single delivery, not finished by then is sent again")
    recover_stalled_after_s: float = Field(
        default=15.0, gt=0, description="a fan-out that has not moved for this long is "
        "taken up again from its dispatch ledger")
    # SMS (Twilio). Without credentials `loa up` starts the local Twilio-compatible sandbox.
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_base_url: str | None = Field(
        default=None, description="send to this base URL instead of https://api.twilio.com")
    twilio_timeout_s: float = Field(
        default=10.0, gt=0, description="a request to Twilio that takes longer fails "
                                        "(retried: the retry looks for the message first)")
    sms_rate_per_s: float = Field(default=10.0, gt=0, description="shared by all workers")
    status_ask_after_s: float = Field(
        default=900.0, ge=60, description="an SMS whose final status (delivered, undelivered, "
        "failed) has not come by a status callback this long after it was handed over is "
        "asked of Twilio, then again less and less often (at most every 6 h) for up to 3 days")
    second_approval_above_segments: int = Field(
        default=100_000, ge=0,
        description="SMS segments a statement may cost on one approval; above, a second "
                    "approver must approve too (0: no limit)")
    # Email (SMTP). Without a host `loa up` starts a local SMTP server.
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_tls: bool = False
    smtp_connections: int = Field(
        default=16, ge=1,
        description="SMTP connections per worker: a conversation is four round trips, so on a "
                    "busy machine the email rate is about connections / (4 x round trip)")
    email_rate_per_s: float = Field(
        default=0.0, ge=0,
        description="emails a second, shared by all workers (a relay's sending rate, e.g. "
                    "SES's); 0: no limit")
    email_from: str = "Loa Hà Nội <loa@hanoi.example>"
    link_secret: SecretStr | None = Field(
        default=None, description="signs approval links in emails; `loa up` makes one")
    session_secret: SecretStr | None = Field(
        default=None, description="signs console session cookies (else the link secret)")
    link_secrets_previous: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="comma-separated earlier link secrets: links signed "
        "with them still verify until LOA_KEYS_ROTATED_AT + LOA_KEY_ROTATION_GRACE_S")
    session_secrets_previous: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="comma-separated earlier session secrets: cookies "
        "signed with them still count until LOA_KEYS_ROTATED_AT + LOA_KEY_ROTATION_GRACE_S")
    keys_rotated_at: datetime | None = Field(
        default=None, description="when the current link and session secrets replaced the "
        "previous ones (ISO 8601 with zone); unset = previous ones verify until removed")
    key_rotation_grace_s: float = Field(
        default=7 * 24 * 3600.0, ge=0, description="how long previous secrets still verify")
    secret_key: SecretStr | None = Field(
        default=None, description="keys reply codes and seals TOTP secrets; "
                                  "`loa up` makes one and keeps it in its data folder")
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(
        default_factory=list, description="comma-separated IPs/CIDRs of reverse proxies whose "
        "X-Forwarded-For is believed (rate limits, audit); empty = the direct peer")
    phone_region: str = Field(default="VN", description="region for numbers without +")
    delivery_attempts: int = Field(default=6, ge=1)
    timezone: str = "Asia/Ho_Chi_Minh"
    log_format: str = Field(default="console", pattern="^(console|json)$")
    log_level: str = "info"
    worker_id: str = Field(
        default="worker-1", pattern=r"^[A-Za-z0-9._:-]+$",
        description="this worker's name, its own among the workers (letters, digits, . _ : -;"
                    " a claim reads `worker/instance`, so no slash)")
    app_id: str = Field(default="loa", description="faust app id = the Kafka consumer group")
    worker_cpu_policy: str = Field(
        default="batch", pattern="^(batch|normal)$",
        description="how Linux schedules a worker's threads: `batch` (SCHED_BATCH: one "
                    "that wakes does not preempt the thread running, its own process's "
                    "included; under steady load about the same share of the cores) or `normal`")

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """`10.0.0.1, 10.1.0.0/16` as well as a list."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _redis_ca_in_url(self) -> Settings:
        """LOA_REDIS_CA_FILE rides in the rediss:// URL (redis-py's `ssl_ca_certs`), so every
        client built from the URL trusts it."""
        from urllib.parse import quote

        url = self.redis_url
        if self.redis_ca_file and url and url.startswith("rediss://") and (
                "ssl_ca_certs=" not in url):
            joiner = "&" if "?" in url else "?"
            self.redis_url = f"{url}{joiner}ssl_ca_certs={quote(str(self.redis_ca_file))}"
        return self

    @field_validator("link_secrets_previous", "session_secrets_previous", mode="before")
    @classmethod
    def _secret_list(cls, value: Any) -> Any:
        """`old1,old2` as well as a list."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def run_file(self) -> Path:
        """Where `loa up` writes the addresses of what it started."""
        return self.data_dir / "run.json"

    def key_for(self, purpose: str) -> bytes:
        """A key for one purpose, derived from LOA_SECRET_KEY; ConfigError when it is unset."""
        from coordinator.errors import ConfigError
        from coordinator.signing import derived_key

        if self.secret_key is None or not self.secret_key.get_secret_value():
            raise ConfigError("LOA_SECRET_KEY is not set (`loa up` makes one; see "
                              "config/loa.example.env)")
        return derived_key(self.secret_key.get_secret_value(), purpose)

    @property
    def secrets_file(self) -> Path:
        """Where `loa up` keeps the secrets it made (mode 0600)."""
        return self.data_dir / "secrets.json"

    def link_secrets(self, now: datetime) -> list[str]:
        """The secrets a link may be signed with at `now`: LOA_LINK_SECRET, then the previous
        ones still in their grace period (empty without a link secret)."""
        from coordinator.signing import verifying_secrets

        current = self.link_secret.get_secret_value() if self.link_secret else None
        return verifying_secrets(current, [s.get_secret_value()
                                           for s in self.link_secrets_previous],
                                 self.keys_rotated_at,
                                 timedelta(seconds=self.key_rotation_grace_s), now)

    def web_url(self) -> str:
        """The public base URL of the web app."""
        return self.public_base_url or f"http://{self.web_host}:{self.web_port}"

    def with_running_stack(self) -> Settings:
        """Fill unset broker/Redis URLs from the run file of a running `loa up`, and unset
        secrets from those it keeps in its data folder."""
        if self.kafka_url and self.redis_url:
            return self.model_copy(update=self._kept_secrets())
        try:
            running = json.loads(self.run_file.read_text())
        except (OSError, ValueError):
            return self.model_copy(update=self._kept_secrets())
        update: dict[str, object] = {
            "kafka_url": self.kafka_url or running.get("kafka_url"),
            "redis_url": self.redis_url or running.get("redis_url"),
        }
        if "web_port" in running and "web_port" not in self.model_fields_set:
            update["web_port"] = running["web_port"]
        for name in ("twilio_base_url", "twilio_account_sid", "twilio_from_number",
                     "smtp_host", "smtp_port"):
            if running.get(name) and name not in self.model_fields_set:
                update[name] = running[name]
        if running.get("twilio_auth_token") and self.twilio_auth_token is None:
            update["twilio_auth_token"] = SecretStr(running["twilio_auth_token"])
        update |= self._kept_secrets()
        return self.model_copy(update=update)

    def _kept_secrets(self) -> dict[str, object]:
        """The secrets a running `loa up` keeps in its data folder, for those unset here."""
        from coordinator.errors import ConfigError
        from coordinator.kept_secrets import read_kept

        try:
            kept = read_kept(self.secrets_file)
        except (ConfigError, OSError):
            return {}
        return {name: SecretStr(kept[f"LOA_{name.upper()}"])
                for name in ("link_secret", "session_secret", "secret_key")
                if getattr(self, name) is None and kept.get(f"LOA_{name.upper()}")}


def load_settings() -> Settings:
    """Build the settings from the environment (and a `.env` file if present)."""
    return Settings()
