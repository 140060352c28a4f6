package cli

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/client"
)

// withHub runs fn with a connection to the hub.
func (a *app) withHub(fn func(cmd *cobra.Command, b *client.Broker, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		b, err := a.connect(cmd.Context())
		if err != nil {
			return err
		}
		defer b.Close()
		return fn(cmd, b, args)
	}
}

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.cfg.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (a *app) table(header string, rows [][]string) error {
	tw := tabwriter.NewWriter(a.cfg.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func (a *app) topicsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topics",
		Short: "List topics (and create, describe or delete them)",
		Example: `  switchboard topics
  switchboard topics create orders.placed --max-age 168h
  switchboard topics describe orders.placed
  switchboard topics delete orders.placed`,
		Args: cobra.NoArgs,
		RunE: a.withHub(func(cmd *cobra.Command, b *client.Broker, _ []string) error {
			ts, err := b.ListTopics(cmd.Context())
			if err != nil {
				return err
			}
			sort.Slice(ts, func(i, j int) bool { return ts[i].Config.Name < ts[j].Config.Name })
			rows := make([][]string, len(ts))
			for i, t := range ts {
				rows[i] = []string{t.Config.Name, fmt.Sprint(t.Messages), fmt.Sprint(t.Bytes), fmt.Sprintf("%d-%d", t.FirstSeq, t.LastSeq), strings.Join(t.Groups, ",")}
			}
			return a.table("TOPIC\tMESSAGES\tBYTES\tSEQ\tGROUPS", rows)
		}),
	}
	var ret broker.Retention
	var partitions int
	create := &cobra.Command{
		Use:     "create TOPIC",
		Short:   "Create a topic with retention limits",
		Example: "  switchboard topics create orders.placed --max-age 168h --max-bytes 1073741824",
		Args:    cobra.ExactArgs(1),
		RunE: a.withHub(func(cmd *cobra.Command, b *client.Broker, args []string) error {
			if err := b.CreateTopic(cmd.Context(), broker.TopicConfig{Name: args[0], Retention: ret, Partitions: partitions}); err != nil {
				return err
			}
			fmt.Fprintf(a.cfg.Stdout, "created topic %s\n", args[0])
			return nil
		}),
	}
	create.Flags().DurationVar(&ret.MaxAge, "max-age", 0, "drop messages older than this (0: no limit)")
	create.Flags().Int64Var(&ret.MaxBytes, "max-bytes", 0, "keep at most this many bytes (0: no limit)")
	create.Flags().Int64Var(&ret.MaxCount, "max-count", 0, "keep at most this many messages (0: no limit)")
	create.Flags().BoolVar(&ret.WorkQueue, "work-queue", false, "drop messages once every group settled them")
	create.Flags().IntVar(&partitions, "partitions", 0, "partitions, for backends that have them")
	describe := &cobra.Command{
		Use:     "describe TOPIC",
		Short:   "Describe a topic as JSON",
		Example: "  switchboard topics describe orders.placed",
		Args:    cobra.ExactArgs(1),
		RunE: a.withHub(func(cmd *cobra.Command, b *client.Broker, args []string) error {
			t, err := b.DescribeTopic(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printJSON(t)
		}),
	}
	del := &cobra.Command{
		Use:     "delete TOPIC",
		Short:   "Delete a topic and its messages",
		Example: "  switchboard topics delete orders.placed",
		Args:    cobra.ExactArgs(1),
		RunE: a.withHub(func(cmd *cobra.Command, b *client.Broker, args []string) error {
			if err := b.DeleteTopic(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.cfg.Stdout, "deleted topic %s\n", args[0])
			return nil
		}),
	}
	cmd.AddCommand(create, describe, del)
	return cmd
}

func (a *app) groupsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "groups",
		Short: "List consumer groups with their lag (and create, describe, reset or delete them)",
		Example: `  switchboard groups
  switchboard groups create email --topic orders.placed --from earliest
  switchboard groups describe email
  switchboard groups reset email --from 2025-01-02T00:00:00Z
  switchboard groups delete email`,
		Args: cobra.NoArgs,
		RunE: a.withHub(func(cmd *cobra.Command, b *client.Broker, _ []string) error {
			gs, err := b.ListGroups(cmd.Context())
			if err != nil {
				return err
			}
			sort.Slice(gs, func(i, j int) bool { return gs[i].Name < gs[j].Name })
			rows := make([][]string, len(gs))
			for i, g := range gs {
				rows[i] = []string{g.Name, g.Topic, fmt.Sprint(g.Lag), fmt.Sprint(g.InFlight), fmt.Sprint(g.Consumers), fmt.Sprint(g.DeadLetters)}
			}
			return a.table("GROUP\tTOPIC\tLAG\tIN FLIGHT\tCONSUMERS\tDEAD LETTERS", rows)
		}),
	}
	var topic, from string
	create := &cobra.Command{
		Use:     "create GROUP",
		Short:   "Create a consumer group of a topic or pattern",
		Example: "  switchboard groups create email --topic orders.placed --from earliest",
		Args:    cobra.ExactArgs(1),
		RunE: a.withHub(func(cmd *cobra.Command, b *client.Broker, args []string) error {
			if topic == "" {
				return usageError{fmt.Errorf("--topic is required")}
			}
			start, err := parseStart(from)
			if err != nil {
				return err
			}
			if err := b.CreateGroup(cmd.Context(), topic, args[0], start); err != nil {
				return err
			}
			fmt.Fprintf(a.cfg.Stdout, "created group %s on %s\n", args[0], topic)
			return nil
		}),
	}
	create.Flags().StringVar(&topic, "topic", "", "topic or pattern the group follows")
	create.Flags().StringVar(&from, "from", "latest", "start: earliest, latest, a sequence number or an RFC 3339 time")
	var resetFrom string
	reset := &cobra.Command{
		Use:     "reset GROUP",
		Short:   "Move a group to a start position (messages are delivered again from there)",
		Example: "  switchboard groups reset email --from earliest",
		Args:    cobra.ExactArgs(1),
		RunE: a.withHub(func(cmd *cobra.Command, b *client.Broker, args []string) error {
			start, err := parseStart(resetFrom)
			if err != nil {
				return err
			}
			if err := b.ResetGroup(cmd.Context(), args[0], start); err != nil {
				return err
			}
			fmt.Fprintf(a.cfg.Stdout, "reset group %s to %s\n", args[0], resetFrom)
			return nil
		}),
	}
	reset.Flags().StringVar(&resetFrom, "from", "latest", "earliest, latest, a sequence number or an RFC 3339 time")
	describe := &cobra.Command{
		Use:     "describe GROUP",
		Short:   "Describe a group as JSON: lag, in flight, cursors, dead letters",
		Example: "  switchboard groups describe email",
		Args:    cobra.ExactArgs(1),
		RunE: a.withHub(func(cmd *cobra.Command, b *client.Broker, args []string) error {
			g, err := b.DescribeGroup(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printJSON(g)
		}),
	}
	del := &cobra.Command{
		Use:     "delete GROUP",
		Short:   "Delete a consumer group",
		Example: "  switchboard groups delete email",
		Args:    cobra.ExactArgs(1),
		RunE: a.withHub(func(cmd *cobra.Command, b *client.Broker, args []string) error {
			if err := b.DeleteGroup(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.cfg.Stdout, "deleted group %s\n", args[0])
			return nil
		}),
	}
	cmd.AddCommand(create, describe, reset, del)
	return cmd
}

func (a *app) dlqCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Dead letters of a group: list, replay, purge",
		Example: `  switchboard dlq list email
  switchboard dlq replay email --max 10
  switchboard dlq purge email`,
	}
	var listMax int
	list := &cobra.Command{
		Use:     "list GROUP",
		Short:   "Count a group's dead letters and print them as JSON lines",
		Example: "  switchboard dlq list email --max 20",
		Args:    cobra.ExactArgs(1),
		RunE: a.withHub(func(cmd *cobra.Command, b *client.Broker, args []string) error {
			n, msgs, err := b.ListDeadLetters(cmd.Context(), args[0], listMax)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.cfg.Stderr, "%d dead letters in group %s\n", n, args[0])
			enc := json.NewEncoder(a.cfg.Stdout)
			for _, m := range msgs {
				if err := enc.Encode(toLine(&broker.Delivery{Message: m})); err != nil {
					return err
				}
			}
			return nil
		}),
	}
	list.Flags().IntVar(&listMax, "max", 100, "print at most this many")
	var replayMax int
	replay := &cobra.Command{
		Use:     "replay GROUP",
		Short:   "Send a group's dead letters back to their topics, for that group only",
		Example: "  switchboard dlq replay email --max 10",
		Args:    cobra.ExactArgs(1),
		RunE: a.withHub(func(cmd *cobra.Command, b *client.Broker, args []string) error {
			n, err := b.ReplayDeadLetters(cmd.Context(), args[0], replayMax)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.cfg.Stdout, "replayed %d dead letters of group %s\n", n, args[0])
			return nil
		}),
	}
	replay.Flags().IntVar(&replayMax, "max", 0, "replay at most this many (0: all)")
	purge := &cobra.Command{
		Use:     "purge GROUP",
		Short:   "Delete a group's dead letters",
		Example: "  switchboard dlq purge email",
		Args:    cobra.ExactArgs(1),
		RunE: a.withHub(func(cmd *cobra.Command, b *client.Broker, args []string) error {
			n, err := b.PurgeDeadLetters(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(a.cfg.Stdout, "purged %d dead letters of group %s\n", n, args[0])
			return nil
		}),
	}
	cmd.AddCommand(list, replay, purge)
	return cmd
}
