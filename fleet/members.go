package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Keys of the fleet's bucket. Every one is a lease (a key not rewritten
// within the TTL expires).
const (
	memberPrefix = "member." // member.<id>: a live member and what it is
)

// Record is what a member says of itself in its membership lease.
type Record struct {
	ID      string    `json:"id"`
	Node    string    `json:"node,omitempty"`
	Client  string    `json:"client"`  // ClientKey of its OAuth client
	Budget  int       `json:"budget"`  // GCNATS_MAX_CHANNELS for that client
	Config  string    `json:"config"`  // ConfigHash of its topics and routes
	Version string    `json:"version"` // gcnats' version, for `gcnats fleet`
	Started time.Time `json:"started"`
}

// ClientKey names an OAuth client in the bucket without its id: a short
// hash is enough to tell clients apart and to count each one's channels.
func ClientKey(clientID string) string {
	sum := sha256.Sum256([]byte("gcnats client " + clientID))
	return hex.EncodeToString(sum[:6])
}

// ConfigHash is what members must agree on: the configured topics (before
// expansion, since members expand them at different moments) and the
// routes file's bytes, each in a stable order.
func ConfigHash(topics []string, routes []byte) string {
	h := sha256.New()
	sorted := slices.Sorted(slices.Values(topics))
	for _, t := range slices.Compact(sorted) {
		h.Write([]byte(t))
		h.Write([]byte{0})
	}
	h.Write([]byte{1})
	h.Write(routes)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// MemberKey is a member's membership lease.
func MemberKey(id string) string { return memberPrefix + keySafe(id) }

// keySafe keeps a name to the characters a KV key allows.
func keySafe(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '=':
			return r
		}
		return '_'
	}, s)
}

// Members reads the fleet's live members. Reads may be stale (a member
// just gone, or just come): the plan they feed is a wish, and only the
// leases decide who holds what.
func Members(ctx context.Context, kv jetstream.KeyValue) ([]Record, error) {
	lister, err := kv.ListKeysFiltered(ctx, memberPrefix+">")
	if err != nil {
		return nil, fmt.Errorf("list fleet members: %w", err)
	}
	var out []Record
	for key := range lister.Keys() {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue // gone since it was listed
		}
		if err != nil {
			return nil, fmt.Errorf("read fleet member %s: %w", key, err)
		}
		var r Record
		if err := json.Unmarshal(e.Value(), &r); err != nil || r.ID == "" {
			continue // not a member record of ours; `gcnats fleet` shows the key
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Record) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// ConfigError is a member whose topics or routes differ from the fleet's.
type ConfigError struct {
	Ours, Fleet string // config hashes
	Members     []string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("this member's topics and routes (config %s) differ from the fleet's (config %s, held by %s): members of one fleet need the same GCNATS_TOPICS and GCNATS_ROUTES_FILE; give this deployment its own GCNATS_FLEET, or roll every member to the same settings",
		e.Ours, e.Fleet, strings.Join(e.Members, ", "))
}

// CheckConfig compares a member's config with the live members'. The
// oldest member's config is the fleet's. A member refused holds no shard
// but stays up and checks again: in a rolling change of settings the new
// members wait, serving their pods, until the last old one is gone, and
// then the new settings are the fleet's.
func CheckConfig(self Record, members []Record) error {
	var oldest *Record
	for i := range members {
		m := &members[i]
		if m.ID == self.ID {
			continue
		}
		if oldest == nil || m.Started.Before(oldest.Started) {
			oldest = m
		}
	}
	if oldest == nil || oldest.Config == self.Config {
		return nil
	}
	var holders []string
	for _, m := range members {
		if m.Config == oldest.Config {
			holders = append(holders, m.ID)
		}
	}
	return &ConfigError{Ours: self.Config, Fleet: oldest.Config, Members: holders}
}
