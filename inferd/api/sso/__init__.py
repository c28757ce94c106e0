"""Browser sign-in: single sign-on through a team's OpenID Connect provider, API-key login for
installs without one, dashboard sessions (cookie + CSRF token) and logout."""
