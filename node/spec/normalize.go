package spec

// Normalize fills the defaults every node must store identically: port
// protocol "tcp", network "bridge", when Balance is set policy
// "least_request" (and hash_on "client_ip" for "maglev"), and when Health
// is set an interval of 5s
// and a timeout of min(2s, interval). Empty maps and slices become nil so
// that a spec survives a JSON round trip unchanged. Nothing is reordered.
// Normalize does not validate; invalid values are left for Validate to
// report.
func (s *Spec) Normalize() {
	if s.Network == "" {
		s.Network = NetworkBridge
	}
	if len(s.Command) == 0 {
		s.Command = nil
	}
	if len(s.Env) == 0 {
		s.Env = nil
	}
	if len(s.Constraints) == 0 {
		s.Constraints = nil
	}
	if len(s.Ports) == 0 {
		s.Ports = nil
	}
	for i := range s.Ports {
		if s.Ports[i].Protocol == "" {
			s.Ports[i].Protocol = ProtocolTCP
		}
	}
	if b := s.Balance; b != nil {
		if b.Policy == "" {
			b.Policy = PolicyLeastRequest
		}
		if b.Policy == PolicyMaglev && b.HashOn == "" {
			b.HashOn = HashClientIP
		}
	}
	if h := s.Health; h != nil {
		if len(h.Exec) == 0 {
			h.Exec = nil
		}
		if h.Interval == 0 {
			h.Interval = DefaultInterval
		}
		if h.Timeout == 0 {
			h.Timeout = min(DefaultTimeout, h.Interval)
			if h.Timeout < 0 { // invalid interval: leave the timeout unset
				h.Timeout = 0
			}
		}
	}
}
