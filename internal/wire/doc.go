// Package wire is the carpfs network protocol: the frames, messages and
// handshake that mounts, chunkservers, metaloggers and admin tools speak
// with the master, and mounts with chunkservers. docs/PROTOCOL.md is the
// full reference, message table included; this comment is the summary a
// reader of the code needs.
//
// # Frames
//
// A connection carries frames, all integers little-endian:
//
//	off  len  field
//	  0    4  length: bytes after this field (15 + payload), at least 15
//	  4    2  type: the message type (Type)
//	  6    1  flags: bit 0 FlagReply; the other bits are reserved, must be 0
//	  7    8  request id: chosen by the requester, 0 for one-way messages
//	 15    n  payload: the message (see Enc)
//	15+n   4  CRC-32C (Castagnoli) of bytes 0 .. 15+n-1
//
// TCP already checksums, but only weakly (16 bits) and not through
// buggy NICs, middleboxes or memory; metadata and chunk data cross this
// protocol, so every frame carries its own CRC, which covers the length
// field as well: a frame is delivered whole and intact or not at all.
// Reading is strict and stops for good at the first bad frame (CRC,
// length below 15 or above the limit, truncation, reserved flags, a type
// the receiver does not accept): the error is an ErrFrame naming the
// stream offset, and nothing of the frame is delivered. A length above
// the limit (DefaultMaxFrameSize, 16 MiB, and only 64 KiB during the
// handshake) is refused before any allocation.
//
// # Requests and pipelining
//
// Each side numbers its own requests; a reply carries the request's id
// and FlagReply, so both sides can call each other on one connection
// and ids never clash. Any number of requests may be in flight and
// replies come back in any order. Mux does this: Call from many
// goroutines, a Handler for the peer's requests, and a FrameWriter that
// batches frames of concurrent senders into one write (the last sender
// flushes, see FrameWriter.Send).
//
// # Handshake
//
// The dialing side sends Hello (its version range, role, metaid, the
// highest master term it has seen, a nonce and its name). The server
// picks the highest common version, checks role, metaid and term, and
// answers Welcome, or Challenge when the peer's role must prove the
// shared secret (AUTH_CODE): the peer answers Auth with an HMAC-SHA256
// over both nonces and both messages, and the server's Welcome carries
// its own HMAC, so each side proves the secret to the other. Any check
// that fails ends in Refuse, whose message names both sides' values
// ("client speaks protocol 3, this master speaks protocols 1-2: upgrade
// the master"), and both sides return it as a *RefusedError.
//
// Hello and Refuse are frozen across versions, with Hello.Ext for later
// additions, so that any two builds can at least refuse each other
// clearly. Everything else may change with the version; a session
// accepts only the types its negotiated version defines (MessageInfo.Since).
//
// # Messages
//
// A message is a struct with Encode(*Enc) and Decode(*Dec) error,
// registered by type number in the messages table in message.go, which
// docs/PROTOCOL.md mirrors (a test checks). Encoding is canonical: Dec
// accepts only what Enc writes (shortest varints, bools 0 or 1, no
// trailing bytes), so a payload that decodes re-encodes to the same
// bytes. The fuzz tests check exactly that for every registered type.
package wire
