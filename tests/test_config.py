"""Settings: one object, SDK variable names for providers, CHAT_ for the app."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from chat.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_need_no_environment(settings_factory):
    s = settings_factory()
    assert s.openai_api_key is None and s.anthropic_api_key is None
    assert s.ollama_host == "http://localhost:11434"
    assert s.max_message_chars == 100_000
    assert s.local_model_enabled and s.default_model == "auto"


def test_provider_variables_keep_the_sdk_names(clean_env):
    clean_env.setenv("OPENAI_API_KEY", "sk-test-abc")
    clean_env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    clean_env.setenv("ANTHROPIC_API_KEY", "ak-test")
    clean_env.setenv("OLLAMA_HOST", "http://127.0.0.1:1")
    clean_env.setenv("CHAT_MAX_MESSAGE_CHARS", "42")
    s = load_settings()
    assert s.openai_api_key.get_secret_value() == "sk-test-abc"
    assert s.openai_base_url == "http://127.0.0.1:9/v1"
    assert s.anthropic_api_key.get_secret_value() == "ak-test"
    assert s.ollama_host == "http://127.0.0.1:1"
    assert s.max_message_chars == 42
    assert "sk-test-abc" not in repr(s) and "sk-test-abc" not in str(s.model_dump())


def test_env_example_lists_every_setting_and_loads_as_defaults(clean_env):
    text = (ROOT / ".env.example").read_text()
    names = {line.split("=", 1)[0].strip() for line in text.splitlines()
             if line and not line.startswith("#") and "=" in line}
    expected = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            expected.add(alias)
        else:
            expected.add(f"CHAT_{name.upper()}")
    assert expected <= names, f"missing from .env.example: {sorted(expected - names)}"
    assert names <= expected, f"unknown names in .env.example: {sorted(names - expected)}"
    # Every line carries a one-line comment above it.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#") and "=" in line:
            assert lines[i - 1].startswith("#"), f"no comment above {line!r}"
    assert Settings(_env_file=ROOT / ".env.example") == Settings(_env_file=None)


def test_the_dotenv_file_is_read_unless_disabled(clean_env, tmp_path):
    env = tmp_path / "custom.env"
    env.write_text("CHAT_MAX_OUTPUT_TOKENS=77\n")
    clean_env.setenv("CHAT_ENV_FILE", str(env))
    assert load_settings().max_output_tokens == 77
    clean_env.setenv("CHAT_ENV_FILE", "")
    assert load_settings().max_output_tokens == 1024


def test_bad_values_name_the_setting(clean_env):
    clean_env.setenv("CHAT_TEMPERATURE", "hot")
    with pytest.raises(ValidationError, match="temperature"):
        load_settings()


def test_keys_of_catalogue_declared_providers_come_from_the_dotenv_file_too(clean_env, tmp_path):
    from chat.catalogue import load_catalogue
    from chat.providers import build_providers

    (tmp_path / "models.toml").write_text(
        '[[providers]]\nname = "vllm"\nbase_url = "http://127.0.0.1:9/v1"\napi_key_env = "VLLM_API_KEY"\n\n'
        '[[models]]\nid = "vllm:llama"\ntier = "fast"\ncontext_window = 8000\n'
    )
    env = tmp_path / ".env"
    env.write_text(f"CHAT_MODELS_FILE={tmp_path / 'models.toml'}\nVLLM_API_KEY=vk-from-dotenv\n")
    clean_env.setenv("CHAT_ENV_FILE", str(env))
    clean_env.delenv("VLLM_API_KEY", raising=False)
    settings = load_settings()
    providers = build_providers(settings, load_catalogue(settings.models_file))
    assert providers["vllm"].availability("llama").ready
    clean_env.setenv("CHAT_ENV_FILE", "")
    providers = build_providers(settings, load_catalogue(settings.models_file))
    assert providers["vllm"].availability("llama").detail == "set VLLM_API_KEY"
