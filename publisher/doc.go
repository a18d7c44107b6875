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
//   - One bad record costs no other. A record that fails on its own (a
//     subject the NATS user may not publish to, learnt from the connection's
//     async errors; or no ack in [WithMaxAttempts] sends while JetStream
//     answers) is given up without pausing the others. While NATS as a whole
//     is away or silent nothing is given up.
//   - A stream leader lost costs the election. The sends the old leader
//     took with it are sent again as soon as a later send to their subject
//     is answered (no responders during the election, an ack after it),
//     not after the ack timeout; the run goroutine never waits for a
//     question to JetStream, so one stream's trouble stalls no other.
//   - A connection nats.go gives up on is replaced ([WithRedial]); the
//     buffer is kept and re-sent on the new one. [Publisher.Healthy] tells a
//     liveness probe when no new connection can be made.
//   - Nothing stored twice. The id is [MsgID] of topic and body, so the same
//     event seen on two overlapping sockets, by two replicas or in a retry
//     collapses in the stream's duplicate window. A record first sent longer
//     ago than that window (an outage of minutes) is looked up in the stream
//     before it is sent again, and no send waits out an outage in nats.go's
//     reconnect buffer to land unchecked after it (see [New]).
//   - Backpressure, never drops. Publish blocks while the buffer of
//     accepted-but-unacknowledged records is full and returns ctx.Err() if
//     the caller gives up. The buffer counts what records take in memory,
//     and the memory kept for reuse shrinks back after an outage.
package publisher
