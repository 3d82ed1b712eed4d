#!/usr/bin/env python3
"""Writes the hand-made seeds of the fuzz corpus (fuzz/corpus/<target>/seed-*): real inputs
of each parser (the kubectl fixture, the conflists of docs/cni.md, CNI_ARGS as runtimes send
them, state files as tapwayd writes them, control requests) and the kinds of frames the unit
tests build, as raw records for the pipeline target. The rest of the corpus is what the
fuzzers found, minimised with `cargo fuzz cmin`. Run from the repository root:
    python3 fuzz/seeds.py
"""
import hashlib
import json
import os
import re
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)
    # `cargo fuzz cmin` names what it keeps by SHA-1: drop that copy of the seed.
    dup = os.path.join(d, hashlib.sha1(data).hexdigest())
    if os.path.exists(dup):
        os.remove(dup)


# --- frames (vnet header + Ethernet), as the pipeline's node sees them (fuzz/src/frames.rs) ---

GW = bytes([2, 0, 0, 0, 0, 1])
BCAST = b"\xff" * 6


def pod_mac(i):
    return bytes([2, 0, 0, 0, 1, i])


def remote_mac(i):
    return bytes([2, 0, 0, 0, 2, i])


def csum(data, acc=0):
    if len(data) % 2:
        data += b"\0"
    for (w,) in struct.iter_unpack("!H", data):
        acc += w
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return acc


def ip4(s):
    return bytes(int(x) for x in s.split("."))


def ip6(s):
    import ipaddress

    return ipaddress.IPv6Address(s).packed


def vnet(flags=0, gso=0, hdr_len=0, gso_size=0, start=0, off=0):
    return struct.pack("<BBHHHHH", flags, gso, hdr_len, gso_size, start, off, 0)


def l4(proto, sport, dport, payload, flags=0x02):
    if proto == 6:
        return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0) + payload
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def frame4(src_mac, dst_mac, src, dst, proto, seg, partial=None):
    """IPv4 frame; `partial` = (gso type, gso size) leaves the L4 checksum partial."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), 0x1234, 0, 64, proto, 0, ip4(src), ip4(dst))
    ip = ip[:10] + struct.pack("!H", 0xFFFF - csum(ip)) + ip[12:]
    pseudo = csum(ip4(src) + ip4(dst) + struct.pack("!BBH", 0, proto, len(seg)))
    at = 16 if proto == 6 else 6
    hdr = vnet()
    if partial:
        seg = seg[:at] + struct.pack("!H", pseudo) + seg[at + 2 :]
        hl = 14 + 20 + (20 if proto == 6 else 8)
        hdr = vnet(1, partial[0], hl, partial[1], 34, at)
    else:
        seg = seg[:at] + struct.pack("!H", 0xFFFF - csum(seg, pseudo)) + seg[at + 2 :]
    return hdr + dst_mac + src_mac + b"\x08\x00" + ip + seg


def frame6(src_mac, dst_mac, src, dst, nh, seg, partial=None, hop=64):
    ip = struct.pack("!IHBB16s16s", 0x60000000, len(seg), nh, hop, ip6(src), ip6(dst))
    pseudo = csum(ip6(src) + ip6(dst) + struct.pack("!IxxxB", len(seg), nh))
    at = {6: 16, 17: 6, 58: 2}[nh]
    hdr = vnet()
    if partial:
        seg = seg[:at] + struct.pack("!H", pseudo) + seg[at + 2 :]
        hdr = vnet(1, partial[0], 14 + 40 + (20 if nh == 6 else 8), partial[1], 54, at)
    else:
        seg = seg[:at] + struct.pack("!H", 0xFFFF - csum(seg, pseudo)) + seg[at + 2 :]
    return hdr + dst_mac + src_mac + b"\x86\xdd" + ip + seg


def arp(src_mac, op, sender_ip, target_ip, dst=BCAST, target_mac=b"\0" * 6):
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + src_mac + ip4(sender_ip) + target_mac + ip4(target_ip)
    return vnet() + dst + src_mac + b"\x08\x06" + body


def ndp(src_mac, src, dst, dst_mac, ty, body, opts=b""):
    return frame6(src_mac, dst_mac, src, dst, 58, bytes([ty, 0, 0, 0]) + body + opts, hop=255)


def records(*frames):
    """Pipeline raw mode: mode byte 0, then [port][clock step][len u16 le][bytes] each."""
    out = b"\0"
    for port, step, f in frames:
        out += bytes([port, step]) + struct.pack("<H", len(f)) + f
    return out


P1, P2, P3 = pod_mac(1), pod_mac(2), pod_mac(3)
VIP_TCP, VIP_UDP, VIP6 = "10.96.0.10", "10.96.0.53", "fd00:0:96::10"
syn_vip = frame4(P2, GW, "10.0.0.3", VIP_TCP, 6, l4(6, 40001, 80, b""))
reply = frame4(P1, GW, "10.0.0.2", "10.0.0.3", 6, l4(6, 8080, 40000, b"", 0x12))
udp_dns = frame4(P1, GW, "10.0.0.2", VIP_UDP, 17, l4(17, 5353, 53, b"\x12\x34" + b"\0" * 10))
udp_pods = frame4(P1, P2, "10.0.0.2", "10.0.0.3", 17, l4(17, 1000, 2000, b"hello"))
gso_tcp = frame4(P1, remote_mac(1), "10.0.0.2", "10.0.1.5", 6, l4(6, 40000, 8080, b"x" * 20000, 0x18), (1, 1448))
gso_udp = frame4(P3, remote_mac(2), "10.0.0.4", "10.0.1.6", 17, l4(17, 41000, 53, b"u" * 9000), (5, 1400))
gso_tcp6 = frame6(P1, remote_mac(1), "fd00::2", "fd00:0:0:1::5", 6, l4(6, 8443, 50000, b"y" * 30000, 0x18), (4, 1428))
syn6_vip = frame6(remote_mac(2), GW, "fd00:0:0:1::6", VIP6, 6, l4(6, 50001, 443, b""))
na_spoof = ndp(P1, "fe80::100:1", "ff02::1", b"\x33\x33\0\0\0\x01", 136, b"\x20\0\0\0" + ip6("fd00::3"), b"\x02\x01" + P1)
ns = ndp(P2, "fd00::3", "ff02::1:ff00:2", b"\x33\x33\xff\0\0\x02", 135, b"\0" * 4 + ip6("fd00::2"), b"\x01\x01" + P2)
ra = ndp(P3, "fe80::100:3", "ff02::1", b"\x33\x33\0\0\0\x01", 134, b"\x40\0\x07\x08" + b"\0" * 8)
host_ns_vip = ndp(GW, "fd00::1", "ff02::1:ff00:10", b"\x33\x33\xff\0\0\x10", 135, b"\0" * 4 + ip6(VIP6), b"\x01\x01" + GW)
host_arp_vip = arp(GW, 1, "10.0.0.1", VIP_TCP)

write("pipeline", "unit-test-batch", records(
    (1, 0, frame4(P1, P2, "10.0.0.2", "10.0.0.3", 17, l4(17, 1, 2, b""))),
    (1, 0, arp(P1, 1, "10.0.0.2", "10.0.0.3")),
    (1, 0, frame4(P2, P1, "10.0.0.2", "10.0.0.3", 17, l4(17, 1, 2, b""))),
    (1, 0, frame4(P1, P2, "10.0.0.9", "10.0.0.3", 17, l4(17, 1, 2, b""))),
    (1, 0, vnet() + b"\1\2\3"),
))
write("pipeline", "service-flows", records((2, 0, syn_vip), (1, 1, reply), (1, 0, udp_dns), (4, 3, syn6_vip)))
write("pipeline", "gso-to-uplink", records((1, 0, gso_tcp), (3, 0, gso_udp), (1, 0, gso_tcp6)))
write("pipeline", "ndp", records((1, 0, na_spoof), (2, 0, ns), (3, 0, ra), (0, 0, host_ns_vip), (0, 0, host_arp_vip)))
write("pipeline", "flood", records((2, 0, udp_pods), (2, 0, arp(P2, 1, "10.0.0.3", "10.0.0.99"))))
for name, f in [("udp4", udp_pods), ("gso-tcp4", gso_tcp), ("gso-tcp6", gso_tcp6), ("ndp-na", na_spoof), ("arp", host_arp_vip)]:
    write("frame", name, f)
    write("uplink_wire", name, f)
    write("service_nat", name, f[12:])

# --- kubectl output ---
with open(os.path.join(ROOT, "switch", "tests", "fixtures", "kube-services.json"), "rb") as f:
    write("kube_import", "fixture", f.read())
write("kube_import", "single-service", json.dumps({
    "kind": "Service", "apiVersion": "v1", "metadata": {"name": "web", "namespace": "default"},
    "spec": {"clusterIPs": ["10.96.0.10", "fd00:96::10"], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
             "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}}))

# --- CNI netconfs: each plugin entry of the conflists in docs/cni.md, as the runtime passes it ---
with open(os.path.join(ROOT, "docs", "cni.md")) as f:
    doc = f.read()
n = 0
for block in re.findall(r"```json\n(.*?)```", doc, re.S):
    try:
        conflist = json.loads(block)
    except ValueError:
        continue
    for plugin in conflist.get("plugins", []):
        if plugin.get("type") != "tapway":
            continue
        conf = dict(plugin, cniVersion=conflist["cniVersion"], name=conflist["name"])
        n += 1
        write("cni_netconf", f"docs-cni-{n}", json.dumps(conf))
        conf["runtimeConfig"] = {"ips": ["10.244.1.50/24"], "mac": "02:00:00:00:00:32",
                                 "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                                 "bandwidth": {"ingressRate": 1000000, "ingressBurst": 100000}}
        conf["args"] = {"cni": {"mac": "02:00:00:00:00:33"}}
        conf["prevResult"] = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:32", "sandbox": "/var/run/netns/x"}],
                              "ips": [{"address": "10.244.1.50/24", "gateway": "10.244.1.1", "interface": 0}],
                              "routes": [{"dst": "0.0.0.0/0"}], "dns": {}}
        write("cni_netconf", f"docs-cni-{n}-runtime", json.dumps(conf))
# The conflist the DaemonSet writes: tapwayd's own IPAM, dual-stack ranges, a requested address.
write("cni_netconf", "tapway-ipam", json.dumps({
    "cniVersion": "1.0.0", "name": "tapway", "type": "tapway", "socket": "/run/tapway/tapway.sock",
    "ipam": {"type": "tapway-ipam", "ranges": [[{"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.10", "rangeEnd": "10.244.1.200"}],
                                               [{"subnet": "fd00:244:1::/64"}]],
             "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.96.0.10"]}},
    "runtimeConfig": {"ips": ["10.244.1.50/24"]}, "args": {"cni": {"ips": ["fd00:244:1::50"]}}}))
write("cni_args", "kubelet", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
      "K8S_POD_INFRA_CONTAINER_ID=4f1e;K8S_POD_UID=0b8f0d2e-4d57\0ADD\04f1e\0/var/run/netns/cni-1\0eth0\0/opt/cni/bin")
write("cni_args", "podman", "IgnoreUnknown=1;IP=10.244.1.50,fd00::50/64;MAC=02:00:00:00:00:32\0DEL\0abc\0\0eth0\0/usr/lib/cni")

# --- state files as tapwayd writes them ---
state = {"version": 1, "ports": [{
    "id": 1, "kind": "pod", "name": "tw1a2b3c4d", "netns": "/var/run/netns/cni-1", "ifname": "eth0",
    "mac": "02:00:00:00:00:05", "mtu": 1500, "ips": ["10.244.1.5/24", "fd00::5/64"], "worker": 0,
    "owner": {"container_id": "4f1e", "network": "tapway", "pod_namespace": "default", "pod_name": "web-0"},
    "bandwidth": {"ingress_rate": 1000000, "ingress_burst": 100000, "egress_rate": 0, "egress_burst": 0}}]}
write("state_files", "state", json.dumps(state))
ipam_state = dict(state, allocations=[{"network": "other", "container_id": "c9", "ifname": "eth1",
    "ips": [{"address": "10.244.1.9/24", "gateway": "10.244.1.1"}], "since": 1764790000}],
    ipam_last={"10.244.1.1-10.244.1.254@10.244.1.0/24": "10.244.1.9"})
ipam_state["ports"] = [dict(state["ports"][0], ipam={"ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1"}]})]
write("state_files", "state-ipam", json.dumps(ipam_state))
services = {"version": 1, "services": [
    {"name": "default/web:http", "vip": "10.96.0.10", "port": 80, "protocol": "tcp", "affinity": {"type": "none"},
     "backends": [{"ip": "10.244.1.5", "port": 8080, "weight": 1, "ready": True, "serving": True, "terminating": False}]},
    {"name": "default/dns", "vip": "fd00:96::53", "port": 53, "protocol": "udp",
     "affinity": {"type": "client_ip", "timeout": 10800}, "backends": [{"ip": "fd00::5", "port": 53}]}]}
write("state_files", "services", json.dumps(services))

# --- control socket lines ---
for i, line in enumerate([
    {"v": 1, "op": "status"},
    {"v": 1, "op": "attach", "netns": "/var/run/netns/cni-1", "ifname": "eth0", "mac": "02:00:00:00:00:05",
     "ips": [{"address": "10.244.1.5/24"}], "mtu": 1500},
    dict(services["services"][0], v=1, op="service_set"),
    {"v": 1, "op": "attach", "netns": "/var/run/netns/cni-2", "ifname": "eth0",
     "ipam": {"requested": ["10.244.1.7"], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"v": 1, "op": "ipam_allocate", "network": "other", "container_id": "c9", "ifname": "eth1",
     "ranges": [[{"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.250", "gateway": "10.244.1.1"},
                 {"subnet": "10.244.2.0/24"}], [{"subnet": "fd00::/120"}]], "requested": ["fd00::9"]},
    {"v": 1, "op": "ipam_gc", "network": "other", "valid": [{"containerID": "c9", "ifname": "eth1"}]},
    {"v": 1, "op": "ipam_list"},
]):
    write("control_request", f"line-{i}", json.dumps(line) + "\n")
