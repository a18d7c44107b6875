package jsonscan

import "strings"

// Members walks the members of one JSON object, validating as it goes, in
// the manner of bufio.Scanner:
//
//	var m jsonscan.Members
//	m.Reset(obj)
//	for m.Next() {
//		key, value := m.Key(), m.Value()
//		...
//	}
//	if err := m.Err(); err != nil { ... }
//
// The data given to Reset must be one object, optionally surrounded by
// whitespace, and nothing else: once Next has returned false with a nil Err,
// all of it has been validated. Members is a plain value (no allocation);
// its zero value is an exhausted walker.
type Members struct {
	data       []byte
	pos        int
	depth      int // nesting depth of the object itself
	state      uint8
	key, value []byte
	err        error
}

const (
	stDone uint8 = iota
	stStart
	stMember
)

// Reset starts a walk over the object in data.
func (m *Members) Reset(data []byte) { m.reset(data, 1) }

func (m *Members) reset(data []byte, depth int) {
	*m = Members{data: data, depth: depth, state: stStart}
}

// Next advances to the next member and reports whether there is one. It
// returns false at the end of the object or on an error (see Err).
func (m *Members) Next() bool {
	data := m.data
	var i int
	switch m.state {
	case stDone:
		return false
	case stStart:
		i = skipSpace(data, 0)
		if i >= len(data) {
			return m.fail(eofError(i))
		}
		if data[i] != '{' {
			return m.fail(charError(data[i], i, ctxObject))
		}
		if m.depth > MaxDepth {
			return m.fail(depthError(i))
		}
		i = skipSpace(data, i+1)
		if i < len(data) && data[i] == '}' {
			return m.finish(i + 1)
		}
	case stMember:
		i = skipSpace(data, m.pos)
		if i >= len(data) {
			return m.fail(eofError(i))
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case '}':
			return m.finish(i + 1)
		default:
			return m.fail(charError(data[i], i, ctxAfterMember))
		}
	}
	keyEnd, v, err := scanKey(data, i)
	if err != nil {
		return m.fail(err)
	}
	m.key = data[i:keyEnd:keyEnd]
	if v >= len(data) {
		return m.fail(eofError(v))
	}
	end, err := skipValue(data, v, m.depth)
	if err != nil {
		return m.fail(err)
	}
	m.value = data[v:end:end]
	m.pos = end
	m.state = stMember
	return true
}

func (m *Members) fail(err error) bool {
	m.err = err
	m.state = stDone
	m.key, m.value = nil, nil
	return false
}

func (m *Members) finish(i int) bool {
	if i = skipSpace(m.data, i); i < len(m.data) {
		return m.fail(charError(m.data[i], i, ctxAfterTop))
	}
	m.state = stDone
	m.key, m.value = nil, nil
	return false
}

// Key returns the current member's key as a raw JSON string token, quotes
// included; compare it with EqualString, decode it with AppendUnquote.
func (m *Members) Key() []byte { return m.key }

// Value returns the current member's raw value.
func (m *Members) Value() []byte { return m.value }

// Err returns the first error met, or nil.
func (m *Members) Err() error { return m.err }

// Get returns the raw value found by following keys from the object in
// data, nil when a key is missing or a value on the way is not an object.
// When a key repeats, the last member wins. Get validates only what it
// reads: the objects on the path, in full (a later duplicate may follow),
// but not the values it does not descend into beyond skipping them, nor
// anything after the top-level object when it is not needed. With no keys it
// returns data without surrounding whitespace (nil if that is empty).
func Get(data []byte, keys ...string) ([]byte, error) {
	v := TrimSpace(data)
	for depth, k := range keys {
		var err error
		if v, err = member(v, depth+1, k); v == nil {
			return nil, err
		}
	}
	if len(v) == 0 {
		return nil, nil
	}
	return v, nil
}

// GetPath is Get with the keys given as one dotted path, as in
// "routingStatus.status"; a key that itself holds a dot needs Get.
func GetPath(data []byte, path string) ([]byte, error) {
	v := TrimSpace(data)
	for depth := 1; ; depth++ {
		k, rest, more := strings.Cut(path, ".")
		var err error
		if v, err = member(v, depth, k); v == nil || !more {
			return v, err
		}
		path = rest
	}
}

// member returns the value of the last member named key of the object v
// (trimmed), nil if v is not an object or has no such member.
func member(v []byte, depth int, key string) ([]byte, error) {
	if len(v) == 0 || v[0] != '{' {
		return nil, nil
	}
	var m Members
	m.reset(v, depth)
	var found []byte
	for m.Next() {
		if EqualString(m.key, key) {
			found = m.value
		}
	}
	if m.err != nil {
		return nil, m.err
	}
	return found, nil
}
