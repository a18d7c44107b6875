package connector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/gcnats/gcnats/internal/rawio"
)

// Handler receives every event frame the connector reads. The frame and its
// sub-slices are valid only until HandleEvent returns: keep a copy of what
// you keep. HandleEvent may block (backpressure): the socket is not read
// meanwhile. It is called concurrently from every open socket.
type Handler interface {
	HandleEvent(ctx context.Context, f *Frame, receivedAt time.Time) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, f *Frame, receivedAt time.Time) error

// HandleEvent calls fn.
func (fn HandlerFunc) HandleEvent(ctx context.Context, f *Frame, receivedAt time.Time) error {
	return fn(ctx, f, receivedAt)
}

// Why a socket ended or a frame was skipped; these are metric label values.
const (
	ReasonClosed    = "closed"    // the server closed or the network dropped it
	ReasonStall     = "stall"     // no heartbeat, pong or event in time
	ReasonDial      = "dial"      // the dial or its first pong failed
	ReasonGone      = "gone"      // 404: expired, evicted, or its token expired
	ReasonClosing   = "closing"   // v2.system.socket_closing
	ReasonRotate    = "rotate"    // planned: channel or token near expiry
	ReasonRefused   = "refused"   // a gap: Genesys refused the topic at subscription, later accepted it
	ReasonMalformed = "malformed" // a frame that is not a JSON object
	ReasonBinary    = "binary"    // a binary frame; Genesys sends text only
	ReasonTooLarge  = "too_large" // a frame over the read limit
	ReasonNoBody    = "no_body"   // an event frame without eventBody
	ReasonNoTopic   = "no_topic"  // neither an event (no topicName) nor a control answer (no result)
)

const (
	topicMetadata = "channel.metadata"
	topicClosing  = "v2.system.socket_closing"
	// maxFrameBytes bounds the memory one frame may take. Genesys documents
	// no maximum; conversation events run to tens of KB. A larger frame
	// is read to its end and skipped, so the socket and the events after
	// it survive.
	maxFrameBytes = 16 << 20
)

var pingMessage = []byte(`{"message":"ping"}`)

type socketEvent struct {
	sock   *socket
	reason string // ReasonClosing, ReasonGone, or why the socket ended
	ended  bool
	err    error
}

// socket is one WebSocket to one channel.
type socket struct {
	conn    *websocket.Conn
	channel channelInfo
	log     *slog.Logger
	obs     Observer
	handler Handler
	timeout time.Duration // no frame for this long: stalled
	drain   time.Duration // after ctx ends, how long the handler may still block

	writeMu  sync.Mutex
	routines sync.WaitGroup // the reader and the watchdog: close returns after both

	// lastFrame is when the last frame of any kind arrived; waitingSince
	// is when the reader started waiting for the network (0 while it is
	// inside the handler, so backpressure is never taken for a stall).
	lastFrame     atomic.Int64
	lastHeartbeat atomic.Int64
	waitingSince  atomic.Int64
	// caughtUp is when the reader last began a read that then waited for
	// the network: every frame written before it had been read, and the
	// frame it waited for was written after it, so the server still had
	// the socket then. Read times alone come too late for that: frames
	// read from a buffer were written earlier, when the server may have
	// dropped the socket already.
	caughtUp atomic.Int64
	// provenAt is when the first pong or event arrived: from then on the
	// socket is known to receive (see awaitPong). 0: not yet.
	provenAt atomic.Int64
	stalled  atomic.Bool
	closing  atomic.Bool
	// audit, set during a handover, notes each event for the check of
	// correlation ids across the old and the new socket.
	audit atomic.Pointer[auditTap]

	// Owned by the reader: skipped frames are each counted but logged at
	// most once a second, so a stream of bad frames cannot flood the log.
	lastSkipLog  time.Time
	skippedQuiet int

	// released is set by the slot's machine, the only goroutine that
	// reads it, when it closes the socket: news of it is history.
	released bool
	// warned is set by the slot's machine when Genesys warns it closes
	// the socket soon (v2.system.socket_closing): a socket warned while it
	// replaces another is replaced in turn once it takes over.
	warned bool

	pong chan struct{}
	// delivering is closed by the reader at the first event it reads
	// (delivered says it did): like a pong, proof that Genesys has the
	// socket and writes to it (see awaitPong).
	delivering chan struct{}
	delivered  bool
	quit       chan struct{} // closed by close: the reader stops reporting
	done       chan struct{} // closed when the reader has returned
}

var dialer = websocket.Dialer{
	Proxy:            http.ProxyFromEnvironment,
	NetDialContext:   (&rawio.Dialer{}).DialContext,
	HandshakeTimeout: 15 * time.Second,
	ReadBufferSize:   64 << 10,
	WriteBufferSize:  4 << 10,
}

// errChannelGone means Genesys no longer knows the channel.
var errChannelGone = errors.New("channel gone")

func dialSocket(ctx context.Context, ch channelInfo, timeout, drain time.Duration, h Handler, obs Observer, log *slog.Logger) (*socket, error) {
	conn, resp, err := dialer.DialContext(ctx, ch.ConnectURI, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("dial channel: %w", errChannelGone)
		}
		if resp != nil {
			return nil, fmt.Errorf("dial channel: %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
		}
		return nil, fmt.Errorf("dial channel: %w", redactURL(err, ch.ConnectURI))
	}
	s := &socket{
		conn:    conn,
		channel: ch,
		// The local port names a socket in both sides' debug logs.
		log:        log.With("ref", channelRef(ch.ID), "port", localPort(conn.NetConn())),
		obs:        obs,
		handler:    h,
		timeout:    timeout,
		drain:      drain,
		pong:       make(chan struct{}, 1),
		delivering: make(chan struct{}),
		quit:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	now := time.Now().UnixNano()
	s.lastFrame.Store(now)
	s.lastHeartbeat.Store(now)
	s.caughtUp.Store(now)
	return s, nil
}

func localPort(c net.Conn) int {
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
		return a.Port
	}
	return 0
}

// redactURL keeps the channel id (a capability) out of error text.
func redactURL(err error, uri string) error {
	msg := err.Error()
	if !strings.Contains(msg, uri) {
		return err
	}
	return errors.New(strings.ReplaceAll(msg, uri, "<connectUri>"))
}

// lastCovered is the last moment the server is known to have had the
// socket (see caughtUp): what it sent after may be lost once the socket is.
func (s *socket) lastCovered() time.Time { return time.Unix(0, s.caughtUp.Load()) }

// coveredSince is when the socket was proven receiving, or now if it was
// not yet (a handover's candidate promoted without proof).
func (s *socket) coveredSince() time.Time {
	if at := s.provenAt.Load(); at != 0 {
		return time.Unix(0, at)
	}
	return time.Now()
}

// start runs the reader and the watchdog; the reader reports to sink,
// which must never block: a reader waiting on its slot would stop reading.
func (s *socket) start(ctx context.Context, sink func(socketEvent)) {
	s.routines.Go(s.watch)
	s.routines.Go(func() { s.read(ctx, sink) })
}

// awaitPong proves the server has the socket registered and is writing to
// it, so events now reach it: a ping answered is the protocol's proof, and
// an event read is as good. The event counts under backpressure above all:
// a reader held on it, waiting for room in the buffer, cannot read the
// pong behind it, and a handover waiting for that pong would wait for
// NATS.
func (s *socket) awaitPong(ctx context.Context, wait time.Duration) error {
	select {
	case <-s.delivering:
		return nil
	case <-s.pong:
	default:
	}
	if err := s.write(pingMessage); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-s.pong:
		return nil
	case <-s.delivering:
		return nil
	case <-s.done:
		return errors.New("socket ended before its first pong")
	case <-t.C:
		return fmt.Errorf("no pong within %s", wait)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *socket) write(msg []byte) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	_ = s.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return s.conn.WriteMessage(websocket.TextMessage, msg)
}

// close ends the socket politely: a close frame once the reader has
// caught up, then the connection once the reader has read everything the
// server wrote before its answer.
//
// Nothing is written while backpressure holds the reader behind: the
// server may have ended this socket already (a channel expired or evicted
// while a rotation waited), its drain over and its side closed with
// frames still in its send buffer, waiting for the reader. A byte written
// to it then is answered with a TCP reset, and the reset discards those
// frames: frames that may have reached no other socket. So the close
// frame waits until the reader has caught up and the server has gone
// quiet (closeQuiet), or has kept up for keptUp while the server still
// streams (a live server answers a close frame with a clean close) and is
// not working through a backlog: a reader catching up after backpressure
// is never held, yet the frames it has not read are still at risk.
//
// A reader held behind is waited for, however long. It is bounded anyway:
// at shutdown the handler's context ends at the deadline. Only a server
// that goes quiet instead of answering the close frame is cut off, after a
// second of silence.
func (s *socket) close() {
	// A caller (the slot's shutdown above all) relies on nothing of the
	// socket running once close returns.
	defer s.routines.Wait()
	if s.closing.Swap(true) {
		<-s.done
		return
	}
	close(s.quit)
	t := time.NewTicker(closeTick)
	defer t.Stop()
	var sent bool
	var upSince time.Time // since when the reader has kept up
	for {
		select {
		case <-s.done:
			s.conn.Close()
			return
		case now := <-t.C:
			switch {
			case sent:
				if s.quietFor(now) >= time.Second {
					s.log.Debug("no answer to the close frame; cutting off")
					s.conn.Close()
					<-s.done
					return
				}
			case s.behind(now):
				upSince = time.Time{}
			default:
				if upSince.IsZero() {
					upSince = now
				}
				quiet := s.quietFor(now)
				if quiet >= closeQuiet || (now.Sub(upSince) >= keptUp && quiet >= drained) {
					s.writeMu.Lock()
					_ = s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
					s.writeMu.Unlock()
					sent = true
					s.log.Debug("close frame sent", "quiet", quiet, "kept_up", now.Sub(upSince))
				}
			}
		}
	}
}

// waitedForNetwork: a read that took this long waited for the frame to
// arrive rather than found it buffered (see caughtUp).
const waitedForNetwork = time.Millisecond

// How close decides the reader has caught up; see close.
const (
	closeTick  = 25 * time.Millisecond
	closeQuiet = 200 * time.Millisecond // the server sent nothing this long, the reader waiting
	keptUp     = time.Second            // the reader never held behind this long, the server streaming
	heldBehind = 50 * time.Millisecond  // a frame handed on for this long: backpressure
	// drained: the reader waited this long with nothing arriving, so it is
	// not working through a backlog (then each read returns at once), only
	// following a server that still streams.
	drained = 5 * time.Millisecond
)

// behind reports whether the reader has been handing on one frame for
// heldBehind or more: held by backpressure, with the server's frames
// piling up unread.
func (s *socket) behind(now time.Time) bool {
	return s.waitingSince.Load() == 0 && now.Sub(time.Unix(0, s.lastFrame.Load())) >= heldBehind
}

// quietFor is how long the reader has waited on the network with nothing
// arriving; zero while it is busy handing on a frame.
func (s *socket) quietFor(now time.Time) time.Duration {
	waiting := s.waitingSince.Load()
	if waiting == 0 {
		return 0
	}
	return now.Sub(time.Unix(0, max(waiting, s.lastFrame.Load())))
}

// watch pings an idle socket and closes a stalled one. It counts only time
// the reader spends waiting on the network.
func (s *socket) watch() {
	interval := s.timeout / 3
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	var lastPing time.Time
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			idle := s.quietFor(now)
			if idle == 0 {
				continue
			}
			if idle >= s.timeout {
				s.log.Debug("socket stalled; closing", "idle", idle)
				s.stalled.Store(true)
				s.conn.Close()
				return
			}
			if idle >= interval && now.Sub(lastPing) >= interval {
				lastPing = now
				s.log.Debug("idle; pinging", "idle", idle)
				if err := s.write(pingMessage); err != nil {
					s.log.Debug("ping failed", "err", err)
				}
			}
		}
	}
}

func (s *socket) read(ctx context.Context, sink func(socketEvent)) {
	defer close(s.done)
	hctx, cancelHandler := drainContext(ctx, s.drain)
	defer cancelHandler()
	var f Frame
	buf := make([]byte, 0, 64<<10)
	report := func(ev socketEvent) {
		select {
		case <-s.quit: // closed by its slot, which wants no more news of it
			return
		default:
		}
		ev.sock = s
		sink(ev)
	}
	for {
		waitFrom := time.Now()
		s.waitingSince.Store(waitFrom.UnixNano())
		typ, r, err := s.conn.NextReader()
		var size int
		if err == nil {
			buf, size, err = readFrame(buf[:0], r, maxFrameBytes)
		}
		at := time.Now()
		s.waitingSince.Store(0)
		if err == nil && at.Sub(waitFrom) >= waitedForNetwork {
			s.caughtUp.Store(waitFrom.UnixNano())
		}
		if err != nil {
			reason := ReasonClosed
			if s.stalled.Load() {
				reason = ReasonStall
			}
			if s.closing.Load() {
				err = nil
			}
			s.conn.Close()
			s.log.Debug("socket ended", "reason", reason, "err", err, "closing", s.closing.Load())
			report(socketEvent{reason: reason, ended: true, err: err})
			return
		}
		s.lastFrame.Store(at.UnixNano())
		if size > len(buf) {
			s.skipped(ReasonTooLarge, at, "bytes", size, "limit", maxFrameBytes)
			continue
		}
		if typ != websocket.TextMessage {
			s.skipped(ReasonBinary, at, "bytes", len(buf))
			continue
		}
		if err := Peek(buf, &f); err != nil {
			s.skipped(ReasonMalformed, at, "bytes", len(buf), "err", err)
			continue
		}
		switch {
		case f.Topic == nil:
			switch {
			case bytes.Equal(f.Result, []byte("404")):
				report(socketEvent{reason: ReasonGone})
			case f.Result == nil:
				s.skipped(ReasonNoTopic, at, "bytes", len(buf))
			default:
				// A socket subscribe's answer; gcnats subscribes over REST.
				s.log.Debug("control answer", "result", string(f.Result))
			}
		case string(f.Topic) == topicMetadata:
			if msg := BodyMessage(&f); bytes.Equal(msg, []byte("pong")) {
				s.provenAt.CompareAndSwap(0, at.UnixNano())
				select {
				case s.pong <- struct{}{}:
				default:
				}
			} else {
				s.lastHeartbeat.Store(at.UnixNano())
			}
		case string(f.Topic) == topicClosing:
			report(socketEvent{reason: ReasonClosing})
		default:
			if !s.delivered {
				s.provenAt.CompareAndSwap(0, at.UnixNano())
				s.delivered = true
				close(s.delivering)
			}
			if tap := s.audit.Load(); tap != nil {
				tap.audit.observe(tap.side, f.Topic, f.CorrelationID, f.Body)
			}
			if err := s.handler.HandleEvent(hctx, &f, at); err != nil {
				s.conn.Close()
				report(socketEvent{reason: ReasonClosed, ended: true, err: fmt.Errorf("handle event: %w", err)})
				return
			}
		}
	}
}

// skipped counts a frame that cannot be published and logs it, at most
// once a second.
func (s *socket) skipped(reason string, now time.Time, args ...any) {
	s.obs.FrameDropped(reason)
	if now.Sub(s.lastSkipLog) < time.Second {
		s.skippedQuiet++
		return
	}
	if s.skippedQuiet > 0 {
		args = append(args, "more_skipped_since_last_log", s.skippedQuiet)
		s.skippedQuiet = 0
	}
	s.lastSkipLog = now
	s.log.Warn("skipped a frame", append([]any{"reason", reason}, args...)...)
}

// readFrame reads one message into buf, growing it only when a frame is
// larger than any before it, and returns the message's size. Past limit
// bytes it reads the rest without keeping it: the caller sees size >
// len(buf) and skips the frame, and the socket reads on.
func readFrame(buf []byte, r io.Reader, limit int) ([]byte, int, error) {
	for {
		if len(buf) == limit {
			n, err := io.Copy(io.Discard, r)
			return buf, limit + int(n), err
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):min(cap(buf), limit)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, len(buf), nil
		}
		if err != nil {
			return buf, len(buf), err
		}
	}
}

// drainContext is ctx without its cancellation, ended drain after ctx
// ends: a handler blocked on backpressure may still finish the frame it
// holds, within the shutdown deadline.
func drainContext(ctx context.Context, drain time.Duration) (context.Context, context.CancelFunc) {
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		if drain <= 0 {
			cancel()
			return
		}
		time.AfterFunc(drain, cancel)
	})
	return hctx, func() {
		stop()
		cancel()
	}
}

// heartbeatAge is how long since the last heartbeat, for metrics.
func (s *socket) heartbeatAge(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, s.lastHeartbeat.Load()))
}
