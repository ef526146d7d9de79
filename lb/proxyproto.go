package lb

import (
	"encoding/binary"
	"net/netip"
)

// proxySignature starts every PROXY protocol v2 header.
var proxySignature = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// proxyHeader is the PROXY protocol v2 header (haproxy's
// proxy-protocol.txt, section 2.2) of a TCP connection from client to
// local: command PROXY, family TCP over IPv4 when both addresses are IPv4,
// else TCP over IPv6 (IPv4 addresses mapped).
func proxyHeader(client, local netip.AddrPort) []byte {
	src, dst := client.Addr().Unmap(), local.Addr().Unmap()
	v4 := src.Is4() && dst.Is4()
	var b []byte
	b = append(b, proxySignature[:]...)
	b = append(b, 0x21) // version 2, PROXY
	if v4 {
		b = append(b, 0x11) // AF_INET, STREAM
		b = binary.BigEndian.AppendUint16(b, 12)
		s, d := src.As4(), dst.As4()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	} else {
		b = append(b, 0x21) // AF_INET6, STREAM
		b = binary.BigEndian.AppendUint16(b, 36)
		s, d := src.As16(), dst.As16()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, client.Port())
	b = binary.BigEndian.AppendUint16(b, local.Port())
	return b
}
