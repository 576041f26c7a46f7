"""The university's single sign-on as the login: OAuth 2 / OpenID Connect (oauthenticator's
GenericOAuthenticator: Keycloak, Azure AD, Google Workspace, GitLab...), instead of PAM.

Loaded by jupyterhub_config.py when ``VPNLAB_HUB_AUTH_CONFIG`` names this file (docs/class.md,
"Logging in through the LMS"). Register the hub with the identity provider as a confidential
client whose redirect URL is ``https://HUB/hub/oauth_callback``.

Each student still needs a Unix account on the server (their server runs as that user): the
hub's name is the ``preferred_username`` claim, lowercased; only members of the provider's
group ``VPNLAB_OAUTH_GROUP`` (the course) may log in.

    VPNLAB_OAUTH_URL           the provider's base, e.g. https://sso.uni.example/realms/uni/
                               protocol/openid-connect (Keycloak); the three endpoints below it
    VPNLAB_OAUTH_CLIENT_ID, VPNLAB_OAUTH_CLIENT_SECRET   the client the provider registered
    VPNLAB_OAUTH_CALLBACK      https://HUB/hub/oauth_callback
    VPNLAB_OAUTH_GROUP         the course's group in the provider (default vpnlab-students)
"""

# ruff: noqa: F821  (``c`` is JupyterHub's config object, given when the file is loaded)

import os

base = os.environ["VPNLAB_OAUTH_URL"].rstrip("/")
c.JupyterHub.authenticator_class = "generic-oauth"
c.GenericOAuthenticator.authorize_url = f"{base}/auth"
c.GenericOAuthenticator.token_url = f"{base}/token"
c.GenericOAuthenticator.userdata_url = f"{base}/userinfo"
c.GenericOAuthenticator.client_id = os.environ["VPNLAB_OAUTH_CLIENT_ID"]
c.GenericOAuthenticator.client_secret = os.environ["VPNLAB_OAUTH_CLIENT_SECRET"]
c.GenericOAuthenticator.oauth_callback_url = os.environ["VPNLAB_OAUTH_CALLBACK"]
c.GenericOAuthenticator.scope = ["openid", "profile", "email", "groups"]
c.GenericOAuthenticator.username_claim = "preferred_username"
c.GenericOAuthenticator.manage_groups = True  # the provider's groups, kept in the hub
c.GenericOAuthenticator.auth_state_groups_key = "oauth_user.groups"
c.GenericOAuthenticator.allowed_groups = {os.environ.get("VPNLAB_OAUTH_GROUP", "vpnlab-students")}
c.Authenticator.allow_all = False
