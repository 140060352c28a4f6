// Package redisinbox is a consume.Inbox in Redis: one key per (group,
// message ID) with an expiry (SET NX PX semantics), shared by every process
// using the same Redis. NewVersions is a consume.VersionStore in the same
// Redis, for DropStale.
package redisinbox

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-dev/switchboard/consume"
)

// Inbox is a consume.Inbox in Redis. Safe for concurrent use.
type Inbox struct {
	c      redis.UniversalClient
	prefix string
}

var _ consume.Inbox = (*Inbox)(nil)

// New returns an inbox using c, with keys "<prefix><group>:<id>"; an empty
// prefix means "sb:inbox:". Entries expire by themselves (no sweeping).
func New(c redis.UniversalClient, prefix string) *Inbox {
	if prefix == "" {
		prefix = "sb:inbox:"
	}
	return &Inbox{c: c, prefix: prefix}
}

func (x *Inbox) key(group, id string) string { return x.prefix + group + ":" + id }

// claim: set a claim unless a live entry exists; 0 claimed, 1 handled, 2 busy.
var claimScript = redis.NewScript(`
if redis.call('SET', KEYS[1], 'c', 'NX', 'PX', ARGV[1]) then return 0 end
if redis.call('GET', KEYS[1]) == 'd' then return 1 end
return 2`)

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == 'c' then return redis.call('DEL', KEYS[1]) end
return 0`)

func ms(d time.Duration) int64 {
	if d < time.Millisecond {
		return 1
	}
	return d.Milliseconds()
}

// Claim implements consume.Inbox.
func (x *Inbox) Claim(ctx context.Context, group, id string, lease time.Duration) (consume.ClaimState, error) {
	n, err := claimScript.Run(ctx, x.c, []string{x.key(group, id)}, ms(lease)).Int()
	if err != nil {
		return 0, fmt.Errorf("redisinbox: claim %s/%s: %w", group, id, err)
	}
	switch n {
	case 0:
		return consume.Claimed, nil
	case 1:
		return consume.Handled, nil
	}
	return consume.Busy, nil
}

// Mark implements consume.Inbox.
func (x *Inbox) Mark(ctx context.Context, group, id string, ttl time.Duration) error {
	if err := x.c.Set(ctx, x.key(group, id), "d", time.Duration(ms(ttl))*time.Millisecond).Err(); err != nil {
		return fmt.Errorf("redisinbox: mark %s/%s: %w", group, id, err)
	}
	return nil
}

// Release implements consume.Inbox.
func (x *Inbox) Release(ctx context.Context, group, id string) error {
	if err := releaseScript.Run(ctx, x.c, []string{x.key(group, id)}).Err(); err != nil {
		return fmt.Errorf("redisinbox: release %s/%s: %w", group, id, err)
	}
	return nil
}
