"""The argon2id cost is configuration: production defaults, floors, and the hashes it produces."""

from __future__ import annotations

import pytest
from argon2 import extract_parameters

from app.config import PasswordHashSettings
from app.tenants.security import hash_password, password_needs_rehash, verify_password


def test_production_defaults_are_argon2_cffis() -> None:
    assert PasswordHashSettings() == PasswordHashSettings(time_cost=3, memory_kib=65536, parallelism=4)


def test_without_variables_the_defaults_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TIME_COST", "MEMORY_KIB", "PARALLELISM"):
        monkeypatch.delenv(f"VOLUBLE_PASSWORD_HASH_{name}", raising=False)
    assert PasswordHashSettings.from_env() == PasswordHashSettings()


def test_variables_are_floored_to_what_argon2_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLUBLE_PASSWORD_HASH_TIME_COST", "0")
    monkeypatch.setenv("VOLUBLE_PASSWORD_HASH_MEMORY_KIB", "1")
    monkeypatch.setenv("VOLUBLE_PASSWORD_HASH_PARALLELISM", "2")
    assert PasswordHashSettings.from_env() == PasswordHashSettings(time_cost=1, memory_kib=16, parallelism=2)


def test_hashes_are_argon2id_with_the_configured_cost() -> None:
    configured = PasswordHashSettings.from_env()
    hashed = hash_password("correct horse battery")
    params = extract_parameters(hashed)
    assert hashed.startswith("$argon2id$")
    assert (params.time_cost, params.memory_cost, params.parallelism) == (
        configured.time_cost,
        configured.memory_kib,
        configured.parallelism,
    )
    assert verify_password(hashed, "correct horse battery")
    assert not verify_password(hashed, "wrong horse battery")
    assert not password_needs_rehash(hashed)
