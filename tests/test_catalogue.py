"""The model catalogue is data: the packaged file, a replacement, and clear errors."""

from __future__ import annotations

import pytest

from chat.catalogue import (
    LOCAL_MODEL_ID,
    CatalogueError,
    load_catalogue,
    split_model_id,
)


def write(tmp_path, text: str):
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_packaged_catalogue_covers_every_tier_for_openai_and_anthropic():
    catalogue = load_catalogue()
    for provider in ("openai", "anthropic"):
        tiers = {m.tier for m in catalogue.models if m.provider == provider}
        assert tiers == {"fast", "standard", "premium"}, provider
    assert catalogue.get(LOCAL_MODEL_ID) is not None
    assert catalogue.fallback[-1] == LOCAL_MODEL_ID
    assert all(catalogue.get(m) for m in catalogue.fallback)


def test_ids_split_on_the_first_colon_only():
    assert split_model_id("ollama:llama3.2:latest") == ("ollama", "llama3.2:latest")
    with pytest.raises(ValueError):
        split_model_id("gpt-4o")


def test_custom_file_keeps_the_local_model_unless_disabled(tmp_path):
    path = write(tmp_path, """
[[models]]
id = "openai:my-model"
tier = "premium"
context_window = 32000
""")
    catalogue = load_catalogue(path)
    assert catalogue.ids() == ["openai:my-model", LOCAL_MODEL_ID]
    assert catalogue.get("openai:my-model").label == "openai:my-model"
    assert load_catalogue(path, include_local=False).ids() == ["openai:my-model"]


def test_extra_openai_compatible_provider(tmp_path):
    path = write(tmp_path, """
[[providers]]
name = "vllm"
base_url = "http://localhost:8000/v1/"
api_key_env = "VLLM_API_KEY"

[[models]]
id = "vllm:meta-llama/Llama-3.1-8B"
tier = "standard"
context_window = 8192
""")
    catalogue = load_catalogue(path)
    (provider,) = catalogue.providers
    assert (provider.name, provider.base_url, provider.api_key_env) == (
        "vllm", "http://localhost:8000/v1", "VLLM_API_KEY")
    assert catalogue.get("vllm:meta-llama/Llama-3.1-8B").name == "meta-llama/Llama-3.1-8B"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[[models]]\nid = "openai:a"\ntier = "fast"\ncontext_window = 1000\n\n'
         '[[models]]\nid = "openai:b"\ntier = "turbo"\ncontext_window = 1000\n', 8, ["models.1.tier", "fast"]),
        ('[[models]]\nid = "openai:a"\ntier = "fast"\ncontext_window = -5\n', 4, ["context_window"]),
        ('[[models]]\nid = "mystery:a"\ntier = "fast"\ncontext_window = 10\n', 2, ["unknown provider", "mystery"]),
        ('[[models]]\nid = "auto"\ntier = "fast"\ncontext_window = 10\n', 2, ["reserved"]),
        ('[[models]]\nid = "openai:a"\ntier = "fast"\ncontext_window = 10\ncolour = "red"\n', 5, ["colour"]),
        ('[[models]]\nid = "openai:a"\ntier = "fast"\n', 1, ["context_window", "required"]),
    ],
)
def test_malformed_catalogue_names_file_line_and_field(tmp_path, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(CatalogueError) as info:
        load_catalogue(path)
    message = str(info.value)
    assert str(path) in message
    assert f"line {line}" in message, message
    for word in words:
        assert word.lower() in message.lower(), message


def test_invalid_toml_and_missing_file_are_clear(tmp_path):
    with pytest.raises(CatalogueError, match="invalid TOML.*line 2"):
        load_catalogue(write(tmp_path, '[[models]]\nid = "openai:a\n'))
    with pytest.raises(CatalogueError, match="cannot read"):
        load_catalogue(tmp_path / "nope.toml")


def test_a_smaller_local_allocation_shrinks_the_planned_window(settings_factory):
    from chat.runtime import Runtime

    runtime = Runtime.build(settings_factory(local_n_ctx=2048, ollama_enabled=False))
    assert runtime.router.catalogue.get(LOCAL_MODEL_ID).context_window == 2048
    assert Runtime.build(settings_factory(ollama_enabled=False)).catalogue.get(LOCAL_MODEL_ID).context_window == 8192
