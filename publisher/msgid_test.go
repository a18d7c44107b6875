package publisher

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"testing"
)

func TestMsgID(t *testing.T) {
	topic := []byte("v2.routing.queues.8f0c.users")
	corr := []byte("5a3b1c2d-0000-4000-8000-000000000001")
	body := []byte(`{"id":"u1","joined":true}`)

	got := MsgID(nil, topic, corr, body)
	if len(got) != MsgIDLen {
		t.Fatalf("len = %d, want %d", len(got), MsgIDLen)
	}

	// Spelled out independently, so a change of the scheme cannot pass
	// unnoticed: ids must stay stable across releases or the duplicate
	// window stops working during an upgrade.
	var n, m [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(topic)))
	binary.BigEndian.PutUint64(m[:], uint64(len(corr)))
	in := append(append(append(append(n[:], topic...), m[:]...), corr...), body...)
	sum := sha256.Sum256(in)
	if want := hex.EncodeToString(sum[:16]); string(got) != want {
		t.Fatalf("MsgID = %s, want %s", got, want)
	}

	if again := MsgID(nil, topic, corr, body); !bytes.Equal(again, got) {
		t.Fatalf("not deterministic: %s vs %s", again, got)
	}
	// The same body twice is two events when Genesys says so.
	if other := MsgID(nil, topic, []byte("5a3b1c2d-0000-4000-8000-000000000002"), body); bytes.Equal(other, got) {
		t.Fatal("equal bodies with different correlation ids share an id")
	}
	if other := MsgID(nil, topic, corr, []byte(`{"id":"u1","joined":false}`)); bytes.Equal(other, got) {
		t.Fatal("different bodies share an id")
	}
	// The length prefixes keep the parts apart.
	if a, b := MsgID(nil, []byte("ab"), nil, []byte("c")), MsgID(nil, []byte("a"), nil, []byte("bc")); bytes.Equal(a, b) {
		t.Fatal("topic/body boundary is ambiguous")
	}
	if a, b := MsgID(nil, []byte("t"), []byte("ab"), []byte("c")), MsgID(nil, []byte("t"), []byte("a"), []byte("bc")); bytes.Equal(a, b) {
		t.Fatal("correlation id/body boundary is ambiguous")
	}
	// Appends to dst.
	if got := MsgID([]byte("x-"), topic, corr, body); !bytes.HasPrefix(got, []byte("x-")) || len(got) != 2+MsgIDLen {
		t.Fatalf("append: %q", got)
	}
}

func TestMsgIDAllocs(t *testing.T) {
	topic := []byte("v2.users.1234.presence")
	body := bytes.Repeat([]byte("x"), 4096)
	corr := []byte("5a3b1c2d-0000-4000-8000-000000000001")
	dst := make([]byte, 0, MsgIDLen)
	allocs := testing.AllocsPerRun(100, func() { dst = MsgID(dst[:0], topic, corr, body) })
	if allocs != 0 {
		t.Fatalf("MsgID allocates %.1f times per call", allocs)
	}
}

func BenchmarkMsgID(b *testing.B) {
	topic := []byte("v2.routing.queues.8f0c1d2e-3f40-4a5b-9c6d-7e8f90a1b2c3.conversations")
	for _, size := range []int{512, 4 << 10, 32 << 10} {
		body := bytes.Repeat([]byte("e"), size)
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			dst := make([]byte, 0, MsgIDLen)
			corr := []byte("5a3b1c2d-0000-4000-8000-000000000001")
			b.SetBytes(int64(len(topic) + size))
			b.ReportAllocs()
			for b.Loop() {
				dst = MsgID(dst[:0], topic, corr, body)
			}
		})
	}
}
