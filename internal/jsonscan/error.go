package jsonscan

import (
	"strconv"
)

// A SyntaxError describes why the input is not valid JSON and where.
type SyntaxError struct {
	Offset int // byte offset in the scanned input where the error was found
	what   uint8
	ctx    uint8
	c      byte
}

const (
	whatChar uint8 = iota
	whatEOF
	whatDepth
)

const (
	ctxValue uint8 = iota
	ctxString
	ctxEscape
	ctxHex
	ctxNumber
	ctxLiteral
	ctxKey
	ctxAfterKey
	ctxAfterMember
	ctxAfterElem
	ctxAfterTop
	ctxObject
)

var ctxText = [...]string{
	ctxValue:       "looking for beginning of value",
	ctxString:      "in string literal",
	ctxEscape:      "in string escape code",
	ctxHex:         `in \u hexadecimal character escape`,
	ctxNumber:      "in numeric literal",
	ctxLiteral:     "in literal",
	ctxKey:         "looking for beginning of object key string",
	ctxAfterKey:    "after object key",
	ctxAfterMember: "after object key:value pair",
	ctxAfterElem:   "after array element",
	ctxAfterTop:    "after top-level value",
	ctxObject:      "looking for beginning of object",
}

func (e *SyntaxError) Error() string {
	off := strconv.Itoa(e.Offset)
	switch e.what {
	case whatEOF:
		return "unexpected end of JSON input at offset " + off
	case whatDepth:
		return "exceeded max depth at offset " + off
	}
	return "invalid character " + quoteChar(e.c) + " " + ctxText[e.ctx] + " at offset " + off
}

func quoteChar(c byte) string {
	switch {
	case c == '\'':
		return `'\''`
	case c == '"':
		return `'"'`
	case c >= 0x20 && c < 0x7f:
		return "'" + string(rune(c)) + "'"
	}
	return "byte 0x" + strconv.FormatUint(uint64(c)|0x100, 16)[1:]
}

func charError(c byte, off int, ctx uint8) error {
	return &SyntaxError{Offset: off, what: whatChar, ctx: ctx, c: c}
}

func eofError(off int) error { return &SyntaxError{Offset: off, what: whatEOF} }

func depthError(off int) error { return &SyntaxError{Offset: off, what: whatDepth} }
