package simulator

import "testing"

// Start runs a simulator on 127.0.0.1 (an ephemeral port unless opts.Addr
// says otherwise) for the length of a test and closes it in t.Cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("simulator: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("simulator: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
