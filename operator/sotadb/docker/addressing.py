"""PostgreSQL's fixed address on its database's network. Pure.

PgBouncer dials PostgreSQL by name (`sota-db-{slug}`), and its resolver, c-ares 1.34 in Debian's
build, keeps every answer in its own query cache for the record's TTL: Docker's embedded DNS
says 600 s, and PgBouncer's `dns_max_ttl` only bounds PgBouncer's own cache in front of it
(PgBouncer 1.24 leaves c-ares' cache at its default, on, up to 3600 s). Docker 20.10 gives a
container starting on the network the lowest free address, so one started while PostgreSQL is
stopped (an app being attached, a backup runner) takes PostgreSQL's; PostgreSQL then comes back
at another address and PgBouncer dials the old one for up to ten minutes.

So, as a Kubernetes Service has a fixed ClusterIP, PostgreSQL has a fixed address here: the
network gets an explicit subnet whose upper half is the range Docker hands out to every other
container, and PostgreSQL takes the first address of the lower half after the gateway. That
holds whoever (re)starts it: `sotadb up`, a restore, or the restart policy after a crash.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

# A /28 still leaves 6 addresses for PgBouncer, apps and backup runners; Docker's default pools
# hand out /16 and /20.
SMALLEST_PREFIX: Final = 28


@dataclass(frozen=True)
class NetworkLayout:
    subnet: str
    gateway: str
    dynamic_range: str  # where Docker places containers that ask for no address
    postgres_address: str


def layout_for(subnet: str, gateway: str | None = None) -> NetworkLayout:
    """The layout of a network on `subnet` (the one Docker picked for it), keeping its gateway."""
    network = ipaddress.IPv4Network(subnet)
    if network.prefixlen > SMALLEST_PREFIX:
        raise ValueError(f"subnet {subnet} is smaller than /{SMALLEST_PREFIX}")
    lower, upper = network.subnets(prefixlen_diff=1)
    gateway_address = ipaddress.IPv4Address(gateway) if gateway else next(iter(network.hosts()))
    postgres = next(host for host in lower.hosts() if host != gateway_address)
    return NetworkLayout(str(network), str(gateway_address), str(upper), str(postgres))


def layout_of(network_attrs: Mapping[str, Any]) -> NetworkLayout | None:
    """The layout a network was created with, or None for one without it (created by an older
    sotadb: PostgreSQL then gets whatever address Docker gives it)."""
    for pool in (network_attrs.get("IPAM") or {}).get("Config") or []:
        subnet, dynamic_range = pool.get("Subnet"), pool.get("IPRange")
        if not subnet or not dynamic_range or ":" in subnet:
            continue
        try:
            layout = layout_for(subnet, pool.get("Gateway") or None)
        except ValueError:
            return None
        return layout if layout.dynamic_range == dynamic_range else None
    return None
