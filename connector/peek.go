package connector

import (
	"errors"
	"fmt"

	"github.com/gcnats/gcnats/internal/jsonscan"
)

// Frame is one notification frame's fields as sub-slices of the raw bytes.
//
// Peek fills it; the slices stay valid until the next Peek into the same
// Frame and as long as the raw bytes are not modified. A Frame is not safe
// for concurrent use.
type Frame struct {
	// Raw is the whole frame.
	Raw []byte
	// Topic is topicName's decoded string value: a sub-slice of Raw, or,
	// only when the value holds escapes or invalid UTF-8, decoded into the
	// Frame's own reusable buffer. nil when the frame has no topicName
	// (control answers); empty but not nil for "topicName":"".
	Topic []byte
	// Body is eventBody's raw JSON value, whatever its kind, a sub-slice of
	// Raw without surrounding whitespace; nil when absent.
	Body []byte
	// Version is version's decoded contents when it is a string, else its
	// raw JSON text (2, null, ...); nil when absent.
	Version []byte
	// CorrelationID is what identifies the event: metadata.CorrelationId's
	// decoded contents when it is a string (as Genesys documents it), else
	// its raw JSON text, whatever its kind (12, true, {"a":1}), so that
	// distinct events with equal bodies keep distinct dedup ids even when
	// the id is not a string. nil when metadata or the id is absent or the
	// id is null, which says it has none.
	CorrelationID []byte
	// Result is the top-level "result" of control answers ("200", "404"),
	// decoded like Version; nil when absent.
	Result []byte

	buf []byte // decoded strings that could not be sub-slices of Raw
}

// Peek fills f from raw without building a tree and without allocating
// (once f's buffer has grown to the longest escaped string seen).
//
// raw must be exactly one valid JSON object, optionally surrounded by
// whitespace: the whole frame is validated with the rules of encoding/json,
// so a frame Peek accepts is one json.Unmarshal accepts. Only the top-level
// members are fields: a topicName nested in eventBody or metadata is never
// taken for the frame's. Keys compare exactly (case-sensitive, after
// escapes are resolved), keys may come in any order, and when a key repeats
// the last one wins, all as when decoding into a map[string]json.RawMessage.
// Absent fields are nil. A topicName that is present but not a string
// (null included) is an error.
func Peek(raw []byte, f *Frame) error {
	*f = Frame{Raw: raw, buf: f.buf[:0]}
	if k := jsonscan.KindOf(jsonscan.TrimSpace(raw)); k != jsonscan.Object {
		if err := jsonscan.Validate(raw); err != nil {
			return fmt.Errorf("peek frame: %w", err)
		}
		return fmt.Errorf("peek frame: %w: got %v", errNotObject, k)
	}
	var topic, version, meta, result []byte
	var m jsonscan.Members
	m.Reset(raw)
	for m.Next() {
		switch field(m.Key()) {
		case fieldTopic:
			topic = m.Value()
		case fieldBody:
			f.Body = m.Value()
		case fieldVersion:
			version = m.Value()
		case fieldMetadata:
			meta = m.Value()
		case fieldResult:
			result = m.Value()
		}
	}
	if err := m.Err(); err != nil {
		return fmt.Errorf("peek frame: %w", err)
	}
	if topic != nil {
		if k := jsonscan.KindOf(topic); k != jsonscan.String {
			return fmt.Errorf("peek frame: topicName is %s, want a string", articled(k))
		}
		f.Topic = f.text(topic)
	}
	if version != nil {
		f.Version = f.text(version)
	}
	if result != nil {
		f.Result = f.text(result)
	}
	if meta != nil {
		// Any id but null tells events apart; counting a number as absent
		// would merge equal bodies with ids 1 and 2. Not a string, it is
		// taken as written: one event is serialised once and fanned out
		// byte for byte, so its copies agree, and an object or array is
		// still an id, if an odd one (its line breaks become spaces in the
		// header, see publisher's rec.fill). The string "1" and the
		// number 1 give one id; a producer uses one kind, so that is no
		// loss in practice.
		if id, _ := jsonscan.Get(meta, "CorrelationId"); id != nil && jsonscan.KindOf(id) != jsonscan.Null {
			f.CorrelationID = f.text(id)
		}
	}
	return nil
}

var errNotObject = errors.New("not a JSON object")

// BodyMessage returns eventBody.message's decoded contents, which is how
// control frames say what they are ("WebSocket Heartbeat", "pong", "Socket
// closing"); nil when there is no such string.
func BodyMessage(f *Frame) []byte {
	v, _ := jsonscan.Get(f.Body, "message")
	if jsonscan.KindOf(v) != jsonscan.String {
		return nil
	}
	return f.text(v)
}

// Lookup returns the value found by following keys from the frame's top
// level, decoded like Version (string contents, else raw JSON), nil when
// absent. For instance Lookup(f, "message") is the reason a "404" answer
// gives. Like Peek it does not allocate once f's buffer is warm; the result
// is valid until the next Peek into f.
func Lookup(f *Frame, keys ...string) []byte {
	if len(keys) == 0 {
		return nil
	}
	v, _ := jsonscan.Get(f.Raw, keys...)
	if v == nil {
		return nil
	}
	return f.text(v)
}

// text returns a string value's decoded contents, zero-copy when possible,
// or any other value's raw text.
func (f *Frame) text(v []byte) []byte {
	if jsonscan.KindOf(v) != jsonscan.String {
		return v
	}
	c, plain := jsonscan.Contents(v)
	if plain {
		return c
	}
	start := len(f.buf)
	buf, err := jsonscan.AppendUnquote(f.buf, v)
	if err != nil { // cannot happen for a validated token; keep the raw text
		return c
	}
	f.buf = buf
	// Capped so that a caller's append cannot write over the next value.
	return f.buf[start:len(f.buf):len(f.buf)]
}

const (
	fieldOther = iota
	fieldTopic
	fieldBody
	fieldVersion
	fieldMetadata
	fieldResult
)

// field classifies a top-level key. Keys are nearly always plain, so the
// common case is one string switch (no allocation for string(b) in a
// switch); escaped keys take the exact slow path.
func field(key []byte) int {
	if c, plain := jsonscan.Contents(key); plain {
		switch string(c) {
		case "topicName":
			return fieldTopic
		case "eventBody":
			return fieldBody
		case "version":
			return fieldVersion
		case "metadata":
			return fieldMetadata
		case "result":
			return fieldResult
		}
		return fieldOther
	}
	switch {
	case jsonscan.EqualString(key, "topicName"):
		return fieldTopic
	case jsonscan.EqualString(key, "eventBody"):
		return fieldBody
	case jsonscan.EqualString(key, "version"):
		return fieldVersion
	case jsonscan.EqualString(key, "metadata"):
		return fieldMetadata
	case jsonscan.EqualString(key, "result"):
		return fieldResult
	}
	return fieldOther
}

func articled(k jsonscan.Kind) string {
	switch k {
	case jsonscan.Object, jsonscan.Array:
		return "an " + k.String()
	case jsonscan.Null:
		return "null"
	}
	return "a " + k.String()
}
