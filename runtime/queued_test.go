package runtime_test

import (
	"os"
	"strings"
	"testing"

	"github.com/shoalmesh/shoal/runtime"
	"github.com/shoalmesh/shoal/testenv"
)

const procNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 555 1 0000000000000000 100 0 0 10 0
   1: 0100007F:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 556 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000005 00:00000000 00000000     0        0 557 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:1F91 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 558 1 0000000000000000 100 0 0 10 0
`

const procNetTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000004 00:00000000 00000000     0        0 600 1 0000000000000000 100 0 0 10 0
`

func TestListenQueued(t *testing.T) {
	for _, tc := range []struct {
		name  string
		text  string
		ports []int
		want  int
	}{
		{"listening on 8080: its queue, not the established socket's", procNetTCP, []int{8080}, 3},
		{"two ports", procNetTCP, []int{8080, 8081}, 5},
		{"an empty queue", procNetTCP, []int{2024}, 0},
		{"no such port", procNetTCP, []int{9999}, 0},
		{"tcp6", procNetTCP6, []int{8080}, 4},
		{"header only", strings.SplitAfter(procNetTCP, "\n")[0], []int{8080}, 0},
		{"empty", "", []int{8080}, 0},
	} {
		got, err := runtime.ListenQueued([]byte(tc.text), tc.ports)
		if err != nil || got != tc.want {
			t.Errorf("%s: %d, %v; want %d", tc.name, got, err, tc.want)
		}
	}
	for _, bad := range []string{
		"header\n   0: 00000000:1F90 00000000:0000 0A\n",
		"header\n   0: 000000001F90 00000000:0000 0A 00000000:00000003\n",
		"header\n   0: 00000000:1F90 00000000:0000 0A 0000000000000003\n",
		"header\n   0: 00000000:1F90 00000000:0000 0A 00000000:zz\n",
		"header\n   0: 00000000:XYZW 00000000:0000 0A 00000000:00000001\n",
	} {
		if n, err := runtime.ListenQueued([]byte(bad), []int{8080}); err == nil {
			t.Errorf("%q: %d, want an error", bad, n)
		}
	}
}

// On a real socket: a listener that accepts nothing, with connections
// completed in its queue, shows them in /proc/self/net/tcp.
func TestListenQueuedRealSocket(t *testing.T) {
	read := func(port int) int {
		t.Helper()
		b, err := os.ReadFile("/proc/self/net/tcp")
		if err != nil {
			t.Fatal(err)
		}
		n, err := runtime.ListenQueued(b, []int{port})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := read(testenv.QueuedListener(t, 0)); n != 0 {
		t.Fatalf("queued without a connect: %d", n)
	}
	if n := read(testenv.QueuedListener(t, 3)); n != 3 {
		t.Fatalf("queued after 3 connects: %d, want 3", n)
	}
}

func FuzzListenQueued(f *testing.F) {
	f.Add([]byte(procNetTCP), 8080)
	f.Add([]byte(procNetTCP6), 8080)
	f.Add([]byte("header\n   0: 00000000:1F90 00000000:0000 0A 00000000:zz\n"), 8080)
	f.Fuzz(func(t *testing.T, b []byte, port int) {
		n, err := runtime.ListenQueued(b, []int{port})
		if err == nil && n < 0 {
			t.Fatalf("negative count %d", n)
		}
	})
}
