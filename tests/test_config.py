"""Settings: JOBKIT_* names, the seed's fallbacks, .env, and flags."""
from __future__ import annotations

from pathlib import Path

import pytest

from jobkit.config import Settings
from jobkit.errors import ConfigError


def test_defaults() -> None:
    s = Settings.from_env({}, env_file=None)
    assert (s.app, s.broker_url, s.backend_url) == (
        "jobkit.demo:app", "beanstalk://127.0.0.1:11300", "sqlite:///jobkit.db")
    assert (s.api_host, s.api_port, s.api_token, s.default_task) == ("0.0.0.0", 8080, None, "hash_payload")
    assert (s.max_body, s.result_ttl) == (65536, 7 * 24 * 3600)


def test_seed_variables_are_fallbacks() -> None:
    seed = {"BEANSTALK_HOST": "queue", "BEANSTALK_PORT": "11301", "MONGO_URL": "mongodb://db/jobs",
            "MANAGER_LISTEN_PORT": "9000"}
    s = Settings.from_env(seed, env_file=None)
    assert (s.broker_url, s.backend_url, s.api_port) == ("beanstalk://queue:11301", "mongodb://db/jobs", 9000)
    both = Settings.from_env(seed | {"JOBKIT_BROKER_URL": "memory://", "JOBKIT_API_PORT": "1"}, env_file=None)
    assert (both.broker_url, both.api_port) == ("memory://", 1)


def test_dotenv_is_read_and_the_real_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("JOBKIT_DEFAULT_TASK=from_file\nJOBKIT_MAX_BODY=10\nMONGO_URL=mongodb://f/x\n")
    s = Settings.from_env({"JOBKIT_MAX_BODY": "20"}, env_file=env_file)
    assert (s.default_task, s.max_body, s.backend_url) == ("from_file", 20, "mongodb://f/x")


@pytest.mark.parametrize("name, value", [("JOBKIT_API_PORT", "eighty"), ("JOBKIT_RESULT_TTL", "-1"),
                                         ("MANAGER_LISTEN_PORT", "x")])
def test_bad_numbers_are_clear_errors(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value}, env_file=None)


def test_replace_ignores_unset_flags() -> None:
    s = Settings().replace(broker_url=None, backend_url="memory://")
    assert (s.broker_url, s.backend_url) == (Settings.broker_url, "memory://")


def test_a_seed_name_in_the_real_environment_beats_a_jobkit_name_in_dotenv(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("JOBKIT_BACKEND_URL=sqlite:///dotenv.db\nJOBKIT_BROKER_URL=memory://\n")
    s = Settings.from_env({"MONGO_URL": "mongodb://real/x", "BEANSTALK_PORT": "11999"}, env_file=env_file)
    assert (s.backend_url, s.broker_url) == ("mongodb://real/x", "beanstalk://127.0.0.1:11999")


def test_api_port_must_be_a_tcp_port() -> None:
    with pytest.raises(ConfigError, match="not a TCP port"):
        Settings.from_env({"JOBKIT_API_PORT": "70000"}, env_file=None)
