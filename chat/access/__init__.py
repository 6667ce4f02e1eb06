"""Identity and limits at the edge (page and API), decided before the service."""

from __future__ import annotations

from .gate import Gate, Pass, Refused, parse_rate_limit
from .identity import ANONYMOUS, Access, ApiKeys, Identity, TrustedProxies, ui_auth

__all__ = ["ANONYMOUS", "Access", "ApiKeys", "Gate", "Identity", "Pass", "Refused", "TrustedProxies", "parse_rate_limit",
           "ui_auth"]
