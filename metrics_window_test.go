package main

import (
	"testing"
	"time"
)

func TestWindowCount(t *testing.T) {
	w := newWindowCount(2*time.Minute + 500*time.Millisecond) // 121 seconds
	t0 := time.Unix(1_800_000_000, 0)
	for range 3 {
		w.add(t0)
	}
	w.add(t0.Add(999 * time.Millisecond)) // the same second
	w.add(t0.Add(time.Minute))
	if got := w.total(t0.Add(time.Minute)); got != 5 {
		t.Fatalf("within the window: %d, want 5", got)
	}
	// 121 s after t0's second the first four have left the window.
	if got := w.total(t0.Add(120 * time.Second)); got != 5 {
		t.Fatalf("at the window's last second: %d, want 5", got)
	}
	if got := w.total(t0.Add(121 * time.Second)); got != 1 {
		t.Fatalf("once t0's second has left: %d, want 1", got)
	}
	// A slot is reused a whole window later: its old count does not add.
	w.add(t0.Add(121 * time.Second))
	if got := w.total(t0.Add(121 * time.Second)); got != 2 {
		t.Fatalf("after reusing t0's slot: %d, want 2", got)
	}
	if got := w.total(t0.Add(time.Hour)); got != 0 {
		t.Fatalf("an hour later: %d, want 0", got)
	}
}
