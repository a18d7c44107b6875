// Package publisher is the JetStream side of gcnats: it sets up the stream,
// publishes routed Genesys events with a deterministic dedup id, retries
// until every event is acknowledged, and can run an embedded nats-server for
// the pod.
//
// The guarantees, and how they are kept:
//
//   - Nothing lost that Genesys delivered. A record accepted by
//     [Publisher.Publish] is kept (and counted in the buffer) until JetStream
//     acknowledges it. Failed publishes (ack timeout, disconnect, no
//     responders while the server restarts) are retried in acceptance order,
//     with backoff, with the same Nats-Msg-Id, for as long as it takes.
//     Only errors that no retry can fix (see [Publisher.Publish]) end a
//     record without storing it; those are counted and logged.
//   - Nothing stored twice. The id is [MsgID] of topic and body, so the same
//     event seen on two overlapping sockets, by two replicas or in a retry
//     collapses in the stream's duplicate window.
//   - Backpressure, never drops. Publish blocks while the buffer of
//     accepted-but-unacknowledged bytes is full and returns ctx.Err() if the
//     caller gives up.
package publisher
