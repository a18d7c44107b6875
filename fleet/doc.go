// Package fleet holds what the sidecars of many pods need to share one set
// of Genesys channels through the NATS they already use, with no
// coordinator of their own: a plan every member computes alike, and
// leases in a JetStream KV bucket.
//
// The plan is pure. Shards cuts the fleet's topics into shards that fit a
// channel; Assign places each shard's copies on members, evenly, never
// two copies on one member and preferably not on one node, within each
// OAuth client's channel budget. Both rank by rendezvous hashing, so every
// member reaches the same answer from the same inputs and a change (a
// queue added, a member gone) moves little.
//
// A Lease is a key of the fleet's bucket (OpenBucket). The bucket's MaxAge
// is the lease TTL and it keeps one revision a key; a lease is taken with
// Create, kept with Update on its last revision and given up with Delete
// on it. Ownership follows only from those answers: a Get may be answered
// stale by a follower. A holder stops using what a lease guards at its
// fence, half the TTL after its last confirmed renewal, so a member cut
// from NATS lets go before any other member can take over: for a moment
// there may be no holder, never two by the lease's own account. (Two
// copies of a shard are two leases, so a shard still has a receiving
// holder while one copy moves.)
package fleet
