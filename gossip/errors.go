package gossip

import "errors"

// Errors returned by this package, wrapped with detail; test with errors.Is.
var (
	// ErrInvalidConfig: the Config given to New (or ProfileConfig's name)
	// is unusable.
	ErrInvalidConfig = errors.New("gossip: invalid config")

	// ErrTagsTooLarge: the encoded tags exceed memberlist's node metadata
	// limit (memberlist.MetaMaxSize, 512 bytes).
	ErrTagsTooLarge = errors.New("gossip: tags too large")

	// ErrInvalidTags: tags are malformed (a bad value from another node, or
	// an out-of-range value given to Encode).
	ErrInvalidTags = errors.New("gossip: invalid tags")

	// ErrNoticeTooLarge: a notice payload exceeds MaxNoticeSize.
	ErrNoticeTooLarge = errors.New("gossip: notice too large")

	// ErrInvalidKey: an encryption key or keyring file is malformed.
	ErrInvalidKey = errors.New("gossip: invalid encryption key")

	// ErrNoSeeds: Join was given no seed addresses.
	ErrNoSeeds = errors.New("gossip: no seeds to join")

	// ErrShutdown: the Cluster has left or been shut down.
	ErrShutdown = errors.New("gossip: cluster is shut down")
)
