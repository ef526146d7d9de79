package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"github.com/spf13/cobra"
)

// keySize is the size of a generated gossip key: 32 bytes selects AES-256.
const keySize = 32

func newKeygenCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Generate a gossip encryption key",
		Long: `Print a new random 32-byte gossip encryption key, base64-encoded, for
'shoal agent --encrypt'. Every node of a cluster needs the same key.`,
		Args: nArgs(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := generateKey()
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), map[string]string{"key": key})
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), key)
			return err
		},
	}
}

// generateKey returns a new random key in standard base64, the form that
// `shoal agent --encrypt` accepts (16, 24 or 32 bytes).
func generateKey() (string, error) {
	key := make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("keygen: %w", err)
	}
	return base64.StdEncoding.EncodeToString(key), nil
}
