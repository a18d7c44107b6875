package main

import (
	_ "github.com/caarlos0/env/v11"
	_ "github.com/gorilla/websocket"
	_ "github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "go.yaml.in/yaml/v3"
)

func main() {}
