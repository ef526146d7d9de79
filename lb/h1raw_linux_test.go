package lb

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// rawSock behaves as net.Conn's Read and Write do: bytes both ways, a
// write larger than the socket buffers (the EAGAIN path), io.EOF at the
// peer's close.
func TestRawSockReadWrite(t *testing.T) {
	a, b := tcpPair(t)
	var s rawSock
	s.reset(a)
	_ = a.SetDeadline(time.Now().Add(10 * time.Second))
	_ = b.SetDeadline(time.Now().Add(10 * time.Second))

	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, len(big))
		n, _ := io.ReadFull(b, buf)
		got <- buf[:n]
	}()
	if n, err := s.Write(big); n != len(big) || err != nil {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if g := <-got; !bytes.Equal(g, big) {
		t.Fatalf("peer got %d bytes, not the %d written", len(g), len(big))
	}

	if _, err := b.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := io.ReadFull(&s, buf[:5])
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read: %q, %v", buf[:n], err)
	}
	if n, err := s.Read(buf[:0]); n != 0 || err != nil {
		t.Fatalf("empty Read: %d, %v", n, err)
	}
	_ = b.Close()
	if n, err := s.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer's close: %d, %v; want io.EOF", n, err)
	}
}

// Errors come as net.Conn's do: deadlines as timeouts, a reset with its
// errno (which classify needs), a closed connection as net.ErrClosed.
func TestRawSockErrors(t *testing.T) {
	a, b := tcpPair(t)
	var s rawSock
	s.reset(a)
	buf := make([]byte, 16)

	_ = a.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := s.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) || !isTimeout(err) {
		t.Fatalf("Read past the deadline: %v", err)
	}
	_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))

	_ = b.SetLinger(0) // close with a RST
	_ = b.Close()
	_, err := s.Read(buf)
	if !errors.Is(err, syscall.ECONNRESET) || classify(err) != failRefused {
		t.Fatalf("Read of a reset connection: %v (class %v)", err, classify(err))
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "read" {
		t.Fatalf("Read error %v is not a read *net.OpError", err)
	}

	_ = a.Close()
	if _, err := s.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read of a closed connection: %v", err)
	}
	if _, err := s.Write(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write to a closed connection: %v", err)
	}
}
