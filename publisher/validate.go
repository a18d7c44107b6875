package publisher

import (
	"errors"
	"fmt"
	"time"
)

// validate refuses, before anything is accepted, a record that no retry
// could ever publish.
func (p *Publisher) validate(r *Record) (reason string, err error) {
	if r == nil {
		return ReasonInvalid, fmt.Errorf("%w: nil", ErrInvalidRecord)
	}
	if err := checkSubject(r.Subject); err != nil {
		return ReasonInvalid, fmt.Errorf("%w: subject %q: %v", ErrInvalidRecord, r.Subject, err)
	}
	// The header block as nats.go writes it: "NATS/1.0\r\n", "K: V\r\n"…, "\r\n".
	size := 12 + len(HeaderMsgID) + max(len(r.ID), MsgIDLen) + len(HeaderTopic) + len(r.Topic) +
		len(HeaderReceivedAt) + len(time.RFC3339Nano) + 3*4 + len(r.Data)
	if len(r.Version) > 0 {
		size += len(HeaderVersion) + len(r.Version) + 4
	}
	if len(r.CorrelationID) > 0 {
		size += len(HeaderCorrelationID) + len(r.CorrelationID) + 4
	}
	if limit := p.cur.Load().nc.MaxPayload(); limit > 0 && int64(size) > limit {
		return ReasonTooLarge, fmt.Errorf("%w: %d bytes exceed the server's max payload of %d", ErrInvalidRecord, size, limit)
	}
	return "", nil
}

// checkSubject refuses what NATS would refuse or misread as a publish subject.
func checkSubject(s []byte) error {
	if len(s) == 0 {
		return errors.New("empty")
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) {
			switch c := s[i]; {
			case c <= ' ' || c == 0x7f:
				return errors.New("contains whitespace or a control character")
			case c != '.':
				continue
			}
		}
		tok := s[start:i]
		switch {
		case len(tok) == 0:
			return errors.New("empty token")
		case len(tok) == 1 && (tok[0] == '*' || tok[0] == '>'):
			return errors.New("wildcard token")
		}
		start = i + 1
	}
	return nil
}
