// Package jsonscan is a small validating JSON scanner over []byte.
//
// It walks JSON values in place and hands out sub-slices of the input: it
// never builds a tree, never allocates (except to build an error) and never
// panics, whatever the input. What it accepts is exactly what encoding/json
// accepts: the same whitespace, number grammar, string escapes and literals,
// control characters rejected inside strings, invalid UTF-8 and lone
// surrogates accepted, and the same nesting limit ([MaxDepth]).
//
// Decoded strings ([AppendUnquote], [EqualString], [Contents]) follow
// encoding/json too: invalid UTF-8 and unpaired surrogate escapes become
// U+FFFD. Object keys compare exactly and case-sensitively, and when a key
// repeats the last member wins, as when decoding into a
// map[string]json.RawMessage.
//
// A raw value handed out by this package ([Members.Value], [Get]) is the
// exact bytes of the value, without surrounding whitespace, so its first byte
// tells its [Kind].
package jsonscan

import (
	"encoding/binary"
	"errors"
	"math/bits"
)

// MaxDepth is the deepest nesting of arrays and objects accepted, the same
// limit encoding/json applies.
const MaxDepth = 10000

// Kind is the type of a JSON value.
type Kind uint8

// The kinds of JSON values; Invalid is no value.
const (
	Invalid Kind = iota
	Null
	Bool
	Number
	String
	Array
	Object
)

var kindNames = [...]string{"invalid", "null", "bool", "number", "string", "array", "object"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "invalid"
}

// KindOf reports the kind of the raw value v from its first byte. It does
// not validate v; a nil or empty v is Invalid.
func KindOf(v []byte) Kind {
	if len(v) == 0 {
		return Invalid
	}
	switch c := v[0]; {
	case c == '{':
		return Object
	case c == '[':
		return Array
	case c == '"':
		return String
	case c == 't' || c == 'f':
		return Bool
	case c == 'n':
		return Null
	case c == '-' || isDigit(c):
		return Number
	}
	return Invalid
}

// Valid reports whether data is exactly one JSON value, optionally
// surrounded by whitespace, like json.Valid.
func Valid(data []byte) bool { return Validate(data) == nil }

// Validate is Valid with the reason: nil or a *SyntaxError.
func Validate(data []byte) error {
	i := skipSpace(data, 0)
	if i >= len(data) {
		return eofError(i)
	}
	i, err := skipValue(data, i, 0)
	if err != nil {
		return err
	}
	if i = skipSpace(data, i); i < len(data) {
		return charError(data[i], i, ctxAfterTop)
	}
	return nil
}

// Skip validates the value starting at data[i] (after optional whitespace)
// and returns the offset just past it. Only the value is read, not what
// follows it.
func Skip(data []byte, i int) (end int, err error) {
	if i < 0 {
		i = 0
	}
	i = skipSpace(data, i)
	if i >= len(data) {
		return i, eofError(i)
	}
	return skipValue(data, i, 0)
}

// TrimSpace returns v without surrounding JSON whitespace.
func TrimSpace(v []byte) []byte {
	i := skipSpace(v, 0)
	j := len(v)
	for j > i && isSpace(v[j-1]) {
		j--
	}
	return v[i:j]
}

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && data[i] <= ' ' && isSpace(data[i]) {
		i++
	}
	return i
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// stringStops marks (in the high bit of each byte) the bytes of w that end a
// fast run inside a string: '"', '\\' and control characters. Only the
// lowest marked byte is exact, which is the only one used.
func stringStops(w uint64) uint64 {
	q := w ^ (lsb * '"')
	b := w ^ (lsb * '\\')
	return (((q - lsb) &^ q) | ((b - lsb) &^ b) | ((w - lsb*0x20) &^ w)) & msb
}

// scanString validates the string token starting at data[i] == '"' and
// returns the offset just past its closing quote.
func scanString(data []byte, i int) (int, error) {
	i++
	n := len(data)
	for {
		for i+8 <= n {
			if m := stringStops(binary.LittleEndian.Uint64(data[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		if i >= n {
			return i, eofError(i)
		}
		switch c := data[i]; {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			i++
			if i >= n {
				return i, eofError(i)
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				i++
				for k := 0; k < 4; k++ {
					if i >= n {
						return i, eofError(i)
					}
					if !isHex(data[i]) {
						return i, charError(data[i], i, ctxHex)
					}
					i++
				}
			default:
				return i, charError(data[i], i, ctxEscape)
			}
		case c < 0x20:
			return i, charError(c, i, ctxString)
		default:
			i++
		}
	}
}

// scanNumber validates the number starting at data[i] ('-' or a digit).
func scanNumber(data []byte, i int) (int, error) {
	n := len(data)
	if data[i] == '-' {
		i++
		if i >= n {
			return i, eofError(i)
		}
	}
	switch c := data[i]; {
	case c == '0':
		i++
	case '1' <= c && c <= '9':
		i++
		for i < n && isDigit(data[i]) {
			i++
		}
	default:
		return i, charError(c, i, ctxNumber)
	}
	if i < n && data[i] == '.' {
		i++
		if i >= n {
			return i, eofError(i)
		}
		if !isDigit(data[i]) {
			return i, charError(data[i], i, ctxNumber)
		}
		for i < n && isDigit(data[i]) {
			i++
		}
	}
	if i < n && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < n && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= n {
			return i, eofError(i)
		}
		if !isDigit(data[i]) {
			return i, charError(data[i], i, ctxNumber)
		}
		for i < n && isDigit(data[i]) {
			i++
		}
	}
	return i, nil
}

func scanLiteral(data []byte, i int, lit string) (int, error) {
	for k := 1; k < len(lit); k++ {
		if i+k >= len(data) {
			return i + k, eofError(i + k)
		}
		if data[i+k] != lit[k] {
			return i + k, charError(data[i+k], i+k, ctxLiteral)
		}
	}
	return i + len(lit), nil
}

// scanScalar validates the non-container value starting at data[i].
func scanScalar(data []byte, i int) (int, error) {
	switch c := data[i]; c {
	case '"':
		return scanString(data, i)
	case 't':
		return scanLiteral(data, i, "true")
	case 'f':
		return scanLiteral(data, i, "false")
	case 'n':
		return scanLiteral(data, i, "null")
	default:
		if c == '-' || isDigit(c) {
			return scanNumber(data, i)
		}
		return i, charError(c, i, ctxValue)
	}
}

// errStackFull asks skipValue to retry with a stack deep enough for MaxDepth.
var errStackFull = errors.New("jsonscan: stack full")

// skipValue validates the value starting at data[i] (not whitespace, i in
// range) and returns the offset just past it. depth is the number of
// containers enclosing the value.
func skipValue(data []byte, i, depth int) (int, error) {
	if c := data[i]; c != '{' && c != '[' {
		return scanScalar(data, i)
	}
	// One bit per open container (1 = object) is all the state a validating
	// skip needs; two words cover any sane document without a big frame.
	var small [2]uint64
	end, err := skipNested(data, i, depth, small[:])
	if err == errStackFull {
		return skipDeep(data, i, depth)
	}
	return end, err
}

//go:noinline
func skipDeep(data []byte, i, depth int) (int, error) {
	var big [MaxDepth/64 + 1]uint64
	return skipNested(data, i, depth, big[:])
}

func skipNested(data []byte, i, depth int, stack []uint64) (int, error) {
	n := len(data)
	level := 0
	var err error
value:
	for {
		if i >= n {
			return i, eofError(i)
		}
		switch c := data[i]; c {
		case '{', '[':
			if depth+level+1 > MaxDepth {
				return i, depthError(i)
			}
			i = skipSpace(data, i+1)
			if i >= n {
				return i, eofError(i)
			}
			if c == '[' {
				if data[i] == ']' {
					i++
					break // an empty array is a complete value
				}
				if level == len(stack)*64 {
					return i, errStackFull
				}
				stack[level>>6] &^= 1 << (level & 63)
				level++
				continue value
			}
			if data[i] == '}' {
				i++
				break
			}
			if level == len(stack)*64 {
				return i, errStackFull
			}
			stack[level>>6] |= 1 << (level & 63)
			level++
			if _, i, err = scanKey(data, i); err != nil {
				return i, err
			}
			continue value
		default:
			if i, err = scanScalar(data, i); err != nil {
				return i, err
			}
		}
		// A value is complete: close containers until one continues.
		for level > 0 {
			i = skipSpace(data, i)
			if i >= n {
				return i, eofError(i)
			}
			c := data[i]
			top := level - 1
			if stack[top>>6]&(1<<(top&63)) != 0 {
				switch c {
				case ',':
					if _, i, err = scanKey(data, skipSpace(data, i+1)); err != nil {
						return i, err
					}
					continue value
				case '}':
					i++
					level--
				default:
					return i, charError(c, i, ctxAfterMember)
				}
			} else {
				switch c {
				case ',':
					i = skipSpace(data, i+1)
					continue value
				case ']':
					i++
					level--
				default:
					return i, charError(c, i, ctxAfterElem)
				}
			}
		}
		return i, nil
	}
}

// scanKey validates `"key" :` at data[i] and returns the offset just past
// the key's closing quote and the offset of the member's value (after
// whitespace).
func scanKey(data []byte, i int) (keyEnd, value int, err error) {
	if i >= len(data) {
		return i, i, eofError(i)
	}
	if data[i] != '"' {
		return i, i, charError(data[i], i, ctxKey)
	}
	if keyEnd, err = scanString(data, i); err != nil {
		return keyEnd, keyEnd, err
	}
	i = skipSpace(data, keyEnd)
	if i >= len(data) {
		return keyEnd, i, eofError(i)
	}
	if data[i] != ':' {
		return keyEnd, i, charError(data[i], i, ctxAfterKey)
	}
	return keyEnd, skipSpace(data, i+1), nil
}
