package connector

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"
)

// httpClient sends each SDK request exactly once, under the caller's
// context. The SDK's own retrying client turns a 429 or 5xx into an error
// without the response, so its Retry-After would be lost; with this client
// every status reaches the connector, which applies Genesys' retry rules
// itself (api.call).
type httpClient struct {
	client *http.Client
	ctx    context.Context // the call in progress; set under api.mu
	// limiter, when set, spaces the requests out and honours a 429's
	// Retry-After for every client that shares it; the priority is the
	// call context's (WithRESTPriority; unmarked is a channel call).
	limiter *RESTLimiter
}

func newHTTPClient() *httpClient {
	return &httpClient{
		client: &http.Client{
			Timeout:   30 * time.Second,
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
		},
		ctx: context.Background(),
	}
}

// install makes cfg's API client send through c.
func (c *httpClient) install(cfg *platformclientv2.Configuration) {
	if err := cfg.APIClient.SetHttpClient(c); err != nil {
		panic(fmt.Sprintf("connector: the SDK refused its HTTP client: %v", err)) // a programming error: the interface is checked below
	}
}

var _ platformclientv2.AbstractHttpClient = (*httpClient)(nil)

// Do sends the request once.
func (c *httpClient) Do(o *platformclientv2.HTTPRequestOptions) (*http.Response, error) {
	rr, err := o.ToRetryableRequest()
	if err != nil {
		return nil, err
	}
	body, err := rr.BodyBytes()
	if err != nil {
		return nil, err
	}
	req := rr.Request.WithContext(c.ctx)
	if body != nil {
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
	}
	if c.limiter == nil {
		return c.client.Do(req)
	}
	if _, err := c.limiter.Wait(c.ctx); err != nil {
		return nil, fmt.Errorf("wait for the REST rate limiter: %w", err)
	}
	resp, err := c.client.Do(req)
	c.limiter.done(c.ctx, resp, err)
	return resp, err
}

// The SDK configures retries and hooks on every call; this client has none.
func (c *httpClient) SetRetryMax(int)                                                          {}
func (c *httpClient) SetRetryWaitMax(time.Duration)                                            {}
func (c *httpClient) SetRetryWaitMin(time.Duration)                                            {}
func (c *httpClient) SetPreHook(func(retryablehttp.Logger, *http.Request, int))                {}
func (c *httpClient) SetPostHook(func(retryablehttp.Logger, *http.Response))                   {}
func (c *httpClient) SetHttpsAgent(*platformclientv2.ProxyAgent)                               {}
func (c *httpClient) SetCheckRetry(func(context.Context, *http.Response, error) (bool, error)) {}

// SetTransport takes the SDK's proxy or mTLS transport when it has one.
func (c *httpClient) SetTransport(t *http.Transport) { c.client.Transport = t }
