//go:build unix

package peerregistry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// BenchmarkThroughput fetches one 100 MiB blob from the same Handler and
// content store over the peer plane (libp2p TCP + security + yamux, through
// Server and Transport) and over plain net/http on 127.0.0.1, alternately,
// and reports both rates in MB/s (10^6 bytes) and their ratio
// (libp2p/http). A third fetch goes to a peer with plain transfer on
// (plain.go): the request over the peer plane, the body redirected to the
// peer's plain listener ("plain-transfer-MB/s", and its ratio to http). The client reads in 1 MiB chunks, as containerd's
// content.Copy does, and discards. ns/op is the time for both fetches.
//
// Client and server share the process, so the process's CPU time (user +
// system) per byte is what one transfer costs both ends together; it is
// reported too ("cpu-ns/B") because, unlike the rates, it barely moves when
// other work competes for the CPUs. cpu-ratio is http/libp2p cost: the
// throughput ratio to expect when the transfer is CPU-bound.
//
//	go test ./node/peerregistry -run '^$' -bench Throughput -benchtime 5x
func BenchmarkThroughput(b *testing.B) {
	const size = 100 << 20
	a, c := newNode(b), newNode(b)
	befriend(a, c)
	d := put(b, a.store, randomBytes(b, size)).Digest
	h := NewHandler(a.store, nil, discard)
	startServer(b, a.Host, h)
	plain := httptest.NewServer(h)
	b.Cleanup(plain.Close)
	plainClient := &http.Client{Transport: &http.Transport{DisableCompression: true, Proxy: nil}}
	b.Cleanup(plainClient.CloseIdleConnections)
	p2pClient := &http.Client{Transport: c.transport(b, a)}
	// Plain transfer (plain.go): a second peer serving the same store with
	// a plain listener; blob bodies are redirected to it.
	pn := newNode(b)
	befriend(pn, c)
	hp := NewHandler(a.store, nil, discard)
	startServer(b, pn.Host, hp)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ps, err := NewPlainServer(hp, ln, loopback, discard)
	if err != nil {
		b.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(context.Background())
	pdone := make(chan error, 1)
	go func() { pdone <- ps.Run(pctx) }()
	b.Cleanup(func() { pcancel(); <-pdone })
	hp.SetPlain(ps, func(string) (netip.Addr, bool) { return loopback, true })
	plainTr := c.transport(b, pn)
	plainTr.SetPlainSource(loopback)
	plainP2PClient := &http.Client{Transport: plainTr}
	path := "/v2/bench/blobs/" + d.String()
	buf := make([]byte, 1<<20)

	fetch := func(client *http.Client, url string) (wall, cpu time.Duration) {
		start, cpu0 := time.Now(), cpuTime(b)
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		var n int64
		for {
			k, err := io.ReadAtLeast(resp.Body, buf, len(buf))
			n += int64(k)
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		if resp.StatusCode != http.StatusOK || n != size {
			b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
		}
		return time.Since(start), cpuTime(b) - cpu0
	}
	httpURL, p2pURL, redirURL := plain.URL+path, "http://"+a.ID().String()+path, "http://"+pn.ID().String()+path
	fetch(plainClient, httpURL) // warm the page cache and the connections
	fetch(p2pClient, p2pURL)
	fetch(plainP2PClient, redirURL)

	var tHTTP, tP2P, tRedir, cHTTP, cP2P, cRedir time.Duration
	fetches := []func(){
		func() { w, c := fetch(plainClient, httpURL); tHTTP += w; cHTTP += c },
		func() { w, c := fetch(p2pClient, p2pURL); tP2P += w; cP2P += c },
		func() { w, c := fetch(plainP2PClient, redirURL); tRedir += w; cRedir += c },
	}
	b.ResetTimer()
	for i := range b.N {
		for j := range fetches { // rotate the order
			fetches[(i+j)%len(fetches)]()
		}
	}
	b.StopTimer()
	if got := ps.Stats().Served; got != uint64(b.N+1) {
		b.Fatalf("plain listener served %d blobs, want %d", got, b.N+1)
	}
	bytes := float64(size) * float64(b.N)
	httpRate, p2pRate := bytes/tHTTP.Seconds()/1e6, bytes/tP2P.Seconds()/1e6
	b.ReportMetric(httpRate, "http-MB/s")
	b.ReportMetric(p2pRate, "libp2p-MB/s")
	b.ReportMetric(p2pRate/httpRate, "ratio")
	b.ReportMetric(float64(cHTTP.Nanoseconds())/bytes, "http-cpu-ns/B")
	b.ReportMetric(float64(cP2P.Nanoseconds())/bytes, "libp2p-cpu-ns/B")
	b.ReportMetric(float64(cHTTP)/float64(cP2P), "cpu-ratio")
	redirRate := bytes / tRedir.Seconds() / 1e6
	b.ReportMetric(redirRate, "plain-transfer-MB/s")
	b.ReportMetric(redirRate/httpRate, "plain-transfer-ratio")
}

// cpuTime returns the process's user + system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkTLSCeiling is the ceiling of any TLS transport on this machine:
// 100 MiB over one loopback TCP connection, written in one call and read in
// 1 MiB chunks, raw and under Go's crypto/tls (TLS 1.3, AES-128-GCM), in
// the same run. The peer plane's TLS rate (BenchmarkThroughput) is to be
// read against "tls-MB/s", not against plain HTTP.
//
//	go test ./node/peerregistry -run '^$' -bench TLSCeiling -benchtime 5x
func BenchmarkTLSCeiling(b *testing.B) {
	const size = 100 << 20
	data := randomBytes(b, size)
	cert := selfSigned(b)
	run := func(wrapServer, wrapClient func(net.Conn) net.Conn) time.Duration {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c = wrapServer(c)
			defer c.Close()
			one := make([]byte, 1)
			for {
				if _, err := c.Read(one); err != nil {
					return
				}
				if _, err := c.Write(data); err != nil {
					return
				}
			}
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		c = wrapClient(c)
		defer c.Close()
		buf := make([]byte, 1<<20)
		fetch := func() {
			if _, err := c.Write([]byte{1}); err != nil {
				b.Fatal(err)
			}
			for n := 0; n < size; {
				k, err := c.Read(buf)
				if err != nil {
					b.Fatal(err)
				}
				n += k
			}
		}
		fetch() // handshake and warm-up
		start := time.Now()
		for range b.N {
			fetch()
		}
		return time.Since(start)
	}
	same := func(c net.Conn) net.Conn { return c }
	b.ResetTimer()
	tPlain := run(same, same)
	tTLS := run(
		func(c net.Conn) net.Conn { return tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}}) },
		func(c net.Conn) net.Conn {
			return tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}) // the cipher is measured, not trust
		})
	b.StopTimer()
	bytes := float64(size) * float64(b.N)
	b.ReportMetric(bytes/tPlain.Seconds()/1e6, "tcp-MB/s")
	b.ReportMetric(bytes/tTLS.Seconds()/1e6, "tls-MB/s")
	b.ReportMetric(tPlain.Seconds()/tTLS.Seconds(), "tls/tcp")
}

// selfSigned makes a throwaway ECDSA certificate.
func selfSigned(b *testing.B) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
