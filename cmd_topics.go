package main

import (
	"context"
	"fmt"
	"io"

	"github.com/gcnats/gcnats/connector"
)

// cmdTopics resolves the configured topics against the org and prints the
// channel plan, without opening a socket or touching NATS.
func cmdTopics(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if err := noArgs("topics", args, stdout); err != nil {
		return err
	}
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
	fmt.Fprintf(stdout, "# %s on %s (budget %d, GCNATS_MAX_CHANNELS)\n", plural(total, "topic", "topics"), plural(len(groups), "channel", "channels"), s.MaxChannels)
	for i, g := range groups {
		fmt.Fprintf(stdout, "# channel %d: %s\n", i, plural(len(g), "topic", "topics"))
		for _, t := range g {
			fmt.Fprintln(stdout, t)
		}
	}
	return nil
}
