package simulator

import (
	"encoding/json"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

var (
	heartbeatFrame = []byte(`{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}`)
	pongFrame      = []byte(`{"topicName":"channel.metadata","eventBody":{"message":"pong"}}`)
	closingFrame   = []byte(`{"topicName":"v2.system.socket_closing","eventBody":{"message":"Socket closing"}}`)
)

// drainTimeout bounds how long a socket the server has finished with is
// read (so that its final frames are not lost to a TCP reset) before the
// connection is closed.
const drainTimeout = 2 * time.Second

// socket is one WebSocket connection to a channel.
type socket struct {
	num       int
	ch        *channel // nil for a socket to an unknown channel
	conn      *websocket.Conn
	net       net.Conn
	connected time.Time
	stalled   bool // StallSocket: nothing more is written
	dead      bool // detached: no longer its channel's connection
	shut      bool // half-closed; the reader may still drain
	// dropAfterPong: DropNewSockets ends it after its first pong.
	dropAfterPong bool
}

func (sk *socket) writable() bool { return !sk.dead && !sk.stalled }

// handleSocket upgrades a dial of a channel's connectUri.
//
// A dial of an unknown or dead channel is upgraded and then answered with
// {"result":"404",…} and a close frame, like a channel that dies under a
// connected socket, so a client has one way to learn that a channel is gone.
func (s *Server) handleSocket(w http.ResponseWriter, r *http.Request, id string, upgraded func()) {
	s.mu.Lock()
	refused := time.Now().Before(s.refuse)
	if refused {
		s.stats.DialsRefused++
		s.refusedLocked("dial refused", 0)
		s.changedLocked() // tests wait for refused dials
	}
	s.mu.Unlock()
	if refused {
		writeAPIError(w, http.StatusServiceUnavailable, "service.unavailable", "", nil)
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// The upgrader has answered the bad handshake itself.
		return
	}
	upgraded()
	conn.SetReadLimit(1 << 20)
	sk := &socket{conn: conn, net: conn.NetConn(), connected: time.Now()}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.NetConn().Close()
		return
	}
	s.socketN++
	sk.num = s.socketN
	s.readers[sk] = struct{}{}
	ch := s.channels[id]
	if ch == nil {
		s.writeLocked(sk, goneFrame("channel not found: it does not exist or has expired"))
		s.writeCloseLocked(sk, websocket.CloseNormalClosure, "")
		s.shutdownLocked(sk)
		s.mu.Unlock()
		s.readLoop(sk)
		return
	}
	restore := s.becauseLocked(causeClientDial)
	if old := ch.socket; old != nil {
		// One socket per channel: the newer connection wins.
		if old.writable() {
			s.writeCloseLocked(old, websocket.CloseNormalClosure, "another connection was opened for this channel")
		}
		s.shutdownLocked(old)
	}
	sk.ch = ch
	ch.socket = sk
	ch.connects++
	s.stats.SocketsAccepted++
	s.noteHeldLocked()
	s.changedLocked()
	restore()
	s.dropAtDialLocked(sk)
	s.mu.Unlock()
	s.log.Debug("socket connected", "channel", ch.num, "socket", sk.num, "port", remotePort(sk.net))

	conn.SetPingHandler(func(data string) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if sk.writable() {
			_ = sk.conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(s.opts.WriteTimeout))
		}
		return nil
	})
	conn.SetCloseHandler(func(code int, _ string) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		defer s.becauseLocked(causeClientCloseMsg)()
		if sk.writable() {
			s.writeCloseLocked(sk, code, "")
		}
		return nil
	})
	s.readLoop(sk)
}

// readLoop reads client frames until the connection ends, then closes it.
func (s *Server) readLoop(sk *socket) {
	var end error
	defer func() {
		s.mu.Lock()
		restore := s.becauseLocked(causeClientClosed)
		s.detachLocked(sk)
		restore()
		delete(s.readers, sk)
		s.mu.Unlock()
		sk.net.Close()
		s.log.Debug("socket closed", "socket", sk.num, "port", remotePort(sk.net), "read_err", end)
	}()
	for {
		mt, data, err := sk.conn.ReadMessage()
		if err != nil {
			end = err
			return
		}
		if mt == websocket.TextMessage {
			s.handleClientFrame(sk, data)
		}
	}
}

// clientMessage is what a client may send on the socket.
type clientMessage struct {
	Message       string   `json:"message"`
	Topics        []string `json:"topics"`
	CorrelationID string   `json:"correlationId"`
}

func (s *Server) handleClientFrame(sk *socket, data []byte) {
	var m clientMessage
	err := json.Unmarshal(data, &m)

	s.mu.Lock()
	defer s.mu.Unlock()
	if !sk.writable() || sk.ch == nil {
		return
	}
	if err != nil {
		s.writeLocked(sk, socketError(m.CorrelationID, "The message is not valid JSON."))
		return
	}
	switch m.Message {
	case "ping":
		if s.pongDelay > 0 {
			s.afterLocked(s.pongDelay, func() { s.pongLocked(sk) })
			return
		}
		s.pongLocked(sk)
	case "subscribe":
		defer s.becauseLocked(causeClientSubs)()
		ch := sk.ch
		if s.channels[ch.id] != ch {
			return
		}
		res := s.subscribeLocked(ch, m.Topics, false, false)
		if res.status != 0 {
			s.writeLocked(sk, socketError(m.CorrelationID, res.msg))
			return
		}
		accepted := res.accepted
		if accepted == nil {
			accepted = []string{}
		}
		b, _ := json.Marshal(struct {
			CorrelationID string   `json:"correlationId,omitempty"`
			Topics        []string `json:"topics"`
			Result        string   `json:"result"`
			Status        string   `json:"status"`
		}{m.CorrelationID, accepted, "200", "subscribed"})
		s.writeLocked(sk, b)
	default:
		s.writeLocked(sk, socketError(m.CorrelationID, "Unsupported message: expected \"ping\" or \"subscribe\"."))
	}
}

// pongLocked answers a ping on sk, if it is still open.
func (s *Server) pongLocked(sk *socket) {
	if sk.writable() && s.writeLocked(sk, pongFrame) {
		s.stats.PingsAnswered++
	}
	if sk.dropAfterPong {
		sk.dropAfterPong = false
		defer s.becauseLocked(causeDialDropped)()
		s.shutdownLocked(sk)
	}
}

func socketError(correlationID, msg string) []byte {
	b, _ := json.Marshal(struct {
		CorrelationID string `json:"correlationId,omitempty"`
		Result        string `json:"result"`
		Status        string `json:"status"`
		Message       string `json:"message"`
	}{correlationID, "400", "error", msg})
	return b
}

// writeLocked writes one text frame. Every socket write happens under s.mu,
// which both satisfies gorilla's one-writer rule and makes Delivered exact:
// a frame counts once it is in the kernel's send buffer, ahead of any close.
// A client that does not read within WriteTimeout is disconnected.
func (s *Server) writeLocked(sk *socket, frame []byte) bool {
	if sk.dead {
		return false
	}
	_ = sk.conn.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	if err := sk.conn.WriteMessage(websocket.TextMessage, frame); err != nil {
		s.log.Debug("socket write failed; closing", "socket", sk.num, "err", err)
		defer s.becauseLocked(causeWriteFailed)()
		s.shutdownLocked(sk)
		return false
	}
	return true
}

func (s *Server) writeCloseLocked(sk *socket, code int, text string) {
	if sk.dead {
		return
	}
	msg := websocket.FormatCloseMessage(code, text)
	_ = sk.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(s.opts.WriteTimeout))
	// No frame may follow a close frame (RFC 6455 5.5.1), and a client
	// stops reading at it: nothing written from now on would count as
	// delivered. Answering a client's close, the socket would otherwise
	// stay attached until its reader returned.
	s.detachLocked(sk)
}

// detachLocked forgets a socket: it no longer counts as its channel's
// connection.
func (s *Server) detachLocked(sk *socket) {
	sk.dead = true
	if ch := sk.ch; ch != nil && ch.socket == sk {
		ch.socket = nil
		s.changedLocked()
	}
}

func remotePort(c net.Conn) int {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.Port
	}
	return 0
}

// shutdownLocked ends a socket from the server side without losing what was
// written: it half-closes (FIN after the buffered frames) and lets the reader
// drain until the client closes or drainTimeout passes. To the client this
// is an end of stream with no close frame unless one was written first.
func (s *Server) shutdownLocked(sk *socket) {
	s.detachLocked(sk)
	if sk.shut {
		return
	}
	sk.shut = true
	s.log.Debug("socket shut down", "socket", sk.num, "port", remotePort(sk.net))
	if tc, ok := sk.net.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
	} else {
		_ = sk.net.Close()
	}
	_ = sk.net.SetReadDeadline(time.Now().Add(drainTimeout))
}
