"""Bearer credential → principal (account, key, restrictions)."""

from inferd.auth.authenticator import Authenticator, AuthError, Principal

__all__ = ["AuthError", "Authenticator", "Principal"]
