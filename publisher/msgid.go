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
// extended slice: the first 128 bits of SHA-256(len(topic) as 8 bytes
// big-endian ‖ topic ‖ body), hex encoded ([MsgIDLen] bytes).
//
// The id depends on nothing but the two byte strings, so every channel,
// replica and process that sees the same event computes the same id, and
// JetStream's duplicate window keeps only one copy. The length prefix keeps
// topic and body apart: ("ab", "c") and ("a", "bc") hash differently.
// It does not allocate when dst has room.
func MsgID(dst, topic, body []byte) []byte {
	hs := hasherPool.Get().(*hasher)
	hs.h.Reset()
	binary.BigEndian.PutUint64(hs.n[:], uint64(len(topic)))
	hs.h.Write(hs.n[:])
	hs.h.Write(topic)
	hs.h.Write(body)
	sum := hs.h.Sum(hs.sum[:0])
	dst = hex.AppendEncode(dst, sum[:MsgIDLen/2])
	hasherPool.Put(hs)
	return dst
}
