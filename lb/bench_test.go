package lb

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"testing"
)

// BenchmarkL7Proxy measures requests through an HTTP route to one
// in-process backend over keep-alive connections (client, balancer and
// backend share the process, so it measures cost, not capacity):
//
//	go test ./lb -run '^$' -bench Proxy -cpuprofile cpu.out
func BenchmarkL7Proxy(b *testing.B) {
	be := newHTTPBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"service":"web","slot":"0"}`)
	}))
	bal, ip := newBalancer(b, 9200, Config{})
	bal.Update([]Route{{Service: "web", Port: 9200, Protocol: ProtocolHTTP, Endpoints: endpoints(be.addr)}})
	url := "http://" + netip.AddrPortFrom(ip, 9200).String() + "/"
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

// BenchmarkL4Proxy measures small request/response exchanges through a
// TCP route to an in-process line echo backend over long-lived
// connections, one per GOMAXPROCS (so mostly latency).
func BenchmarkL4Proxy(b *testing.B) { benchL4(b, 1) }

// BenchmarkL4Proxy64Conns is BenchmarkL4Proxy over 64 connections (as
// wrk -c64 in scripts/bench-lb.sh), where the balancer has several
// connections ready at once.
func BenchmarkL4Proxy64Conns(b *testing.B) {
	benchL4(b, (64+runtime.GOMAXPROCS(0)-1)/runtime.GOMAXPROCS(0))
}

// benchL4 runs the L4 echo exchanges over parallelism x GOMAXPROCS
// connections.
func benchL4(b *testing.B, parallelism int) {
	be := newTCPBackend(b, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	})
	bal, ip := newBalancer(b, 9201, Config{})
	bal.Update([]Route{{Service: "echo", Port: 9201, Endpoints: endpoints(be.addr)}})
	addr := netip.AddrPortFrom(ip, 9201).String()
	b.SetParallelism(parallelism)
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		msg := []byte(fmt.Sprintf("%064d\n", 7))
		for pb.Next() {
			if _, err := c.Write(msg); err != nil {
				b.Error(err)
				return
			}
			if _, err := br.ReadSlice('\n'); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
