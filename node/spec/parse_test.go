package spec

import (
	"strings"
	"testing"
)

func TestParsePublish(t *testing.T) {
	tests := []struct {
		in   string
		want Port
		err  string
	}{
		{"8080:80", Port{8080, 80, "tcp"}, ""},
		{"8080:80/tcp", Port{8080, 80, "tcp"}, ""},
		{"8080:80/http", Port{8080, 80, "http"}, ""},
		{"80", Port{80, 80, "tcp"}, ""},
		{"80/http", Port{80, 80, "http"}, ""},
		{"65535:1", Port{65535, 1, "tcp"}, ""},
		{"", Port{}, "between 1 and 65535"},
		{"0:80", Port{}, `port "0"`},
		{"8080:65536", Port{}, `port "65536"`},
		{"+80", Port{}, `port "+80"`},
		{"8080:", Port{}, `port ""`},
		{"web:80", Port{}, `port "web"`},
		{"8080:80/udp", Port{}, `protocol must be "tcp" or "http", got "udp"`},
		{"8080:80/", Port{}, `got ""`},
		{"127.0.0.1:8080:80", Port{}, "host IPs are not supported"},
		{"8080-8081:80", Port{}, `port "8080-8081"`},
	}
	for _, tt := range tests {
		got, err := ParsePublish(tt.in)
		if tt.err == "" && (err != nil || got != tt.want) || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("ParsePublish(%q) = %+v, %v; want %+v, error containing %q", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestParseKV(t *testing.T) {
	tests := []struct {
		in, k, v string
		ok       bool
	}{
		{"a=b", "a", "b", true},
		{"a=", "a", "", true},
		{"a=b=c", "a", "b=c", true},
		{"a", "", "", false},
		{"=b", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		k, v, err := ParseKV(tt.in)
		if (err == nil) != tt.ok || k != tt.k || v != tt.v {
			t.Errorf("ParseKV(%q) = %q, %q, %v; want %q, %q, ok=%v", tt.in, k, v, err, tt.k, tt.v, tt.ok)
		}
	}
}
