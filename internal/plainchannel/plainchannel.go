// Package plainchannel opens a Genesys Cloud notification channel the
// straightforward way, with net/http and gorilla/websocket and without the
// SDK: a token by client credentials, a channel, its topics subscribed
// over REST, and the socket dialled. The benchmarks' baselines use it, so
// that what they measure is the socket and what they do with it, not how
// they got it; gcnats itself opens channels in package connector.
package plainchannel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/gorilla/websocket"
)

// Token asks api's OAuth endpoint (on the same host, as the simulated org
// serves it) for a client-credentials token.
func Token(api, clientID, secret string) (string, error) {
	req, err := http.NewRequest(http.MethodPost, strings.TrimRight(api, "/")+"/oauth/token",
		strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(clientID, secret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := call(req, &tok); err != nil {
		return "", fmt.Errorf("oauth: %w", err)
	}
	return tok.AccessToken, nil
}

// Open creates a channel, subscribes it to topics (at most 1,000) over
// REST and dials its socket with d.
func Open(api, token string, topics []string, d *websocket.Dialer) (*websocket.Conn, error) {
	api = strings.TrimRight(api, "/")
	req, err := http.NewRequest(http.MethodPost, api+"/api/v2/notifications/channels", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	var ch struct {
		ID         string `json:"id"`
		ConnectURI string `json:"connectUri"`
	}
	if err := call(req, &ch); err != nil {
		return nil, fmt.Errorf("create channel: %w", err)
	}
	body := make([]map[string]string, 0, len(topics))
	for _, t := range topics {
		body = append(body, map[string]string{"id": t})
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err = http.NewRequest(http.MethodPut, api+"/api/v2/notifications/channels/"+ch.ID+"/subscriptions", bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if err := call(req, nil); err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	conn, _, err := d.Dial(ch.ConnectURI, nil)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	return conn, nil
}

// controlPrefix starts the frames of the channel's own topic
// (channel.metadata: heartbeats, pongs) as Genesys writes them.
var controlPrefix = []byte(`{"topicName":"channel.`)

// IsControl reports whether frame is a heartbeat or a pong rather than an
// event: enough for a baseline that must not count them, which gcnats
// tells apart by a peek that allows any key order.
func IsControl(frame []byte) bool { return bytes.HasPrefix(frame, controlPrefix) }

func call(req *http.Request, out any) error {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
