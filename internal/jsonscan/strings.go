package jsonscan

import (
	"encoding/binary"
	"unicode/utf16"
	"unicode/utf8"
)

// Contents returns the bytes between the quotes of the string token tok and
// whether they already are its decoded value (no escapes, valid UTF-8), so
// the caller can use them without copying. When plain is false, decode with
// AppendUnquote. A tok that is not a quoted token gives (nil, false).
func Contents(tok []byte) (raw []byte, plain bool) {
	if len(tok) < 2 || tok[0] != '"' || tok[len(tok)-1] != '"' {
		return nil, false
	}
	c := tok[1 : len(tok)-1 : len(tok)-1]
	i := 0
	for ; i+8 <= len(c); i += 8 {
		// Eight plain ASCII bytes at a time: no quote, backslash, control
		// character or high bit.
		if w := binary.LittleEndian.Uint64(c[i:]); stringStops(w)|w&msb != 0 {
			break
		}
	}
	for ; i < len(c); i++ {
		b := c[i]
		if b == '\\' || b == '"' || b < 0x20 {
			return c, false
		}
		if b >= utf8.RuneSelf {
			// Rare in topics and ids: finish with the library's UTF-8 check.
			for _, b := range c[i:] {
				if b == '\\' || b == '"' || b < 0x20 {
					return c, false
				}
			}
			return c, utf8.Valid(c[i:])
		}
	}
	return c, true
}

// AppendUnquote appends the decoded value of the JSON string token tok
// (quotes included) to dst, byte for byte what encoding/json decodes:
// escapes resolved, surrogate pairs joined, invalid UTF-8 and unpaired
// surrogates replaced by U+FFFD. An invalid token gives an error and dst
// unchanged.
func AppendUnquote(dst, tok []byte) ([]byte, error) {
	if len(tok) < 2 || tok[0] != '"' || tok[len(tok)-1] != '"' {
		if len(tok) == 0 {
			return dst, eofError(0)
		}
		return dst, charError(tok[0], 0, ctxString)
	}
	c := tok[1 : len(tok)-1]
	n0 := len(dst)
	for i := 0; i < len(c); {
		b := c[i]
		if b >= 0x20 && b < utf8.RuneSelf && b != '\\' && b != '"' {
			// Copy the plain ASCII run in one go.
			j := i + 1
			for j < len(c) && c[j] >= 0x20 && c[j] < utf8.RuneSelf && c[j] != '\\' && c[j] != '"' {
				j++
			}
			dst = append(dst, c[i:j]...)
			i = j
			continue
		}
		r, size, verbatim := decodeUnit(c, i)
		switch {
		case size == 0:
			return dst[:n0], charError(b, i+1, ctxString)
		case verbatim:
			dst = append(dst, c[i:i+size]...)
		default:
			dst = utf8.AppendRune(dst, r)
		}
		i += size
	}
	return dst, nil
}

// EqualString reports whether the JSON string token tok decodes to s,
// without allocating. It is the key comparison of encoding/json's map
// decoding: exact and case-sensitive, after escapes are resolved.
func EqualString(tok []byte, s string) bool {
	if len(tok) < 2 || tok[0] != '"' || tok[len(tok)-1] != '"' {
		return false
	}
	c := tok[1 : len(tok)-1]
	j := 0
	for i := 0; i < len(c); {
		b := c[i]
		if b >= 0x20 && b < utf8.RuneSelf && b != '\\' && b != '"' {
			if j >= len(s) || s[j] != b {
				return false
			}
			i++
			j++
			continue
		}
		r, size, verbatim := decodeUnit(c, i)
		if size == 0 {
			return false
		}
		if verbatim {
			if len(s)-j < size || string(c[i:i+size]) != s[j:j+size] {
				return false
			}
			j += size
		} else {
			var enc [utf8.UTFMax]byte
			m := utf8.EncodeRune(enc[:], r)
			if len(s)-j < m || string(enc[:m]) != s[j:j+m] {
				return false
			}
			j += m
		}
		i += size
	}
	return j == len(s)
}

// decodeUnit decodes the escape or non-ASCII character at c[i] of string
// contents c. verbatim means c[i:i+size] is already its decoded form (valid
// UTF-8); otherwise r is the decoded rune. size == 0 means c is invalid
// there.
func decodeUnit(c []byte, i int) (r rune, size int, verbatim bool) {
	b := c[i]
	switch {
	case b == '\\':
		if i+1 >= len(c) {
			return 0, 0, false
		}
		switch c[i+1] {
		case '"', '\\', '/':
			return rune(c[i+1]), 2, false
		case 'b':
			return '\b', 2, false
		case 'f':
			return '\f', 2, false
		case 'n':
			return '\n', 2, false
		case 'r':
			return '\r', 2, false
		case 't':
			return '\t', 2, false
		case 'u':
			rr := getu4(c[i:])
			if rr < 0 {
				return 0, 0, false
			}
			if utf16.IsSurrogate(rr) {
				// As encoding/json: a valid pair joins, anything else leaves
				// U+FFFD for this escape and decodes the next on its own.
				if dec := utf16.DecodeRune(rr, getu4(c[i+6:])); dec != utf8.RuneError {
					return dec, 12, false
				}
				return utf8.RuneError, 6, false
			}
			return rr, 6, false
		}
		return 0, 0, false
	case b == '"' || b < 0x20:
		return 0, 0, false
	case b < utf8.RuneSelf:
		return rune(b), 1, true
	}
	rr, n := utf8.DecodeRune(c[i:])
	if rr == utf8.RuneError && n == 1 {
		return utf8.RuneError, 1, false
	}
	return rr, n, true
}

// getu4 decodes \uXXXX at the start of s, or returns -1.
func getu4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c = c - '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}
