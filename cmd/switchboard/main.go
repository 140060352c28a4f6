// Command switchboard is the Switchboard CLI and hub; see package cli.
//
// The binary links every backend that exists, so that `serve --backend URL`
// can front any of them. Adding a backend = one blank import here.
package main

import (
	"os"

	_ "github.com/switchboard-dev/switchboard/broker/embedded" // embedded://
	_ "github.com/switchboard-dev/switchboard/broker/kafka"    // kafka://
	_ "github.com/switchboard-dev/switchboard/broker/nats"     // nats://
	_ "github.com/switchboard-dev/switchboard/broker/rabbitmq" // amqp://, amqps://
	_ "github.com/switchboard-dev/switchboard/broker/redis"    // redis:// (Streams, or ?mode=pubsub)
	_ "github.com/switchboard-dev/switchboard/broker/sqs"      // sqs://
	"github.com/switchboard-dev/switchboard/cli"
	_ "github.com/switchboard-dev/switchboard/client" // switchboard:// (a hub in front of a hub)
)

func main() { os.Exit(cli.Main()) }
