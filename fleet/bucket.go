package fleet

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

var fleetName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidName checks a fleet's name (GCNATS_FLEET): it names a KV bucket.
func ValidName(name string) error {
	if !fleetName.MatchString(name) {
		return fmt.Errorf("fleet name %q: want 1 to 64 letters, digits, '-' or '_'", name)
	}
	return nil
}

// BucketName is the KV bucket that holds a fleet's leases.
func BucketName(fleet string) string { return "gcnats_fleet_" + fleet }

// OpenBucket creates or opens the fleet's bucket. Its MaxAge is the lease
// TTL and it keeps one revision a key: a lease is its latest write.
func OpenBucket(ctx context.Context, js jetstream.JetStream, fleet string, ttl time.Duration, replicas int) (jetstream.KeyValue, error) {
	if err := ValidName(fleet); err != nil {
		return nil, err
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketName(fleet),
		Description: "gcnats fleet " + fleet + ": members, shard holders and channel budgets, as leases",
		History:     1,
		TTL:         ttl,
		Replicas:    replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("open fleet bucket %s: %w", BucketName(fleet), err)
	}
	return kv, nil
}
