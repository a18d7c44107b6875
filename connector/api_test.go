package connector

import (
	"net/http"
	"testing"
	"time"
)

func TestLocalExpiry(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 500_000_000, time.UTC)
	for _, tc := range []struct {
		name     string
		genesys  time.Duration // Genesys' clock ahead of ours
		noDate   bool
		wantLife time.Duration // from now, by our clock
		wantSkew time.Duration
	}{
		// Date truncates to the second: the half second of now is lost,
		// and a second more is taken off so the life is never overstated.
		{name: "same clock", wantLife: 24*time.Hour - 500*time.Millisecond, wantSkew: -500 * time.Millisecond},
		{name: "Genesys an hour ahead", genesys: time.Hour, wantLife: 24*time.Hour - 500*time.Millisecond, wantSkew: time.Hour - 500*time.Millisecond},
		{name: "Genesys an hour behind", genesys: -time.Hour, wantLife: 24*time.Hour - 500*time.Millisecond, wantSkew: -time.Hour - 500*time.Millisecond},
		{name: "no Date header", genesys: time.Hour, noDate: true, wantLife: 25 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			theirs := now.Add(tc.genesys)
			expires := theirs.Add(24 * time.Hour).Truncate(time.Millisecond)
			date := theirs.Format(http.TimeFormat)
			if tc.noDate {
				date = ""
			}
			got, skew := localExpiry(expires, date, now)
			if life := got.Sub(now); life != tc.wantLife {
				t.Errorf("life %s, want %s", life, tc.wantLife)
			}
			if skew != tc.wantSkew {
				t.Errorf("skew %s, want %s", skew, tc.wantSkew)
			}
		})
	}
}
