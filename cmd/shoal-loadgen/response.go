package main

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// maxHead bounds an answer's status line and header: longer is an error,
// not a wait for more.
const maxHead = 64 << 10

var crlf = []byte("\r\n")

// parseResponse finds the first whole HTTP/1.x answer at the start of b.
// size is its length in bytes, 0 while it is not whole yet; ok says it was
// a 200, closed that the server closes the connection after it. eof says
// no more bytes will come, which ends a body that runs to the close. It
// parses just enough HTTP/1.x to find the end of the answer, without
// allocating: with net/http's ReadResponse the generator took a good part
// of a core at the benchmark's rates, on a machine of 2.
func parseResponse(b []byte, eof bool) (size int, ok, closed bool, err error) {
	if n := min(len(b), 7); !bytes.Equal(b[:n], []byte("HTTP/1.")[:n]) {
		return 0, false, true, fmt.Errorf("bad status line %q", b[:min(len(b), 40)])
	}
	head := bytes.Index(b, []byte("\r\n\r\n"))
	if head < 0 {
		switch {
		case len(b) > maxHead:
			return 0, false, true, errors.New("header too long")
		case eof:
			return 0, false, true, errors.New("connection closed in the header")
		}
		return 0, false, false, nil
	}
	line, rest, _ := bytes.Cut(b[:head+2], crlf)
	if len(line) < 12 {
		return 0, false, true, fmt.Errorf("bad status line %q", line)
	}
	ok = bytes.Equal(line[9:12], []byte("200"))
	closed = line[7] == '0' // HTTP/1.0 closes unless it says keep-alive
	length, chunked := -1, false
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, crlf)
		k, v, found := bytes.Cut(line, []byte(":"))
		if !found {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case ascii.EqualFold(k, "content-length"):
			n := 0
			for _, c := range v {
				if c < '0' || c > '9' || n > maxBody {
					return 0, false, true, fmt.Errorf("bad content-length %q", v)
				}
				n = n*10 + int(c-'0')
			}
			if len(v) == 0 {
				return 0, false, true, errors.New("empty content-length")
			}
			length = n
		case ascii.EqualFold(k, "transfer-encoding"):
			chunked = ascii.EqualFold(v, "chunked")
		case ascii.EqualFold(k, "connection"):
			if ascii.EqualFold(v, "close") {
				closed = true
			} else if ascii.EqualFold(v, "keep-alive") {
				closed = false
			}
		}
	}
	body := head + 4
	switch {
	case chunked:
		n, err := chunkedEnd(b[body:])
		if err != nil {
			return 0, false, true, err
		}
		if n == 0 {
			if eof {
				return 0, false, true, errors.New("connection closed in a chunked body")
			}
			return 0, false, false, nil
		}
		return body + n, ok, closed, nil
	case length >= 0:
		if len(b) < body+length {
			if eof {
				return 0, false, true, errors.New("connection closed in the body")
			}
			return 0, false, false, nil
		}
		return body + length, ok, closed, nil
	default: // the body ends with the connection
		if !eof {
			return 0, false, false, nil
		}
		return len(b), ok, true, nil
	}
}

// maxBody bounds a content-length or chunk size, so that the arithmetic
// cannot overflow.
const maxBody = 1 << 40

// chunkedEnd is the length of the chunked body and trailer at the start
// of b, 0 while they are not whole.
func chunkedEnd(b []byte) (int, error) {
	pos := 0
	for {
		i := bytes.Index(b[pos:], crlf)
		if i < 0 {
			return 0, nil
		}
		line := b[pos : pos+i]
		sz, _, _ := bytes.Cut(bytes.TrimSpace(line), []byte(";"))
		n, err := strconv.ParseInt(string(sz), 16, 64)
		if err != nil || n < 0 || n > maxBody {
			return 0, fmt.Errorf("bad chunk size %q", line)
		}
		pos += i + 2
		if n == 0 {
			for { // the trailer, up to an empty line
				i := bytes.Index(b[pos:], crlf)
				if i < 0 {
					return 0, nil
				}
				pos += i + 2
				if i == 0 {
					return pos, nil
				}
			}
		}
		if len(b) < pos+int(n)+2 {
			return 0, nil
		}
		if !bytes.Equal(b[pos+int(n):pos+int(n)+2], crlf) {
			return 0, fmt.Errorf("chunk of %d bytes not followed by CRLF", n)
		}
		pos += int(n) + 2
	}
}

// ascii holds a case-insensitive comparison of bytes with a string.
var ascii asciiFold

type asciiFold struct{}

func (asciiFold) EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}
