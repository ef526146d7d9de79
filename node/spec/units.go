package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
)

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String formats d like time.Duration ("1m30s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as a Go duration string ("5s").
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a Go duration string ("5s", "1m30s", "250ms").
// Numbers are rejected (their unit would be a guess), and so are negative
// durations. A JSON null leaves d unchanged.
func (d *Duration) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if string(data) == "null" {
		return nil
	}
	if len(data) == 0 || data[0] != '"' {
		return fmt.Errorf("duration must be a string with a unit such as \"5s\" or \"250ms\", got %s", jsonKind(data))
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: want a number with a unit such as \"5s\" or \"250ms\"", s)
	}
	if v < 0 {
		return fmt.Errorf("duration must not be negative, got %q", s)
	}
	*d = Duration(v)
	return nil
}

// jsonKind names the kind of a raw JSON value for error messages.
func jsonKind(data []byte) string {
	if len(data) == 0 {
		return "nothing"
	}
	switch c := data[0]; {
	case c == '"':
		return "a string"
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	default:
		return "the number " + string(data)
	}
}

// Size units. The binary units are powers of 1024, the decimal ones powers of
// 1000.
const (
	KiB Bytes = 1 << 10 // kibibyte
	MiB Bytes = 1 << 20 // mebibyte
	GiB Bytes = 1 << 30 // gibibyte
	TiB Bytes = 1 << 40 // tebibyte
)

// byteUnits maps a lower-case unit suffix to its multiplier. Single letters
// follow docker (powers of 1024); "ki".."ti" and "kib".."tib" are the IEC
// binary units; "kb".."tb" are the SI decimal units (unlike docker, which reads
// them as powers of 1024).
var byteUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
	"ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
}

// ErrBadSize is returned (wrapped) by ParseBytes for a malformed size.
var ErrBadSize = errors.New("spec: invalid size")

// ParseBytes parses a size: a non-negative number, optionally with a fraction
// and an optional space, followed by an optional case-insensitive unit:
//
//   - none or "b": bytes
//   - "k", "m", "g", "t": powers of 1024 (as docker reads them)
//   - "Ki", "Mi", "Gi", "Ti" (or "KiB" ...): powers of 1024
//   - "KB", "MB", "GB", "TB": powers of 1000
//
// A fractional result is rounded down to whole bytes ("1.5k" is 1536).
// Errors wrap ErrBadSize.
func ParseBytes(s string) (Bytes, error) {
	orig := s
	s = strings.TrimSpace(s)
	if len(s) > 64 {
		return 0, fmt.Errorf("%w: %.20q... is too long", ErrBadSize, orig)
	}
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.ToLower(strings.TrimPrefix(s[i:], " "))
	mult, ok := byteUnits[unit]
	if num == "" || !ok || strings.Count(num, ".") > 1 || num[0] == '.' || num[len(num)-1] == '.' {
		return 0, fmt.Errorf("%w %q: want a number of bytes with an optional unit such as 512Mi, 1g or 64MB", ErrBadSize, orig)
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n > math.MaxInt64/mult {
			return 0, fmt.Errorf("%w %q: too large", ErrBadSize, orig)
		}
		return Bytes(n * mult), nil
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("%w %q: bad number", ErrBadSize, orig)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	n := new(big.Int).Quo(r.Num(), r.Denom()) // both positive: rounds down
	if !n.IsInt64() {
		return 0, fmt.Errorf("%w %q: too large", ErrBadSize, orig)
	}
	return Bytes(n.Int64()), nil
}

// String formats b with the unit that gives the smallest whole number
// ("512Mi", "1Gi", "64MB"; binary units win ties), or as plain bytes when
// no unit divides it ("1500"). The result parses back to b with ParseBytes.
func (b Bytes) String() string {
	best, unit := b, ""
	if b > 0 {
		for _, u := range []struct {
			n    Bytes
			name string
		}{{TiB, "Ti"}, {GiB, "Gi"}, {MiB, "Mi"}, {KiB, "Ki"}, {1e12, "TB"}, {1e9, "GB"}, {1e6, "MB"}, {1e3, "KB"}} {
			if b%u.n == 0 && b/u.n < best {
				best, unit = b/u.n, u.name
			}
		}
	}
	return strconv.FormatInt(int64(best), 10) + unit
}

// MarshalJSON writes b as a JSON number of bytes.
func (b Bytes) MarshalJSON() ([]byte, error) {
	return strconv.AppendInt(nil, int64(b), 10), nil
}

// UnmarshalJSON reads a non-negative integer number of bytes, or a string
// that ParseBytes accepts ("512Mi", "1g", "64MB", "1048576"). A JSON null
// leaves b unchanged.
func (b *Bytes) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	switch {
	case string(data) == "null":
		return nil
	case len(data) > 0 && data[0] == '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return fmt.Errorf("size: %w", err)
		}
		v, err := ParseBytes(s)
		if err != nil {
			return err
		}
		*b = v
		return nil
	case len(data) > 0 && (data[0] == '-' || data[0] >= '0' && data[0] <= '9'):
		n, err := strconv.ParseInt(string(data), 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("size must be a non-negative whole number of bytes or a string such as \"512Mi\", got %s", data)
		}
		*b = Bytes(n)
		return nil
	default:
		return fmt.Errorf("size must be a number of bytes or a string such as \"512Mi\", got %s", jsonKind(data))
	}
}
