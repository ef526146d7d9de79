package node

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/shoalmesh/shoal/gossip"
)

// knownPeersFile remembers the gossip addresses of the members this node
// has seen, so that a restarted agent rejoins them without --join even
// when all of them restarted too. (serf's own snapshot tries its peers
// once at start; this list is retried with backoff like --join.)
const knownPeersFile = "peers.json"

// loadKnownPeers reads the remembered gossip addresses. A missing or
// unreadable file means none.
func loadKnownPeers(dir string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, knownPeersFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var addrs []string
	if err := json.Unmarshal(b, &addrs); err != nil {
		return nil, err
	}
	return addrs, nil
}

// knownPeers lists the gossip addresses of every member but self that has
// not left, sorted.
func knownPeers(self string, members []gossip.Member) []string {
	var out []string
	for _, m := range members {
		if m.Name == self || m.Status == gossip.StatusLeft || !m.Addr.IsValid() {
			continue
		}
		out = append(out, memberAddr(m))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// memberAddr is m's gossip address as knownPeers saves it.
func memberAddr(m gossip.Member) string {
	return net.JoinHostPort(m.Addr.String(), strconv.Itoa(m.Port))
}

// saveKnownPeers writes the list atomically (temp file and rename).
func saveKnownPeers(dir string, addrs []string) error {
	b, err := json.Marshal(addrs)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, knownPeersFile+".*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, knownPeersFile))
}

// seeds are the addresses to join at start: --join, then remembered peers.
func seeds(join, known []string) []string {
	out := slices.Clone(join)
	for _, k := range known {
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}
