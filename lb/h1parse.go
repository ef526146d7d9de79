package lb

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
)

// The fast L7 path (see h1proxy.go) forwards request and response heads
// as received, less the hop-by-hop headers, so it parses them itself and
// strictly: what it passes on must mean the same to every recipient. A
// head that is valid but unusual goes to net/http instead (hand-over), a
// head that is invalid or ambiguous is refused.

// maxHeadBytes bounds a request or response head as net/http's server
// does by default (1 MB, plus its 4 KiB of slack).
const maxHeadBytes = http.DefaultMaxHeaderBytes + 4096

// headVerdict is what the fast path does with a request head.
type headVerdict int

const (
	headOK       headVerdict = iota // forward it
	headHandOver                    // valid, but for net/http: upgrades, bodies of unknown length, HTTP/1.0...
	headBad                         // refuse with 400: malformed or ambiguous framing
)

// Errors of head reading.
var (
	errHeadTooLarge = errors.New("lb: message head too large")
	errBareLF       = errors.New("lb: line not ended by CRLF")
)

// readHead appends one message head (start line and header lines, up to
// and including the empty line) from br to dst. A line ended by a bare LF
// stops it with errBareLF; the head read so far is in the result.
func readHead(br *bufio.Reader, dst []byte) ([]byte, error) {
	start := len(dst)
	lineStart := len(dst)
	for {
		frag, err := br.ReadSlice('\n')
		if len(dst)-start+len(frag) > maxHeadBytes {
			return dst, errHeadTooLarge
		}
		dst = append(dst, frag...)
		switch {
		case err == bufio.ErrBufferFull:
			continue // a long line: read on
		case err != nil:
			return dst, err
		}
		line := dst[lineStart:]
		if len(line) < 2 || line[len(line)-2] != '\r' {
			return dst, errBareLF
		}
		if len(line) == 2 {
			if lineStart == start {
				return dst, errBareLF // an empty line before the start line: for net/http
			}
			return dst, nil
		}
		lineStart = len(dst)
	}
}

// hfield is one header field: slices of a head.
type hfield struct{ name, value []byte }

// parseField parses a header line (without its CRLF): a token name, a
// colon and a value without its surrounding whitespace. It refuses
// obs-fold (RFC 9112 section 5.2), a line without a colon or with an
// invalid name, and control characters in the value.
func parseField(line []byte) (hfield, bool) {
	if line[0] == ' ' || line[0] == '\t' {
		return hfield{}, false
	}
	name, value, ok := bytes.Cut(line, []byte{':'})
	if !ok || !isToken(name) {
		return hfield{}, false
	}
	value = trimOWS(value)
	for _, c := range value {
		if c < ' ' && c != '\t' || c == 0x7f {
			return hfield{}, false
		}
	}
	return hfield{name, value}, true
}

// Flags of the headers the fast path looks at.
const (
	hopConnection = 1 << iota // Connection, Keep-Alive, Proxy-Connection, TE...: not forwarded
	fwdHeader                 // Forwarded, X-Forwarded-*: rebuilt
)

// reqHead is a parsed request head; its slices point into the head.
type reqHead struct {
	method, target []byte
	fields         []hfield
	host           []byte
	contentLength  int64 // -1 when absent
	close          bool  // Connection: close
	teTrailers     bool  // TE: trailers
	requestID      bool  // has an X-Request-Id, and the first one is not empty
	requestIDSeen  bool
	idempotencyKey bool
	connTokens     [][]byte // headers named in Connection, not forwarded
}

func (h *reqHead) reset() {
	fields, tokens := h.fields[:0], h.connTokens[:0]
	*h = reqHead{fields: fields, connTokens: tokens, contentLength: -1}
}

// get returns the first value of a header, or nil.
func (h *reqHead) get(name string) []byte {
	for _, f := range h.fields {
		if asciiEqualFold(f.name, name) {
			return f.value
		}
	}
	return nil
}

// parseRequestHead parses head (as readHead returns it) into h.
func parseRequestHead(head []byte, h *reqHead) headVerdict {
	h.reset()
	line, rest := cutLine(head)
	method, line, ok1 := bytes.Cut(line, []byte{' '})
	target, version, ok2 := bytes.Cut(line, []byte{' '})
	if !ok1 || !ok2 || !isToken(method) || len(target) == 0 || !isVersion(version) {
		return headBad
	}
	for _, c := range target {
		if c <= ' ' || c >= 0x7f {
			return headBad
		}
	}
	h.method, h.target = method, target
	verdict := headOK
	if string(version) != "HTTP/1.1" || target[0] != '/' || !cleanQuery(target) {
		// HTTP/1.0 and others; absolute-form, authority-form (CONNECT)
		// and "*"; a query that ReverseProxy cleans.
		verdict = headHandOver
	}
	var te, upgrade, expect, trailer bool
	hosts := 0
	for len(rest) > 2 {
		line, rest = cutLine(rest)
		f, ok := parseField(line)
		if !ok {
			return headBad
		}
		h.fields = append(h.fields, f)
		name, value := f.name, f.value
		switch {
		case asciiEqualFold(name, "Host"):
			hosts++
			h.host = value
		case asciiEqualFold(name, "Content-Length"):
			n, ok := parseContentLength(value)
			if !ok || h.contentLength >= 0 && n != h.contentLength {
				return headBad
			}
			h.contentLength = n
		case asciiEqualFold(name, "Transfer-Encoding"):
			te = true
		case asciiEqualFold(name, "Connection"):
			for tok := range tokens(value) {
				switch {
				case asciiEqualFold(tok, "close"):
					h.close = true
				case asciiEqualFold(tok, "upgrade"):
					upgrade = true
				case asciiEqualFold(tok, "keep-alive"):
				default:
					h.connTokens = append(h.connTokens, tok)
				}
			}
		case asciiEqualFold(name, "Upgrade"):
			upgrade = true
		case asciiEqualFold(name, "Expect"):
			expect = true
		case asciiEqualFold(name, "Trailer"):
			trailer = true
		case asciiEqualFold(name, "TE"):
			for tok := range tokens(value) {
				if asciiEqualFold(tok, "trailers") {
					h.teTrailers = true
				}
			}
		case asciiEqualFold(name, HeaderRequestID) && !h.requestIDSeen:
			h.requestIDSeen, h.requestID = true, len(value) > 0
		case asciiEqualFold(name, "Idempotency-Key"), asciiEqualFold(name, "X-Idempotency-Key"):
			h.idempotencyKey = true
		}
	}
	if te && h.contentLength >= 0 {
		return headBad // which one frames the body? (request smuggling)
	}
	if hosts != 1 || !validHost(h.host) {
		if hosts > 1 {
			return headBad
		}
		verdict = headHandOver // net/http answers 400 to a missing Host in HTTP/1.1
	}
	if te || upgrade || expect || trailer {
		verdict = headHandOver
	}
	return verdict
}

// hopByHop reports whether a request header is not forwarded as
// received: a hop-by-hop header (hopByHopHeader), Trailer, one of the
// forwarding headers that the balancer rebuilds, or an X-Request-Id it
// replaces (dropsRequestID).
func (h *reqHead) hopByHop(name []byte) bool {
	if hopByHopHeader(name, h.connTokens) || dropsRequestID(name, h.requestID) {
		return true
	}
	switch len(name) {
	case 7:
		return asciiEqualFold(name, "Trailer")
	case 9:
		return asciiEqualFold(name, HeaderForwarded)
	case 15:
		return asciiEqualFold(name, "X-Forwarded-For")
	case 16:
		return asciiEqualFold(name, "X-Forwarded-Host")
	case 17:
		return asciiEqualFold(name, "X-Forwarded-Proto")
	}
	return false
}

// hopByHopHeader reports whether a header is hop-by-hop: one of RFC 9110
// section 7.6.1 (and those ReverseProxy removes), or one the message's
// Connection header names (connTokens).
func hopByHopHeader(name []byte, connTokens [][]byte) bool {
	switch len(name) {
	case 2:
		if asciiEqualFold(name, "TE") {
			return true
		}
	case 7:
		if asciiEqualFold(name, "Upgrade") {
			return true
		}
	case 10:
		if asciiEqualFold(name, "Connection") || asciiEqualFold(name, "Keep-Alive") {
			return true
		}
	case 16:
		if asciiEqualFold(name, "Proxy-Connection") {
			return true
		}
	case 17:
		if asciiEqualFold(name, "Transfer-Encoding") {
			return true
		}
	case 18:
		if asciiEqualFold(name, "Proxy-Authenticate") {
			return true
		}
	case 19:
		if asciiEqualFold(name, "Proxy-Authorization") {
			return true
		}
	}
	for _, tok := range connTokens {
		if bytes.EqualFold(name, tok) {
			return true
		}
	}
	return false
}

// respHead is a parsed response head; its slices point into the head.
type respHead struct {
	status        int
	fields        []hfield
	contentLength int64 // -1 when absent
	chunked       bool
	close         bool // Connection: close, or HTTP/1.0 without keep-alive
	requestID     bool // as reqHead.requestID
	requestIDSeen bool
	connTokens    [][]byte
}

func (h *respHead) reset() {
	fields, tokens := h.fields[:0], h.connTokens[:0]
	*h = respHead{fields: fields, connTokens: tokens, contentLength: -1}
}

// errBadResponse is the error of a response the fast path will not pass on.
var errBadResponse = errors.New("lb: malformed response from the endpoint")

// parseResponseHead parses head (as readHead returns it) into h.
func parseResponseHead(head []byte, h *respHead) error {
	h.reset()
	line, rest := cutLine(head)
	version, line, ok := bytes.Cut(line, []byte{' '})
	if !ok || !isVersion(version) || len(line) < 3 {
		return errBadResponse
	}
	code := line[:3]
	if len(line) > 3 && line[3] != ' ' {
		return errBadResponse
	}
	for _, c := range code {
		if c < '0' || c > '9' {
			return errBadResponse
		}
	}
	h.status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if h.status < 100 {
		return errBadResponse
	}
	keepAlive := false
	var te bool
	for len(rest) > 2 {
		line, rest = cutLine(rest)
		f, ok := parseField(line)
		if !ok {
			return errBadResponse
		}
		h.fields = append(h.fields, f)
		name, value := f.name, f.value
		switch {
		case asciiEqualFold(name, "Content-Length"):
			n, ok := parseContentLength(value)
			if !ok || h.contentLength >= 0 && n != h.contentLength {
				return errBadResponse
			}
			h.contentLength = n
		case asciiEqualFold(name, "Transfer-Encoding"):
			if te || !asciiEqualFold(value, "chunked") {
				return errBadResponse // other codings: not supported, as net/http
			}
			te, h.chunked = true, true
		case asciiEqualFold(name, "Connection"):
			for tok := range tokens(value) {
				switch {
				case asciiEqualFold(tok, "close"):
					h.close = true
				case asciiEqualFold(tok, "keep-alive"):
					keepAlive = true
				default:
					h.connTokens = append(h.connTokens, tok)
				}
			}
		case asciiEqualFold(name, HeaderRequestID) && !h.requestIDSeen:
			h.requestIDSeen, h.requestID = true, len(value) > 0
		}
	}
	if te && h.contentLength >= 0 {
		return errBadResponse
	}
	if te && (version[5] < '1' || version[5] == '1' && version[7] < '1') {
		// RFC 9112 section 6.1: an HTTP/1.0 (or older) message with
		// Transfer-Encoding has faulty framing. net/http ignores the
		// header and reads until close; refusing is safer.
		return errBadResponse
	}
	if string(version) != "HTTP/1.1" && !keepAlive {
		h.close = true
	}
	return nil
}

// hopByHop reports whether a response header is not passed on as
// received (hopByHopHeader, dropsRequestID). Transfer-Encoding is among them: the fast
// path frames the body itself (and passes a chunked body, trailers
// included, verbatim, with its Trailer header).
func (h *respHead) hopByHop(name []byte) bool {
	return hopByHopHeader(name, h.connTokens) || dropsRequestID(name, h.requestID)
}

// dropsRequestID reports whether header name is an X-Request-Id that the
// balancer replaces with its own: the message's first one is empty (as
// the net/http path, which sets the header when Header.Get finds none).
func dropsRequestID(name []byte, hasID bool) bool {
	return !hasID && len(name) == len(HeaderRequestID) && asciiEqualFold(name, HeaderRequestID)
}

// bodyless reports whether a response to method with status has no body
// whatever its headers say (RFC 9112 section 6.3).
func bodyless(method []byte, status int) bool {
	return status < 200 || status == http.StatusNoContent || status == http.StatusNotModified || string(method) == http.MethodHead
}

// parseChunkSize parses a chunk-size line without its CRLF: hex digits,
// then optional extensions (passed on, not interpreted).
func parseChunkSize(line []byte) (int64, bool) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			goto ext
		}
		if i >= 15 { // 15 hex digits: far beyond any body, and no overflow
			return 0, false
		}
		n = n<<4 | int64(d)
	}
ext:
	if i == 0 {
		return 0, false
	}
	rest := line[i:]
	for _, c := range rest {
		if c < ' ' && c != '\t' || c == 0x7f {
			return 0, false
		}
	}
	if len(rest) > 0 {
		if r := trimOWS(rest); len(r) == 0 || r[0] != ';' {
			return 0, false
		}
	}
	return n, true
}

// cutLine splits the first CRLF-ended line (without its CRLF) off b.
func cutLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 {
		return nil, nil
	}
	return b[:i-1], b[i+1:]
}

// tokens yields the elements of a comma-separated list, trimmed, without
// empty ones.
func tokens(v []byte) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(v) > 0 {
			var tok []byte
			tok, v, _ = bytes.Cut(v, []byte{','})
			if tok = trimOWS(tok); len(tok) > 0 && !yield(tok) {
				return
			}
		}
	}
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// parseContentLength accepts 1 to 18 decimal digits and nothing else.
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// isVersion matches HTTP/d.d.
func isVersion(v []byte) bool {
	return len(v) == 8 && string(v[:5]) == "HTTP/" && v[5] >= '0' && v[5] <= '9' && v[6] == '.' && v[7] >= '0' && v[7] <= '9'
}

// tokenChars are RFC 9110 tchars.
var tokenChars = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenChars[c] {
			return false
		}
	}
	return true
}

// validHost accepts what a Host header may hold: reg-name, IPv4 or IPv6
// literal, and a port (a subset of net/http's check, which gets the rest).
func validHost(h []byte) bool {
	if len(h) == 0 {
		return false
	}
	for _, c := range h {
		if !(tokenChars[c] && c != '|' && c != '`' && c != '^' && c != '#' || c == '[' || c == ']' || c == ':' || c == '(' || c == ')' || c == ',' || c == ';' || c == '=') {
			return false
		}
	}
	return true
}

// cleanQuery reports whether a request target's query is one that
// ReverseProxy forwards unchanged: no semicolon and well-formed escapes.
func cleanQuery(target []byte) bool {
	for i := 0; i < len(target); i++ {
		switch target[i] {
		case ';':
			return false
		case '%':
			if i+2 >= len(target) || !isHex(target[i+1]) || !isHex(target[i+2]) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// asciiEqualFold compares b to a header name, ignoring ASCII case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if x|0x20 != y|0x20 || x|0x20 < 'a' || x|0x20 > 'z' {
			return false
		}
	}
	return true
}
