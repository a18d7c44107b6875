package main

import (
	"context"
	"fmt"
	"io"

	"github.com/gcnats/gcnats/connector"
)

// cmdTopics resolves the configured topics against the org and prints the
// channel plan, without opening a socket or touching NATS.
func cmdTopics(ctx context.Context, stdout, stderr io.Writer) error {
	s, err := loadSettings(nil)
	if err != nil {
		return err
	}
	conn, err := connector.New(connector.Options{
		APIURL:       s.APIURL,
		LoginURL:     s.LoginURL,
		ClientID:     s.ClientID,
		ClientSecret: s.ClientSecret,
		Topics:       s.Topics,
		MaxChannels:  s.MaxChannels,
		Logger:       newLogger(s, stderr),
	}, nil)
	if err != nil {
		return err
	}
	groups, err := conn.Plan(ctx)
	if err != nil {
		return err
	}
	total := 0
	for _, g := range groups {
		total += len(g)
	}
	fmt.Fprintf(stdout, "# %d topics on %d channels (budget %d, GCNATS_MAX_CHANNELS)\n", total, len(groups), s.MaxChannels)
	for i, g := range groups {
		fmt.Fprintf(stdout, "# channel %d: %d topics\n", i, len(g))
		for _, t := range g {
			fmt.Fprintln(stdout, t)
		}
	}
	return nil
}
