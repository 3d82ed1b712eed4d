#!/usr/bin/python3
"""The smallest CRI client the containerd test needs (crictl is not packaged in Debian 12).

Speaks the Kubernetes CRI (runtime.v1 RuntimeService) over containerd's gRPC socket with
Debian's python3-grpcio. The few messages it needs are encoded by hand (field numbers from
k8s.io/cri-api pkg/apis/runtime/v1/api.proto), so no generated code and no protoc are needed.

    cri.py SOCKET version
    cri.py SOCKET runp NAME UID NAMESPACE [HOSTIP:HOSTPORT:CTRPORT...]  -> the sandbox ID
    cri.py SOCKET inspectp ID                       -> JSON {state, ip, netns, cniResult}
    cri.py SOCKET create POD_ID NAME IMAGE POD_NAME POD_UID POD_NS CMD...  -> container ID
                                                     (the sandbox config is rebuilt without ports)
    cri.py SOCKET start CTR_ID
    cri.py SOCKET exec CTR_ID TIMEOUT CMD...         -> the command's stdout; exits with its code
    cri.py SOCKET stopp ID | rmp ID
    cri.py SOCKET podsandboxes                      -> one sandbox ID per line
"""
import json
import sys

import grpc

RT = "/runtime.v1.RuntimeService/"


# --- protobuf wire format, the subset used here -------------------------------------------
def _varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_bytes(field, data):
    if isinstance(data, str):
        data = data.encode()
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def f_int(field, n):
    return _varint(field << 3) + _varint(n) if n else b""


def f_map(field, d):
    return b"".join(f_bytes(field, f_bytes(1, k) + f_bytes(2, v)) for k, v in d.items())


def decode(buf):
    """Message bytes -> {field: [values]} (varints as int, length-delimited as bytes)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, i = _read_varint(buf, i)
        elif wire == 2:
            n, i = _read_varint(buf, i)
            val, i = buf[i:i + n], i + n
        elif wire == 1:
            val, i = buf[i:i + 8], i + 8
        elif wire == 5:
            val, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("unsupported wire type %d" % wire)
        out.setdefault(field, []).append(val)
    return out


def _read_varint(buf, i):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def first(msg, field, default=b""):
    return msg.get(field, [default])[0]


# --- CRI messages ---------------------------------------------------------------------------
def sandbox_config(name, uid, namespace, ports=()):
    """PodSandboxConfig: metadata=1, hostname=2, port_mappings=5, labels=6. `ports` are
    "HOSTIP:HOSTPORT:CONTAINERPORT" strings (TCP)."""
    metadata = f_bytes(1, name) + f_bytes(2, uid) + f_bytes(3, namespace)
    mappings = b""
    for p in ports:
        host_ip, host_port, ctr_port = p.rsplit(":", 2)
        # PortMapping: protocol=1 (TCP=0), container_port=2, host_port=3, host_ip=4
        mappings += f_bytes(5, f_int(2, int(ctr_port)) + f_int(3, int(host_port)) + f_bytes(4, host_ip))
    return f_bytes(1, metadata) + f_bytes(2, name) + mappings + f_map(6, {"tapway-test": "1"})


def call(chan, method, req):
    return decode(chan.unary_unary(RT + method)(req, timeout=120))


def main(argv):
    sock, cmd, args = argv[1], argv[2], argv[3:]
    chan = grpc.insecure_channel("unix://" + sock)
    if cmd == "version":
        r = call(chan, "Version", f_bytes(1, "v1"))
        print(" ".join(first(r, i).decode() for i in (2, 3, 4)))
    elif cmd == "runp":
        name, uid, ns = args[:3]
        r = call(chan, "RunPodSandbox", f_bytes(1, sandbox_config(name, uid, ns, args[3:])))
        print(first(r, 1).decode())
    elif cmd == "inspectp":
        r = call(chan, "PodSandboxStatus", f_bytes(1, args[0]) + f_int(2, 1))
        status = decode(first(r, 1))
        network = decode(first(status, 5))
        info = {}
        for entry in r.get(2, []):
            kv = decode(entry)
            info[first(kv, 1).decode()] = first(kv, 2).decode()
        verbose = json.loads(info.get("info", "{}") or "{}")
        spec_ns = ((verbose.get("runtimeSpec") or {}).get("linux") or {}).get("namespaces") or []
        netns = [n.get("path", "") for n in spec_ns if n.get("type") == "network"]
        print(json.dumps({
            "state": "READY" if first(status, 3, 0) == 0 else "NOTREADY",
            "ip": first(network, 1).decode(),
            "netns": netns[0] if netns else "",
            "cniResult": verbose.get("cniResult"),
        }))
    elif cmd == "create":
        pod, name, image, pname, puid, pns = args[:6]
        command = args[6:]
        caps = f_bytes(1, f_bytes(1, "NET_RAW"))  # LinuxContainerSecurityContext.capabilities
        config = (f_bytes(1, f_bytes(1, name)) + f_bytes(2, f_bytes(1, image))
                  + b"".join(f_bytes(3, c) for c in command)
                  + f_bytes(15, f_bytes(2, caps)))
        r = call(chan, "CreateContainer",
                 f_bytes(1, pod) + f_bytes(2, config) + f_bytes(3, sandbox_config(pname, puid, pns)))
        print(first(r, 1).decode())
    elif cmd == "start":
        call(chan, "StartContainer", f_bytes(1, args[0]))
    elif cmd == "exec":
        ctr, timeout = args[0], int(args[1])
        req = f_bytes(1, ctr) + b"".join(f_bytes(2, c) for c in args[2:]) + f_int(3, timeout)
        r = call(chan, "ExecSync", req)
        sys.stdout.write(first(r, 1).decode(errors="replace"))
        sys.stderr.write(first(r, 2).decode(errors="replace"))
        return first(r, 3, 0)
    elif cmd in ("stopp", "rmp"):
        call(chan, "StopPodSandbox" if cmd == "stopp" else "RemovePodSandbox", f_bytes(1, args[0]))
    elif cmd == "podsandboxes":
        r = call(chan, "ListPodSandbox", b"")
        for item in r.get(1, []):
            print(first(decode(item), 1).decode())
    else:
        print("unknown command %s" % cmd, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except grpc.RpcError as e:
        print("cri.py %s: %s: %s" % (sys.argv[2], e.code(), e.details()), file=sys.stderr)
        sys.exit(1)
