"""PostgreSQL's fixed address on its Docker network (`sotadb.docker.addressing`). The runtime's
use of it, against a real engine, is tests/dataplane/test_pooler_reconnect.py."""

from __future__ import annotations

import ipaddress

import pytest

from sotadb.docker.addressing import layout_for, layout_of


@pytest.mark.parametrize(
    ("subnet", "gateway", "postgres", "dynamic"),
    [
        ("172.18.0.0/16", "172.18.0.1", "172.18.0.2", "172.18.128.0/17"),
        ("192.168.16.0/20", "192.168.16.1", "192.168.16.2", "192.168.24.0/21"),
        ("10.9.0.0/28", None, "10.9.0.2", "10.9.0.8/29"),
        ("10.9.0.0/24", "10.9.0.5", "10.9.0.1", "10.9.0.128/25"),  # a gateway elsewhere
    ],
)
def test_postgres_is_outside_the_range_docker_hands_out(
    subnet: str, gateway: str | None, postgres: str, dynamic: str
):
    layout = layout_for(subnet, gateway)
    assert (layout.postgres_address, layout.dynamic_range) == (postgres, dynamic)
    assert ipaddress.IPv4Address(layout.postgres_address) not in ipaddress.IPv4Network(dynamic)
    assert layout.postgres_address != layout.gateway
    assert ipaddress.IPv4Address(layout.gateway) in ipaddress.IPv4Network(subnet)


def test_a_subnet_too_small_to_split_is_refused():
    with pytest.raises(ValueError, match="smaller than /28"):
        layout_for("10.9.0.0/29")


def test_a_network_reads_back_its_layout_and_an_older_one_has_none():
    made = layout_for("192.168.16.0/20", "192.168.16.1")
    attrs = {"IPAM": {"Config": [
        {"Subnet": "fd00::/64"},
        {"Subnet": made.subnet, "Gateway": made.gateway, "IPRange": made.dynamic_range},
    ]}}  # fmt: skip
    assert layout_of(attrs) == made
    legacy = {"IPAM": {"Config": [{"Subnet": "192.168.16.0/20", "Gateway": "192.168.16.1"}]}}
    assert layout_of(legacy) is None
    other_range = {
        "IPAM": {"Config": [{**attrs["IPAM"]["Config"][1], "IPRange": "192.168.16.0/21"}]}
    }
    assert layout_of(other_range) is None
    assert layout_of({}) is None
