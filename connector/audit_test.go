package connector

import "testing"

func TestCorrelationAudit(t *testing.T) {
	topic := []byte("v2.routing.queues.q1.users")
	join := []byte(`{"id":"u1","joined":true}`)
	leave := []byte(`{"id":"u1","joined":false}`)

	// As assumed: both sockets see each event with its one id, and an
	// equal body sent twice is two events with two ids on both sides.
	a := newCorrelationAudit()
	for side := range 2 {
		a.observe(side, topic, []byte("c1"), join)
		a.observe(side, topic, []byte("c2"), leave)
		a.observe(side, topic, []byte("c3"), join)
	}
	a.observe(1, topic, []byte("c4"), leave) // after the old socket closed
	if m, mm := a.result(); m != 2 || mm != 0 {
		t.Fatalf("assumption holding: %d matches, %d mismatches; want 2, 0", m, mm)
	}

	// Not as assumed: each channel gets its own id for one event.
	a = newCorrelationAudit()
	a.observe(0, topic, []byte("c1-old"), join)
	a.observe(1, topic, []byte("c1-new"), join)
	a.observe(0, topic, nil, leave) // no id: nothing to check
	a.observe(1, topic, nil, leave)
	if m, mm := a.result(); m != 0 || mm != 1 {
		t.Fatalf("assumption broken: %d matches, %d mismatches; want 0, 1", m, mm)
	}
}

func TestCorrelationAuditIsBounded(t *testing.T) {
	a := newCorrelationAudit()
	for i := range maxAuditBodies + 100 {
		a.observe(0, []byte("t"), []byte("c"), []byte{byte(i), byte(i >> 8), byte(i >> 16)})
	}
	if n := len(a.seen); n != maxAuditBodies {
		t.Fatalf("%d bodies kept, want at most %d", n, maxAuditBodies)
	}
}
