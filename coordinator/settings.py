"""Settings: built once from ``LOA_*`` environment variables and passed in.

Nothing here is read at import time; call :func:`load_settings`.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Everything Loa can be told from the outside."""

    model_config = SettingsConfigDict(env_prefix="LOA_", extra="ignore")

    kafka_url: str | None = Field(
        default=None, description="kafka://host:port[,host:port]; unset = embedded Tansu"
    )
    redis_url: str | None = Field(
        default=None, description="redis://host:port/db; unset = embedded redis-server"
    )
    redis_prefix: str = Field(default="loa", description="prefix of every Redis key")
    topic_prefix: str = Field(default="", description="prefix of every Kafka topic name")
    topic_partitions: int = Field(default=3, ge=1)
    data_dir: Path = Field(default=REPO_ROOT / ".loa", description="embedded state and run file")
    playbooks_dir: Path = REPO_ROOT / "playbooks"
    config_dir: Path = REPO_ROOT / "config"
    embedded_broker_port: int = Field(default=0, description="`loa up`: 0 = a free port")
    embedded_redis_port: int = Field(default=0, description="`loa up`: 0 = a free port")
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    public_base_url: str | None = None
    worker_metrics_port: int = Field(default=0, description="0 = no metrics endpoint")
    correlation_window_s: float = Field(
        default=3600.0, gt=0, description="reports of the same kind and area join within this"
    )
    outbox_resend_after_s: float = Field(
        default=10.0, gt=0, description="an outboxed report not taken in by then is sent again"
    )
    # SMS (Twilio). Without credentials `loa up` starts the local Twilio-compatible sandbox.
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_base_url: str | None = Field(
        default=None, description="send to this base URL instead of https://api.twilio.com")
    sms_rate_per_s: float = Field(default=10.0, gt=0, description="shared by all workers")
    # Email (SMTP). Without a host `loa up` starts a local SMTP server.
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_tls: bool = False
    smtp_connections: int = Field(default=4, ge=1, description="SMTP connections per worker")
    email_from: str = "Loa Hà Nội <loa@hanoi.example>"
    link_secret: SecretStr | None = Field(
        default=None, description="signs approval links in emails; `loa up` makes one")
    session_secret: SecretStr | None = Field(
        default=None, description="signs console session cookies (else the link secret)")
    phone_region: str = Field(default="VN", description="region for numbers without +")
    delivery_attempts: int = Field(default=6, ge=1)
    timezone: str = "Asia/Ho_Chi_Minh"
    log_format: str = Field(default="console", pattern="^(console|json)$")
    log_level: str = "info"
    worker_id: str = "worker-1"
    app_id: str = Field(default="loa", description="faust app id = the Kafka consumer group")

    @property
    def run_file(self) -> Path:
        """Where `loa up` writes the addresses of what it started."""
        return self.data_dir / "run.json"

    def web_url(self) -> str:
        """The public base URL of the web app."""
        return self.public_base_url or f"http://{self.web_host}:{self.web_port}"

    def with_running_stack(self) -> Settings:
        """Fill unset broker/Redis URLs from the run file of a running `loa up`."""
        if self.kafka_url and self.redis_url:
            return self
        try:
            running = json.loads(self.run_file.read_text())
        except (OSError, ValueError):
            return self
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
        return self.model_copy(update=update)


def load_settings() -> Settings:
    """Build the settings from the environment (and a `.env` file if present)."""
    return Settings()
