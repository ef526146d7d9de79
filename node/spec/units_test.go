package spec

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want Bytes
		err  bool
	}{
		{"0", 0, false},
		{"1048576", 1 << 20, false},
		{"100b", 100, false},
		{"1k", 1024, false},
		{"1K", 1024, false},
		{"512m", 512 << 20, false},
		{"2g", 2 << 30, false},
		{"1t", 1 << 40, false},
		{"512Mi", 512 << 20, false},
		{"1gi", 1 << 30, false},
		{"1GiB", 1 << 30, false},
		{"4Ki", 4096, false},
		{"1Ti", 1 << 40, false},
		{"64MB", 64e6, false},
		{"1kb", 1000, false},
		{"1GB", 1e9, false},
		{"2TB", 2e12, false},
		{"1.5k", 1536, false},
		{"0.5Gi", 512 << 20, false},
		{"1.0000001", 1, false},
		{"512 Mi", 512 << 20, false},
		{" 5m ", 5 << 20, false},
		{"", 0, true},
		{"m", 0, true},
		{"-1", 0, true},
		{"1x", 0, true},
		{"1.2.3", 0, true},
		{".5k", 0, true},
		{"5.k", 0, true},
		{"1  m", 0, true},
		{"1e3", 0, true},
		{"9223372036854775807", 1<<63 - 1, false},
		{"9223372036854775808", 0, true},
		{"8388608Ti", 0, true},
		{"99999999999999999999.5t", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseBytes(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d, err=%v", tt.in, got, err, tt.want, tt.err)
		}
		if err != nil && !errors.Is(err, ErrBadSize) {
			t.Errorf("ParseBytes(%q) error %v does not wrap ErrBadSize", tt.in, err)
		}
	}
}

func TestBytesString(t *testing.T) {
	for b, want := range map[Bytes]string{0: "0", 1: "1", 1024: "1Ki", 1536: "1536", 512 << 20: "512Mi", 1 << 30: "1Gi", 3 << 40: "3Ti", 64e6: "64MB", 1e9: "1GB", 1500: "1500", 2000: "2KB", -5: "-5"} {
		if got := b.String(); got != want {
			t.Errorf("Bytes(%d).String() = %q, want %q", int64(b), got, want)
		}
	}
}

func TestBytesStringRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		b := Bytes(rapid.Int64Min(0).Draw(t, "b"))
		got, err := ParseBytes(b.String())
		if err != nil || got != b {
			t.Fatalf("ParseBytes(%q) = %d, %v; want %d", b.String(), got, err, b)
		}
	})
}

func TestBytesJSON(t *testing.T) {
	tests := []struct {
		in   string
		want Bytes
		err  string
	}{
		{`1024`, 1024, ""},
		{`"1Ki"`, 1024, ""},
		{`"64MB"`, 64e6, ""},
		{`0`, 0, ""},
		{`-1`, 0, "non-negative"},
		{`1.5`, 0, "whole number"},
		{`1e3`, 0, "whole number"},
		{`true`, 0, "got a boolean"},
		{`"x"`, 0, "invalid size"},
		{`{}`, 0, "got an object"},
	}
	for _, tt := range tests {
		var b Bytes
		err := json.Unmarshal([]byte(tt.in), &b)
		if tt.err == "" && (err != nil || b != tt.want) || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("Unmarshal(%s) = %d, %v; want %d, error containing %q", tt.in, b, err, tt.want, tt.err)
		}
	}
	out, err := json.Marshal(struct{ M Bytes }{512 << 20})
	if err != nil || string(out) != `{"M":536870912}` {
		t.Errorf("Marshal = %s, %v", out, err)
	}
	b := Bytes(7)
	if err := json.Unmarshal([]byte(`null`), &b); err != nil || b != 7 {
		t.Errorf("null changed Bytes to %d, %v", b, err)
	}
}

func TestDurationJSON(t *testing.T) {
	tests := []struct {
		in   string
		want Duration
		err  string
	}{
		{`"5s"`, Duration(5 * time.Second), ""},
		{`"1m30s"`, Duration(90 * time.Second), ""},
		{`"250ms"`, Duration(250 * time.Millisecond), ""},
		{`"0s"`, 0, ""},
		{`"-1s"`, 0, "must not be negative"},
		{`5`, 0, "got the number 5"},
		{`"5"`, 0, "invalid duration"},
		{`"soon"`, 0, "invalid duration"},
		{`true`, 0, "got a boolean"},
	}
	for _, tt := range tests {
		var d Duration
		err := json.Unmarshal([]byte(tt.in), &d)
		if tt.err == "" && (err != nil || d != tt.want) || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("Unmarshal(%s) = %s, %v; want %s, error containing %q", tt.in, d, err, tt.want, tt.err)
		}
	}
	out, err := json.Marshal(Duration(1500 * time.Millisecond))
	if err != nil || string(out) != `"1.5s"` {
		t.Errorf("Marshal = %s, %v", out, err)
	}
	if Duration(time.Minute).Std() != time.Minute || Duration(time.Minute).String() != "1m0s" {
		t.Error("Std/String disagree with time.Duration")
	}
}
