"""Who is calling: an API key's name, a logged-in user, or a client address.

- API keys (``CHAT_API_KEYS``): comma-separated, each ``key`` or ``name:key``
  (a key without a name is called ``key1``, ``key2``… by position). Keys are
  kept only as SHA-256 digests and compared in constant time against every
  configured key (no early exit); they are never logged or shown.
- Page logins (``CHAT_UI_PASSWORD``: any user name, one password;
  ``CHAT_UI_USERS``: ``alice:pw1,bob:pw2``) through Gradio's ``auth=``.
- Otherwise the client address; ``X-Forwarded-For`` is believed only when the
  peer is one of ``CHAT_TRUSTED_PROXIES`` (addresses or networks), and then
  read from the right, skipping trusted hops, so a client cannot choose the
  address it is limited under.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import SecretStr

    from ..config import Settings

__all__ = ["ANONYMOUS", "Access", "ApiKeys", "Identity", "TrustedProxies", "ui_auth"]

ANONYMOUS = "anonymous"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Identity:
    """``kind``: "key" | "user" | "ip"; ``name``: the key's name, user name or address."""

    kind: str
    name: str

    @property
    def key(self) -> str:
        """The identity in store keys (limits, spend, stream ownership)."""
        return f"{self.kind}:{self.name}"

    @property
    def label(self) -> str:
        """The metrics label: a configured key's name, else ``anonymous`` (bounded)."""
        return self.name if self.kind == "key" else ANONYMOUS

    def __str__(self) -> str:
        return {"key": "API key {!r}", "user": "user {!r}"}.get(self.kind, "address {}").format(self.name)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class ApiKeys:
    def __init__(self, spec: str) -> None:
        """``spec``: ``CHAT_API_KEYS`` (raises ``ValueError`` naming the position of a bad entry)."""
        self._keys: list[tuple[str, bytes]] = []
        names: set[str] = set()
        for position, raw in enumerate((part.strip() for part in spec.split(",")), start=1):
            if not raw:
                continue
            name, sep, key = raw.partition(":")
            if not sep:
                name, key = f"key{position}", raw
            name, key = name.strip(), key.strip()
            if not name or not key:
                raise ValueError(f"CHAT_API_KEYS entry {position} is empty on one side of ':' (use name:key or key)")
            if name in names:
                raise ValueError(f"CHAT_API_KEYS names {name!r} twice; each name identifies one caller")
            names.add(name)
            self._keys.append((name, _digest(key)))

    def __bool__(self) -> bool:
        return bool(self._keys)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._keys]

    def match(self, presented: str) -> str | None:
        """The name of the key ``presented`` is, or None; same work whatever matches."""
        digest = _digest(presented)
        found: str | None = None
        for name, expected in self._keys:
            if hmac.compare_digest(digest, expected) and found is None:
                found = name
        return found


class TrustedProxies:
    def __init__(self, spec: str) -> None:
        self._networks: list[Network] = []
        for part in (p.strip() for p in spec.split(",")):
            if part:
                try:
                    self._networks.append(ipaddress.ip_network(part, strict=False))
                except ValueError:
                    raise ValueError(f"CHAT_TRUSTED_PROXIES: {part!r} is not an address or network "
                                     "(e.g. 127.0.0.1 or 10.0.0.0/8)") from None

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def client(self, peer: str | None, forwarded_for: Sequence[str] = ()) -> str:
        """The client's address: ``peer``, or — when ``peer`` is trusted — the
        right-most ``X-Forwarded-For`` hop that is not a trusted proxy."""
        address = peer or "unknown"
        if not self._networks or not self.trusts(address):
            return address
        hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
        for hop in reversed(hops):
            address = hop
            if not self.trusts(hop):
                break
        return address


def ui_auth(password: str | None, users: str | None) -> Callable[[str, str], bool] | None:
    """Gradio's ``auth=`` for the page: None when no login is configured.

    ``password``: any user name with this password; ``users``: ``alice:pw1,bob:pw2``
    (raises ``ValueError`` on an entry without both sides).
    """
    table: dict[str, bytes] = {}
    for position, raw in enumerate((p.strip() for p in (users or "").split(",")), start=1):
        if not raw:
            continue
        name, sep, secret = raw.partition(":")
        if not sep or not name.strip() or not secret:
            raise ValueError(f"CHAT_UI_USERS entry {position} must be name:password")
        table[name.strip()] = _digest(secret)
    shared = _digest(password) if password else None
    if not table and shared is None:
        return None

    def check(username: str, given: str) -> bool:
        digest = _digest(given or "")
        expected = table.get(username)
        ok_user = hmac.compare_digest(digest, expected if expected is not None else b"\0" * 32)
        ok_shared = shared is not None and hmac.compare_digest(digest, shared)
        return bool(username) and ((expected is not None and ok_user) or ok_shared)

    return check


@dataclass(frozen=True, slots=True)
class Access:
    """The identity settings, parsed once at start (a bad entry stops it: ``ValueError``)."""

    keys: ApiKeys
    proxies: TrustedProxies
    login: Callable[[str, str], bool] | None  # Gradio's ``auth=`` for the page; None: no login

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        def secret(value: SecretStr | None) -> str | None:
            return value.get_secret_value() if value is not None else None

        return cls(ApiKeys(secret(settings.api_keys) or ""), TrustedProxies(settings.trusted_proxies),
                   ui_auth(secret(settings.ui_password), secret(settings.ui_users)))
