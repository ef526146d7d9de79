//go:build unix

package peerregistry

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"
)

// BenchmarkThroughput fetches one 100 MiB blob from the same Handler and
// content store over the peer plane (libp2p TCP + security + yamux, through
// Server and Transport) and over plain net/http on 127.0.0.1, alternately,
// and reports both rates in MB/s (10^6 bytes) and their ratio
// (libp2p/http). The client reads in 1 MiB chunks, as containerd's
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
	httpURL, p2pURL := plain.URL+path, "http://"+a.ID().String()+path
	fetch(plainClient, httpURL) // warm the page cache and the connections
	fetch(p2pClient, p2pURL)

	var tHTTP, tP2P, cHTTP, cP2P time.Duration
	plainFetch := func() { w, c := fetch(plainClient, httpURL); tHTTP += w; cHTTP += c }
	p2pFetch := func() { w, c := fetch(p2pClient, p2pURL); tP2P += w; cP2P += c }
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			plainFetch()
			p2pFetch()
		} else {
			p2pFetch()
			plainFetch()
		}
	}
	b.StopTimer()
	bytes := float64(size) * float64(b.N)
	httpRate, p2pRate := bytes/tHTTP.Seconds()/1e6, bytes/tP2P.Seconds()/1e6
	b.ReportMetric(httpRate, "http-MB/s")
	b.ReportMetric(p2pRate, "libp2p-MB/s")
	b.ReportMetric(p2pRate/httpRate, "ratio")
	b.ReportMetric(float64(cHTTP.Nanoseconds())/bytes, "http-cpu-ns/B")
	b.ReportMetric(float64(cP2P.Nanoseconds())/bytes, "libp2p-cpu-ns/B")
	b.ReportMetric(float64(cHTTP)/float64(cP2P), "cpu-ratio")
}

// cpuTime returns the process's user + system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
