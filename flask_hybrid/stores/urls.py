"""Redis Cluster and Sentinel URLs as the ``limits`` library names them, parsed without redis-py.

``redis+cluster://[user:password@]host:port[,host:port…]`` lists startup nodes of a Redis
Cluster; ``redis+sentinel://[user:password@]host:port[,host:port…]/service_name`` lists the
Sentinels that watch the master called ``service_name``. The userinfo is percent-decoded, as
redis-py's ``from_url`` reads it. Errors name the problem but never echo the URL, which may hold
a password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

CLUSTER_SCHEME = "redis+cluster"
SENTINEL_SCHEME = "redis+sentinel"
TOPOLOGY_SCHEMES = frozenset({CLUSTER_SCHEME, SENTINEL_SCHEME})
DEFAULT_PORTS = {CLUSTER_SCHEME: 6379, SENTINEL_SCHEME: 26379}


@dataclass(frozen=True)
class TopologyURL:
    """A parsed ``redis+cluster://`` or ``redis+sentinel://`` URL.

    ``nodes`` are the cluster's startup nodes or the Sentinels; ``service_name`` is the
    Sentinel-monitored master's name (``None`` for a cluster).
    """

    scheme: str
    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    service_name: str | None = None

    def without_credentials(self) -> str:
        """The URL again, without its userinfo (for ``limits``, whose errors repeat the URL)."""
        hosts = ",".join(
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in self.nodes
        )
        path = f"/{self.service_name}" if self.service_name else ""
        return f"{self.scheme}://{hosts}{path}"


def parse_topology_url(url: str) -> TopologyURL:
    """Parse a cluster or Sentinel URL; a malformed one is a :class:`ValueError`.

    ::

        parse_topology_url("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26379/mymaster")
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in TOPOLOGY_SCHEMES:
        raise ValueError("expected a redis+cluster:// or redis+sentinel:// URL")
    if "?" in rest or "#" in rest:
        raise ValueError(
            f"{scheme}:// URLs take no query options; pass a configured client for TLS "
            "and other connection options"
        )
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if colon else None
    nodes = tuple(_node(item, DEFAULT_PORTS[scheme]) for item in hosts.split(","))
    if scheme == CLUSTER_SCHEME:
        if path not in ("", "0"):
            raise ValueError("a Redis Cluster has database 0 only: no path after the hosts")
        return TopologyURL(scheme, nodes, username, password)
    service_name = unquote(path)
    if not service_name or "/" in service_name:
        raise ValueError("a redis+sentinel:// URL ends in /service_name, the master's name")
    return TopologyURL(scheme, nodes, username, password, service_name)


def _node(text: str, default_port: int) -> tuple[str, int]:
    """``host:port``, ``host`` or ``[ipv6]:port`` as a pair."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, port_text = text[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise ValueError("a bracketed IPv6 host must read [address]:port")
        port_text = port_text[1:]
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError("every node needs a host: host:port[,host:port…]")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("a node's port must be a number from 1 to 65535")
    return host, int(port_text)
