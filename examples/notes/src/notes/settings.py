"""Settings, read from the environment when the app is imported: both are required."""

from __future__ import annotations

from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    database_url: str
    app_secret: str


settings = Settings()  # type: ignore[call-arg]  # fails at import without DATABASE_URL and APP_SECRET
