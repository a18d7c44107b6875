package publisher

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestParseAck covers the answers JetStream gives to a publish: the
// server's templated acks (with and without a domain, a duplicate spelled
// with a space), acks encoded by encoding/json, error answers, no
// responders, and what is not an ack at all.
func TestParseAck(t *testing.T) {
	noResponders := nats.Header{statusHeader: []string{statusNoResponders}}
	for _, tc := range []struct {
		name      string
		data      string
		header    nats.Header
		duplicate bool
		err       error
		code      int
	}{
		{name: "template", data: `{"stream":"GENESYS","seq":42}`},
		{name: "template duplicate", data: `{"stream":"GENESYS","seq":42,"duplicate": true}`, duplicate: true},
		{name: "domain", data: `{"stream":"GENESYS","domain":"edge","seq":1}`},
		{name: "domain duplicate", data: `{"stream":"GENESYS","domain":"edge","seq":1,"duplicate": true}`, duplicate: true},
		{name: "encoding/json duplicate", data: `{"stream":"GENESYS","seq":1,"duplicate":true}`, duplicate: true},
		{name: "spaced", data: `{ "stream" : "GENESYS", "seq" : 1, "duplicate" : true }`, duplicate: true},
		{name: "duplicate false", data: `{"stream":"GENESYS","seq":1,"duplicate":false}`},
		{name: "stream named error", data: `{"stream":"error","seq":3,"duplicate": true}`, duplicate: true},
		{name: "error answer", data: `{"error":{"code":503,"err_code":10077,"description":"resource limits exceeded for account"},"stream":"GENESYS"}`, code: 503},
		{name: "rejected", data: `{"error":{"code":400,"err_code":10054,"description":"maximum message size exceeded"}}`, code: 400},
		{name: "no responders", header: noResponders, err: jetstream.ErrNoStreamResponse},
		{name: "empty", err: jetstream.ErrInvalidJSAck},
		{name: "not json", data: `+OK`, err: jetstream.ErrInvalidJSAck},
		{name: "no stream", data: `{"seq":1}`, err: jetstream.ErrInvalidJSAck},
		{name: "empty stream", data: `{"stream":"","seq":1}`, err: jetstream.ErrInvalidJSAck},
		{name: "broken error", data: `{"error":{"code":5`, err: jetstream.ErrInvalidJSAck},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dup, err := parseAck(&nats.Msg{Data: []byte(tc.data), Header: tc.header})
			if tc.code != 0 {
				var apiErr *jetstream.APIError
				if !errors.As(err, &apiErr) || apiErr.Code != tc.code {
					t.Fatalf("err %v, want an API error with code %d", err, tc.code)
				}
				return
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if dup != tc.duplicate {
				t.Fatalf("duplicate %v, want %v", dup, tc.duplicate)
			}
		})
	}
}
