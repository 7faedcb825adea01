"""The lab internet's pure parts: the address plan, the router's nftables ruleset, tc's lines.

The integration tests (test_internet.py) run them for real; these pin what they say."""

from __future__ import annotations

import ipaddress

import pytest

from toxbridge.lab.bootstrapd import bootstrap_nodes_setting
from toxbridge.lab.internet import (
    BOOTSTRAP_ADDRESS,
    MAX_DHT_NODES,
    Link,
    SitePlan,
    dht_node_address,
    in_documentation_ranges,
    nft_ruleset,
    parse_qdisc_stats,
    tc_rate_cap,
)


def test_every_address_of_every_household_is_in_the_documentation_ranges():
    plans = [SitePlan.of(i) for i in range(16)]
    dht_nodes = [dht_node_address(i) for i in range(MAX_DHT_NODES)]
    addresses = [a for plan in plans for a in plan.addresses()] + dht_nodes
    assert all(in_documentation_ranges(a) for a in addresses)
    assert len(set(addresses)) == len(addresses)  # nobody shares an address
    lans = [ipaddress.ip_network(plan.lan_network) for plan in plans]
    assert not any(x.overlaps(y) for i, x in enumerate(lans) for y in lans[i + 1 :])
    for plan in plans:  # router and host on the household's own slice
        lan = ipaddress.ip_network(plan.lan_network)
        assert ipaddress.ip_address(plan.host) in lan and ipaddress.ip_address(plan.router_lan) in lan


def test_neighbours_sit_in_different_ranges_and_the_plan_refuses_a_seventeenth():
    assert SitePlan.of(0).host.startswith("192.0.2.") and SitePlan.of(1).host.startswith("198.51.100.")
    assert SitePlan.of(0).wan == "203.0.113.10" and SitePlan.of(1).wan == "203.0.113.11"
    with pytest.raises(ValueError, match="room for 16"):
        SitePlan.of(16)


def test_the_documentation_check_refuses_private_and_public_addresses():
    for outside in ("10.0.0.1", "192.168.1.1", "8.8.8.8", "127.0.0.1", "203.0.114.1"):
        assert not in_documentation_ranges(outside)


def test_a_plain_router_masquerades_and_drops_only_what_the_internet_sends_it_unasked():
    ruleset = nft_ruleset(SitePlan.of(0), Link())
    assert 'oifname "wan" masquerade' in ruleset
    chains = ruleset.split("\tchain ")[1:]
    drops = [c.split()[0] for c in chains if "drop" in c]
    assert drops == ["input"] and 'iifname "wan" ct state new drop' in chains[0]
    assert "dnat" not in ruleset


def test_loss_udp_drop_and_port_forwards_land_in_their_chains():
    plan = SitePlan.of(1)
    ruleset = nft_ruleset(plan, Link(loss=0.02, drop_udp=True, forward_tcp=(25, 587)))
    forward = ruleset.split("chain forward")[1].split("chain prerouting")[0]
    prerouting = ruleset.split("chain prerouting")[1].split("chain postrouting")[0]
    assert "meta l4proto udp drop" in forward
    assert "numgen random mod 1000 < 20 drop" in forward
    assert f'iifname "wan" tcp dport 25 dnat to {plan.host}:25' in prerouting
    assert f'iifname "wan" tcp dport 587 dnat to {plan.host}:587' in prerouting


def test_a_link_refuses_nonsense():
    with pytest.raises(ValueError):
        Link(loss=1.0)
    with pytest.raises(ValueError):
        Link(up_mbit=0)
    with pytest.raises(ValueError):
        Link(up_mbit=5, queue_ms=0)


def test_rate_caps_are_token_buckets_with_a_burst_of_at_least_two_frames():
    assert tc_rate_cap("wan", 5) == [
        "tc", "qdisc", "replace", "dev", "wan", "root", "tbf",
        "rate", "5000000bit", "burst", "6250", "latency", "200ms",
    ]  # fmt: skip
    assert tc_rate_cap("lan", 0.1)[tc_rate_cap("lan", 0.1).index("burst") + 1] == "3200"
    assert tc_rate_cap("wan", 5, queue_ms=50)[-1] == "50ms"


def test_link_description_names_every_parameter():
    text = Link(down_mbit=50, up_mbit=5, loss=0.02, drop_udp=True).describe()
    assert text == "down 50 Mbit/s, up 5 Mbit/s, loss 2.0%, queue 200 ms, UDP dropped"
    assert Link().describe() == "down uncapped, up uncapped, loss 0.0%"


def test_the_caps_counters_are_read_from_tc_statistics():
    text = (
        "qdisc tbf 8003: root refcnt 3 rate 5Mbit burst 6250b lat 200ms \n"
        " Sent 27734017 bytes 19301 pkt (dropped 12, overlimits 4242 requeues 0) \n"
        " backlog 0b 0p requeues 0\n"
    )
    stats = parse_qdisc_stats(text)
    assert (stats.sent_bytes, stats.dropped, stats.overlimits) == (27734017, 12, 4242)
    with pytest.raises(ValueError):
        parse_qdisc_stats("qdisc noqueue 0: root refcnt 2\n")


def test_the_first_dht_node_is_the_bridge_and_the_plan_refuses_one_too_many():
    assert dht_node_address(0) == BOOTSTRAP_ADDRESS
    with pytest.raises(ValueError, match="room for 32 DHT nodes"):
        dht_node_address(MAX_DHT_NODES)


def test_a_further_bootstrapd_is_told_the_first_node_in_libconfig():
    key = bytes(range(32))
    assert bootstrap_nodes_setting([("203.0.113.1", 33445, key)]) == (
        f'{{ address = "203.0.113.1"; port = 33445; public_key = "{key.hex().upper()}"; }}'
    )
    assert bootstrap_nodes_setting([]) == ""
