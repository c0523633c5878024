"""The case catalog, declared as data: how a connection ended, or why it never began.

Ids are a public interface (they appear in every output format). Each case cites the passages of
the project's source documents it comes from (``shared/documents``: 000/001 are one article in
English and Chinese, 002 and 004 are Chinese, 003 is the Linux ``tcp_close`` question). Where the
documents describe POSIX/BSD behaviour and Linux differs, ``sees`` records what Linux did in this
project's lab (``rstscope lab``), and ``linux_note`` says what differs.

``precedence``: a connection gets the case of the first rule that matches in the classifier; the
numbers order the catalog the same way (lower wins) and are printed by ``rstscope cases``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Case:
    id: str  # public id
    title: str  # one line, for tables and plot headings
    documents: str  # the passages it comes from
    wire: str  # what an observer sees on the wire
    sees: str  # what each application saw (Linux semantics)
    advice: str  # one line of advice
    precedence: int  # lower wins when several cases could apply
    abnormal: bool = True
    linux_note: str = ""  # where Linux differs from the documents

    def as_dict(self) -> dict:
        return asdict(self)


CATALOG: tuple[Case, ...] = (
    Case("refused", "Connection refused: nothing listens on the port",
         "000 §3; 004 (RST condition 1, \"Connect 函数返回错误ECONNREFUSED\")",
         "SYN answered by RST/ACK (seq 0, ack = SYN.seq+1), no SYN/ACK",
         "client connect() -> ECONNREFUSED",
         "check the address and port, and that the server is up and listening", 10),
    Case("unreachable", "Destination unreachable (ICMP)",
         "002 (EHOSTUNREACH / ENETUNREACH)",
         "an ICMP/ICMPv6 destination-unreachable quoting this connection's segment",
         "host -> EHOSTUNREACH, net -> ENETUNREACH, port -> ECONNREFUSED, admin-prohibited -> "
         "EHOSTUNREACH (IPv4) or EACCES (IPv6)",
         "a routing or firewall problem between the hosts", 20,
         linux_note="IPv4 host-unreachable on connect(): connect() fails at once with "
                    "EHOSTUNREACH but the socket stays in SYN_SENT until close() (SO_ERROR 0); "
                    "ICMPv6 admin-prohibited: the first ICMP is a soft error, the SYN is retried "
                    "after 1 s and the second ICMP gives EACCES. On an established connection "
                    "ICMP errors are soft: data is retransmitted and the application finally "
                    "gets EHOSTUNREACH, not ETIMEDOUT"),
    Case("injected_reset", "Reset injected by a third party",
         "beyond the documents",
         "a RST its claimed sender did not send: the sender keeps sending after it, or its TTL / "
         "IP ID / timestamp contradict the sender's other segments",
         "the victim: ECONNRESET for a connection both peers wanted",
         "a middlebox or an attacker resets connections: compare TTLs, look at the path", 30),
    Case("backlog_overflow", "Listen queue overflow: the server does not accept fast enough",
         "004 (the two listen queues, \"若两个队列都是满的,TCP就忽略此分节\")",
         "SYNs to a listening port ignored and retried about every second (linear retries), or "
         "the client's final ACK dropped by a full accept queue: the server retransmits its "
         "SYN/ACK or ignores the client's data (retransmitted, unanswered) until the queue "
         "drains, whatever the connection's ending; with tcp_abort_on_overflow=1 a bare RST "
         "after the handshake",
         "client: slow connect() or ETIMEDOUT (ECONNRESET with tcp_abort_on_overflow); a "
         "client whose final ACK was dropped: connect() returns at once, its first request "
         "waits until the server accepts",
         "raise the listen backlog (and somaxconn) and accept() faster", 40,
         linux_note="this kernel retries SYNs to a full queue about every 1 s "
                    "(tcp_syn_linear_timeouts=4), not with exponential backoff. A dropped final "
                    "ACK: the server's kernel keeps the request in SYN_RECV; in the lab (6.18, "
                    "backlog 0) it did not retransmit its SYN/ACK, the client's request was "
                    "retransmitted (0.26, 0.45, 0.9, 1.8 s apart) and the kernel's "
                    "inet_sock_set_state put ESTABLISHED at the retransmission that found room, "
                    "4 s after the client's ESTABLISHED"),
    Case("write_after_close", "Write after the peer closed",
         "000 §1; 002 (ECONNRESET, EPIPE); 004 (first paragraphs, \"杀掉服务器端处理客户端的子进程\")",
         "A sends FIN and B ACKs it; later B sends data; A's kernel answers with a bare RST "
         "(seq = B's ack)",
         "B: read() -> EOF once the FIN arrived; its late write() succeeds locally; the next "
         "write() -> EPIPE (SIGPIPE)",
         "treat read() == 0 as \"peer closed\" and stop writing; ignore SIGPIPE or use "
         "MSG_NOSIGNAL; check every write()", 50,
         linux_note="the documents say the RST gives ECONNRESET; Linux reports a RST received in "
                    "CLOSE_WAIT as EPIPE. The bare RST comes from the closer's time-wait "
                    "socket in FIN_WAIT2 (reset reason TCP_TIMEWAIT_SOCKET), not from 'no socket'"),
    Case("keepalive_timeout", "Keepalive timeout: the peer stopped answering",
         "002 (SO_KEEPALIVE)",
         "keepalive probes (seq = next-1, length 0 or 1) unanswered, then the prober's RST/ACK",
         "prober: ETIMEDOUT",
         "the peer is gone: this is keepalive doing its job", 60,
         linux_note="after TCP_KEEPCNT unanswered probes the kernel sends a RST/ACK (reason "
                    "TCP_KEEPALIVE_TIMEOUT); ETIMEDOUT, then EPIPE on the next send()"),
    Case("aborted_before_accept", "Connection reset before the server accepted it",
         "002 (ECONNABORTED paragraph)",
         "the handshake completes, then the client sends a RST before either side sent data",
         "server: accept() succeeds on Linux, the first recv() returns any data, then ECONNRESET",
         "servers must survive a reset between accept() and the first read (retry accept() on "
         "ECONNABORTED elsewhere)", 70,
         linux_note="POSIX says accept() -> ECONNABORTED; Linux's accept() succeeds and recv() "
                    "gets ECONNRESET"),
    Case("peer_state_lost", "The peer lost the connection's state (reboot, crash, NAT expiry)",
         "002 (server crash then reboot); 004 (\"服务器主机崩溃后重启\", RST condition 3)",
         "B sends on an established connection; A answers with a bare RST (seq = B's ack) "
         "although A never closed",
         "B: ECONNRESET (then EPIPE on the next write)",
         "enable keepalive or application heartbeats; reconnect on ECONNRESET", 80),
    Case("unread_data_reset", "Closed with unread data: the kernel reset the connection",
         "000 §2; 003 (tcp_close, data_was_unread, RFC 2525 §2.17)",
         "A received data it never read, then sends RST/ACK (seq = A's next) and never a FIN",
         "B: ECONNRESET on its next read()/write(); B's unread data is lost",
         "read until EOF (or shutdown(SHUT_WR) then drain) before close()", 90),
    Case("abortive_close", "Abortive close (SO_LINGER 0)",
         "000/001 (\"Exception closing a connection has two advantages\"); 004 (RST condition 2)",
         "A sends RST/ACK without a FIN and without unread data (its last payload came after "
         "what it received)",
         "B: ECONNRESET on its next call; A: nothing",
         "if unintended, remove the zero linger and close with FIN", 100,
         linux_note="the RST/ACK's reset reason is TCP_STATE (tcp_disconnect), not "
                    "TCP_ABORT_ON_LINGER; a client aborting this way after reading the answer "
                    "looks exactly like unread_data_reset on the wire (reported as that, "
                    "likely, with this case as rival). Conversely a server that wrote its "
                    "answer without reading the request and then closed (unread data) looks "
                    "like this case, small or large request alike (receive autotuning grew the "
                    "window as when the request is read): certain only when the sender "
                    "received no payload, otherwise likely with unread_data_reset as rival"),
    Case("retransmission_timeout", "Retransmission timeout: data never acknowledged",
         "002 (ETIMEDOUT, host crash); 004 §3 (主机崩溃)",
         "data retransmitted with growing gaps, never ACKed; then silence (or a RST)",
         "sender: ETIMEDOUT after tcp_retries2 / TCP_USER_TIMEOUT; the next send() -> EPIPE",
         "bound the wait with keepalive or TCP_USER_TIMEOUT; use heartbeats", 110,
         linux_note="Linux sends neither FIN nor RST when it gives up"),
    Case("syn_timeout", "Connect timeout: SYN never answered",
         "002 (\"connect time out\")",
         "SYN retransmitted, never answered",
         "client connect() -> ETIMEDOUT",
         "the host is down or a firewall drops silently: check reachability", 120,
         linux_note="this kernel retries a SYN about every 1 s for the first 4 retries "
                    "(tcp_syn_linear_timeouts=4), then doubles; TCP_SYNCNT=2 gave 6 SYNs and "
                    "ETIMEDOUT after ~7.1 s (a time budget, not a count)"),
    Case("close_wait_stall", "Peer never closed: socket stuck in CLOSE_WAIT",
         "000/001 (\"half open\" / \"半打开\"); 002 (the client does not handle the FIN)",
         "A sent FIN; B ACKed it but sent no FIN of its own before the capture ended",
         "B has not noticed read() == 0; a socket leak if it never closes",
         "close the socket after read() returns 0", 130),
    Case("ignored_reset", "Reset ignored (RFC 5961)",
         "beyond the documents (RFC 5961)",
         "a RST whose sequence number is not the expected one: a challenge ACK (in window) or "
         "silence, and the connection goes on",
         "nothing", "none; worth counting: someone is sending stray or forged resets", 140),
    Case("middlebox_idle_timeout", "A firewall, NAT or load balancer forgot an idle connection",
         "beyond the documents (NAT, firewalls, load balancers)",
         "after an idle gap, the next segment is answered by a RST the peer did not send (its "
         "TTL is not the peer's), or it is dropped and retransmitted until the sender times out; "
         "the peer sends nothing after the gap",
         "sender: ECONNRESET (reset) or ETIMEDOUT (silent drop); the peer sees nothing and "
         "still thinks the connection open",
         "send keepalives (or application pings) more often than the middlebox's idle timeout, "
         "or raise that timeout", 25,
         linux_note="lab: conntrack with tcp_loose 0 marks the first segment after its "
                    "established timeout INVALID; nftables' `reject with tcp reset` answers with "
                    "a bare RST (seq = the segment's ack) from the router, TTL 64 where the "
                    "server's segments arrive with 63; dropped instead, the client's data is "
                    "retransmitted until TCP_USER_TIMEOUT and no FIN or RST is sent. A silent "
                    "drop looks exactly like a peer that died during the gap "
                    "(retransmission_timeout): reported likely, with that rival"),
    Case("zero_window_stall", "Zero window: the receiver stopped reading",
         "beyond the documents",
         "the receiver's advertised window falls to 0 and stays 0 to its last segment; the "
         "sender's zero-window probes (seq = next-1) are answered with window 0 (Linux answers "
         "some of them only); no FIN or RST",
         "sender: send() blocks once its buffer is full, then ETIMEDOUT where TCP_USER_TIMEOUT "
         "is set; receiver: nothing (its application is not reading)",
         "find what blocks the receiving application's read loop; bound the sender's wait with "
         "TCP_USER_TIMEOUT", 55,
         linux_note="this kernel (6.18) probes with backoff (0.2, 0.45, 0.86 s apart with a "
                    "fast path) and, at TCP_USER_TIMEOUT, drops the connection silently: no "
                    "FIN, no RST on the wire, ETIMEDOUT for send(); the capture cannot tell a "
                    "sender that gave up from one still waiting"),
    Case("listener_closed", "The listener closed with connections in its accept queue",
         "beyond the documents (server restarts)",
         "the handshake completed (the client may have sent data, which the server's kernel "
         "ACKed); the server never sent data nor a FIN; then its RST/ACK (seq = its ISN+1) "
         "with the other queued connections' in the same burst; SYNs to that port are refused "
         "afterwards",
         "clients: ECONNRESET on their next call; the server application never accepted them",
         "drain or hand over the listening socket on restart (SO_REUSEPORT, socket "
         "activation); clients should retry idempotent requests", 75,
         linux_note="inet_csk_listen_stop() disconnects every queued child: RST/ACK with "
                    "reset reason TCP_STATE, in a burst of a few microseconds. One connection "
                    "alone cannot show the burst: without data it looks like a server that "
                    "accepted and aborted (reported listener_closed, likely, rival "
                    "abortive_close); with the client's data it looks exactly like a server "
                    "that closed without reading (reported unread_data_reset, likely, naming "
                    "this case)"),
    # ordinary endings
    Case("simultaneous_open", "Simultaneous open", "000 §4",
         "SYNs cross: both sides SYN_SENT then SYN_RCVD", "both connect() calls succeed",
         "nothing to do", 200, abnormal=False),
    Case("simultaneous_close", "Simultaneous close", "000 §5",
         "each side sent its FIN before receiving the other's: both pass CLOSING",
         "both: read() -> EOF", "nothing to do", 210, abnormal=False),
    Case("half_close", "Half close", "000 §1 (\"向一个 FIN_WAIT2 状态的服务 TCP 写入数据不成问题\")",
         "A shuts down its sending side, B keeps sending data that A acknowledges, then closes",
         "both: read() -> EOF", "nothing to do", 220, abnormal=False),
    Case("graceful", "Graceful close",
         "000 §1 first half; 002 (server process killed: FIN, ACK)",
         "FIN and ACK in both directions", "both: read() -> EOF", "nothing to do", 230,
         abnormal=False,
         linux_note="the kernel never traces TIME_WAIT: the active closer's socket goes "
                    "FIN_WAIT2 -> CLOSE and a time-wait socket takes over (an orphaned socket "
                    "does so as soon as its FIN is acknowledged)"),
    Case("open", "Still open when the capture ended", "—",
         "established, no FIN or RST", "nothing yet", "nothing to do", 240, abnormal=False),
    Case("partial", "Capture joined mid-stream", "—",
         "no SYN seen and nothing above applies", "unknown", "capture from the start", 250,
         abnormal=False),
)

# Cases CASES.md already lists that the catalog does not have yet, with the issue that brings
# them (each needs its lab scenario, captures and rule before it joins CATALOG).
PLANNED: dict[str, str] = {}

BY_ID: dict[str, Case] = {c.id: c for c in CATALOG}
ABNORMAL: frozenset[str] = frozenset(c.id for c in CATALOG if c.abnormal)


def get(case_id: str) -> Case:
    return BY_ID[case_id]
