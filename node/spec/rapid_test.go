package spec

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// genSpec draws a spec that should be valid.
func genSpec() *rapid.Generator[Spec] {
	str := rapid.StringMatching(`[^\x00]{0,12}`)
	label := rapid.StringMatching(`[a-z0-9]([a-z0-9._-]{0,10}[a-z0-9])?`)
	return rapid.Custom(func(t *rapid.T) Spec {
		s := Spec{
			Name:     rapid.StringMatching(`[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?`).Draw(t, "name"),
			Image:    rapid.SampledFrom([]string{"a", "demo:1", "localhost:5000/x/y:latest", "r.io/a_b__c-d/e@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}).Draw(t, "image"),
			Replicas: rapid.IntRange(0, MaxReplicas).Draw(t, "replicas"),
			Command:  rapid.SliceOfN(rapid.StringMatching(`[^\x00]{1,8}`), 0, 3).Draw(t, "command"),
			Env:      rapid.MapOfN(rapid.StringMatching(`[A-Za-z_][^=\x00]{0,8}`), str, 0, 3).Draw(t, "env"),
			Network:  rapid.SampledFrom([]string{"", NetworkBridge, NetworkHost}).Draw(t, "network"),
		}
		nports := rapid.IntRange(0, 3).Draw(t, "nports")
		if s.Network == NetworkHost {
			nports = min(nports, 1)
		}
		used := map[int]bool{}
		for range nports {
			pub := rapid.IntRange(1, 65535).Filter(func(p int) bool { return !used[p] }).Draw(t, "published")
			used[pub] = true
			s.Ports = append(s.Ports, Port{
				Published: pub,
				Target:    rapid.IntRange(1, 65535).Draw(t, "target"),
				Protocol:  rapid.SampledFrom([]string{"", ProtocolTCP, ProtocolHTTP}).Draw(t, "protocol"),
			})
		}
		switch rapid.IntRange(0, 3).Draw(t, "probe") {
		case 1:
			if nports > 0 {
				s.Health = &Health{HTTP: "/" + rapid.StringMatching(`[a-z/?=&]{0,10}`).Draw(t, "path")}
			}
		case 2:
			s.Health = &Health{TCP: rapid.IntRange(1, 65535).Draw(t, "tcp")}
		case 3:
			s.Health = &Health{Exec: rapid.SliceOfN(rapid.StringMatching(`[^\x00]{1,8}`), 1, 3).Draw(t, "exec")}
		}
		if s.Health != nil {
			iv := rapid.Int64Range(0, int64(time.Hour)).Filter(func(d int64) bool { return d == 0 || d >= int64(time.Second) }).Draw(t, "interval")
			s.Health.Interval = Duration(iv)
			if iv == 0 {
				iv = int64(DefaultInterval)
			}
			s.Health.Timeout = Duration(rapid.Int64Range(0, iv).Draw(t, "timeout"))
		}
		s.Resources.CPUs = rapid.Float64Range(0, MaxCPUs).Draw(t, "cpus")
		if rapid.Bool().Draw(t, "limit memory") {
			s.Resources.Memory = Bytes(rapid.Int64Range(int64(MinMemory), 1<<50).Draw(t, "memory"))
		}
		s.Constraints = rapid.MapOfN(label, rapid.OneOf(rapid.Just(""), label), 0, 3).Draw(t, "constraints")
		return s
	})
}

// TestRoundTripProperty checks, over generated valid specs, that Validate
// accepts them, Normalize is idempotent and does not change the verdict, and
// Decode(Marshal(s)) gives s back.
func TestRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := genSpec().Draw(t, "spec")
		if err := s.Validate(); err != nil {
			t.Fatalf("generated spec invalid: %v", err)
		}
		s.Normalize()
		if err := s.Validate(); err != nil {
			t.Fatalf("normalized spec invalid: %v", err)
		}
		twice := s
		twice.Normalize()
		if !reflect.DeepEqual(twice, s) {
			t.Fatalf("Normalize not idempotent")
		}
		data, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(data)
		if err != nil {
			t.Fatalf("Decode(%s) = %v", data, err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Fatalf("round trip:\n%+v\n%+v\njson %s", got, s, data)
		}
	})
}
