package publisher

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ackInbox is where JetStream's answers to the publisher's sends arrive: one
// wildcard subscription, each send replying to prefix + its send number in
// base 36.
//
// The publisher correlates answers itself rather than through nats.go's
// PublishMsgAsync, because it already keeps all that this takes: each
// record in flight, its send time (for the ack timeout) and its retries.
// PublishMsgAsync kept a second copy of that bookkeeping per message (a
// future in a map under a lock, a reply string, a timer) and delivered every
// ack through a subscription goroutine of its own, which at everyday rates
// is one more goroutine woken per event, and then decoded it with
// encoding/json. Here nats.go's reader puts the answer straight into a
// channel, which the run goroutine empties when it next works: an ack no one
// waits for wakes nobody.
type ackInbox struct {
	prefix string // ends in '.'
	sub    *nats.Subscription
	c      chan *nats.Msg
}

// newAckInbox subscribes under the connection's inbox prefix (so a custom
// one, and permissions granted on it, apply). capacity bounds answers not
// yet collected; one that does not fit is dropped by nats.go (a slow
// consumer), and its record times out and is sent again, so size it well
// above the most sends that can be outstanding.
func newAckInbox(nc *nats.Conn, capacity int) (*ackInbox, error) {
	a := &ackInbox{prefix: nc.NewInbox() + ".", c: make(chan *nats.Msg, capacity)}
	sub, err := nc.ChanSubscribe(a.prefix+"*", a.c)
	if err != nil {
		return nil, fmt.Errorf("subscribe to acks: %w", err)
	}
	a.sub = sub
	return a, nil
}

// appendReply appends the reply subject of send n to dst.
func (a *ackInbox) appendReply(dst []byte, n uint64) []byte {
	return strconv.AppendUint(append(dst, a.prefix...), n, 36)
}

// sendOf is the send number an answer replies to.
func (a *ackInbox) sendOf(m *nats.Msg) (uint64, bool) {
	if len(m.Subject) <= len(a.prefix) || m.Subject[:len(a.prefix)] != a.prefix {
		return 0, false
	}
	n, err := strconv.ParseUint(m.Subject[len(a.prefix):], 36, 64)
	return n, err == nil
}

func (a *ackInbox) close() { _ = a.sub.Unsubscribe() }

// Status header of a no-responders answer: no stream listens on the subject.
const (
	statusHeader       = "Status"
	statusNoResponders = "503"
)

var (
	ackErrorKey     = []byte(`"error"`)
	ackStreamKey    = []byte(`"stream"`)
	ackDuplicateKey = []byte(`"duplicate"`)
)

// parseAck reads JetStream's answer to one publish, with the errors nats.go's
// async publish gives for the same answers (see classify).
//
// A PubAck is small and flat ({"stream":"S","seq":7,"duplicate": true}, and a
// "domain" on a leaf), and only two facts of it matter: that a stream took
// the message and whether it already had it. Looking for the two keys is
// exact for such an answer: a stream or domain name cannot hold an
// unescaped quote, so neither key can appear inside a value. Anything that
// mentions "error" (an error answer, or a stream so named) is decoded in full.
func parseAck(m *nats.Msg) (duplicate bool, err error) {
	d := m.Data
	if len(d) == 0 && m.Header.Get(statusHeader) == statusNoResponders {
		return false, jetstream.ErrNoStreamResponse
	}
	if len(d) < 2 || d[0] != '{' || d[len(d)-1] != '}' {
		return false, jetstream.ErrInvalidJSAck
	}
	if !bytes.Contains(d, ackErrorKey) {
		if v := valueOf(d, ackStreamKey); len(v) < 2 || v[0] != '"' || v[1] == '"' {
			return false, jetstream.ErrInvalidJSAck
		}
		return bytes.HasPrefix(valueOf(d, ackDuplicateKey), []byte("true")), nil
	}
	var a struct {
		Error     *jetstream.APIError `json:"error"`
		Stream    string              `json:"stream"`
		Duplicate bool                `json:"duplicate"`
	}
	if json.Unmarshal(d, &a) != nil {
		return false, jetstream.ErrInvalidJSAck
	}
	if a.Error != nil {
		return false, a.Error
	}
	if a.Stream == "" {
		return false, jetstream.ErrInvalidJSAck
	}
	return a.Duplicate, nil
}

// valueOf returns what follows key's colon in the flat object d (nil if key
// is not there). The server writes its acks from a template
// ("duplicate": true, with a space), others with encoding/json: both parse.
func valueOf(d, key []byte) []byte {
	i := bytes.Index(d, key)
	if i < 0 {
		return nil
	}
	v := bytes.TrimLeft(d[i+len(key):], " \t\r\n")
	if len(v) == 0 || v[0] != ':' {
		return nil
	}
	return bytes.TrimLeft(v[1:], " \t\r\n")
}
