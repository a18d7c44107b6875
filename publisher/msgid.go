package publisher

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"sync"
)

// MsgIDLen is the length of an id made by [MsgID]: 128 bits in hex.
const MsgIDLen = 32

// hasher keeps its scratch space on the heap beside the hash state: writes
// through the hash.Hash interface make a stack argument escape, which would
// cost an allocation per call.
type hasher struct {
	h   hash.Hash
	n   [8]byte
	sum [sha256.Size]byte
}

var hasherPool = sync.Pool{New: func() any { return &hasher{h: sha256.New()} }}

// MsgID appends the deterministic dedup id of an event to dst and returns the
// extended slice: the first 128 bits of
//
//	SHA-256(len(topic) ‖ topic ‖ len(correlationID) ‖ correlationID ‖ body)
//
// with each length 8 bytes big-endian, hex encoded ([MsgIDLen] bytes).
//
// Genesys repeats bodies byte for byte (a queue member joining twice sends
// the same {"id":…,"joined":true}), so the body alone cannot tell two
// events apart; metadata.CorrelationId does, and one event fanned out to
// several channels carries the same one. So every channel, replica, retry
// and process that sees one event computes one id, and distinct events with
// equal bodies get distinct ids. The body stays in the hash so that a
// correlation id reused for a different event cannot suppress it. An id
// that is not a JSON string counts by its raw text (the connector's Peek).
// A frame without a correlation id (absent or null) falls back to topic
// and body alone: repeats of such a body within the duplicate window are
// merged.
//
// The length prefixes keep the parts apart. It does not allocate when dst
// has room.
func MsgID(dst, topic, correlationID, body []byte) []byte {
	hs := hasherPool.Get().(*hasher)
	hs.h.Reset()
	binary.BigEndian.PutUint64(hs.n[:], uint64(len(topic)))
	hs.h.Write(hs.n[:])
	hs.h.Write(topic)
	binary.BigEndian.PutUint64(hs.n[:], uint64(len(correlationID)))
	hs.h.Write(hs.n[:])
	hs.h.Write(correlationID)
	hs.h.Write(body)
	sum := hs.h.Sum(hs.sum[:0])
	dst = hex.AppendEncode(dst, sum[:MsgIDLen/2])
	hasherPool.Put(hs)
	return dst
}
