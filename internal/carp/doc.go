// Package carp is what carpwatch knows of the CARP virtual IP (VIP): when
// the VIP arrives on or leaves an interface of this host (Watch), whether
// another host still answers for it before a takeover (Probe), and telling
// the segment's switches and neighbours that it has moved (Announce).
// DESIGN.md section 5 is the failover these serve.
//
// # Watching the VIP
//
// The CARP speaker (ucarp, keepalived, kernel CARP) adds and removes the
// VIP; carpwatch must not depend on that speaker's up and down scripts, so
// Watch follows the kernel's own account through rtnetlink. It keeps one
// netlink socket joined to the link and address multicast groups and, on
// that same socket, asks for a dump of all links and then of all addresses.
// Because the dumps and the notifications come in one ordered stream, the
// state rebuilt from them is the kernel's at the end of each dump and after
// every notification that follows; the first Event is the state at the end
// of the first dump.
//
// netlink.AddrSubscribeWithOptions with ListExisting does almost this, but
// it drops the dump's NLMSG_DONE, so its user cannot tell "the VIP is not
// there" from "the listing has not reached it yet", and a watcher that
// reports early can report a VIP absent, then present, that never left.
// Watch therefore reads the socket itself (the vishvananda/netlink nl
// package opens it in the right namespace) and decodes the messages with
// the standard library's netlink parser.
//
// A receive error (the socket's buffer overflowed and the kernel dropped
// notifications, ENOBUFS, or any other) ends the socket: Watch opens a new
// one and lists again, and reports the state if it differs from the last
// one reported. Events therefore alternate strictly between present and
// absent, and the last one always matches the kernel once the stream is
// quiet. What cannot be seen is a VIP that left and came back (or came and
// left) entirely inside a gap whose notifications the kernel dropped, or
// inside one dump: nothing in the kernel records it. Fencing (DESIGN.md
// section 4) is what keeps such a flap harmless: a master that another one
// replaced meanwhile finds a higher term.
//
// The VIP is matched by address, not by prefix length: ucarp's up scripts
// add it as VIP/32 or with the subnet's prefix beside the host's own
// address in that subnet, and either counts. The interface is matched by
// name: one that does not exist yet, or was renamed away, holds nothing,
// and its appearance (or return under the name) is seen in the link
// notifications.
//
// # Namespaces
//
// Every function here works in the network namespace of the calling
// thread, which for a daemon is the host's. Watch takes a handle to that
// namespace when it is called and opens every later socket there, whatever
// thread its goroutine runs on; Probe and Announce open their packet socket
// on the calling thread. A caller that wants another namespace, as the
// tests do, locks its goroutine to an OS thread and moves that thread into
// the namespace before the call.
//
// # ARP
//
// Probe sends RFC 5227 probes (sender IP 0.0.0.0, so that no neighbour
// learns anything from them) and reports the hardware address of any other
// host that sends ARP with the VIP as its sender address. Announce sends
// gratuitous ARP, a request and a reply each round with the VIP as both
// sender and target and the interface's own hardware address as sender,
// which Linux accepts as a cache update for an entry it already has.
// Both are IPv4 only; Watch also follows an IPv6 VIP.
package carp
