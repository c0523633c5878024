"""Run scenarios: namespace, capture, trace, sockets, then the label and its verification.

Order matters: tcpdump and the trace start before the first packet; after the scenario the
capture and trace stop *before* the remaining sockets are closed, so the teardown the lab does
for hygiene (closing what ``close_wait_stall`` or ``open`` left open) never shows up as part of
the case. Everything is undone in ``finally`` blocks, also on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import platform
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from analyzer.lab import scenarios  # noqa: F401  (registers every scenario)
from analyzer.lab.capture import Tcpdump
from analyzer.lab.context import Lab, fmt_addr
from analyzer.lab.model import REGISTRY, LabResult, Scenario
from analyzer.lab.netns import NetNs
from analyzer.lab.trace import TraceSession
from analyzer.lab.verify import verify
from analyzer.lab.wire import read_packets, summarize

PORT_BASE = 20000  # below the host's ephemeral range, so host sockets rarely share our ports
PORT_STRIDE = 20   # per scenario: server port P, its clients P+1..P+9; IPv6 uses P+10..P+19
RECORDED_SYSCTLS = ("net.ipv4.tcp_syn_linear_timeouts", "net.ipv4.tcp_syn_retries",
                    "net.ipv4.tcp_abort_on_overflow", "net.ipv4.tcp_retries2")
KERNEL_EVENTS = ("tcp_send_reset", "inet_sock_set_state", "inet_sk_error_report",
                 "tcp_receive_reset")


def port_for(case: str, family: int) -> int:
    index = sorted(REGISTRY).index(case)
    return PORT_BASE + PORT_STRIDE * index + (10 if family == 6 else 0)


def port_span() -> tuple[int, int]:
    return PORT_BASE, PORT_BASE + PORT_STRIDE * len(REGISTRY) + 19


def _side_of(ev: dict, endpoints: dict[str, tuple[str, int]], lo: int) -> str:
    """Which socket an event belongs to, by its local port (and remote port for a child)."""
    sport, dport = ev.get("sport"), ev.get("dport")
    server_port = endpoints.get("server", ("", lo))[1]
    for side, (_, port) in endpoints.items():
        if side != "server" and sport == port:
            return side
    if sport == server_port:
        return "listener" if dport == 0 else "server"
    return f"port:{sport}"


def kernel_section(events: list[dict], lab: Lab) -> tuple[dict, dict]:
    lo, hi = lab.port, lab.port + 9
    section: dict[str, list[dict]] = {name: [] for name in KERNEL_EVENTS}
    states: dict[str, list[str]] = {}
    for ev in events:
        if not (lo <= ev.get("sport", 0) <= hi or lo <= ev.get("dport", 0) <= hi):
            continue
        rec = {k: v for k, v in ev.items() if k not in ("event", "ts")}
        rec = {"t": round(ev["ts"] - lab.t0, 6), **rec, "side": _side_of(ev, lab.endpoints, lo)}
        section.setdefault(ev["event"], []).append(rec)
        if ev["event"] == "inet_sock_set_state":
            seq = states.setdefault(rec["side"], [rec["oldstate"]])
            seq.append(rec["newstate"])
    return section, states


def _first_errnos(calls: list[dict]) -> dict[str, str | None]:
    first: dict[str, str | None] = {}
    for c in calls:
        first.setdefault(c["side"], None)
        if first[c["side"]] is None and c["result"].startswith("E") and c["result"] != "EOF":
            first[c["side"]] = c["result"]
    first.setdefault("client", None)
    first.setdefault("server", None)
    return first


def run_one(sc: Scenario, family: int, outdir: Path, trace: TraceSession | None,
            serial: int) -> LabResult:
    stem = sc.id if family == 4 else f"{sc.id}_v6"  # a variant's files carry its own id
    pcap, label_path = outdir / f"{stem}.pcap", outdir / f"{stem}.json"
    port = port_for(sc.id, family)
    ns = NetNs(f"rstscope_lab_{os.getpid()}_{serial}")
    lab = Lab(family, port, ns)
    dump = Tcpdump(pcap, f"portrange {port}-{port + 9} or icmp or icmp6",
                   prefix=ns.exec_prefix())
    error, events, started = None, [], time.monotonic()
    try:
        ns.create()
        ns.sysctl_set("net.ipv4.ip_local_port_range", f"{port + 1} {port + 9}")
        for key in RECORDED_SYSCTLS:
            value = ns.sysctl_get(key)
            if value is not None:
                lab.sysctls[key] = value
        if trace is not None:
            trace.clear()
        lab.start_capture = dump.start  # (a scenario may pass the interface it built)
        if not sc.capture_late:
            dump.start()
        ns.enter()
        lab.t0 = time.monotonic()
        sc.run(lab)
    except Exception as exc:  # a broken scenario is reported, the next one still runs
        error = f"{type(exc).__name__}: {exc}"
        lab.note("scenario error: " + traceback.format_exc(limit=3).strip().replace("\n", " | "))
    finally:
        try:
            dump.stop()
            if trace is not None:
                events = trace.collect()
        finally:
            lab.close_all()
            for undo in reversed(lab.cleanups):
                try:
                    undo()
                except Exception as exc:  # keep undoing the rest, say what stayed
                    lab.note(f"cleanup failed: {exc}")
            ns.destroy()
    label = build_label(sc, lab, events, trace is not None, pcap)
    ok, reason = verify(sc.id, label) if error is None else (False, error)
    label["verified"], label["verify_reason"] = ok, reason
    label_path.write_text(json.dumps(label, indent=1) + "\n")
    return LabResult(sc.case_id, family, pcap if pcap.exists() else None, label_path, ok, reason,
                     round(time.monotonic() - started, 3), error, label)


def build_label(sc: Scenario, lab: Lab, events: list[dict], tracefs: bool, pcap: Path) -> dict:
    ep = lab.endpoints
    client, server = ep.get("client"), ep.get("server")
    kernel, states = kernel_section(events, lab)
    packets = read_packets(pcap) if pcap.exists() else []
    return {
        "case": sc.case_id, "scenario": sc.id, "variant": sc.variant, "family": lab.family, "hand_crafted": lab.hand_crafted,
        "kernel_release": platform.release(),
        "client": fmt_addr(*client) if client else None,
        "server": fmt_addr(*server) if server else None,
        "endpoints": {side: fmt_addr(*addr) for side, addr in ep.items()},
        # 4-tuples as each socket sees them (local, remote): split the kernel events by these
        "tuples": ({"client": [fmt_addr(*client), fmt_addr(*server)],
                    "server": [fmt_addr(*server), fmt_addr(*client)]} if client and server else {}),
        "description": sc.description,
        "calls": lab.calls,
        "first_errno": _first_errnos(lab.calls),
        "kernel": kernel if tracefs else {},
        "kernel_states": states,
        "tracefs": tracefs,
        "sysctls": lab.sysctls,
        "wire": summarize(packets, client, server),
        "capture_start_epoch": packets[0]["epoch"] if packets else None,
        "notes": " ".join(lab.notes),
    }


def run_all(case_ids: list[str], outdir: Path, families: tuple[str, ...], tracefs: bool,
            log: Callable[[str], None]) -> list[LabResult]:
    outdir.mkdir(parents=True, exist_ok=True)
    results: list[LabResult] = []
    lo, hi = port_span()
    trace_cm = TraceSession(lo, hi) if tracefs else None
    if trace_cm is not None:
        trace_cm.__enter__()
    try:
        serial = 0
        for case in case_ids:
            sc = REGISTRY[case]
            for fam in families:
                if fam not in sc.families:
                    continue
                serial += 1
                res = run_one(sc, int(fam), outdir, trace_cm, serial)
                results.append(res)
                mark = "ok " if res.verified else "BAD"
                log(f"lab {mark} {case:<24} v{fam} {res.seconds:6.2f}s  {res.reason}")
    finally:
        if trace_cm is not None:
            trace_cm.__exit__(None, None, None)
    return results
