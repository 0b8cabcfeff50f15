"""Password hashing (Argon2id, memory-hard) and the site's password policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app


@dataclass(frozen=True)
class SecurityPolicy:
    lockout_threshold: int
    lockout_duration: timedelta
    min_password_length: int
    hasher: PasswordHasher

    @classmethod
    def from_settings(cls, security: dict) -> SecurityPolicy:
        return cls(
            lockout_threshold=security["lockout_threshold"],
            lockout_duration=timedelta(minutes=security["lockout_minutes"]),
            min_password_length=security["min_password_length"],
            hasher=PasswordHasher(
                time_cost=security["argon2_time_cost"],
                memory_cost=security["argon2_memory_kib"],
                parallelism=security["argon2_parallelism"],
            ),
        )

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def problems(self, password: str, *, username: str) -> list[str]:
        """What is wrong with a new password; empty when it is acceptable."""
        found = []
        if len(password) < self.min_password_length:
            found.append(f"Use at least {self.min_password_length} characters.")
        if username and username.lower() in password.lower():
            found.append("Do not use your username in the password.")
        if password and len(set(password)) < 4:
            found.append("Use more than three different characters.")
        return found


def security_policy() -> SecurityPolicy:
    return current_app.extensions["lims_security"]
