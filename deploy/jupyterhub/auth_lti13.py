"""The course's LMS as the login: LTI 1.3 (jupyterhub-ltiauthenticator), instead of PAM.

Loaded by jupyterhub_config.py when ``VPNLAB_HUB_AUTH_CONFIG`` names this file (docs/class.md,
"Logging in through the LMS"). The LMS (Moodle, Canvas, Blackboard, Brightspace) registers the
hub as an LTI 1.3 tool: its configuration is at ``https://HUB/hub/lti13/config``; the login
initiation URL is ``https://HUB/hub/lti13/oauth_login`` and the redirect URL
``https://HUB/hub/lti13/oauth_callback``. The LMS gives back the four values below.

Each student still needs a Unix account on the server (their server runs as that user): the
hub's name is the local part of the e-mail the LMS sends, lowercased (alice@uni.example ->
alice), and the instructor makes the accounts from the class list (docs/class.md).

    VPNLAB_LTI_ISSUER      the platform's issuer, e.g. https://moodle.uni.example
    VPNLAB_LTI_CLIENT_ID   the client ID the LMS gave the tool
    VPNLAB_LTI_AUTH_URL    the platform's OIDC authorization endpoint
    VPNLAB_LTI_JWKS_URL    the platform's public keys (JWKS) endpoint
"""

# ruff: noqa: F821  (``c`` is JupyterHub's config object, given when the file is loaded)

import os

from ltiauthenticator.lti13.auth import LTI13Authenticator


class LmsAuthenticator(LTI13Authenticator):
    """LTI 1.3; the hub's (and the Unix) name: the e-mail's local part, lowercased."""

    def normalize_username(self, username: str) -> str:
        return super().normalize_username(username.split("@", 1)[0])


c.JupyterHub.authenticator_class = LmsAuthenticator
c.LmsAuthenticator.issuer = os.environ["VPNLAB_LTI_ISSUER"]
c.LmsAuthenticator.client_id = [os.environ["VPNLAB_LTI_CLIENT_ID"]]
c.LmsAuthenticator.authorize_url = os.environ["VPNLAB_LTI_AUTH_URL"]
c.LmsAuthenticator.jwks_endpoint = os.environ["VPNLAB_LTI_JWKS_URL"]
c.LmsAuthenticator.username_key = "email"
c.LmsAuthenticator.tool_name = "vpnlab"
c.LmsAuthenticator.tool_description = "A real VPN and the lab it runs in, one per student"
c.Authenticator.allow_all = True  # whoever the course's LMS sends: the course's students
