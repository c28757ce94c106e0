"""Bearer credential → principal (account, key, restrictions)."""

from inferd.auth.authenticator import Authenticator, AuthError, JwtScope, Principal

__all__ = ["AuthError", "Authenticator", "JwtScope", "Principal"]
