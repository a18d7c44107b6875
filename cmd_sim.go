package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/gcnats/gcnats/simulator"
)

// simSettings configure `gcnats sim` from the environment.
type simSettings struct {
	Addr              string        `env:"SIM_ADDR" envDefault:"127.0.0.1:9080"`
	ClientID          string        `env:"SIM_CLIENT_ID"`
	ClientSecret      string        `env:"SIM_CLIENT_SECRET"`
	Queues            int           `env:"SIM_QUEUES" envDefault:"20"`
	Users             int           `env:"SIM_USERS" envDefault:"50"`
	EventInterval     time.Duration `env:"SIM_EVENT_INTERVAL" envDefault:"1s"`
	HeartbeatInterval time.Duration `env:"SIM_HEARTBEAT_INTERVAL" envDefault:"30s"`
	TokenLifetime     time.Duration `env:"SIM_TOKEN_LIFETIME" envDefault:"24h"`
	ChannelLifetime   time.Duration `env:"SIM_CHANNEL_LIFETIME" envDefault:"24h"`
	Seed              uint64        `env:"SIM_SEED" envDefault:"1"`
}

// demoTopics cover the families the simulated org generates: queue
// conversations and calls, queue members, agent presence and routing status.
var demoTopics = []string{
	"v2.routing.queues.*.conversations",
	"v2.routing.queues.*.conversations.calls",
	"v2.routing.queues.*.users",
	"v2.users.*.presence",
	"v2.users.*.routingStatus",
}

func cmdSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if err := noArgs("sim", args, stdout); err != nil {
		return err
	}
	var ss simSettings
	if err := env.Parse(&ss); err != nil {
		return errors.New(strings.Join(settingsProblems(err), "; "))
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sim, err := simulator.New(simulator.Options{
		Addr:              ss.Addr,
		ClientID:          ss.ClientID,
		ClientSecret:      ss.ClientSecret,
		Queues:            ss.Queues,
		Users:             ss.Users,
		EventInterval:     ss.EventInterval,
		HeartbeatInterval: ss.HeartbeatInterval,
		TokenLifetime:     ss.TokenLifetime,
		ChannelLifetime:   ss.ChannelLifetime,
		Seed:              ss.Seed,
		RecordLimit:       10000,
		Logger:            log,
	})
	if err != nil {
		return err
	}
	if err := sim.Start(); err != nil {
		return fmt.Errorf("SIM_ADDR: %w", err)
	}
	defer sim.Close()
	fmt.Fprintf(stdout, `# A simulated Genesys Cloud org (%d queues, %d users) is listening.
# Point gcnats at it with:
export GENESYSCLOUD_API_URL=%s
export GENESYSCLOUD_OAUTHCLIENT_ID=%s
export GENESYSCLOUD_OAUTHCLIENT_SECRET=%s
export GCNATS_TOPICS=%s
`, ss.Queues, ss.Users, sim.URL(), sim.ClientID(), sim.ClientSecret(), strings.Join(demoTopics, ","))
	<-ctx.Done()
	return nil
}
