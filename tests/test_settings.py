"""One settings object: precedence, provider roles, clear errors for bad values."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vptt import ConfigError, VPTTSettings
from vptt.core.settings import default_data_dir


def test_precedence_arguments_over_environment_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert VPTTSettings().tau == 0.1
    monkeypatch.setenv("VPTT_TAU", "0.3")
    assert VPTTSettings().tau == 0.3
    assert VPTTSettings(tau=0.2).tau == 0.2


def test_role_keys_fall_back_to_openai_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    s = VPTTSettings()
    assert s.api_key("llm") is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-shared")
    monkeypatch.setenv("VPTT_JUDGE_API_KEY", "sk-judge")
    s = VPTTSettings(images_api_key="sk-images")
    assert (s.api_key("llm"), s.api_key("judge"), s.api_key("images"), s.api_key("embedder")) == \
        ("sk-shared", "sk-judge", "sk-images", "sk-shared")
    assert "sk-" not in repr(s) and "sk-" not in str(s.describe())
    with pytest.raises(ConfigError, match="unknown provider role"):
        s.api_key("chat")  # type: ignore[arg-type]


@pytest.mark.parametrize("var,value,needle", [
    ("VPTT_TAU", "-1", "greater than 0"), ("VPTT_TAU", "0", "greater than 0"), ("VPTT_TAU", "abc", "number"),
    ("VPTT_TAU", "nan", "greater than 0"), ("VPTT_TAU", "inf", "finite"), ("VPTT_PER_CATEGORY_BUDGET", "-2", "greater than or equal"),
    ("VPTT_STORE", "postgres", "chroma"), ("VPTT_EMBEDDER", "bert", "minilm"),
    ("VPTT_CHROMA_PORT", "http", "integer"), ("VPTT_CHROMA_PORT", "70000", "less than or equal"),
    ("VPTT_TEXT_GATE_THRESHOLD", "55", "less than or equal to 1"), ("VPTT_DEVICE", "tpu", "cpu, cuda"),
])
def test_bad_environment_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str,
                                                  needle: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        VPTTSettings()
    assert var in str(info.value) and needle in str(info.value)


def test_bad_argument_and_typo_say_what_to_do() -> None:
    with pytest.raises(ConfigError, match=r"argument tau=-1"):
        VPTTSettings(tau=-1)
    with pytest.raises(ConfigError, match="did you mean tau"):
        VPTTSettings(tua=0.2)


def test_renamed_and_unknown_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPTT_OPENAI_API_KEY", "sk-x")
    with pytest.raises(ConfigError, match="VPTT_OPENAI_API_KEY is now VPTT_EMBEDDER_API_KEY"):
        VPTTSettings()
    monkeypatch.delenv("VPTT_OPENAI_API_KEY")
    monkeypatch.setenv("VPTT_TUA", "0.2")
    with pytest.warns(UserWarning, match="did you mean VPTT_TAU"):
        VPTTSettings()


def test_default_data_dir_is_per_user_not_the_working_directory(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    monkeypatch.delenv("VPTT_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    d = VPTTSettings().data_dir
    assert d.is_absolute() and d == default_data_dir() and tmp_path not in d.parents
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
        assert VPTTSettings().data_dir == tmp_path / "xdg" / "vptt"
