package gossip

import (
	"bytes"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/memberlist"
)

// Tags is a node's advertised metadata. It travels as serf tags, that is in
// memberlist's node metadata, which holds at most memberlist.MetaMaxSize
// (512) bytes in total after serf's msgpack encoding: keep labels few and
// short. Zero-valued fields are not sent and decode as zero.
type Tags struct {
	// PeerID is the libp2p peer ID of the node's peer plane.
	PeerID string
	// PeerPort is the TCP port of the peer plane, at the member's address.
	PeerPort int
	// API is the host:port of the node's HTTP API.
	API string
	// Arch is the node's runtime.GOARCH.
	Arch string
	// OS is the node's runtime.GOOS.
	OS string
	// CPUs is the CPU capacity the node offers to placement.
	CPUs float64
	// Memory is the memory the node offers to placement, in bytes.
	Memory int64
	// RuntimeReady reports whether the container runtime is reachable.
	RuntimeReady bool
	// RuntimeReason says why the runtime is not ready. Encode truncates it
	// to MaxRuntimeReason bytes, and further if the tags would not fit.
	RuntimeReason string
	// Labels are user labels (--label k=v). Keys must not be empty.
	Labels map[string]string
	// Version is the node's Shoal version.
	Version string
	// Filling says the node has just started and takes its share of the
	// replicas (placement.Node.Filling) until it alone runs every slot it
	// owns.
	Filling bool
}

// decodeFlag sets *b from a flag tag's value, "1" or "0".
func decodeFlag(v string, b *bool) error {
	switch v {
	case "1":
		*b = true
	case "0":
		*b = false
	default:
		return fmt.Errorf("want \"0\" or \"1\", got %s", quoteShort(v))
	}
	return nil
}

// MaxRuntimeReason is the longest Tags.RuntimeReason that Encode sends.
const MaxRuntimeReason = 128

// Tag keys on the wire. They are short because the whole encoded map must
// fit in 512 bytes. Decoders ignore keys they do not know, so new keys can
// be added without breaking older nodes; a key's format never changes.
const (
	tagPeerID        = "id"
	tagPeerPort      = "pp"
	tagAPI           = "api"
	tagArch          = "arch"
	tagOS            = "os"
	tagCPUs          = "cpu"
	tagMemory        = "mem"
	tagRuntimeReady  = "rt"
	tagRuntimeReason = "rr"
	tagVersion       = "v"
	tagFilling       = "fill"
	tagLabelPrefix   = "l."
)

// tagMagicByte is the byte serf puts before msgpack-encoded tags.
const tagMagicByte = 255

// Encode returns the tags as a serf tag map. It fails with ErrInvalidTags
// for values no decoder would accept (negative capacity, port out of range,
// empty label key, malformed API address) and with ErrTagsTooLarge if the
// map would not fit in memberlist's node metadata even with RuntimeReason
// cut to nothing.
func (t Tags) Encode() (map[string]string, error) {
	if err := t.validate(); err != nil {
		return nil, err
	}
	m := make(map[string]string, 10+len(t.Labels))
	put := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	put(tagPeerID, t.PeerID)
	if t.PeerPort != 0 {
		m[tagPeerPort] = strconv.Itoa(t.PeerPort)
	}
	put(tagAPI, t.API)
	put(tagArch, t.Arch)
	put(tagOS, t.OS)
	if t.CPUs != 0 {
		m[tagCPUs] = strconv.FormatFloat(t.CPUs, 'g', -1, 64)
	}
	if t.Memory != 0 {
		m[tagMemory] = strconv.FormatInt(t.Memory, 10)
	}
	if t.RuntimeReady {
		m[tagRuntimeReady] = "1"
	}
	if t.Filling {
		m[tagFilling] = "1"
	}
	put(tagVersion, t.Version)
	for k, v := range t.Labels {
		m[tagLabelPrefix+k] = v
	}
	reason := truncateUTF8(t.RuntimeReason, MaxRuntimeReason)
	for {
		put(tagRuntimeReason, reason)
		size, err := encodedTagsSize(m)
		if err != nil {
			return nil, err
		}
		if size <= memberlist.MetaMaxSize {
			return m, nil
		}
		if reason == "" {
			return nil, fmt.Errorf("%w: %d bytes encoded, limit %d", ErrTagsTooLarge, size, memberlist.MetaMaxSize)
		}
		// Cut the reason by the overflow (at least one byte) and retry.
		reason = truncateUTF8(reason, len(reason)-max(size-memberlist.MetaMaxSize, 1))
		delete(m, tagRuntimeReason)
	}
}

// validate checks the values Encode would refuse.
func (t Tags) validate() error {
	switch {
	case t.PeerPort < 0 || t.PeerPort > math.MaxUint16:
		return fmt.Errorf("%w: PeerPort %d out of range", ErrInvalidTags, t.PeerPort)
	case math.IsNaN(t.CPUs) || math.IsInf(t.CPUs, 0) || t.CPUs < 0:
		return fmt.Errorf("%w: CPUs %v is not a finite non-negative number", ErrInvalidTags, t.CPUs)
	case t.Memory < 0:
		return fmt.Errorf("%w: Memory %d is negative", ErrInvalidTags, t.Memory)
	}
	if t.API != "" {
		if err := checkHostPort(t.API); err != nil {
			return fmt.Errorf("%w: API %q: %v", ErrInvalidTags, t.API, err)
		}
	}
	for k := range t.Labels {
		if k == "" {
			return fmt.Errorf("%w: empty label key", ErrInvalidTags)
		}
	}
	return nil
}

// DecodeTags parses tags received from another node. The input is outside
// data: it never panics, reports the first malformed key with
// ErrInvalidTags, and ignores keys it does not know (forward compatibility).
// A nil or empty map decodes to zero Tags.
func DecodeTags(m map[string]string) (Tags, error) {
	var t Tags
	for k, v := range m {
		if err := t.decodeOne(k, v); err != nil {
			return Tags{}, fmt.Errorf("%w: key %q: %v", ErrInvalidTags, k, err)
		}
	}
	return t, nil
}

// decodeOne sets the field for one wire key.
func (t *Tags) decodeOne(k, v string) error {
	switch k {
	case tagPeerID:
		t.PeerID = v
	case tagPeerPort:
		p, err := strconv.ParseUint(v, 10, 16)
		if err != nil || p == 0 {
			return fmt.Errorf("not a port number: %s", quoteShort(v))
		}
		t.PeerPort = int(p)
	case tagAPI:
		if err := checkHostPort(v); err != nil {
			return fmt.Errorf("not a host:port: %s: %v", quoteShort(v), err)
		}
		t.API = v
	case tagArch:
		t.Arch = v
	case tagOS:
		t.OS = v
	case tagCPUs:
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return fmt.Errorf("not a finite non-negative number: %s", quoteShort(v))
		}
		t.CPUs = f
	case tagMemory:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("not a non-negative integer: %s", quoteShort(v))
		}
		t.Memory = n
	case tagRuntimeReady:
		return decodeFlag(v, &t.RuntimeReady)
	case tagFilling:
		return decodeFlag(v, &t.Filling)
	case tagRuntimeReason:
		t.RuntimeReason = v
	case tagVersion:
		t.Version = v
	default:
		label, ok := strings.CutPrefix(k, tagLabelPrefix)
		if !ok {
			return nil // unknown key: a newer node's, ignore
		}
		if label == "" {
			return fmt.Errorf("empty label key")
		}
		if t.Labels == nil {
			t.Labels = make(map[string]string)
		}
		t.Labels[label] = v
	}
	return nil
}

// checkHostPort accepts "host:port" with a numeric port in 1..65535.
func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("bad port %s", quoteShort(port))
	}
	return nil
}

// encodedTagsSize is the size of m as serf puts it into memberlist's node
// metadata (serf.go encodeTags: a magic byte, then msgpack).
func encodedTagsSize(m map[string]string) (int, error) {
	var buf bytes.Buffer
	buf.WriteByte(tagMagicByte)
	if err := codec.NewEncoder(&buf, &codec.MsgpackHandle{}).Encode(m); err != nil {
		return 0, fmt.Errorf("gossip: encode tags: %w", err)
	}
	return buf.Len(), nil
}

// truncateUTF8 cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncateUTF8(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s
	}
	s = s[:n]
	// Drop a trailing partial rune (at most utf8.UTFMax-1 bytes).
	for i := 0; i < utf8.UTFMax-1 && len(s) > 0; i++ {
		r, size := utf8.DecodeLastRuneInString(s)
		if r != utf8.RuneError || size != 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s
}

// quoteShort quotes an outside value for an error message, cut to 32 bytes.
func quoteShort(s string) string {
	const n = 32
	if len(s) > n {
		return strconv.Quote(s[:n]) + "..."
	}
	return strconv.Quote(s)
}
